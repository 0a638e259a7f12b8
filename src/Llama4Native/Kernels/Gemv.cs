using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/gemv.cu`: y[m, N] = x[m, K] · Wᵀ for nn.Linear weights W [N, K] bf16 and m ≤ 8 rows of x (batched
/// decode; also lm_head), fp32 accumulation. Memory-bound: W is streamed once with 16-byte coalesced loads.
/// </summary>
internal static class Gemv
{
    public const string File = "gemv.cu";
    public const int MaxRows = 8;      // GEMV_MAX_M
    const int Threads = 128;           // GEMV_THREADS default
    const int RowsPerWarp = 2;         // GEMV_ROWS_PER_WARP default

    /// <param name="x">[m, K] f32 or bf16, 1 ≤ m ≤ 8</param>
    /// <param name="w">[N, K] bf16</param>
    /// <param name="y">[m, N]: f32 with f32 x; bf16 or f32 with bf16 x. Must not overlap x or w.</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor w, Tensor y, DeviceStream? stream = null)
    {
        const string op = "gemv";
        if (x.Shape.Rank != 2 || w.Shape.Rank != 2 || y.Shape.Rank != 2)
            throw new ArgumentException($"{op}: x {x.Shape}, w {w.Shape} and y {y.Shape} must be matrices");
        int m = KernelCheck.Int(op, "m", x.Shape[0]), k = KernelCheck.Int(op, "K", x.Shape[1]);
        int n = KernelCheck.Int(op, "N", w.Shape[0]);
        if (m > MaxRows) throw new ArgumentException($"{op}: x {x.Shape} has {m} rows; at most {MaxRows} (use gemm)");
        if (w.Shape[1] != k) throw new ArgumentException($"{op}: w {w.Shape} has K = {w.Shape[1]} but x {x.Shape} has K = {k}");
        KernelCheck.Dims(op, "y", y, m, n);
        if (w.DType != DType.BF16) throw KernelCheck.Unsupported(op, "w " + KernelCheck.Name(w.DType));
        string types = $"{KernelCheck.Name(x.DType)}_{KernelCheck.Name(y.DType)}";
        if (types is not ("f32_f32" or "bf16_bf16" or "bf16_f32")) throw KernelCheck.Unsupported(op, types);
        if (m == 0 || n == 0) return;
        var fn = dev.Kernels.Get(File, "gemv_" + types);
        ulong xp = x.Ptr.Value, wp = w.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &wp, &yp, &m, &n, &k };
        dev.Cost(x.Bytes + w.Bytes + y.Bytes, 2.0 * m * n * k);
        dev.Launch(fn, KernelCheck.Blocks(n, Threads / 32 * RowsPerWarp), Threads, 0, args, stream);
    }
}
