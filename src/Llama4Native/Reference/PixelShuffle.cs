namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/pixel_shuffle.cu: HF's pixel_shuffle(x, r) step by step, per tile — view [G, G, C], view
/// [G, Wr, C1], permute → [Wr, G, C1] (materialised), view [Wr, Wr, C2], permute → [Wr, Wr, C2] (materialised),
/// view [Wr², C2] — with Wr = G·r, C1 = C/r, C2 = C/r² (sizes from Kernels.PixelShuffle.Sizes). A permutation: exact.
/// </summary>
internal static class PixelShuffle
{
    /// <param name="x">[tiles, tokensIn, C]; the first N = G² rows of each tile are used</param>
    /// <param name="y">[tiles, Wr², C2]</param>
    public static void Forward(ReadOnlySpan<float> x, Span<float> y, int tiles, int tokensIn, int n, int c, double ratio)
    {
        Checks.Positive(tiles, nameof(tiles)); Checks.Positive(c, nameof(c));
        if (n > tokensIn) throw new ArgumentException($"n = {n} exceeds tokensIn = {tokensIn}.", nameof(n));
        var (g, wr, c1, c2) = Kernels.PixelShuffle.Sizes(n, c, ratio);
        Checks.Length(x, (long)tiles * tokensIn * c, nameof(x));
        Checks.Length(y, (long)tiles * wr * wr * c2, nameof(y));
        int per = n * c;
        var a = new float[per];
        var b = new float[per];
        for (int t = 0; t < tiles; t++)
        {
            x.Slice(t * tokensIn * c, per).CopyTo(a);                // [G, G, C] ≡ [G, Wr, C1] (views)
            for (int i = 0; i < g; i++)                               // permute(0, 2, 1, 3): [G, Wr, C1] → [Wr, G, C1]
                for (int j = 0; j < wr; j++)
                    for (int k = 0; k < c1; k++)
                        b[(j * g + i) * c1 + k] = a[(i * wr + j) * c1 + k];
            // b as [Wr, Wr, C2] (view); permute → [Wr(second), Wr(first), C2]
            var yt = y.Slice(t * per, per);
            for (int i = 0; i < wr; i++)
                for (int j = 0; j < wr; j++)
                    for (int k = 0; k < c2; k++)
                        yt[(j * wr + i) * c2 + k] = b[(i * wr + j) * c2 + k];
        }
    }
}
