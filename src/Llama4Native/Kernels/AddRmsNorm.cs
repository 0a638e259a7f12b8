using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/add_rmsnorm.cu`: x += y (in place, rounded to x's dtype as <see cref="Add"/> rounds), then
/// h = x · rsqrt(mean(x²) + eps) · w per row — the residual add and the next block's norm in one launch.</summary>
internal static class AddRmsNorm
{
    public const string File = "add_rmsnorm.cu";
    const int Threads = 256; // RMSNORM_THREADS default

    /// <param name="x">[rows, cols] f32 or bf16: the residual stream, updated in place</param>
    /// <param name="y">same shape and dtype: what is added (a block's output)</param>
    /// <param name="w">[cols] (f32 or bf16 with f32 x; bf16 with bf16 x)</param>
    /// <param name="h">same shape and dtype as x: the normalised rows; must not overlap x or y</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor y, Tensor w, Tensor h, float eps, DeviceStream? stream = null,
                                  RmsNorm.Variant variant = RmsNorm.Variant.Auto)
    {
        const string op = "add_rmsnorm";
        KernelCheck.Same(op, "x", x, "y", y);
        KernelCheck.Same(op, "x", x, "h", h);
        int cols = KernelCheck.Int(op, "cols", x.Shape.Inner), rows = KernelCheck.Int(op, "rows", x.Shape.Rows);
        KernelCheck.Dims(op, "w", w, cols);
        string name = $"{KernelCheck.Name(x.DType)}_{KernelCheck.Name(w.DType)}_{KernelCheck.Name(h.DType)}";
        if (x.DType != y.DType || !(name is "f32_f32_f32" or "f32_bf16_f32" or "bf16_bf16_bf16"))
            throw KernelCheck.Unsupported(op, $"{x.DType},{y.DType},{w.DType}>{h.DType}");
        if (Overlaps(h, x) || Overlaps(h, y))
            throw new ArgumentException($"{op}: h must not overlap x or y (x is updated in place; h is a separate buffer)");
        if (rows == 0 || cols == 0) return;
        bool warp = variant == RmsNorm.Variant.Warp || (variant == RmsNorm.Variant.Auto && cols <= 1024);
        var fn = dev.Kernels.Get(File, (warp ? "add_rmsnorm_warp_" : "add_rmsnorm_") + name);
        uint grid = warp ? KernelCheck.Blocks(rows, Threads / 32) : (uint)rows;
        ulong xp = x.Ptr.Value, yp = y.Ptr.Value, wp = w.Ptr.Value, hp = h.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &yp, &wp, &hp, &rows, &cols, &eps };
        // x read and written, y read, w read, h written.
        dev.Cost(2 * x.Bytes + y.Bytes + w.Bytes + h.Bytes, 5.0 * x.Elements);
        dev.Launch(fn, grid, Threads, 0, args, stream);
    }

    static bool Overlaps(Tensor a, Tensor b) => a.Ptr.Value < b.Ptr.Value + (ulong)b.Bytes && b.Ptr.Value < a.Ptr.Value + (ulong)a.Bytes;
}
