namespace Llama4Native.Reference;

/// <summary>One sequence of a paged batch (host side of the kernel's descriptors): rows QStart..QStart+QLen-1 of the
/// packed Q/O/k_new sit at positions QPos0.., its history is positions 0..QPos0+QLen-1, its pages are row Slot of the table.</summary>
internal readonly record struct PagedSeq(int QStart, int QLen, int QPos0, int Slot);

/// <summary>
/// Reference for kernels/paged_attention.cu, plain loops: the pool is [pages, Hkv, P, d]; key j (= position j) of a
/// sequence, kv head g, is pool row ((table[Slot·stride + (j / P) mod ring]·Hkv + g)·P + j mod P) (ring 0: no modulo).
/// <see cref="Append"/> stores a step's rows there (FP8: each (row, kv head) quantized by <see cref="QuantizeFp8.Row"/>);
/// <see cref="Forward"/> gathers each sequence's keys 0..QPos0+QLen-1 into a contiguous [S, Hkv, d] and runs
/// <see cref="Attention.Forward"/> (key slot j at position j).
/// </summary>
internal static class PagedAttention
{
    public static long PageRow(ReadOnlySpan<int> table, int stride, int slot, int ring, int pageSize, int kvHeads, int g, long pos)
    {
        long lp = pos / pageSize;
        if (ring > 0) lp %= ring;
        long phys = table[checked((int)((long)slot * stride + lp))];
        if (phys < 0) throw new ArgumentException($"position {pos} of table row {slot} maps to no page ({phys}).");
        return (phys * kvHeads + g) * pageSize + pos % pageSize;
    }

    /// <summary>Float pools: kPool/vPool rows ← kNew/vNew [totalQ, Hkv, d] rows.</summary>
    public static void Append(ReadOnlySpan<float> kNew, ReadOnlySpan<float> vNew, Span<float> kPool, Span<float> vPool, ReadOnlySpan<PagedSeq> seqs,
                              ReadOnlySpan<int> table, int stride, int ring, int pageSize, int kvHeads, int d)
    {
        foreach (var s in seqs)
            for (int r = 0; r < s.QLen; r++)
                for (int g = 0; g < kvHeads; g++)
                {
                    long dst = PageRow(table, stride, s.Slot, ring, pageSize, kvHeads, g, (long)s.QPos0 + r) * d;
                    long src = ((long)(s.QStart + r) * kvHeads + g) * d;
                    for (int i = 0; i < d; i++) { kPool[(int)(dst + i)] = kNew[(int)(src + i)]; vPool[(int)(dst + i)] = vNew[(int)(src + i)]; }
                }
    }

    /// <summary>FP8 pools: codes and scales [pages·Hkv·P] of each stored (row, kv head).</summary>
    public static void AppendFp8(ReadOnlySpan<float> kNew, ReadOnlySpan<float> vNew, Span<byte> kPool, Span<byte> vPool, Span<float> kScale, Span<float> vScale,
                                 ReadOnlySpan<PagedSeq> seqs, ReadOnlySpan<int> table, int stride, int ring, int pageSize, int kvHeads, int d)
    {
        foreach (var s in seqs)
            for (int r = 0; r < s.QLen; r++)
                for (int g = 0; g < kvHeads; g++)
                {
                    long row = PageRow(table, stride, s.Slot, ring, pageSize, kvHeads, g, (long)s.QPos0 + r);
                    int src = (int)(((long)(s.QStart + r) * kvHeads + g) * d);
                    kScale[(int)row] = QuantizeFp8.Row(kNew.Slice(src, d), kPool.Slice((int)(row * d), d), float.PositiveInfinity);
                    vScale[(int)row] = QuantizeFp8.Row(vNew.Slice(src, d), vPool.Slice((int)(row * d), d), float.PositiveInfinity);
                }
    }

    /// <summary>o [totalQ, H, d] ← attention of each sequence's rows over its keys 0..QPos0+QLen-1 read through the table
    /// (kPool/vPool already hold the dequantized values for an FP8 cache).</summary>
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> kPool, ReadOnlySpan<float> vPool, Span<float> o, ReadOnlySpan<PagedSeq> seqs,
                               ReadOnlySpan<int> table, int stride, int ring, int pageSize, int heads, int kvHeads, int d, int chunk, double scale)
    {
        foreach (var s in seqs)
        {
            int n = s.QPos0 + s.QLen;
            var k = new float[(long)n * kvHeads * d];
            var v = new float[k.Length];
            for (int j = 0; j < n; j++)
                for (int g = 0; g < kvHeads; g++)
                {
                    long src = PageRow(table, stride, s.Slot, ring, pageSize, kvHeads, g, j) * d, dst = ((long)j * kvHeads + g) * d;
                    for (int i = 0; i < d; i++) { k[dst + i] = kPool[(int)(src + i)]; v[dst + i] = vPool[(int)(src + i)]; }
                }
            Attention.Forward(q, k, v, o, [new AttentionSeq(s.QStart, s.QLen, n, s.QPos0, 0, 0)], heads, kvHeads, d,
                              (long)kvHeads * d, d, chunk, scale);
        }
    }
}
