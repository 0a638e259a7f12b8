using Llama4Native.Tensors;

namespace Llama4Native.Ops;

/// <summary>
/// Every kernel-vs-reference tolerance, in one place. The reference computes in double (or exactly);
/// kernels compute in fp32 and round once to the output dtype, so a bf16 output may land one bf16 ulp
/// (relative 2^-8..2^-7) from the reference's rounding, and an fp32 output differs by accumulation order.
/// </summary>
internal static class Tolerances
{
    /// <summary>One bf16 ulp, relative: the most that a single final rounding can add.</summary>
    public const double Bf16Ulp = 1.0 / 128;
    public static readonly Tolerance Exact = new(0, 0);

    public static Tolerance For(string op, DType output, long k = 0) => (op, output) switch
    {
        ("sample", DType.I32) => Exact,                                // token ids: equal (near-ties forgiven by SampleSpec)
        ("sample", DType.F32) => new(1e-6, 1e-4),                      // chosen probability: f32 sums vs double
        ("step", _) => Exact,                                          // kv_append copies, step_decode integer bookkeeping
        ("fill", DType.F32) => new(2e-6, 2e-5),                        // fp32 logf/cosf/sqrtf vs double: a few ulp (|z| ≤ 6)
        ("fill", DType.BF16) => new(1e-6, Tolerances.Bf16Ulp),         // ... which one bf16 rounding can turn into an ulp
        ("convert" or "embedding" or "add" or "quantize_int4" or "patch_unfold" or "vision_embed" or "pixel_shuffle" or "scatter_rows", _) => Exact,               // conversions, copies and one rounded add are bit-exact
        ("rmsnorm" or "add_rmsnorm", DType.F32) => new(1e-6, 2e-5),    // fp32 sum of squares vs double
        ("silu_mul", DType.F32) => new(1e-6, 2e-5),                    // fast exp / divide: a few ulp
        ("softmax", DType.F32) => new(1e-7, 2e-5),
        // fp32 sincos of the same fp32 angle: a few ulp, and the rotated values are O(1).
        ("rope", DType.F32) => new(2e-6, 2e-5),
        // vision_rope: the same fp32 angle as the reference (HF's table), sincosf vs cos/sin rounded to fp32.
        ("vision_rope", DType.F32) => new(2e-6, 2e-5),
        // Products of bf16 values are exact in fp32; the fp32 sum of K terms of size ~1/√K each errs by
        // about √K·2^-24 relative to the row's scale. Inputs: A ~ N(0,1), B ~ N(0,1/K), so |C| ~ 1.
        ("gemm", DType.F32) => new(2e-6 * Math.Sqrt(Math.Max(k, 1)), 1e-4),
        ("gemm", DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), Bf16Ulp),
        // gemv: the same fp32 dot products as gemm (lane-strided partial sums + a shuffle tree), same bound.
        ("gemv", DType.F32) => new(2e-6 * Math.Sqrt(Math.Max(k, 1)), 1e-4),
        ("gemv", DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), Bf16Ulp),
        // int4 weights (gemm_int4, moe_int4): the weight is q·s exactly (or bf16(q·s) on the tensor-core path, which the
        // reference models), so the same fp32-sum bounds as the bf16-weight ops; the GEMV scales per-group partial sums.
        ("gemm_int4", DType.F32) => new(2e-6 * Math.Sqrt(Math.Max(k, 1)), 1e-4),
        ("gemm_int4", DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), Bf16Ulp),
        ("moe_int4", DType.F32) => new(2e-6 * Math.Sqrt(Math.Max(k, 1)), 1e-4),
        ("moe_int4", DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), 3 * Bf16Ulp),
        // MoE steps (router logits/scores, h, out, combine) against the reference fed the device's inputs to that
        // step: fp32 sums as gemm; in bf16 each HF rounding point (gate, up, silu, product) can land one ulp apart.
        ("moe", DType.F32) => new(2e-6 * Math.Sqrt(Math.Max(k, 1)), 1e-4),
        ("moe", DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), 3 * Bf16Ulp),
        // The whole MoE layer from x alone: the steps' differences compound through the second GEMM.
        ("moe.layer", DType.F32) => new(1e-5 * Math.Sqrt(Math.Max(k, 1)), 2e-4),
        ("moe.layer", DType.BF16) => new(2e-3, 3 * Bf16Ulp),
        // FP8 GEMM (f8f8bf16_rowwise): e4m3 products are exact, the fp32 sum errs as gemm's, and the output is rounded
        // to bf16 (also when stored as f32), so one bf16 ulp apart at a rounding boundary.
        ("gemm_fp8", DType.F32 or DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), Bf16Ulp),
        // FP8 MoE steps (h, out, combine) from the device's own quantized inputs: gate and up are bf16-rounded GEMM outputs
        // (one ulp at a boundary), then silu (fast exp) and the product; as moe's bf16 steps, in both activation dtypes.
        ("moe_fp8", DType.F32 or DType.BF16) => new(1e-5 + 2e-6 * Math.Sqrt(Math.Max(k, 1)), 3 * Bf16Ulp),
        // The whole FP8 layer from x alone: aq is bit-exact, but a one-ulp difference in h (fp32 sum order, fast silu) can
        // move an e4m3 rounding of hq by one step (1/16–1/8 of that element), which moves an output by ~|h_i·w_ij|/8 ≈
        // 3e-3 at the test scales (h ~ 0.3, w ~ 1/√I) — the fixture README's "implementations that are all correct differ".
        // Measured on the emulator: every case within 3e-8 absolute (no flip); the bound allows about one flip per output.
        ("moe_fp8.layer", DType.F32 or DType.BF16) => new(5e-3, 2e-2),
        // attention: O is a convex combination of V rows (|O| ≲ 1 for V ~ N(0,1)); fp32 scores, exp2 of scores
        // scaled by log2 e, and fp32 sums over ≤ a few hundred keys err by ~1e-6 absolute.
        ("attention", DType.F32) => new(1e-5, 1e-4),
        ("attention", DType.BF16) => new(1e-5, Bf16Ulp),
        // tensor-core P·V takes P rounded to bf16 (relative 2^-9 per weight, as FlashAttention-2 does): an absolute
        // error up to ~2^-9·max|v| on top of the output's own rounding.
        ("attention.mma", DType.BF16) => new(4e-3, Bf16Ulp),
        // fp32 mean and centred variance vs double. The fp32 mean's own rounding error (up to (⌈log2 cols⌉+3)·2^-24·|mean|,
        // ~4e-5 at the "offset" cases' mean of 64) reaches every output as |w|·inv·δmean: LayerNormSpec adds that
        // per case on top of this base (F32Tolerance); 1e-5 absolute covers results near 0 otherwise.
        ("layernorm", DType.F32) => new(1e-5, 2e-5),
        ("layernorm", DType.BF16) => new(1e-5, Bf16Ulp),
        // fp32 x + b, then erff (a few ulp): where GELU's 1 + erf(v/√2) → 0 the absolute error is ~|v|·2^-24.
        ("bias_act", DType.F32) => new(1e-6, 2e-5),
        (_, DType.BF16) => new(1e-6, Bf16Ulp),
        _ => throw new ArgumentException($"no tolerance for op '{op}' with {output} output"),
    };
}
