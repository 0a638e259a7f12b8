using Llama4Native.Devices;
using Llama4Native.Tensors;
using GemmBLayout = Llama4Native.Reference.GemmBLayout;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/gemm.cu`: C[M, N] = A[M, K] · B, bf16 (or f32) operands, fp32 accumulation, C f32 or bf16.
/// B is either [N, K] (nn.Linear weights: C = A·Bᵀ) or [K, N] (Llama 4's fused expert weights: C = A·B).
/// </summary>
internal static class Gemm
{
    public const string File = "gemm.cu";
    public enum Variant { Auto, Mma, Simple }

    /// <summary>The tensor-core kernel's compile-time tile configuration (part of the JIT cache key).</summary>
    public sealed record MmaConfig(int BM = 128, int BN = 128, int BK = 32, int WM = 2, int WN = 4, int Stages = 3)
    {
        public static readonly MmaConfig Default = new();
        public int Threads => 32 * WM * WN;
        public uint SharedBytes(GemmBLayout layout) => (uint)(layout == GemmBLayout.NK
            ? Stages * 2 * (BM + BN) * (BK + 8)
            : Stages * 2 * (BM * (BK + 8) + BK * (BN + 8)));
        public KernelDefines Defines => this == Default ? KernelDefines.None
            : KernelDefines.Of(("GEMM_BM", BM), ("GEMM_BN", BN), ("GEMM_BK", BK), ("GEMM_WM", WM), ("GEMM_WN", WN), ("GEMM_STAGES", Stages));
        public override string ToString() => $"{BM}x{BN}x{BK} w{WM}x{WN} s{Stages}";
    }

    const int SimpleTile = 16; // GEMM_SIMPLE_TILE default

    /// <param name="a">[M, K] bf16 (f32 only with the simple variant)</param>
    /// <param name="b">[N, K] for <see cref="GemmBLayout.NK"/>, [K, N] for <see cref="GemmBLayout.KN"/>; bf16 (or f32 with f32 A)</param>
    /// <param name="c">[M, N] f32 or bf16</param>
    public static unsafe void Run(Device dev, Tensor a, Tensor b, Tensor c, GemmBLayout layout, DeviceStream? stream = null,
                                  Variant variant = Variant.Auto, MmaConfig? config = null)
    {
        const string op = "gemm";
        if (a.Shape.Rank != 2 || b.Shape.Rank != 2 || c.Shape.Rank != 2)
            throw new ArgumentException($"{op}: A {a.Shape}, B {b.Shape} and C {c.Shape} must be matrices");
        int m = KernelCheck.Int(op, "M", a.Shape[0]), k = KernelCheck.Int(op, "K", a.Shape[1]);
        int n = KernelCheck.Int(op, "N", layout == GemmBLayout.NK ? b.Shape[0] : b.Shape[1]);
        long bk = layout == GemmBLayout.NK ? b.Shape[1] : b.Shape[0];
        if (bk != k) throw new ArgumentException($"{op}: B {b.Shape} ({layout}) has K = {bk} but A {a.Shape} has K = {k}");
        KernelCheck.Dims(op, "C", c, m, n);
        string types = $"{KernelCheck.Name(a.DType)}_{KernelCheck.Name(b.DType)}_{KernelCheck.Name(c.DType)}";
        bool mmaOk = types is "bf16_bf16_f32" or "bf16_bf16_bf16";
        if (!mmaOk && types is not ("f32_f32_f32" or "f32_bf16_f32")) throw KernelCheck.Unsupported(op, types);
        if (variant == Variant.Mma && !mmaOk) throw KernelCheck.Unsupported(op + " (mma)", types);
        if (m == 0 || n == 0) return;
        bool mma = variant == Variant.Mma || (variant == Variant.Auto && mmaOk);
        string lay = layout == GemmBLayout.NK ? "nk" : "kn";
        ulong ap = a.Ptr.Value, bp = b.Ptr.Value, cp = c.Ptr.Value;
        void** args = stackalloc void*[] { &ap, &bp, &cp, &m, &n, &k };
        if (mma)
        {
            var cfg = config ?? MmaConfig.Default;
            var fn = dev.Kernels.Get(File, $"gemm_mma_{lay}_{types}", cfg.Defines);
            dev.Cost(a.Bytes + b.Bytes + c.Bytes, 2.0 * m * n * k);
            dev.Launch(fn, new Dim3(KernelCheck.Blocks(n, cfg.BN), KernelCheck.Blocks(m, cfg.BM)), cfg.Threads, cfg.SharedBytes(layout), args, stream);
        }
        else
        {
            var fn = dev.Kernels.Get(File, $"gemm_simple_{lay}_{types}");
            dev.Cost(a.Bytes + b.Bytes + c.Bytes, 2.0 * m * n * k);
            dev.Launch(fn, new Dim3(KernelCheck.Blocks(n, SimpleTile), KernelCheck.Blocks(m, SimpleTile)), new Dim3(SimpleTile, SimpleTile), 0, args, stream);
        }
    }
}
