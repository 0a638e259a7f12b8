namespace Llama4Native.Reference;

/// <summary>How B is stored in <c>C = A · B</c>.</summary>
internal enum GemmBLayout
{
    /// <summary>B stored [N, K] row-major (nn.Linear weights): C = A · Bᵀ. Kernels gemm_*_nk_*.</summary>
    NK,
    /// <summary>B stored [K, N] row-major (Llama 4's fused expert weights): C = A · B. Kernels gemm_*_kn_*.</summary>
    KN,
}

/// <summary>
/// Reference for kernels/gemm.cu: <c>C [M, N] = A [M, K] · B</c>, A row-major, B per <see cref="GemmBLayout"/>.
/// Products and sums in double (the oracle; the kernels accumulate in fp32). bf16 operands are widened
/// exactly; the output is fp32 — round it with <see cref="BF16.FromFloat(ReadOnlySpan{float}, Span{ushort})"/>
/// to compare a bf16-output kernel.
/// </summary>
internal static class Gemm
{
    /// <summary>fp32 operands.</summary>
    /// <param name="a">[m, k]</param><param name="b">[n, k] (NK) or [k, n] (KN)</param><param name="c">[m, n]</param>
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, GemmBLayout layout)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, layout);
        for (int i = 0; i < m; i++)
        {
            ReadOnlySpan<float> ai = a.Slice(i * k, k);
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                if (layout == GemmBLayout.NK)
                {
                    ReadOnlySpan<float> bj = b.Slice(j * k, k);
                    for (int p = 0; p < k; p++) s += (double)ai[p] * bj[p];
                }
                else
                {
                    for (int p = 0; p < k; p++) s += (double)ai[p] * b[p * n + j];
                }
                c[i * n + j] = (float)s;
            }
        }
    }

    /// <summary>bf16 A and B (kernels gemm_*_bf16_bf16_*).</summary>
    /// <param name="a">[m, k] bf16 bits</param><param name="b">[n, k] (NK) or [k, n] (KN) bf16 bits</param><param name="c">[m, n]</param>
    public static void Forward(ReadOnlySpan<ushort> a, ReadOnlySpan<ushort> b, Span<float> c, int m, int n, int k, GemmBLayout layout)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, layout);
        Forward(BF16.ToFloatArray(a), BF16.ToFloatArray(b), c, m, n, k, layout);
    }

    /// <summary>fp32 A, bf16 B (kernels gemm_simple_*_f32_bf16_f32).</summary>
    /// <param name="a">[m, k]</param><param name="b">[n, k] (NK) or [k, n] (KN) bf16 bits</param><param name="c">[m, n]</param>
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<ushort> b, Span<float> c, int m, int n, int k, GemmBLayout layout)
    {
        Check(a.Length, b.Length, c.Length, m, n, k, layout);
        Forward(a, BF16.ToFloatArray(b), c, m, n, k, layout);
    }

    private static void Check(int aLength, int bLength, int cLength, int m, int n, int k, GemmBLayout layout)
    {
        if (layout is not (GemmBLayout.NK or GemmBLayout.KN))
            throw new ArgumentException($"unknown B layout {layout}.", nameof(layout));
        int aN = Checks.Elements(m, k, nameof(m), nameof(k));
        int bN = Checks.Elements(n, k, nameof(n), nameof(k));
        int cN = Checks.Elements(m, n, nameof(m), nameof(n));
        if (aLength != aN) throw new ArgumentException($"a must hold exactly m·k = {aN} elements, got {aLength}.", "a");
        string bShape = layout == GemmBLayout.NK ? "[n, k]" : "[k, n]";
        if (bLength != bN) throw new ArgumentException($"b ({layout}: {bShape}) must hold exactly n·k = {bN} elements, got {bLength}.", "b");
        if (cLength != cN) throw new ArgumentException($"c must hold exactly m·n = {cN} elements, got {cLength}.", "c");
    }
}
