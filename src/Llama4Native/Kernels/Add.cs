using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/add.cu`: y = a + b elementwise (the residual adds); y may alias a or b.</summary>
internal static class Add
{
    public const string File = "add.cu";
    const int Threads = 256; // ADD_THREADS default

    /// <param name="a">any shape, f32 or bf16</param>
    /// <param name="b">same shape and dtype</param>
    /// <param name="y">same shape and dtype; may be a or b</param>
    public static unsafe void Run(Device dev, Tensor a, Tensor b, Tensor y, DeviceStream? stream = null)
    {
        const string op = "add";
        KernelCheck.Same(op, "a", a, "b", b);
        KernelCheck.Same(op, "a", a, "y", y);
        if (a.DType != b.DType || a.DType != y.DType || a.DType is not (DType.F32 or DType.BF16))
            throw KernelCheck.Unsupported(op, $"{a.DType},{b.DType}>{y.DType}");
        long n = a.Elements;
        if (n == 0) return;
        var fn = dev.Kernels.Get(File, "add_" + KernelCheck.Name(a.DType));
        ulong ap = a.Ptr.Value, bp = b.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &ap, &bp, &yp, &n };
        dev.Cost(a.Bytes + b.Bytes + y.Bytes, n);
        dev.Launch(fn, KernelCheck.Blocks(n, 8L * Threads, 65535), Threads, 0, args, stream);
    }
}
