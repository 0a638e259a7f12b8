namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/quantize_fp8.cu: FBGEMM row-wise FP8 (OCP e4m3fn: bias 7, max 448, no infinities, NaN =
/// 0x7F/0xFF). Per row: <c>s = max(min(max|x|, ub) / 448, 1/(448·512))</c> (fp32, IEEE division; max|x| ignores NaN;
/// ub = +inf for weights), <c>q = e4m3(x / s)</c> — round to nearest even, saturating to ±448, NaN → 0x7F, the sign of
/// zero kept. The e4m3 rounding here is written independently of the kernels' integer trick: it rounds in double by
/// the value grid (exact: every candidate and midpoint is a double).
/// </summary>
internal static class QuantizeFp8
{
    public const float MaxE4M3 = 448f;
    /// <summary>1/(448·512) rounded to fp32: the smallest scale (a zero row gets it).</summary>
    public static readonly float MinScale = Div(1f, MaxE4M3 * 512f);
    static float Div(float a, float b) => a / b;

    /// <summary>The value of an e4m3 code (NaN for 0x7F/0xFF).</summary>
    public static float ToFloat(byte code)
    {
        int e = (code >> 3) & 15, m = code & 7;
        if ((code & 0x7f) == 0x7f) return float.NaN;
        double mag = e == 0 ? Math.ScaleB(m, -9) : Math.ScaleB(8 + m, e - 10);
        return (float)((code & 0x80) != 0 ? -mag : mag);
    }

    /// <summary>f32 → e4m3, round to nearest even, |x| ≥ 448 (incl. inf) → ±448, NaN → 0x7F.</summary>
    public static byte FromFloat(float x)
    {
        if (float.IsNaN(x)) return 0x7f;
        byte sign = (byte)(float.IsNegative(x) ? 0x80 : 0);
        double a = Math.Abs((double)x);
        if (a >= 448.0) return (byte)(sign | 0x7e);
        if (a < Math.ScaleB(1.0, -6))
        {   // subnormal grid m·2^-9, m = 0..8 (8 is the smallest normal, code 0x08)
            double q = Math.Round(a * 512.0, MidpointRounding.ToEven);
            return (byte)(sign | (int)q);
        }
        int e = Math.ILogB(a);                                     // a in [2^e, 2^(e+1)), e in [-6, 8]
        double mm = Math.Round(a / Math.ScaleB(1.0, e) * 8.0 - 8.0, MidpointRounding.ToEven);  // 0..8
        if (mm == 8) { e++; mm = 0; }
        return (byte)(sign | ((e + 7) << 3) | (int)mm);
    }

    public static float RowScale(float amax, float ub) => MathF.Max(MathF.Min(amax, ub) / MaxE4M3, MinScale);

    /// <summary>One row: writes <paramref name="q"/> and returns the scale.</summary>
    public static float Row(ReadOnlySpan<float> x, Span<byte> q, float ub)
    {
        Checks.Length(q, x.Length, nameof(q));
        float amax = 0;
        foreach (var v in x) { float a = MathF.Abs(v); if (a > amax) amax = a; }  // NaN compares false: ignored
        float s = RowScale(amax, ub);
        for (int i = 0; i < x.Length; i++) q[i] = FromFloat(x[i] / s);
        return s;
    }

    /// <summary>Dynamic per-row activation quantization (kernel quantize_fp8_rows_*): x [rows, k] → q [rows, k], s [rows].</summary>
    public static void Rows(ReadOnlySpan<float> x, Span<byte> q, Span<float> s, int rows, int k, float ub)
    {
        int n = Checks.Elements(rows, k, nameof(rows), nameof(k));
        Checks.Length(x, n, nameof(x)); Checks.Length(q, n, nameof(q)); Checks.Length(s, rows, nameof(s));
        for (int r = 0; r < rows; r++) s[r] = Row(x.Slice(r * k, k), q.Slice(r * k, k), ub);
    }

    /// <summary>
    /// Weight quantization per output row (no bound): w [batch, n, k] (output-major) or [batch, k, n] (input-major, HF's
    /// routed experts) → q [batch, n, k], s [batch, n].
    /// </summary>
    public static void Weights(ReadOnlySpan<float> w, bool inputMajor, Span<byte> q, Span<float> s, int batch, int n, int k)
    {
        long total = (long)batch * n * k;
        Checks.Length(w, total, nameof(w)); Checks.Length(q, total, nameof(q)); Checks.Length(s, (long)batch * n, nameof(s));
        var row = new float[k];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < n; j++)
            {
                for (int i = 0; i < k; i++) row[i] = inputMajor ? w[(int)(((long)b * k + i) * n + j)] : w[(int)(((long)b * n + j) * k + i)];
                s[b * n + j] = Row(row, q.Slice((int)(((long)b * n + j) * k), k), float.PositiveInfinity);
            }
    }

    /// <summary>The byte transpose of kernel quantize_fp8_relayout: src [batch, k, n] → dst [batch, n, k].</summary>
    public static void Relayout(ReadOnlySpan<byte> src, Span<byte> dst, int batch, int k, int n)
    {
        long total = (long)batch * n * k;
        Checks.Length(src, total, nameof(src)); Checks.Length(dst, total, nameof(dst));
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < n; j++) dst[(int)(((long)b * n + j) * k + i)] = src[(int)(((long)b * k + i) * n + j)];
    }
}
