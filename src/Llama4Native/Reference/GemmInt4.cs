namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/gemm_int4.cu: <c>y [m, n] = x [m, k] · dequant(W)ᵀ</c>, W int4 [n, k] (packed even-k-low,
/// scales [n, k/group]), dequant = q·s (<see cref="QuantizeInt4.Dequantize"/>). Products and sums in double.
/// <c>bf16Weights</c>: the weight enters as bf16(q·s) — what the tensor-core path feeds its MMA —
/// instead of the exact q·s (the GEMV and simple paths). Output fp32; round it to bf16 for a bf16-output kernel.
/// </summary>
internal static class GemmInt4
{
    /// <param name="x">[m, k]</param><param name="packed">[n, k/2] bytes</param><param name="scales">[n, k/group]</param><param name="y">[m, n]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, Span<float> y,
                               int m, int n, int k, int group, bool bf16Weights = false)
    {
        Checks.Length(x, Checks.Elements(m, k, nameof(m), nameof(k)), nameof(x));
        Checks.Length(y, Checks.Elements(m, n, nameof(m), nameof(n)), nameof(y));
        var w = new float[(long)n * k];
        QuantizeInt4.Dequantize(packed, scales, n, k, group, w);
        if (bf16Weights) for (int i = 0; i < w.Length; i++) w[i] = BF16.Round(w[i]);
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                double s = 0;
                for (int q = 0; q < k; q++) s += (double)x[r * k + q] * w[(long)c * k + q];
                y[r * n + c] = (float)s;
            }
    }
}
