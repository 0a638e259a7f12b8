namespace Llama4Native.Reference;

/// <summary>Reference for kernels/convert.cu (convert_bf16_to_f32, convert_f32_to_bf16). Named DTypeConvert so
/// it does not clash with <see cref="System.Convert"/>.</summary>
internal static class DTypeConvert
{
    /// <summary>y [n] = (float)x [n]; exact.</summary>
    public static void BF16ToF32(ReadOnlySpan<ushort> x, Span<float> y) => BF16.ToFloat(x, y);

    /// <summary>y [n] = bf16(x [n]), round to nearest even, NaN stays NaN.</summary>
    public static void F32ToBF16(ReadOnlySpan<float> x, Span<ushort> y) => BF16.FromFloat(x, y);
}
