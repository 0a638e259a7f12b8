using BF16 = Llama4Native.Reference.BF16;

namespace Llama4Native.Ops;

/// <summary>float ⇄ bf16-bits helpers for feeding the reference's bf16 overloads with the same values the device got.</summary>
internal static class Bits
{
    public static ushort[] ToBf16(float[] a) { var b = new ushort[a.Length]; BF16.FromFloat(a, b); return b; }
    public static float[] FromBf16(ushort[] b) { var a = new float[b.Length]; BF16.ToFloat(b, a); return a; }
}
