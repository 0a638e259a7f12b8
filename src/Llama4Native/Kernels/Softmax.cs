using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/softmax.cu`: row-wise softmax in fp32 (a fully −inf row gives zeros).</summary>
internal static class Softmax
{
    public const string File = "softmax.cu";
    public enum Variant { Auto, Block, Warp }
    const int Threads = 256; // SOFTMAX_THREADS default

    /// <param name="x">[rows, cols] f32</param>
    /// <param name="y">same shape; may alias x</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor y, DeviceStream? stream = null, Variant variant = Variant.Auto)
    {
        const string op = "softmax";
        KernelCheck.Same(op, "x", x, "y", y);
        if (x.DType != DType.F32 || y.DType != DType.F32) throw KernelCheck.Unsupported(op, $"{x.DType}>{y.DType}");
        int cols = KernelCheck.Int(op, "cols", x.Shape.Inner), rows = KernelCheck.Int(op, "rows", x.Shape.Rows);
        if (rows == 0 || cols == 0) return;
        bool warp = variant == Variant.Warp || (variant == Variant.Auto && cols <= 1024);
        var fn = dev.Kernels.Get(File, warp ? "softmax_warp_f32" : "softmax_f32");
        ulong xp = x.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &yp, &rows, &cols };
        dev.Cost(x.Bytes + y.Bytes, 5.0 * x.Elements);
        dev.Launch(fn, warp ? KernelCheck.Blocks(rows, Threads / 32) : (uint)rows, Threads, 0, args, stream);
    }
}
