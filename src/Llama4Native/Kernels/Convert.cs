using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/convert.cu`: element type conversion f32 ⇄ bf16 (round to nearest even).</summary>
internal static class DTypeConvert
{
    public const string File = "convert.cu";
    const int Threads = 256; // CONVERT_THREADS default

    /// <param name="x">[n] any shape, f32 or bf16</param>
    /// <param name="y">same shape, the other dtype</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor y, DeviceStream? stream = null)
    {
        const string op = "convert";
        if (x.Elements != y.Elements) throw new ArgumentException($"{op}: x has {x.Elements} elements ({x.Shape}) but y has {y.Elements} ({y.Shape})");
        string entry = (x.DType, y.DType) switch
        {
            (DType.BF16, DType.F32) => "convert_bf16_to_f32",
            (DType.F32, DType.BF16) => "convert_f32_to_bf16",
            _ => throw KernelCheck.Unsupported(op, $"{x.DType}>{y.DType}"),
        };
        long n = x.Elements;
        if (n == 0) return;
        var fn = dev.Kernels.Get(File, entry);
        ulong xp = x.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &yp, &n };
        dev.Cost(x.Bytes + y.Bytes, 0);
        dev.Launch(fn, KernelCheck.Blocks(n, 8L * Threads, 65535), Threads, 0, args, stream);
    }
}
