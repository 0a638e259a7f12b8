namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/softmax.cu: row-wise <c>y = exp(x - max) / Σ exp(x - max)</c>, in double. -inf entries
/// give 0; a row whose entries are all -inf yields all zeros (the kernel's documented choice, where the
/// mathematics is undefined); a NaN makes its row NaN, unless every other entry is -inf (then zeros, as the kernel). In place (x and y the same memory) is allowed.
/// </summary>
internal static class Softmax
{
    /// <param name="x">[rows, cols]</param><param name="y">[rows, cols]</param>
    public static void Forward(ReadOnlySpan<float> x, Span<float> y, int rows, int cols)
    {
        int n = Checks.Elements(rows, cols, nameof(rows), nameof(cols));
        Checks.Length(x, n, nameof(x));
        Checks.Length(y, n, nameof(y));
        var e = new double[cols];
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> xr = x.Slice(r * cols, cols);
            Span<float> yr = y.Slice(r * cols, cols);
            double m = double.NegativeInfinity;
            bool nan = false;
            for (int c = 0; c < cols; c++)
            {
                if (float.IsNaN(xr[c])) nan = true;
                else m = Math.Max(m, xr[c]);
            }
            // Mirrors the kernel, whose fmaxf skips NaN: the max of the non-NaN entries decides the all -inf case.
            if (double.IsNegativeInfinity(m)) { yr.Clear(); continue; }
            if (nan) { yr.Fill(float.NaN); continue; }
            double s = 0;
            for (int c = 0; c < cols; c++) { e[c] = Math.Exp(xr[c] - m); s += e[c]; }
            for (int c = 0; c < cols; c++) yr[c] = (float)(e[c] / s);
        }
    }
}
