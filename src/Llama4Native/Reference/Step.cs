namespace Llama4Native.Reference;

/// <summary>The decode step's device bookkeeping (kernels/step.cu), in plain loops.</summary>
internal static class Step
{
    /// <summary>Descriptor ints: q_start {0, T} | kv_len | q_pos0 | kv_pos0 | pad | kv_off (2 ints).</summary>
    public const int DescriptorInts = 8;

    /// <summary>step_decode: p = nope.q_pos0 + nope's piece length; ids = sampled, pos = p; descriptors of one token at p.</summary>
    public static void Decode(int sampled, Span<int> ids, Span<int> pos, Span<int> rope, Span<int> nope, int chunk)
    {
        int p = nope[3] + (nope[1] - nope[0]);
        int b = chunk > 0 ? p / chunk * chunk : 0;
        ids[0] = sampled;
        pos[0] = p;
        nope[0] = 0; nope[1] = 1; nope[2] = p + 1; nope[3] = p; nope[4] = 0;
        rope[0] = 0; rope[1] = 1; rope[2] = p + 1 - b; rope[3] = p; rope[4] = b;
    }

    /// <summary>kv_append: rows r &lt; min(T, maxRows) of kNew/vNew [T, E] go to rows kv_len − T + r of the caches [S, E].</summary>
    public static void KvAppend<T>(ReadOnlySpan<T> kNew, ReadOnlySpan<T> vNew, Span<T> kCache, Span<T> vCache, ReadOnlySpan<int> desc, long e, int maxRows)
    {
        int t = desc[1] - desc[0];
        for (int r = 0; r < Math.Min(t, maxRows); r++)
        {
            long slot = (long)desc[2] - t + r;
            kNew.Slice((int)(r * e), (int)e).CopyTo(kCache.Slice((int)(slot * e), (int)e));
            vNew.Slice((int)(r * e), (int)e).CopyTo(vCache.Slice((int)(slot * e), (int)e));
        }
    }
}
