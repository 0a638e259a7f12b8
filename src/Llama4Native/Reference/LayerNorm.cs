namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/layernorm.cu: <c>y = (x − mean) / sqrt(var + eps) · w + b</c> per row, var the biased
/// variance (torch's nn.LayerNorm). Mean and variance (of the centred values) in double; a bf16 output is rounded
/// once. In place (x and y the same memory) is allowed.
/// </summary>
internal static class LayerNorm
{
    /// <summary>fp32 x, fp32 w and b → fp32 y (kernel layernorm_f32_f32_f32).</summary>
    /// <param name="x">[rows, cols]</param><param name="w">[cols]</param><param name="b">[cols]</param><param name="y">[rows, cols]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> b, Span<float> y, int rows, int cols, float eps)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(w, cols, nameof(w));
        Checks.Length(b, cols, nameof(b));
        Checks.Length(y, n, nameof(y));
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> xr = x.Slice(r * cols, cols);
            double s = 0;
            for (int c = 0; c < cols; c++) s += xr[c];
            double mean = s / cols, ss = 0;
            for (int c = 0; c < cols; c++) { double d = xr[c] - mean; ss += d * d; }
            double inv = 1.0 / Math.Sqrt(ss / cols + eps);
            Span<float> yr = y.Slice(r * cols, cols);
            for (int c = 0; c < cols; c++) yr[c] = (float)((xr[c] - mean) * inv * w[c] + b[c]);
        }
    }

    /// <summary>fp32 x, bf16 w and b → fp32 y (kernel layernorm_f32_bf16_f32).</summary>
    /// <param name="x">[rows, cols]</param><param name="w">[cols] bf16 bits</param><param name="b">[cols] bf16 bits</param><param name="y">[rows, cols]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<ushort> w, ReadOnlySpan<ushort> b, Span<float> y, int rows, int cols, float eps)
    {
        Checks.Length(w, cols, nameof(w));
        Checks.Length(b, cols, nameof(b));
        Forward(x, BF16.ToFloatArray(w), BF16.ToFloatArray(b), y, rows, cols, eps);
    }

    /// <summary>bf16 x, w, b → bf16 y (kernel layernorm_bf16_bf16_bf16), one rounding at the end.</summary>
    /// <param name="x">[rows, cols] bf16 bits</param><param name="w">[cols] bf16 bits</param><param name="b">[cols] bf16 bits</param><param name="y">[rows, cols] bf16 bits</param>
    public static void Forward(ReadOnlySpan<ushort> x, ReadOnlySpan<ushort> w, ReadOnlySpan<ushort> b, Span<ushort> y, int rows, int cols, float eps)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(y, n, nameof(y));
        var yf = new float[n];
        Forward(BF16.ToFloatArray(x), w, b, yf, rows, cols, eps);
        BF16.FromFloat(yf, y);
    }
}
