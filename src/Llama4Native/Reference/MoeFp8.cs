namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/moe_fp8.cu: the routed experts with FP8 (FBGEMM row-wise e4m3) weights, per the fixture
/// README of tiny-maverick-fp8 ("Inference math"). For each routed (token, expert e) pair:
/// <list type="number">
/// <item><c>a = x[token] · score</c> in the activation dtype (rounded to bf16 in bf16 mode, as <see cref="Moe"/>);</item>
/// <item><c>aq, as = quantize_fp8_per_row(a, ub)</c> (<see cref="QuantizeFp8.Row"/>);</item>
/// <item><c>gate, up = bf16((aq · Wgu[e]ᵀ) · as · ws)</c> (<see cref="GemmFp8.Dot"/>);</item>
/// <item><c>h = silu(gate) · up</c> — fp32, or in bf16 mode silu(gate) and the product rounded to bf16;</item>
/// <item><c>hq, hs = quantize_fp8_per_row(h, ub)</c>; <c>out = bf16((hq · Wd[e]ᵀ) · hs · wsd)</c>;</item>
/// <item>the outputs summed per token as <see cref="Moe.Combine"/> does.</item>
/// </list>
/// Weights are e4m3 codes, output-major (the runtime's layout): wgu [E, 2I, D] (rows 0..I−1 gate, I..2I−1 up), wd [E, D, I],
/// scales [E, 2I] and [E, D]; or, with <c>inputMajor</c>, exactly as an FP8 checkpoint stores them: gate_up_proj
/// [E, D, 2I], down_proj [E, I, D], the same scales (one per output channel) — the golden math read straight off the file.
/// </summary>
internal static class MoeFp8
{
    static float R(double v, bool bf16) => bf16 ? BF16.Round((float)v) : (float)v;

    /// <summary>Steps 1–2 for one row: a = x·score in the activation dtype, quantized. Returns the scale.</summary>
    public static float QuantizeInput(ReadOnlySpan<float> xRow, float score, bool bf16, float ub, Span<byte> q)
    {
        var a = new float[xRow.Length];
        for (int d = 0; d < a.Length; d++) a[d] = R(xRow[d] * score, bf16);  // fp32 product, as the kernels
        return QuantizeFp8.Row(a, q, ub);
    }

    /// <summary>Steps 3–4 for one row: h [inter] from aq [dim] (output-major wgu).</summary>
    public static void GateUpRow(ReadOnlySpan<byte> aq, float aScale, ReadOnlySpan<byte> wgu, ReadOnlySpan<float> wguScale, int expert,
                                 int dim, int inter, Span<float> h, bool bf16)
        => GateUp(aq, aScale, wgu, wguScale, expert, dim, inter, h, bf16, inputMajor: false);

    /// <summary>Step 5's GEMM for one row: out [dim] from hq [inter] (output-major wd).</summary>
    public static void DownRow(ReadOnlySpan<byte> hq, float hScale, ReadOnlySpan<byte> wd, ReadOnlySpan<float> wdScale, int expert,
                               int inter, int dim, Span<float> outRow)
        => Down(hq, hScale, wd, wdScale, expert, inter, dim, outRow, inputMajor: false);

    static void GateUp(ReadOnlySpan<byte> aq, float aScale, ReadOnlySpan<byte> wgu, ReadOnlySpan<float> wguScale, int expert,
                       int dim, int inter, Span<float> h, bool bf16, bool inputMajor)
    {
        Checks.Length(aq, dim, nameof(aq)); Checks.Length(h, inter, nameof(h));
        var lut = GemmFp8.Table();
        long w0 = (long)expert * 2 * inter * dim;
        for (int j = 0; j < inter; j++)
        {
            double g = 0, u = 0;
            for (int d = 0; d < dim; d++)
            {
                long ig = inputMajor ? w0 + (long)d * 2 * inter + j : w0 + (long)j * dim + d;
                long iu = inputMajor ? ig + inter : ig + (long)inter * dim;
                g += (double)lut[aq[d]] * lut[wgu[(int)ig]];
                u += (double)lut[aq[d]] * lut[wgu[(int)iu]];
            }
            float gr = BF16.Round((float)g * aScale * wguScale[expert * 2 * inter + j]);
            float ur = BF16.Round((float)u * aScale * wguScale[expert * 2 * inter + inter + j]);
            h[j] = R((double)R(SiluMul.Silu(gr), bf16) * ur, bf16);
        }
    }

