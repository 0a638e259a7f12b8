using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/gemm_int4.cu`: y[M, N] = x[M, K] · dequant(W)ᵀ for an int4 weight (<see cref="DType.I4"/> [N, K], f32
/// scales [N, K/G]), fp32 accumulation. Paths: a bandwidth-bound GEMV for M ≤ <see cref="GemvMaxRows"/> (decode), a
/// tensor-core GEMM for bf16 x with more rows (prefill; the weight enters the MMA as bf16(q·s)), and a plain
/// fp32 loop (f32 x: the exact-parity mode, Σ x·(q·s) in fp32).
/// </summary>
internal static class GemmInt4
{
    public const string File = "gemm_int4.cu";
    public enum Variant { Auto, Gemv, Mma, Simple }

    public const int GemvMaxRows = 8;          // GI4_MAX_M
    const int GemvThreads = 128, RowsPerWarp = 4, Simple = 16;
    const int BM = 128, BN = 128, BK = 32, Warps = 8, Stages = 3;
    const uint MmaShared = Stages * (2 * BM * (BK + 8) + BN * BK / 2);

    /// <param name="x">[M, K] f32 or bf16</param>
    /// <param name="w">I4 [N, K] (<see cref="Tensor.Quantized"/>), G even dividing K (gemv: G a multiple of 8)</param>
    /// <param name="y">[M, N]: f32 with f32 x; bf16 or f32 with bf16 x. Must not overlap x or w.</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor w, Tensor y, DeviceStream? stream = null, Variant variant = Variant.Auto)
    {
        const string op = "gemm_int4";
        if (x.Shape.Rank != 2 || w.Shape.Rank != 2 || y.Shape.Rank != 2)
            throw new ArgumentException($"{op}: x {x.Shape}, w {w.Shape} and y {y.Shape} must be matrices");
        if (w.DType != DType.I4) throw new ArgumentException($"{op}: w must be an I4 weight (Tensor.Quantized); got {w}");
        int m = KernelCheck.Int(op, "M", x.Shape[0]), k = KernelCheck.Int(op, "K", x.Shape[1]), n = KernelCheck.Int(op, "N", w.Shape[0]), g = w.Group;
        if (w.Shape[1] != k) throw new ArgumentException($"{op}: w {w.Shape} has K = {w.Shape[1]} but x {x.Shape} has K = {k}");
        CheckGroup(op, "w", w);
        KernelCheck.Dims(op, "y", y, m, n);
        string types = $"{KernelCheck.Name(x.DType)}_{KernelCheck.Name(y.DType)}";
        if (types is not ("f32_f32" or "bf16_bf16" or "bf16_f32")) throw KernelCheck.Unsupported(op, types);
        var path = variant != Variant.Auto ? variant
                 : m <= GemvMaxRows ? Variant.Gemv : x.DType == DType.BF16 ? Variant.Mma : Variant.Simple;
        if (path == Variant.Gemv && m > GemvMaxRows) throw new ArgumentException($"{op}: x {x.Shape} has {m} rows; the GEMV takes at most {GemvMaxRows}");
        if (path == Variant.Gemv && g % 8 != 0) throw new ArgumentException($"{op}: the GEMV needs a group size that is a multiple of 8; w has G = {g}");
        if (path == Variant.Mma && x.DType != DType.BF16) throw KernelCheck.Unsupported(op + " (mma)", types);
        if (m == 0 || n == 0) return;
        ulong xp = x.Ptr.Value, wp = w.Ptr.Value, sp = w.Scale.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &wp, &sp, &yp, &m, &n, &k, &g };
        dev.Cost(x.Bytes + w.Bytes + w.ScaleBytes + y.Bytes, 2.0 * m * n * k);
        switch (path)
        {
            case Variant.Gemv:
                dev.Launch(dev.Kernels.Get(File, $"gemm_int4_gemv{(g % 32 == 0 ? 32 : 8)}{(m == 1 ? "_m1" : "")}_{types}"),
                           KernelCheck.Blocks(n, GemvThreads / 32 * RowsPerWarp), GemvThreads, 0, args, stream);
                break;
            case Variant.Mma:
                dev.Launch(dev.Kernels.Get(File, "gemm_int4_mma_" + types),
                           new Dim3(KernelCheck.Blocks(n, BN), GridY(op, m, BM)), 32 * Warps, MmaShared, args, stream);
                break;
            default:
                dev.Launch(dev.Kernels.Get(File, "gemm_int4_simple_" + types),
                           new Dim3(KernelCheck.Blocks(n, Simple), GridY(op, m, Simple)), new Dim3(Simple, Simple), 0, args, stream);
                break;
        }
    }

    /// <summary>The checks every int4 weight argument gets: scales present, G even and dividing K.</summary>
    internal static void CheckGroup(string op, string name, Tensor w)
    {
        if (w.DType != DType.I4) throw new ArgumentException($"{op}: {name} must be an I4 weight (Tensor.Quantized); got {w}");
        if (w.Scale.IsNull) throw new ArgumentException($"{op}: {name} {w.Shape} has no scales; build it with Tensor.Quantized");
        long k = w.Shape.Inner;
        if (w.Group < 2 || w.Group % 2 != 0 || k % w.Group != 0 || k % 2 != 0)
            throw new ArgumentException($"{op}: {name} {w.Shape} has K = {k} and group size {w.Group}; K must be even and the group an even divisor of K (pick one, e.g. 128)");
    }

    static uint GridY(string op, long rows, int tile)
    {
        long gy = (rows + tile - 1) / tile;
        if (gy > 65535) throw new ArgumentException($"{op}: M = {rows} needs {gy} row tiles; at most 65535 (split the rows)");
        return (uint)gy;
    }
}
