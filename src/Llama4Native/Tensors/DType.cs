namespace Llama4Native.Tensors;

/// <summary>
/// Element types the runtime stores. Names follow safetensors' dtype strings. <see cref="I4"/> is ours (not a
/// safetensors dtype): signed 4-bit integers in [-8, 7], two per byte along the innermost dimension, the even
/// index in the low nibble (Meta's packing) — the storage of int4-quantized weights.
/// </summary>
internal enum DType : byte { F32, BF16, F16, F8E4M3, I64, I32, U8, I4 }

internal static class DTypeInfo
{
    /// <summary>Bytes per element. Throws for <see cref="DType.I4"/> (half a byte): use <see cref="Bits"/> or <see cref="Tensor.Bytes"/>.</summary>
    public static int Size(this DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.BF16 or DType.F16 => 2,
        DType.F8E4M3 or DType.U8 => 1,
        DType.I64 => 8,
        DType.I4 => throw new ArgumentOutOfRangeException(nameof(t), t, "I4 packs two elements per byte; use Bits() or Tensor.Bytes"),
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    /// <summary>Bits per element (4 for <see cref="DType.I4"/>).</summary>
    public static int Bits(this DType t) => t == DType.I4 ? 4 : t.Size() * 8;

    /// <summary>Bytes of <paramref name="elements"/> elements (I4: rounded up to whole bytes).</summary>
    public static long BytesOf(this DType t, long elements) => t == DType.I4 ? checked(elements + 1) / 2 : checked(elements * t.Size());

    /// <summary>A quantized weight format: the tensor carries f32 scales (<see cref="Tensor.Scale"/>).</summary>
    public static bool IsQuantized(this DType t) => t is DType.F8E4M3 or DType.I4;

    /// <summary>The safetensors spelling ("BF16", "F8_E4M3", …).</summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32", DType.BF16 => "BF16", DType.F16 => "F16", DType.F8E4M3 => "F8_E4M3",
        DType.I64 => "I64", DType.I32 => "I32", DType.U8 => "U8",
        DType.I4 => throw new ArgumentOutOfRangeException(nameof(t), t, "I4 is a runtime format, not a safetensors dtype"),
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    public static bool TryParseSafetensors(string s, out DType t)
    {
        switch (s)
        {
            case "F32": t = DType.F32; return true;
            case "BF16": t = DType.BF16; return true;
            case "F16": t = DType.F16; return true;
            case "F8_E4M3": t = DType.F8E4M3; return true;
            case "I64": t = DType.I64; return true;
            case "I32": t = DType.I32; return true;
            case "U8": t = DType.U8; return true;
            default: t = default; return false;
        }
    }
}
