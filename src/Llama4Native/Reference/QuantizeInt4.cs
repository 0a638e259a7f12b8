namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/quantize_int4.cu: Meta's int4_mixed rule (SPEC-llama4.md § Quantization), in fp32 exactly as
/// torch computes it: per output row, groups of <c>group</c> consecutive input elements,
/// <c>s = max(max|w|, 1e-6) / 8</c>, <c>q = clamp(round_half_even(w / s), -8, 7)</c> (IEEE fp32 division),
/// <c>w' = q · s</c>. Storage: output-major [rows, K], two q per byte along K, the even k in the low nibble;
/// scales [rows, K/group].
/// </summary>
internal static class QuantizeInt4
{
    /// <summary>The group's scale from its largest magnitude: max(amax, 1e-6) / 8 in fp32.</summary>
    public static float Scale(float amax) => MathF.Max(amax, 1e-6f) / 8f;

    /// <summary>q for one weight: clamp(round_half_even(w / s), -8, 7), the division in fp32.</summary>
    public static int Q(float w, float s) => (int)Math.Clamp(MathF.Round(w / s, MidpointRounding.ToEven), -8f, 7f);

    /// <summary>Element <paramref name="index"/> (row-major over [rows, K]) of packed int4 data.</summary>
    public static int Nibble(ReadOnlySpan<byte> packed, long index)
    {
        int b = packed[(int)(index >> 1)];
        int v = (index & 1) == 0 ? b & 0xF : b >> 4;
        return v >= 8 ? v - 16 : v;
    }

    /// <summary>Quantizes <paramref name="batch"/> matrices.</summary>
    /// <param name="w">[batch, n, k] (output-major) or [batch, k, n] (<paramref name="inputMajor"/>)</param>
    /// <param name="packed">[batch, n, k/2] bytes</param><param name="scales">[batch, n, k/group]</param>
    public static void Quantize(ReadOnlySpan<float> w, int batch, int n, int k, int group, bool inputMajor, Span<byte> packed, Span<float> scales)
    {
        CheckShape(batch, n, k, group);
        long rows = (long)batch * n;
        Checks.Length(w, rows * k, nameof(w));
        Checks.Length(packed, rows * k / 2, nameof(packed));
        Checks.Length(scales, rows * (k / group), nameof(scales));
        for (long row = 0; row < rows; row++)
        {
            long b = row / n, nn = row % n;
            long At(int kk) => inputMajor ? (b * k + kk) * n + nn : row * k + kk;
            for (int g = 0; g < k / group; g++)
            {
                float amax = 0;
                for (int j = 0; j < group; j++) amax = MathF.Max(amax, MathF.Abs(w[(int)At(g * group + j)]));
                float s = Scale(amax);
                scales[(int)(row * (k / group) + g)] = s;
                for (int j = 0; j < group; j += 2)
                {
                    int kk = g * group + j;
                    int q0 = Q(w[(int)At(kk)], s), q1 = Q(w[(int)At(kk + 1)], s);
                    packed[(int)((row * k + kk) / 2)] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                }
            }
        }
    }

    /// <summary>w' = q · s (fp32, exact), output-major.</summary>
    /// <param name="packed">[rows, k/2] bytes</param><param name="scales">[rows, k/group]</param><param name="w">[rows, k]</param>
    public static void Dequantize(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int rows, int k, int group, Span<float> w)
    {
        CheckShape(1, rows, k, group);
        Checks.Length(packed, (long)rows * k / 2, nameof(packed));
        Checks.Length(scales, (long)rows * (k / group), nameof(scales));
        Checks.Length(w, (long)rows * k, nameof(w));
        for (long row = 0; row < rows; row++)
            for (int kk = 0; kk < k; kk++)
                w[(int)(row * k + kk)] = Nibble(packed, row * k + kk) * scales[(int)(row * (k / group) + kk / group)];
    }

    /// <summary>Dequantizes [batch, n, k] and transposes each matrix to input-major [batch, k, n] (HF's expert layout).</summary>
    public static float[] DequantizeInputMajor(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int batch, int n, int k, int group)
    {
        var om = new float[(long)batch * n * k];
        Dequantize(packed, scales, batch * n, k, group, om);
        var im = new float[om.Length];
        for (long b = 0; b < batch; b++)
            for (long nn = 0; nn < n; nn++)
                for (long kk = 0; kk < k; kk++)
                    im[(b * k + kk) * n + nn] = om[(b * n + nn) * k + kk];
        return im;
    }

    static void CheckShape(int batch, int n, int k, int group)
    {
        Checks.Positive(batch, nameof(batch));
        Checks.Positive(n, nameof(n));
        Checks.Positive(k, nameof(k));
        Checks.Positive(group, nameof(group));
        if (k % 2 != 0) throw new ArgumentException($"int4 packs pairs along K; K = {k} is odd.", nameof(k));
        if (group % 2 != 0 || k % group != 0)
            throw new ArgumentException($"K = {k} is not a multiple of the group size {group} (or the group is odd); pick an even group size dividing K.", nameof(group));
    }
}
