namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/vision_embed.cu (HF Llama4VisionModel.forward: cat([patches, class_embedding], dim=1) +
/// positional_embedding_vlm): <c>y[t, j] = patches[t, j] + pos[j]</c> for j &lt; N and <c>y[t, N] = cls + pos[N]</c>.
/// One fp32 add per element (exact as a double sum rounded to float); the caller rounds to bf16 for a bf16 output.
/// </summary>
internal static class VisionEmbed
{
    /// <param name="patches">[tiles, N, Dv]</param><param name="cls">[Dv]</param><param name="pos">[N+1, Dv]</param>
    /// <param name="y">[tiles, N+1, Dv]</param>
    public static void Forward(ReadOnlySpan<float> patches, ReadOnlySpan<float> cls, ReadOnlySpan<float> pos, Span<float> y, int tiles, int n, int dv)
    {
        Checks.Positive(tiles, nameof(tiles)); Checks.Positive(n, nameof(n)); Checks.Positive(dv, nameof(dv));
        Checks.Length(patches, (long)tiles * n * dv, nameof(patches));
        Checks.Length(cls, dv, nameof(cls));
        Checks.Length(pos, (long)(n + 1) * dv, nameof(pos));
        Checks.Length(y, (long)tiles * (n + 1) * dv, nameof(y));
        for (int t = 0; t < tiles; t++)
            for (int j = 0; j <= n; j++)
                for (int c = 0; c < dv; c++)
                {
                    double v = j < n ? patches[(t * n + j) * dv + c] : cls[c];
                    y[(t * (n + 1) + j) * dv + c] = (float)(v + pos[j * dv + c]);
                }
    }
}
