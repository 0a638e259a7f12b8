namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/gemm_fp8.cu, FBGEMM's f8f8bf16_rowwise: <c>y[m, n] = bf16((Σ_k xq[m,k]·wq[n,k]) · xs[m] · ws[n])</c>
/// with e4m3 codes xq [M, K] and wq [N, K] (output-major). The sum is exact in double (e4m3 products are exact); it is
/// rounded to fp32 (what an fp32 accumulator holds at best), scaled in fp32 as (acc·xs)·ws, and rounded to bf16.
/// </summary>
internal static class GemmFp8
{
    public static void Forward(ReadOnlySpan<byte> xq, ReadOnlySpan<float> xs, ReadOnlySpan<byte> wq, ReadOnlySpan<float> ws,
                               Span<float> y, int m, int n, int k)
    {
        Checks.Length(xq, Checks.Elements(m, k, nameof(m), nameof(k)), nameof(xq));
        Checks.Length(wq, Checks.Elements(n, k, nameof(n), nameof(k)), nameof(wq));
        Checks.Length(xs, m, nameof(xs)); Checks.Length(ws, n, nameof(ws));
        Checks.Length(y, Checks.Elements(m, n, nameof(m), nameof(n)), nameof(y));
        var lut = Table();
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                y[i * n + j] = Dot(xq.Slice(i * k, k), xs[i], wq.Slice(j * k, k), ws[j], lut);
    }

    /// <summary>One output: bf16((Σ x·w) · xs · ws).</summary>
    public static float Dot(ReadOnlySpan<byte> x, float xs, ReadOnlySpan<byte> w, float ws, float[]? lut = null)
    {
        lut ??= Table();
        double s = 0;
        for (int q = 0; q < x.Length; q++) s += (double)lut[x[q]] * lut[w[q]];
        float acc = (float)s;
        return BF16.Round(acc * xs * ws);
    }

    /// <summary>The 256 e4m3 values.</summary>
    public static float[] Table() { var t = new float[256]; for (int c = 0; c < 256; c++) t[c] = QuantizeFp8.ToFloat((byte)c); return t; }
}
