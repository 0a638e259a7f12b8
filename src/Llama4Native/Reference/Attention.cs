namespace Llama4Native.Reference;

/// <summary>One sequence of a varlen attention batch (host side of the kernel's per-sequence device arrays).</summary>
/// <param name="QStart">first row of the sequence in the packed Q/O</param>
/// <param name="QLen">query rows</param>
/// <param name="KvLen">valid key slots</param>
/// <param name="QPos0">absolute position of query row 0</param>
/// <param name="KvPos0">absolute position of key slot 0</param>
/// <param name="KvOff">element offset of key slot 0, kv head 0, in K and V</param>
internal readonly record struct AttentionSeq(int QStart, int QLen, int KvLen, int QPos0, int KvPos0, long KvOff);

/// <summary>
/// Reference for kernels/attention.cu, plain loops in double: for every query row r of sequence b and head h,
/// <c>O = Σ_j softmax_j(q·k_j · scale) v_j</c> over the VISIBLE keys j only (the mask is explicit:
/// kpos = KvPos0 + j, qpos = QPos0 + r, visible iff kpos ≤ qpos and, when chunk &gt; 0, kpos / chunk == qpos / chunk).
/// GQA: head h reads kv head h / (H / Hkv). A row that sees no key yields zeros (the kernel's documented choice).
/// </summary>
internal static class Attention
{
    public static bool Visible(long qpos, long kpos, int chunk) => kpos <= qpos && (chunk == 0 || kpos / chunk == qpos / chunk);

    /// <param name="q">[totalQ, H, d]</param>
    /// <param name="k">key slot j, kv head g, dim i of a sequence at KvOff + j·kvRowStride + g·kvHeadStride + i</param>
    /// <param name="v">same layout as k</param>
    /// <param name="o">[totalQ, H, d]; rows not covered by a sequence are left untouched</param>
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o,
                               ReadOnlySpan<AttentionSeq> seqs, int heads, int kvHeads, int headDim,
                               long kvRowStride, long kvHeadStride, int chunk, double scale)
    {
        Checks.Positive(heads, nameof(heads));
        Checks.Positive(kvHeads, nameof(kvHeads));
        Checks.Positive(headDim, nameof(headDim));
        if (heads % kvHeads != 0) throw new ArgumentException($"heads ({heads}) must be a multiple of kvHeads ({kvHeads}).", nameof(kvHeads));
        if (chunk < 0) throw new ArgumentException($"chunk must be ≥ 0, got {chunk}.", nameof(chunk));
        if (q.Length % ((long)heads * headDim) != 0) throw new ArgumentException($"q holds {q.Length} elements, not a multiple of H·d = {heads * headDim}.", nameof(q));
        Checks.Length(o, q.Length, nameof(o));
        int group = heads / kvHeads, d = headDim;
        long totalQ = q.Length / ((long)heads * d);
        foreach (var s in seqs)
        {
            if (s.QStart < 0 || s.QLen < 0 || s.QStart + (long)s.QLen > totalQ || s.KvLen < 0 || s.QPos0 < 0 || s.KvPos0 < 0)
                throw new ArgumentException($"bad sequence {s} for {totalQ} query rows.", nameof(seqs));
            if (s.KvLen > 0)
            {
                long last = s.KvOff + (s.KvLen - 1) * kvRowStride + (kvHeads - 1) * kvHeadStride + d;
                if (s.KvOff < 0 || last > k.Length || last > v.Length)
                    throw new ArgumentException($"sequence {s} reads K/V up to element {last}, but K holds {k.Length} and V {v.Length}.", nameof(seqs));
            }
            var p = new double[Math.Max(s.KvLen, 1)];
            var acc = new double[d];
            for (int r = 0; r < s.QLen; r++)
                for (int h = 0; h < heads; h++)
                {
                    long qo = ((long)(s.QStart + r) * heads + h) * d, kvb = s.KvOff + (long)(h / group) * kvHeadStride;
                    long qpos = (long)s.QPos0 + r;
                    double mx = double.NegativeInfinity;
                    for (int j = 0; j < s.KvLen; j++)
                    {
                        if (!Visible(qpos, (long)s.KvPos0 + j, chunk)) { p[j] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (int i = 0; i < d; i++) dot += (double)q[(int)(qo + i)] * k[(int)(kvb + j * kvRowStride + i)];
                        p[j] = dot * scale;
                        mx = Math.Max(mx, p[j]);
                    }
                    Array.Clear(acc);
                    double sum = 0;
                    if (!double.IsNegativeInfinity(mx))
                        for (int j = 0; j < s.KvLen; j++)
                        {
                            if (double.IsNegativeInfinity(p[j])) continue;
                            double e = Math.Exp(p[j] - mx);
                            sum += e;
                            for (int i = 0; i < d; i++) acc[i] += e * v[(int)(kvb + j * kvRowStride + i)];
                        }
                    for (int i = 0; i < d; i++) o[(int)(qo + i)] = sum > 0 ? (float)(acc[i] / sum) : 0f;
                }
        }
    }
}
