namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/moe.cu: Llama 4's routed mixture-of-experts FFN (SPEC-llama4.md "FFN"), step by step
/// and as a whole, in plain loops with double accumulation.
/// <list type="bullet">
/// <item>Router: <c>logits [T, E] = x [T, D] · Wrᵀ</c> (Wr [E, D]); the top-k logits per token (NaN largest, ties to
/// the lower expert index); <c>score = sigmoid(logit)</c> of the chosen, no softmax, no renormalisation.</item>
/// <item>Align: the (token, slot) pairs t·k+s grouped by expert, stable, each expert's group padded to <c>bm</c> rows.</item>
/// <item>Experts: <c>y[t] = Σ_chosen expert_e(x[t] · score)</c>, <c>expert_e(u) = (silu(u·Wgu[e][:, :I]) ⊙ (u·Wgu[e][:, I:]))·Wd[e]</c>,
/// Wgu [E, D, 2I], Wd [E, I, D] (input-major); the sum over a token's experts in ascending expert order, optionally
/// added to an existing y (the shared expert's output).</item>
/// </list>
/// <c>bf16</c> = the activation dtype is bf16: values are rounded to bf16 exactly where Hugging Face's
/// bf16 forward rounds (the logits, the score, x·score, gate, up, silu(gate), the product, each expert's output, the
/// sum over experts, the residual add); otherwise nothing is rounded. Inputs are floats holding the device's values
/// (bf16 weights widened exactly).
/// </summary>
internal static class Moe
{
    static float R(double v, bool bf16) => bf16 ? BF16.Round((float)v) : (float)v;
    static bool Better(float v, float best) => (float.IsNaN(v) && !float.IsNaN(best)) || v > best;

    /// <summary>Rows after padding in the worst case: T·k + min(E, T·k)·(bm − 1).</summary>
    public static long MaxRows(long tokens, int k, int experts, int bm) => tokens * k + Math.Min(experts, tokens * k) * (bm - 1);

    /// <param name="x">[tokens, dim]</param><param name="wr">[experts, dim]</param><param name="logits">[tokens, experts]</param>
    /// <param name="topkIdx">[tokens, k]</param><param name="topkScore">[tokens, k]</param>
    public static void Router(ReadOnlySpan<float> x, ReadOnlySpan<float> wr, Span<float> logits, Span<int> topkIdx, Span<float> topkScore,
                              int tokens, int dim, int experts, int k, bool bf16)
    {
        Checks.Length(x, Checks.Elements(tokens, dim, nameof(tokens), nameof(dim)), nameof(x));
        Checks.Length(wr, Checks.Elements(experts, dim, nameof(experts), nameof(dim)), nameof(wr));
        Checks.Length(logits, Checks.Elements(tokens, experts, nameof(tokens), nameof(experts)), nameof(logits));
        CheckK(k, experts);
        Checks.Length(topkIdx, (long)tokens * k, nameof(topkIdx));
        Checks.Length(topkScore, (long)tokens * k, nameof(topkScore));
        for (int t = 0; t < tokens; t++)
        {
            for (int e = 0; e < experts; e++)
            {
                double s = 0;
                for (int d = 0; d < dim; d++) s += (double)x[t * dim + d] * wr[e * dim + d];
                logits[t * experts + e] = R(s, bf16);
            }
        }
        TopK(logits, topkIdx, tokens, experts, k);
        for (int q = 0; q < tokens * k; q++)
            topkScore[q] = R(1.0 / (1.0 + Math.Exp(-(double)logits[q / k * experts + topkIdx[q]])), bf16);
    }

    /// <summary>torch.topk's choice per row: NaN above everything, then by value; equal values to the lower index.</summary>
    /// <param name="logits">[tokens, experts]</param><param name="topkIdx">[tokens, k], in descending order</param>
    public static void TopK(ReadOnlySpan<float> logits, Span<int> topkIdx, int tokens, int experts, int k)
    {
        Checks.Length(logits, Checks.Elements(tokens, experts, nameof(tokens), nameof(experts)), nameof(logits));
        CheckK(k, experts);
        Checks.Length(topkIdx, (long)tokens * k, nameof(topkIdx));
        var taken = new bool[experts];
        for (int t = 0; t < tokens; t++)
        {
            Array.Clear(taken);
            for (int j = 0; j < k; j++)
            {
                int best = -1; float bv = 0;
                for (int e = 0; e < experts; e++)
                {
                    if (taken[e]) continue;
                    float v = logits[t * experts + e];
                    if (best < 0 || Better(v, bv)) { best = e; bv = v; }
                }
                taken[best] = true;
                topkIdx[t * k + j] = best;
            }
        }
    }

