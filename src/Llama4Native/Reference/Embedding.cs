namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/embedding.cu: <c>out[t, :] = table[ids[t], :]</c>. An id outside [0, vocab) writes a
/// row of zeros (as the kernel does) and is reported through the return value, the kernel's error flag.
/// </summary>
internal static class Embedding
{
    /// <summary>fp32 table → fp32 out (kernel embedding_f32_f32). Returns the first out-of-range id, or null.</summary>
    /// <param name="ids">[T]</param><param name="table">[vocab, dim]</param><param name="output">[T, dim]</param>
    public static int? Forward(ReadOnlySpan<int> ids, ReadOnlySpan<float> table, Span<float> output, int vocab, int dim) =>
        Gather(ids, table, output, vocab, dim, static (row, o) => row.CopyTo(o));

    /// <summary>bf16 table → fp32 out (kernel embedding_bf16_f32); exact widening.</summary>
    /// <param name="ids">[T]</param><param name="table">[vocab, dim] bf16 bits</param><param name="output">[T, dim]</param>
    public static int? Forward(ReadOnlySpan<int> ids, ReadOnlySpan<ushort> table, Span<float> output, int vocab, int dim) =>
        Gather(ids, table, output, vocab, dim, static (row, o) => BF16.ToFloat(row, o));

    /// <summary>bf16 table → bf16 out (kernel embedding_bf16_bf16); a copy of bits.</summary>
    /// <param name="ids">[T]</param><param name="table">[vocab, dim] bf16 bits</param><param name="output">[T, dim] bf16 bits</param>
    public static int? Forward(ReadOnlySpan<int> ids, ReadOnlySpan<ushort> table, Span<ushort> output, int vocab, int dim) =>
        Gather(ids, table, output, vocab, dim, static (row, o) => row.CopyTo(o));

    private delegate void RowTo<TTable, TOut>(ReadOnlySpan<TTable> row, Span<TOut> output);

    /// <summary>The one loop behind the overloads: row ids[t] of the table into output row t by <paramref name="copy"/>,
    /// zeros for an id outside [0, vocab); returns the first such id, or null.</summary>
    private static int? Gather<TTable, TOut>(ReadOnlySpan<int> ids, ReadOnlySpan<TTable> table, Span<TOut> output, int vocab, int dim,
                                             RowTo<TTable, TOut> copy)
    {
        Check(ids, table.Length, output.Length, vocab, dim);
        int? bad = null;
        for (int t = 0; t < ids.Length; t++)
        {
            Span<TOut> o = output.Slice(t * dim, dim);
            int id = ids[t];
            if (id < 0 || id >= vocab) { o.Clear(); bad ??= id; continue; }
            copy(table.Slice(id * dim, dim), o);
        }
        return bad;
    }

    private static void Check(ReadOnlySpan<int> ids, int tableLength, int outputLength, int vocab, int dim)
    {
        int tableN = Checks.Elements(vocab, dim, nameof(vocab), nameof(dim));
        Checks.Positive(ids.Length, nameof(ids) + ".Length");
        int outN = Checks.Elements(ids.Length, dim, nameof(ids) + ".Length", nameof(dim));
        if (tableLength != tableN)
            throw new ArgumentException($"table must hold exactly vocab·dim = {tableN} elements, got {tableLength}.", "table");
        if (outputLength != outN)
            throw new ArgumentException($"output must hold exactly T·dim = {outN} elements, got {outputLength}.", "output");
    }
}
