namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/gemv.cu: <c>y [m, N] = x [m, K] · Wᵀ</c>, W [N, K] bf16 (nn.Linear layout), m ≤ 8.
/// This is exactly gemm with the NK layout, so it delegates to <see cref="Gemm.Forward(ReadOnlySpan{float}, ReadOnlySpan{ushort}, Span{float}, int, int, int, GemmBLayout)"/>
/// (plain loops, products and sums in double) rather than keep a second copy of the same loops. Output fp32;
/// round it to bf16 to compare a bf16-output kernel.
/// </summary>
internal static class Gemv
{
    /// <param name="x">[m, k] (fp32, or bf16 values widened exactly)</param><param name="w">[n, k] bf16 bits</param><param name="y">[m, n]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<ushort> w, Span<float> y, int m, int n, int k)
    {
        if (m < 1 || m > 8) throw new ArgumentException($"gemv: m = {m} must be in 1..8");
        Gemm.Forward(x, w, y, m, n, k, GemmBLayout.NK); // checks the buffer sizes (ArgumentException)
    }
}
