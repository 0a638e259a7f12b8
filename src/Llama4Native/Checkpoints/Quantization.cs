namespace Llama4Native.Checkpoints;

/// <summary>
/// On-the-fly weight quantization at load (../shared/SPEC-llama4.md § Quantization). A pre-quantized FP8
/// checkpoint needs none of this: its FP8 tensors are recognised by their dtype.
/// </summary>
public enum QuantizeMode
{
    /// <summary>Weights as stored in the checkpoint (bf16, or FP8 where the checkpoint has FP8 tensors).</summary>
    None,
    /// <summary>Meta's <c>int4_mixed</c>: routed AND shared experts of every MoE layer to symmetric int4 with f32 scales
    /// per group of G input elements; activations stay bf16 (W4A16).</summary>
    Int4,
    /// <summary>Meta's <c>fp8_mixed</c>: routed experts of MoE layers except the first and last decoder layer to FP8
    /// row-wise (FBGEMM), with dynamic per-token activation quantization.</summary>
    Fp8,
}

/// <summary>What to quantize at load and how.</summary>
/// <param name="Mode">The recipe.</param>
/// <param name="Int4GroupSize">G for <see cref="QuantizeMode.Int4"/>: input elements per scale (128 for the real models).</param>
/// <param name="ActivationScaleUb">FP8's activation scale upper bound (<c>activation_scale_ub</c>, 1200 in the release).</param>
internal sealed record QuantizeOptions(QuantizeMode Mode = QuantizeMode.None, int Int4GroupSize = 128, float ActivationScaleUb = 1200f)
{
    public static readonly QuantizeOptions None = new();

    /// <summary>Parses a CLI spelling: <c>none</c>, <c>int4</c>, <c>fp8</c> (case-insensitive).</summary>
    public static bool TryParseMode(string s, out QuantizeMode mode)
    {
        switch (s.ToLowerInvariant())
        {
            case "none": mode = QuantizeMode.None; return true;
            case "int4": mode = QuantizeMode.Int4; return true;
            case "fp8": mode = QuantizeMode.Fp8; return true;
            default: mode = default; return false;
        }
    }
}
