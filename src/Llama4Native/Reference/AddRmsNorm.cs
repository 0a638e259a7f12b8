namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/add_rmsnorm.cu: <c>x = x + y</c> (in place; a bf16 sum rounded once, as <see cref="Add"/>),
/// then <c>h = x · rsqrt(mean(x²) + eps) · w</c> per row over the UPDATED x (<see cref="RmsNorm"/>, double sums).
/// </summary>
internal static class AddRmsNorm
{
    /// <summary>fp32 x, y, w → fp32 h (kernel add_rmsnorm_f32_f32_f32).</summary>
    /// <param name="x">[rows, cols], updated</param><param name="y">[rows, cols]</param><param name="w">[cols]</param><param name="h">[rows, cols]</param>
    public static void Forward(Span<float> x, ReadOnlySpan<float> y, ReadOnlySpan<float> w, Span<float> h, int rows, int cols, float eps)
    {
        Add.Forward(x, y, x);
        RmsNorm.Forward(x, w, h, rows, cols, eps);
    }

    /// <summary>fp32 x, y, bf16 w → fp32 h (kernel add_rmsnorm_f32_bf16_f32).</summary>
    public static void Forward(Span<float> x, ReadOnlySpan<float> y, ReadOnlySpan<ushort> w, Span<float> h, int rows, int cols, float eps)
    {
        Add.Forward(x, y, x);
        RmsNorm.Forward(x, w, h, rows, cols, eps);
    }

    /// <summary>bf16 x, y, w → bf16 h (kernel add_rmsnorm_bf16_bf16_bf16).</summary>
    public static void Forward(Span<ushort> x, ReadOnlySpan<ushort> y, ReadOnlySpan<ushort> w, Span<ushort> h, int rows, int cols, float eps)
    {
        Add.Forward(x, y, x);
        RmsNorm.Forward(x, w, h, rows, cols, eps);
    }
}
