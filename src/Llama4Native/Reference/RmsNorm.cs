namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/rmsnorm.cu: <c>y = x · rsqrt(mean(x²) + eps) · w</c> per row. The sum of squares and the
/// scale are computed in double (the oracle is more exact than the fp32 kernel); a bf16 output is rounded
/// once. The weightless form is Llama 4's QK norm. In place (x and y the same memory) is allowed.
/// </summary>
internal static class RmsNorm
{
    /// <summary>fp32 x, fp32 w → fp32 y (kernel rmsnorm_f32_f32_f32).</summary>
    /// <param name="x">[rows, cols]</param><param name="w">[cols]</param><param name="y">[rows, cols]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int rows, int cols, float eps)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(w, cols, nameof(w));
        Checks.Length(y, n, nameof(y));
        Core(x, w, y, rows, cols, eps);
    }

    /// <summary>fp32 x, bf16 w → fp32 y (kernel rmsnorm_f32_bf16_f32).</summary>
    /// <param name="x">[rows, cols]</param><param name="w">[cols] bf16 bits</param><param name="y">[rows, cols]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<ushort> w, Span<float> y, int rows, int cols, float eps)
    {
        Checks.Length(w, cols, nameof(w));
        Forward(x, BF16.ToFloatArray(w), y, rows, cols, eps);
    }

    /// <summary>bf16 x, bf16 w → bf16 y (kernel rmsnorm_bf16_bf16_bf16), fp32-or-better maths, one rounding.</summary>
    /// <param name="x">[rows, cols] bf16 bits</param><param name="w">[cols] bf16 bits</param><param name="y">[rows, cols] bf16 bits</param>
    public static void Forward(ReadOnlySpan<ushort> x, ReadOnlySpan<ushort> w, Span<ushort> y, int rows, int cols, float eps)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(w, cols, nameof(w));
        Checks.Length(y, n, nameof(y));
        var yf = new float[n];
        Core(BF16.ToFloatArray(x), BF16.ToFloatArray(w), yf, rows, cols, eps);
        BF16.FromFloat(yf, y);
    }

    /// <summary>No weight (QK norm), fp32 (kernel rmsnorm_noweight_f32).</summary>
    /// <param name="x">[rows, cols]</param><param name="y">[rows, cols]</param>
    public static void NoWeight(ReadOnlySpan<float> x, Span<float> y, int rows, int cols, float eps)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(y, n, nameof(y));
        Core(x, default, y, rows, cols, eps);
    }

    /// <summary>No weight (QK norm), bf16 in and out (kernel rmsnorm_noweight_bf16).</summary>
    /// <param name="x">[rows, cols] bf16 bits</param><param name="y">[rows, cols] bf16 bits</param>
    public static void NoWeight(ReadOnlySpan<ushort> x, Span<ushort> y, int rows, int cols, float eps)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(y, n, nameof(y));
        var yf = new float[n];
        Core(BF16.ToFloatArray(x), default, yf, rows, cols, eps);
        BF16.FromFloat(yf, y);
    }

    // w empty = no weight. Reads a whole row before writing it, so y may alias x.
    private static void Core(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int rows, int cols, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> xr = x.Slice(r * cols, cols);
            double ss = 0;
            for (int c = 0; c < cols; c++) ss += (double)xr[c] * xr[c];
            double inv = 1.0 / Math.Sqrt(ss / cols + eps);
            Span<float> yr = y.Slice(r * cols, cols);
            for (int c = 0; c < cols; c++)
                yr[c] = (float)(w.IsEmpty ? xr[c] * inv : xr[c] * inv * w[c]);
        }
    }
}
