namespace Llama4Native.Reference;

/// <summary>Rotary embedding on interleaved pairs, the weightless QK norm, and NoPE temperature tuning (kernels/rope.cu).</summary>
internal static class Rope
{
    /// <summary>
    /// x[t, h, 2j..2j+1] rotated by angle = pos[t]·invFreq[j], the angle rounded to fp32 as the reference model
    /// computes it (an fp32 product), everything after in double; then optionally x·rsqrt(mean(x²)+eps) per row.
    /// </summary>
    /// <param name="x">[T, heads, d], in place</param><param name="pos">[T]</param><param name="invFreq">[d/2]</param>
    public static void Apply(Span<float> x, ReadOnlySpan<int> pos, ReadOnlySpan<float> invFreq, int heads, int d, bool qkNorm, float eps)
    {
        if (d % 2 != 0 || invFreq.Length != d / 2) throw new ArgumentException($"rope: d = {d} must be even with d/2 = {invFreq.Length} frequencies");
        if (x.Length != (long)pos.Length * heads * d) throw new ArgumentException($"rope: x has {x.Length} values, expected T·heads·d = {pos.Length}·{heads}·{d}");
        var row = new double[d];
        for (int t = 0; t < pos.Length; t++)
            for (int h = 0; h < heads; h++)
            {
                var xr = x.Slice((t * heads + h) * d, d);
                double ss = 0;
                for (int j = 0; j < d / 2; j++)
                {
                    double angle = (float)pos[t] * invFreq[j]; // fp32 product
                    double c = Math.Cos(angle), s = Math.Sin(angle), a = xr[2 * j], b = xr[2 * j + 1];
                    row[2 * j] = a * c - b * s;
                    row[2 * j + 1] = a * s + b * c;
                    ss += row[2 * j] * row[2 * j] + row[2 * j + 1] * row[2 * j + 1];
                }
                double scale = qkNorm ? 1 / Math.Sqrt(ss / d + eps) : 1;
                for (int i = 0; i < d; i++) xr[i] = (float)(row[i] * scale);
            }
    }

    /// <summary>x[t] *= 1 + attnScale·log1p(floor((pos[t]+1)/floorScale)).</summary>
    /// <param name="x">[T, heads·d], in place</param><param name="pos">[T]</param>
    public static void Temperature(Span<float> x, ReadOnlySpan<int> pos, float attnScale, float floorScale)
    {
        if (pos.Length == 0 || x.Length % pos.Length != 0) throw new ArgumentException($"temperature: x has {x.Length} values for {pos.Length} tokens");
        int per = x.Length / pos.Length;
        for (int t = 0; t < pos.Length; t++)
        {
            double s = 1 + attnScale * Math.Log(1 + Math.Floor(((float)pos[t] + 1f) / floorScale));
            for (int i = 0; i < per; i++) x[t * per + i] = (float)(x[t * per + i] * s);
        }
    }
}
