namespace Llama4Native.Reference;

/// <summary>y = a + b elementwise (kernels/add.cu).</summary>
internal static class Add
{
    /// <param name="a">[n]</param><param name="b">[n]</param><param name="y">[n]</param>
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (a.Length != b.Length || a.Length != y.Length)
            throw new ArgumentException($"add: a has {a.Length} elements, b {b.Length}, y {y.Length}; they must match");
        for (int i = 0; i < a.Length; i++) y[i] = a[i] + b[i];
    }

    /// <summary>bf16 in and out: the fp32 sum rounded once.</summary>
    public static void Forward(ReadOnlySpan<ushort> a, ReadOnlySpan<ushort> b, Span<ushort> y)
    {
        if (a.Length != b.Length || a.Length != y.Length)
            throw new ArgumentException($"add: a has {a.Length} elements, b {b.Length}, y {y.Length}; they must match");
        for (int i = 0; i < a.Length; i++) y[i] = BF16.FromFloat(BF16.ToFloat(a[i]) + BF16.ToFloat(b[i]));
    }
}