    static void Down(ReadOnlySpan<byte> hq, float hScale, ReadOnlySpan<byte> wd, ReadOnlySpan<float> wdScale, int expert,
                     int inter, int dim, Span<float> outRow, bool inputMajor)
    {
        Checks.Length(hq, inter, nameof(hq)); Checks.Length(outRow, dim, nameof(outRow));
        var lut = GemmFp8.Table();
        long w0 = (long)expert * inter * dim;
        for (int j = 0; j < dim; j++)
        {
            double s = 0;
            for (int i = 0; i < inter; i++) s += (double)lut[hq[i]] * lut[wd[(int)(inputMajor ? w0 + (long)i * dim + j : w0 + (long)j * inter + i)]];
            outRow[j] = BF16.Round((float)s * hScale * wdScale[expert * dim + j]);
        }
    }

    /// <summary>The experts for a given routing, from x alone: y (+)= Σ_chosen expert_e(x · score).</summary>
    /// <param name="x">[tokens, dim]</param><param name="topkIdx">[tokens, k]</param><param name="topkScore">[tokens, k]</param>
    /// <param name="wgu">e4m3 [E, 2I, D] (or [E, D, 2I] input-major)</param><param name="wguScale">[E, 2I]</param>
    /// <param name="wd">e4m3 [E, D, I] (or [E, I, D] input-major)</param><param name="wdScale">[E, D]</param><param name="y">[tokens, dim]</param>
    public static void Experts(ReadOnlySpan<float> x, ReadOnlySpan<int> topkIdx, ReadOnlySpan<float> topkScore,
                               ReadOnlySpan<byte> wgu, ReadOnlySpan<float> wguScale, ReadOnlySpan<byte> wd, ReadOnlySpan<float> wdScale,
                               Span<float> y, int tokens, int dim, int inter, int experts, int k, bool accumulate, bool bf16, float ub,
                               bool inputMajor = false)
    {
        Checks.Length(x, Checks.Elements(tokens, dim, nameof(tokens), nameof(dim)), nameof(x));
        Checks.Length(topkIdx, (long)tokens * k, nameof(topkIdx)); Checks.Length(topkScore, (long)tokens * k, nameof(topkScore));
        Checks.Length(wgu, (long)experts * 2 * inter * dim, nameof(wgu)); Checks.Length(wguScale, (long)experts * 2 * inter, nameof(wguScale));
        Checks.Length(wd, (long)experts * inter * dim, nameof(wd)); Checks.Length(wdScale, (long)experts * dim, nameof(wdScale));
        int n = tokens * k;
        var outRows = new float[(long)n * dim];
        var slotRow = new int[n];
        var aq = new byte[dim]; var h = new float[inter]; var hq = new byte[inter];
        for (int i = 0; i < n; i++)
        {
            int e = topkIdx[i];
            if ((uint)e >= (uint)experts) { slotRow[i] = -1; continue; }
            slotRow[i] = i;
            float aS = QuantizeInput(x.Slice(i / k * dim, dim), topkScore[i], bf16, ub, aq);
            GateUp(aq, aS, wgu, wguScale, e, dim, inter, h, bf16, inputMajor);
            float hS = QuantizeFp8.Row(h, hq, ub);
            Down(hq, hS, wd, wdScale, e, inter, dim, outRows.AsSpan(i * dim, dim), inputMajor);
        }
        Moe.Combine(outRows, slotRow, topkIdx, y, tokens, dim, k, accumulate, bf16);
    }
}
