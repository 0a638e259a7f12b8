using Llama4Native.Kernels;

namespace Llama4Native.Reference;

/// <summary>
/// Plain-loop reference of kernels/sample.cu. The adjusted logits z, the Philox integers and the uniforms are
/// bit-identical to the kernel's; thresholds are found by sorting (the kernel binary-searches the same keys);
/// exp/log/sums are in double, so the kernel may differ only where a mass or a race score sits on a float
/// boundary.
/// </summary>
internal static class Sample
{
    /// <summary>Philox-4x32-10 of counter c under key k (Random123 constants).</summary>
    public static (uint, uint, uint, uint) Philox(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int r = 0; r < 10; r++)
        {
            ulong p0 = 0xD2511F53ul * c0, p1 = 0xCD9E8D57ul * c2;
            (c0, c1, c2, c3) = ((uint)(p1 >> 32) ^ c1 ^ k0, (uint)p1, (uint)(p0 >> 32) ^ c3 ^ k1, (uint)p0);
            k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>u in (0, 1) of token i for (seed, row, step): word i % 4 of Philox((i/4, row, step, 0), (seed lo, seed hi)).</summary>
    public static float Uniform(ulong seed, int row, int step, int i)
    {
        var (a, b, c, d) = Philox((uint)(i >> 2), (uint)row, (uint)step, 0, (uint)seed, (uint)(seed >> 32));
        uint r = (i & 3) switch { 0 => a, 1 => b, 2 => c, _ => d };
        return (r >> 8) * 5.9604644775390625e-8f + 2.98023223876953125e-8f;
    }

    static uint Key(float f) { uint b = BitConverter.SingleToUInt32Bits(f); return (b & 0x80000000u) != 0 ? ~b : b | 0x80000000u; }

    /// <summary>Penalised (and, unless greedy, tempered) logits of one row, rounded as the kernel rounds them.</summary>
    public static float[] Adjusted(ReadOnlySpan<float> logits, in SampleParams p, ReadOnlySpan<int> counts)
    {
        var z = new float[logits.Length];
        bool greedy = !(p.Temperature > 0f);
        for (int i = 0; i < z.Length; i++)
        {
            float x = logits[i]; int c = counts.IsEmpty ? 0 : counts[i];
            if (c > 0)
            {
                x = x > 0f ? x / p.Repetition : x * p.Repetition;
                x = MathF.FusedMultiplyAdd(-p.Frequency, c, x);
                x -= p.Presence;
            }
            z[i] = greedy ? x : x / p.Temperature;
        }
        return z;
    }

    /// <summary>The filtered distribution of one row (0 outside the kept set); greedy: one-hot.</summary>
    public static double[] Distribution(ReadOnlySpan<float> logits, in SampleParams p, ReadOnlySpan<int> counts)
    {
        var z = Adjusted(logits, p, counts);
        int v = z.Length;
        var d = new double[v];
        if (!(p.Temperature > 0f)) { d[Argmax(z)] = 1; return d; }
        var kept = Kept(z, p, out float m);
        double s = 0;
        for (int i = 0; i < v; i++) if (kept[i]) s += Math.Exp((double)z[i] - m);
        for (int i = 0; i < v; i++) if (kept[i]) d[i] = Math.Exp((double)z[i] - m) / s;
        return d;
    }

    static int Argmax(float[] z)
    {
        int bi = 0;
        for (int i = 1; i < z.Length; i++) if (z[i] > z[bi]) bi = i;
        return bi;
    }

    /// <summary>Which tokens survive top-k → top-p → min-p (all thresholds on z).</summary>
    public static bool[] Kept(float[] z, in SampleParams p, out float m)
    {
        int v = z.Length;
        m = float.NegativeInfinity;
        foreach (var x in z) m = MathF.Max(m, x);
        float mm = m;
        var keys = z.Select(Key).OrderDescending().ToArray();
        uint lo = 0;
        if (p.TopK > 0 && p.TopK < v) lo = keys[p.TopK - 1];
        if (p.TopP < 1f)
        {
            double tot = 0;
            for (int i = 0; i < v; i++) if (Key(z[i]) >= lo) tot += Math.Exp((double)z[i] - mm);
            double target = p.TopP * tot, s = 0;
            var sorted = z.Where(x => Key(x) >= lo).OrderDescending().ToArray();
            foreach (var x in sorted) { s += Math.Exp((double)x - mm); if (s >= target) { lo = Key(x); break; } }
        }
        float logmin = p.MinP > 0f ? MathF.Log(p.MinP) : float.NegativeInfinity;
        var kept = new bool[v];
        for (int i = 0; i < v; i++) kept[i] = Key(z[i]) >= lo && z[i] - mm >= logmin;
        return kept;
    }

    /// <summary>One row's token (and its probability after filtering).</summary>
    // logits [V], counts [V] or empty
    public static int Row(ReadOnlySpan<float> logits, in SampleParams p, ReadOnlySpan<int> counts, int row, int step, out float prob)
    {
        if (logits.Length == 0) throw new ArgumentException("sample: V must be >= 1");
        if (!counts.IsEmpty && counts.Length != logits.Length) throw new ArgumentException("sample: counts must be [V]");
        var z = Adjusted(logits, p, counts);
        prob = 1f;
        if (!(p.Temperature > 0f)) return Argmax(z);
        var kept = Kept(z, p, out float m);
        int bi = -1; double best = double.NegativeInfinity, mass = 0;
        for (int i = 0; i < z.Length; i++)
        {
            if (!kept[i]) continue;
            double d = (double)z[i] - m;
            mass += Math.Exp(d);
            double score = d - Math.Log(-Math.Log(Uniform(p.Seed64, row, step, i)));
            if (bi < 0 || score > best) { best = score; bi = i; }
        }
        prob = (float)(Math.Exp((double)z[bi] - m) / mass);
        return bi;
    }

    /// <summary>All rows. logits [B, V], ps [B], counts [B, V] or empty, steps [B] → ids [B], probs [B].</summary>
    public static void Forward(ReadOnlySpan<float> logits, ReadOnlySpan<SampleParams> ps, ReadOnlySpan<int> counts, ReadOnlySpan<int> steps,
                               Span<int> ids, Span<float> probs, int b, int v)
    {
        if (logits.Length != (long)b * v || ps.Length != b || steps.Length != b || ids.Length != b || probs.Length != b
            || !counts.IsEmpty && counts.Length != (long)b * v) throw new ArgumentException("sample: bad sizes");
        for (int r = 0; r < b; r++)
            ids[r] = Row(logits.Slice(r * v, v), ps[r], counts.IsEmpty ? default : counts.Slice(r * v, v), r, steps[r], out probs[r]);
    }

    /// <summary>Rows over per-sequence state (sample_slots_f32): row r of logits [B, V] uses ps/counts/steps of
    /// slots[r] (ps [S], counts [S, V] or empty, steps [S]) and draws as row 0 → ids [B], probs [B].</summary>
    public static void ForwardSlots(ReadOnlySpan<float> logits, ReadOnlySpan<SampleParams> ps, ReadOnlySpan<int> counts, ReadOnlySpan<int> steps,
                                    ReadOnlySpan<int> slots, Span<int> ids, Span<float> probs, int b, int v)
    {
        int s = ps.Length;
        if (logits.Length != (long)b * v || steps.Length != s || slots.Length != b || ids.Length != b || probs.Length != b
            || !counts.IsEmpty && counts.Length != (long)s * v) throw new ArgumentException("sample_slots: bad sizes");
        for (int r = 0; r < b; r++)
        {
            int q = slots[r];
            if ((uint)q >= (uint)s) throw new ArgumentException($"sample_slots: slot {q} of row {r} is outside [0, {s})");
            ids[r] = Row(logits.Slice(r * v, v), ps[q], counts.IsEmpty ? default : counts.Slice(q * v, v), 0, steps[q], out probs[r]);
        }
    }
}