    /// <summary>The grouping (kernel moe_align). Expert ids outside [0, E) are dropped (slotRow −1).</summary>
    /// <param name="topkIdx">[tokens·k]</param><param name="sortedSlots">[≥ total] slot ids t·k+s grouped by expert, −1 = padding</param>
    /// <param name="slotRow">[tokens·k] the row of each slot</param><param name="tileExpert">[≥ total/bm]</param>
    /// <param name="expertOffsets">[experts + 1] padded starts; [experts] = total padded rows</param>
    /// <returns>total padded rows</returns>
    public static int Align(ReadOnlySpan<int> topkIdx, int tokens, int k, int experts, int bm,
                            Span<int> sortedSlots, Span<int> slotRow, Span<int> tileExpert, Span<int> expertOffsets, int firstExpert = 0)
    {
        int n = Checks.Elements(tokens, k, nameof(tokens), nameof(k));
        Checks.Positive(experts, nameof(experts));
        Checks.Positive(bm, nameof(bm));
        Checks.Length(topkIdx, n, nameof(topkIdx));
        Checks.Length(slotRow, n, nameof(slotRow));
        Checks.Length(expertOffsets, experts + 1L, nameof(expertOffsets));
        var count = new int[experts];
        foreach (var g in topkIdx) if ((uint)(g - firstExpert) < (uint)experts) count[g - firstExpert]++;
        int off = 0;
        for (int e = 0; e < experts; e++) { expertOffsets[e] = off; off += (count[e] + bm - 1) / bm * bm; }
        expertOffsets[experts] = off;
        if (sortedSlots.Length < off) throw new ArgumentException($"sortedSlots must hold at least {off} elements, got {sortedSlots.Length}.", nameof(sortedSlots));
        if (tileExpert.Length < off / bm) throw new ArgumentException($"tileExpert must hold at least {off / bm} elements, got {tileExpert.Length}.", nameof(tileExpert));
        sortedSlots[..off].Fill(-1);
        var pos = new int[experts];
        for (int e = 0; e < experts; e++) pos[e] = expertOffsets[e];
        for (int i = 0; i < n; i++)
        {
            int e = topkIdx[i] - firstExpert;
            if ((uint)e >= (uint)experts) { slotRow[i] = -1; continue; }
            sortedSlots[pos[e]] = i; slotRow[i] = pos[e]++;
        }
        for (int e = 0; e < experts; e++)
            for (int tile = expertOffsets[e] / bm; tile < expertOffsets[e + 1] / bm; tile++) tileExpert[tile] = e;
        return off;
    }

    /// <summary>One padded row of the gate_up step: h = silu(a·Wg) ⊙ (a·Wu), a = x[token]·score (zeros for padding).</summary>
    /// <param name="xRow">[dim]</param><param name="wgu">[experts, dim, 2·inter]</param><param name="h">[inter]</param>
    public static void GateUpRow(ReadOnlySpan<float> xRow, float score, ReadOnlySpan<float> wgu, int expert, int dim, int inter, Span<float> h, bool bf16)
    {
        Checks.Length(xRow, dim, nameof(xRow));
        Checks.Length(h, inter, nameof(h));
        var a = new float[dim];
        for (int d = 0; d < dim; d++) a[d] = R((double)xRow[d] * score, bf16);
        long w0 = (long)expert * dim * 2 * inter;
        for (int j = 0; j < inter; j++)
        {
            double g = 0, u = 0;
            for (int d = 0; d < dim; d++)
            {
                g += (double)a[d] * wgu[(int)(w0 + (long)d * 2 * inter + j)];
                u += (double)a[d] * wgu[(int)(w0 + (long)d * 2 * inter + inter + j)];
            }
            float gr = R(g, bf16), ur = R(u, bf16);
            h[j] = R((double)R(SiluMul.Silu(gr), bf16) * ur, bf16);
        }
    }

    /// <summary>One row of the down step: out = h · Wd[e].</summary>
    /// <param name="hRow">[inter]</param><param name="wd">[experts, inter, dim]</param><param name="outRow">[dim]</param>
    public static void DownRow(ReadOnlySpan<float> hRow, ReadOnlySpan<float> wd, int expert, int inter, int dim, Span<float> outRow, bool bf16)
    {
        Checks.Length(hRow, inter, nameof(hRow));
        Checks.Length(outRow, dim, nameof(outRow));
        long w0 = (long)expert * inter * dim;
        for (int j = 0; j < dim; j++)
        {
            double s = 0;
            for (int i = 0; i < inter; i++) s += (double)hRow[i] * wd[(int)(w0 + (long)i * dim + j)];
            outRow[j] = R(s, bf16);
        }
    }

