using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/rmsnorm.cu`: y = x · rsqrt(mean(x²) + eps) · w per row, fp32 math (w absent = Llama 4's QK norm).</summary>
internal static class RmsNorm
{
    public const string File = "rmsnorm.cu";
    public enum Variant { Auto, Block, Warp }
    const int Threads = 256; // RMSNORM_THREADS default

    /// <param name="x">[rows, cols] f32 or bf16</param>
    /// <param name="w">[cols] (f32 with f32 x; bf16 with either), or null for the weightless norm</param>
    /// <param name="y">same shape as x; may alias x</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor? w, Tensor y, float eps, DeviceStream? stream = null, Variant variant = Variant.Auto)
    {
        const string op = "rmsnorm";
        KernelCheck.Same(op, "x", x, "y", y);
        int cols = KernelCheck.Int(op, "cols", x.Shape.Inner), rows = KernelCheck.Int(op, "rows", x.Shape.Rows);
        if (w is { } wt) KernelCheck.Dims(op, "w", wt, cols);
        string name = w is { } ww
            ? $"{KernelCheck.Name(x.DType)}_{KernelCheck.Name(ww.DType)}_{KernelCheck.Name(y.DType)}"
            : $"noweight_{KernelCheck.Name(x.DType)}";
        bool ok = name is "f32_f32_f32" or "f32_bf16_f32" or "bf16_bf16_bf16" or "noweight_f32" or "noweight_bf16"
                  && (w is not null || x.DType == y.DType);
        if (!ok) throw KernelCheck.Unsupported(op, name);
        if (rows == 0 || cols == 0) return;
        bool warp = variant == Variant.Warp || (variant == Variant.Auto && cols <= 1024);
        var fn = dev.Kernels.Get(File, (warp ? "rmsnorm_warp_" : "rmsnorm_") + name);
        uint grid = warp ? KernelCheck.Blocks(rows, Threads / 32) : (uint)rows;
        ulong xp = x.Ptr.Value, wp = w?.Ptr.Value ?? 0, yp = y.Ptr.Value;
        dev.Cost(x.Bytes + y.Bytes + (w?.Bytes ?? 0), 4.0 * x.Elements);
        if (w is not null)
        {
            void** args = stackalloc void*[] { &xp, &wp, &yp, &rows, &cols, &eps };
            dev.Launch(fn, grid, Threads, 0, args, stream);
        }
        else
        {
            void** args = stackalloc void*[] { &xp, &yp, &rows, &cols, &eps };
            dev.Launch(fn, grid, Threads, 0, args, stream);
        }
    }
}
