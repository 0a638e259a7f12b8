namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/moe_int4.cu: the grouped expert GEMMs with int4 experts are <see cref="Moe"/>'s steps
/// (<see cref="Moe.GateUpRow"/>, <see cref="Moe.DownRow"/>, <see cref="Moe.Experts"/>) with the dequantized weights
/// <c>w' = q·s</c> (<see cref="QuantizeInt4.Dequantize"/>) transposed back to Hugging Face's input-major layout, which
/// these helpers build. <c>bf16Weights</c>: w' rounded to bf16, what the tensor-core path feeds its MMA.
/// </summary>
internal static class MoeInt4
{
    /// <summary>wgu int4 [experts, 2·inter, dim] (packed [.., dim/2] bytes, scales [.., dim/group]) → float [experts, dim, 2·inter].</summary>
    public static float[] GateUpWeights(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int experts, int inter, int dim, int group, bool bf16Weights) =>
        Weights(packed, scales, experts, 2 * inter, dim, group, bf16Weights);

    /// <summary>wd int4 [experts, dim, inter] (packed [.., inter/2] bytes, scales [.., inter/group]) → float [experts, inter, dim].</summary>
    public static float[] DownWeights(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int experts, int inter, int dim, int group, bool bf16Weights) =>
        Weights(packed, scales, experts, dim, inter, group, bf16Weights);

    static float[] Weights(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int experts, int n, int k, int group, bool bf16Weights)
    {
        var w = QuantizeInt4.DequantizeInputMajor(packed, scales, experts, n, k, group);
        if (bf16Weights) for (int i = 0; i < w.Length; i++) w[i] = BF16.Round(w[i]);
        return w;
    }
}
