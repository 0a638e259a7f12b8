namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/scatter_rows.cu (HF: inputs_embeds.masked_scatter(image mask, projected features), i.e. the
/// features in order into the &lt;|patch|&gt; rows): <c>dst[index[i], :] = src[i, :]</c>; rows not named stay, an index
/// outside [0, T) is skipped. A copy (the caller rounds to bf16 for a bf16 dst).
/// </summary>
internal static class ScatterRows
{
    /// <param name="src">[n, D]</param><param name="index">[n]</param><param name="dst">[T, D], updated in place</param>
    public static void Forward(ReadOnlySpan<float> src, ReadOnlySpan<int> index, Span<float> dst, int n, int d, int t)
    {
        Checks.Positive(n, nameof(n)); Checks.Positive(d, nameof(d)); Checks.Positive(t, nameof(t));
        Checks.Length(src, (long)n * d, nameof(src));
        Checks.Length(index, n, nameof(index));
        Checks.Length(dst, (long)t * d, nameof(dst));
        for (int i = 0; i < n; i++)
        {
            int r = index[i];
            if (r < 0 || r >= t) continue;
            src.Slice(i * d, d).CopyTo(dst.Slice(r * d, d));
        }
    }

    /// <summary>The index HF's masked_scatter implies: the positions of <paramref name="patchToken"/> in <paramref name="ids"/>, in order.</summary>
    public static int[] PatchPositions(ReadOnlySpan<int> ids, int patchToken)
    {
        var r = new List<int>();
        for (int i = 0; i < ids.Length; i++) if (ids[i] == patchToken) r.Add(i);
        return [.. r];
    }
}
