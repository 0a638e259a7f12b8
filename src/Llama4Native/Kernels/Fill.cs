using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/fill.cu`: out[i] = mean + std·N(0,1), a pure function of (seed, i): synthetic weights made on the device.</summary>
internal static class Fill
{
    public const string File = "fill.cu";
    const int Threads = 256; // FILL_THREADS default

    /// <param name="output">any shape, f32 or bf16</param>
    public static unsafe void Normal(Device dev, Tensor output, ulong seed, float mean, float std, DeviceStream? stream = null)
    {
        const string op = "fill";
        if (output.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, KernelCheck.Name(output.DType));
        if (!float.IsFinite(mean) || !float.IsFinite(std)) throw new ArgumentException($"{op}: mean {mean} and std {std} must be finite");
        long n = output.Elements;
        if (n == 0) return;
        ulong op_ = output.Ptr.Value;
        void** args = stackalloc void*[] { &op_, &n, &seed, &mean, &std };
        dev.Cost(output.Bytes, 20.0 * n);
        dev.Launch(dev.Kernels.Get(File, "fill_normal_" + KernelCheck.Name(output.DType)), KernelCheck.Blocks(n, Threads, 1 << 20), Threads, 0, args, stream);
    }
}
