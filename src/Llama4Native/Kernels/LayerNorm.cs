using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/layernorm.cu`: y = (x − mean) / sqrt(var + eps) · w + b per row (torch's nn.LayerNorm), fp32 math.</summary>
internal static class LayerNorm
{
    public const string File = "layernorm.cu";
    public enum Variant { Auto, Block, Warp }
    const int Threads = 256; // LAYERNORM_THREADS default

    /// <param name="x">[rows, n] f32 or bf16</param>
    /// <param name="w">[n] weight (f32 with f32 x; bf16 with either)</param>
    /// <param name="b">[n] bias, same dtype as w</param>
    /// <param name="y">same shape and dtype as x; may alias x</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor w, Tensor b, Tensor y, float eps, DeviceStream? stream = null,
                                  Variant variant = Variant.Auto)
    {
        const string op = "layernorm";
        KernelCheck.Same(op, "x", x, "y", y);
        int cols = KernelCheck.Int(op, "cols", x.Shape.Inner), rows = KernelCheck.Int(op, "rows", x.Shape.Rows);
        KernelCheck.Dims(op, "w", w, cols);
        KernelCheck.Dims(op, "b", b, cols);
        if (w.DType != b.DType) throw new ArgumentException($"{op}: w is {w.DType} but b is {b.DType}; they must match");
        string name = $"{KernelCheck.Name(x.DType)}_{KernelCheck.Name(w.DType)}_{KernelCheck.Name(y.DType)}";
        if (name is not ("f32_f32_f32" or "f32_bf16_f32" or "bf16_bf16_bf16")) throw KernelCheck.Unsupported(op, name);
        if (rows == 0 || cols == 0) return;
        bool warp = variant == Variant.Warp || (variant == Variant.Auto && cols <= 1024);
        var fn = dev.Kernels.Get(File, (warp ? "layernorm_warp_" : "layernorm_") + name);
        uint grid = warp ? KernelCheck.Blocks(rows, Threads / 32) : (uint)rows;
        ulong xp = x.Ptr.Value, wp = w.Ptr.Value, bp = b.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &wp, &bp, &yp, &rows, &cols, &eps };
        dev.Cost(x.Bytes + w.Bytes + b.Bytes + y.Bytes, 8.0 * x.Elements);
        dev.Launch(fn, grid, Threads, 0, args, stream);
    }
}
