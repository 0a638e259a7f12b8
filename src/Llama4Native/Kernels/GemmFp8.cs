using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/gemm_fp8.cu`: FBGEMM's f8f8bf16_rowwise, y[m, n] = bf16((Σ_k xq[m,k]·wq[n,k]) · xs[m] · ws[n]) with fp32
/// accumulation; y bf16, or f32 holding the bf16-rounded value (the fp32 parity mode). Tensor cores (mma e4m3 on
/// sm_89+, an exact bf16 pair on sm_80) for M &gt; <see cref="GemvMaxRows"/>, a 16-byte-load GEMV for decode.
/// <see cref="Linear"/> = <see cref="QuantizeFp8.Rows"/> + <see cref="Run"/> (FbgemmFp8Linear).
/// </summary>
internal static class GemmFp8
{
    public const string File = "gemm_fp8.cu";
    public enum Variant { Auto, Mma, Gemv }
    public const int GemvMaxRows = 8;                                   // GF8_MAX_M
    const int BM = 128, BN = 128, BK = 64, Threads = 256, Stages = 3;   // GF8_* defaults
    const int GemvThreads = 64, GemvRows = 4;
    const uint MmaShared = Stages * (BM + BN) * (BK + 16);

    /// <param name="xq">[M, K] F8E4M3 (from <see cref="QuantizeFp8.Rows"/>)</param><param name="xs">[M] f32</param>
    /// <param name="w">F8E4M3 [N, K] with scales [N] (<see cref="Tensor.Quantized"/>)</param>
    /// <param name="y">[M, N] bf16 or f32</param>
    /// <param name="viaBf16">force the sm_80 path (exact bf16 conversion + bf16 mma) on any target — for tests</param>
    public static unsafe void Run(Device dev, Tensor xq, Tensor xs, Tensor w, Tensor y, DeviceStream? stream = null,
                                  Variant variant = Variant.Auto, bool viaBf16 = false)
    {
        const string op = "gemm_fp8";
        if (xq.Shape.Rank != 2 || w.Shape.Rank != 2 || y.Shape.Rank != 2)
            throw new ArgumentException($"{op}: xq {xq.Shape}, w {w.Shape} and y {y.Shape} must be matrices");
        if (xq.DType != DType.F8E4M3 || xs.DType != DType.F32) throw KernelCheck.Unsupported(op, $"xq {xq.DType} (F8E4M3), xs {xs.DType} (f32)");
        if (w.DType != DType.F8E4M3 || w.Scale.IsNull || w.Group != w.Shape.Inner)
            throw new ArgumentException($"{op}: w {w} must be an F8E4M3 weight [N, K] with row scales (Tensor.Quantized)");
        int m = KernelCheck.Int(op, "M", xq.Shape[0]), k = KernelCheck.Int(op, "K", xq.Shape[1]), n = KernelCheck.Int(op, "N", w.Shape[0]);
        if (w.Shape[1] != k) throw new ArgumentException($"{op}: w {w.Shape} has K = {w.Shape[1]} but xq {xq.Shape} has K = {k}");
        if (xs.Elements != m) throw new ArgumentException($"{op}: xs {xs.Shape} must hold {m} row scales");
        KernelCheck.Dims(op, "y", y, m, n);
        if (y.DType is not (DType.BF16 or DType.F32)) throw KernelCheck.Unsupported(op, $"y {y.DType} (bf16 or f32)");
        bool gemv = variant == Variant.Gemv || (variant == Variant.Auto && m <= GemvMaxRows);
        if (gemv && m > GemvMaxRows) throw new ArgumentException($"{op}: the GEMV takes at most {GemvMaxRows} rows; xq has {m}");
        if (m == 0 || n == 0) return;
        ulong xp = xq.Ptr.Value, sp = xs.Ptr.Value, wp = w.Ptr.Value, wsp = w.Scale.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &sp, &wp, &wsp, &yp, &m, &n, &k };
        string t = KernelCheck.Name(y.DType);
        dev.Cost(xq.Bytes + xs.Bytes + w.Bytes + w.ScaleBytes + y.Bytes, 2.0 * m * n * k);
        if (gemv)
        {
            dev.Launch(dev.Kernels.Get(File, "gemm_fp8_gemv_" + t), KernelCheck.Blocks(n, GemvThreads / 32 * GemvRows), GemvThreads, 0, args, stream);
            return;
        }
        long gy = (m + BM - 1) / BM;
        if (gy > 65535) throw new ArgumentException($"{op}: M = {m} needs {gy} row tiles; at most 65535 (split the rows)");
        var defines = viaBf16 ? KernelDefines.Of(("FP8_MMA_VIA_BF16", 1)) : KernelDefines.None;
        dev.Launch(dev.Kernels.Get(File, "gemm_fp8_mma_" + t, defines), new Dim3(KernelCheck.Blocks(n, BN), (uint)gy), Threads, MmaShared, args, stream);
    }

    /// <summary>
    /// The dense FP8 linear (FbgemmFp8Linear): x [M, K] f32/bf16 is quantized per row with bound <paramref name="ub"/> into
    /// the scratch (<paramref name="xqScratch"/> F8E4M3 with ≥ M·K elements, <paramref name="xsScratch"/> f32 with ≥ M),
    /// then y = f8f8bf16_rowwise(xq, w, xs, ws).
    /// </summary>
    public static void Linear(Device dev, Tensor x, Tensor w, Tensor y, Tensor xqScratch, Tensor xsScratch, float ub, DeviceStream? stream = null)
    {
        const string op = "gemm_fp8.linear";
        if (x.Shape.Rank != 2) throw new ArgumentException($"{op}: x {x.Shape} must be a matrix");
        if (xqScratch.DType != DType.F8E4M3 || xsScratch.DType != DType.F32) throw KernelCheck.Unsupported(op, $"scratch {xqScratch.DType}/{xsScratch.DType} (F8E4M3/f32)");
        if (xqScratch.Elements < x.Elements || xsScratch.Elements < x.Shape[0])
            throw new ArgumentException($"{op}: scratch {xqScratch.Shape}/{xsScratch.Shape} must hold {x.Elements} codes and {x.Shape[0]} scales");
        var xq = new Tensor(xqScratch.Ptr, DType.F8E4M3, x.Shape);
        var xs = new Tensor(xsScratch.Ptr, DType.F32, new Shape(x.Shape[0]));
        QuantizeFp8.Rows(dev, x, xq, xs, ub, stream);
        Run(dev, xq, xs, w, y, stream);
    }
}