    /// <summary>The combine: y[t] (+)= Σ over t's slots, in ascending (expert, slot) order, of out[slotRow[t·k+s]].</summary>
    /// <param name="outRows">[≥ rows, dim]</param><param name="slotRow">[tokens·k]</param><param name="topkIdx">[tokens·k]</param><param name="y">[tokens, dim]</param>
    public static void Combine(ReadOnlySpan<float> outRows, ReadOnlySpan<int> slotRow, ReadOnlySpan<int> topkIdx, Span<float> y,
                               int tokens, int dim, int k, bool accumulate, bool bf16)
    {
        Checks.Length(y, Checks.Elements(tokens, dim, nameof(tokens), nameof(dim)), nameof(y));
        Checks.Length(slotRow, (long)tokens * k, nameof(slotRow));
        Checks.Length(topkIdx, (long)tokens * k, nameof(topkIdx));
        for (int t = 0; t < tokens; t++)
        {
            var experts = topkIdx.Slice(t * k, k).ToArray();
            var order = Enumerable.Range(0, k).OrderBy(s => experts[s]).ThenBy(s => s).ToArray();
            for (int j = 0; j < dim; j++)
            {
                double s = 0;
                foreach (int q in order) { int row = slotRow[t * k + q]; if (row >= 0) s += outRows[row * dim + j]; }
                y[t * dim + j] = accumulate ? R((double)R(s, bf16) + y[t * dim + j], bf16) : R(s, bf16);
            }
        }
    }

    /// <summary>
    /// The experts for a given routing: y (+)= Σ_chosen expert_e(x · score). Rounding as in HF (see the class).
    /// </summary>
    /// <param name="x">[tokens, dim]</param><param name="topkIdx">[tokens, k]</param><param name="topkScore">[tokens, k]</param>
    /// <param name="wgu">[experts, dim, 2·inter]</param><param name="wd">[experts, inter, dim]</param><param name="y">[tokens, dim]</param>
    public static void Experts(ReadOnlySpan<float> x, ReadOnlySpan<int> topkIdx, ReadOnlySpan<float> topkScore, ReadOnlySpan<float> wgu,
                               ReadOnlySpan<float> wd, Span<float> y, int tokens, int dim, int inter, int experts, int k, bool accumulate, bool bf16)
    {
        Checks.Length(x, Checks.Elements(tokens, dim, nameof(tokens), nameof(dim)), nameof(x));
        CheckK(k, experts);
        Checks.Length(topkIdx, (long)tokens * k, nameof(topkIdx));
        Checks.Length(topkScore, (long)tokens * k, nameof(topkScore));
        Checks.Length(wgu, (long)experts * dim * 2 * inter, nameof(wgu));
        Checks.Length(wd, (long)experts * inter * dim, nameof(wd));
        Checks.Length(y, (long)tokens * dim, nameof(y));
        int n = tokens * k;
        var outRows = new float[(long)n * dim];
        var slotRow = new int[n];
        var h = new float[inter];
        for (int i = 0; i < n; i++)
        {
            int e = topkIdx[i];
            if ((uint)e >= (uint)experts) { slotRow[i] = -1; continue; }
            slotRow[i] = i;
            GateUpRow(x.Slice(i / k * dim, dim), topkScore[i], wgu, e, dim, inter, h, bf16);
            DownRow(h, wd, e, inter, dim, outRows.AsSpan(i * dim, dim), bf16);
        }
        Combine(outRows, slotRow, topkIdx, y, tokens, dim, k, accumulate, bf16);
    }

    /// <summary>The whole routed MoE: router, then experts. Returns the logits [T, E] and the routing.</summary>
    public static void Layer(ReadOnlySpan<float> x, ReadOnlySpan<float> wr, ReadOnlySpan<float> wgu, ReadOnlySpan<float> wd, Span<float> y,
                             Span<float> logits, Span<int> topkIdx, Span<float> topkScore,
                             int tokens, int dim, int inter, int experts, int k, bool accumulate, bool bf16)
    {
        Router(x, wr, logits, topkIdx, topkScore, tokens, dim, experts, k, bf16);
        Experts(x, topkIdx, topkScore, wgu, wd, y, tokens, dim, inter, experts, k, accumulate, bf16);
    }

    static void CheckK(int k, int experts)
    {
        Checks.Positive(experts, nameof(experts));
        if (k < 1 || k > experts) throw new ArgumentException($"k must be in [1, experts = {experts}], got {k}.", nameof(k));
    }
}
