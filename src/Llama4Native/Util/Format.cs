namespace Llama4Native;

/// <summary>Human-readable numbers for messages and progress output.</summary>
internal static class Format
{
    public static string Bytes(long b) => b switch
    {
        >= 1L << 40 => $"{b / (double)(1L << 40):0.##} TiB",
        >= 1L << 30 => $"{b / (double)(1L << 30):0.##} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):0.##} MiB",
        >= 1L << 10 => $"{b / 1024.0:0.##} KiB",
        _ => $"{b} B",
    };
}
