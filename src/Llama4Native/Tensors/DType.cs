namespace Llama4Native.Tensors;

/// <summary>Element types the runtime stores. Names follow safetensors' dtype strings.</summary>
public enum DType : byte { F32, BF16, F16, F8E4M3, I64, I32, U8 }

public static class DTypeInfo
{
    public static int Size(this DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.BF16 or DType.F16 => 2,
        DType.F8E4M3 or DType.U8 => 1,
        DType.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    /// <summary>The safetensors spelling ("BF16", "F8_E4M3", …).</summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32", DType.BF16 => "BF16", DType.F16 => "F16", DType.F8E4M3 => "F8_E4M3",
        DType.I64 => "I64", DType.I32 => "I32", DType.U8 => "U8",
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
