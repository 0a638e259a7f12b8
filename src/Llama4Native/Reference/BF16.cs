namespace Llama4Native.Reference;

/// <summary>
/// bfloat16 as raw bits (<see cref="ushort"/>): the upper half of an IEEE fp32. Conversions match the kernels'
/// <c>bf16_to_f32</c> / <c>f32_to_bf16</c> in kernels/common.cuh and torch's <c>.to(torch.bfloat16)</c>:
/// widening is exact; narrowing rounds to nearest, ties to even; every NaN becomes the canonical 0x7FFF, as the
/// GPU's <c>cvt.rn.bf16.f32</c> does (torch writes 0x7FC0: compare NaNs as NaNs, not as bits).
/// </summary>
internal static class BF16
{
    /// <summary>Widens bf16 bits to fp32 (exact).</summary>
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Rounds fp32 to the nearest bf16 (ties to even); NaN → 0x7FFF, ±inf stays ±inf, overflow rounds to ±inf.</summary>
    public static ushort FromFloat(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7FFF_FFFFu) > 0x7F80_0000u) return 0x7FFF;
        u += 0x7FFFu + ((u >> 16) & 1u);
        return (ushort)(u >> 16);
    }

    /// <summary>fp32 → bf16 → fp32: what a value becomes after being stored as bf16.</summary>
    public static float Round(float value) => ToFloat(FromFloat(value));

    /// <summary>Widens every element: <paramref name="dst"/> [n] = <paramref name="src"/> [n].</summary>
    public static void ToFloat(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        Checks.Length(dst, src.Length, nameof(dst));
        for (int i = 0; i < src.Length; i++) dst[i] = ToFloat(src[i]);
    }

    /// <summary>Rounds every element: <paramref name="dst"/> [n] = <paramref name="src"/> [n].</summary>
    public static void FromFloat(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        Checks.Length(dst, src.Length, nameof(dst));
        for (int i = 0; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }

    internal static float[] ToFloatArray(ReadOnlySpan<ushort> src)
    {
        var a = new float[src.Length];
        ToFloat(src, a);
        return a;
    }
}

/// <summary>Argument checks shared by the reference ops; every failure is an <see cref="ArgumentException"/>
/// naming the argument, the required size and the given one.</summary>
internal static class Checks
{
    public static void Positive(int value, string name)
    {
        if (value < 1) throw new ArgumentException($"{name} must be at least 1, got {value}.", name);
    }

    /// <summary>rows·cols as a long, with both checked to be ≥ 1 and the product to fit a span.</summary>
    public static int Elements(int rows, int cols, string rowsName, string colsName)
    {
        Positive(rows, rowsName);
        Positive(cols, colsName);
        long n = (long)rows * cols;
        if (n > int.MaxValue)
            throw new ArgumentException($"{rowsName}·{colsName} = {n} exceeds the largest span ({int.MaxValue}).", rowsName);
        return (int)n;
    }

    public static void Length<T>(ReadOnlySpan<T> span, long required, string name)
    {
        if (span.Length != required)
            throw new ArgumentException($"{name} must hold exactly {required} elements, got {span.Length}.", name);
    }

    public static void Length<T>(Span<T> span, long required, string name) => Length((ReadOnlySpan<T>)span, required, name);
}
