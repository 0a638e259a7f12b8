namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/vision_rope.cu, written from HF's Llama4VisionRotaryEmbedding + vision_apply_rotary_emb:
/// x [rows = tiles·(G²+1), heads, d] as d/2 complex pairs (x[2j], x[2j+1]); pair j &lt; d/4 is multiplied by
/// e^{i(col+1)f_j}, pair j ≥ d/4 by e^{i(row+1)f_(j−d/4)}, col = t % G, row = t / G for token t &lt; G² of its tile;
/// token G² (the class token) is left as is. f_k = fp32(1 / fp32(θ^(fp32(2k)/(d/2)))), the angle (pos+1)·f_k in
/// fp32 and cos/sin rounded to fp32 — exactly HF's fp32 table; the complex product in double, rounded once.
/// </summary>
internal static class VisionRope
{
    /// <summary>The fp32 angle HF's table holds for token <paramref name="t"/> (&lt; G²) and pair <paramref name="j"/>.</summary>
    public static float Angle(int t, int j, int d, int gridSide, float theta)
    {
        int q = d / 4, k = j < q ? j : j - q, p = j < q ? t % gridSide : t / gridSide;
        float ex = (float)(2 * k) / (float)(d / 2);
        float f = 1.0f / (float)Math.Pow(theta, ex);
        return (float)(p + 1) * f;
    }

    /// <param name="x">[rows, heads, d], rotated in place</param>
    public static void Forward(Span<float> x, int rows, int heads, int d, int tokensPerTile, int gridSide, float theta)
    {
        Checks.Positive(rows, nameof(rows)); Checks.Positive(heads, nameof(heads)); Checks.Positive(d, nameof(d));
        Checks.Positive(gridSide, nameof(gridSide));
        if (tokensPerTile != gridSide * gridSide + 1)
            throw new ArgumentException($"tokensPerTile must be gridSide² + 1 = {gridSide * gridSide + 1}, got {tokensPerTile}.", nameof(tokensPerTile));
        if (rows % tokensPerTile != 0) throw new ArgumentException($"rows = {rows} is not a multiple of tokensPerTile = {tokensPerTile}.", nameof(rows));
        if (d % 4 != 0) throw new ArgumentException($"d = {d} must be a multiple of 4.", nameof(d));
        Checks.Length(x, (long)rows * heads * d, nameof(x));
        for (int r = 0; r < rows; r++)
        {
            int t = r % tokensPerTile;
            if (t == gridSide * gridSide) continue;
            for (int j = 0; j < d / 2; j++)
            {
                float ang = Angle(t, j, d, gridSide, theta);
                double c = (float)Math.Cos(ang), s = (float)Math.Sin(ang);
                for (int h = 0; h < heads; h++)
                {
                    int o = (r * heads + h) * d + 2 * j;
                    double a = x[o], b = x[o + 1];
                    x[o] = (float)(a * c - b * s);
                    x[o + 1] = (float)(a * s + b * c);
                }
            }
        }
    }
}
