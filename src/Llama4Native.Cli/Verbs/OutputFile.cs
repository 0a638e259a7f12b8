using System.Runtime.InteropServices;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// Output files written safely: an existing path must be a regular file (never a symbolic link, FIFO, socket,
/// device node or folder — those are refused, not replaced or written through), the folder must exist, and the
/// data goes to a temporary file next to it that is renamed over the target when complete, so a failed run never
/// leaves half a file.
/// </summary>
internal static class OutputFile
{
    public static void Check(string path, string option)
    {
        if (path.Length == 0) throw new UsageException($"{option}: empty path");
        var kind = Kind(path);
        if (kind is not (null or "regular file"))
            throw new UsageException($"{option} {path} is a {kind}; refusing to replace it — pass a new file name or a regular file");
        var parent = Path.GetDirectoryName(Path.GetFullPath(path));
        if (parent is not null && !Directory.Exists(parent)) throw new UsageException($"{option} {path}: the folder {parent} does not exist");
    }

    public static void Write(string path, string option, Action<string> write)
    {
        Check(path, option);
        var tmp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
        try
        {
            write(tmp);
            Check(path, option);   // still not a link/FIFO/device (it may have appeared meanwhile)
            File.Move(tmp, path, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    /// <summary>What is at <paramref name="path"/> without following a link: null when nothing is.</summary>
    public static string? Kind(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is not null) return "symbolic link";
        if (Directory.Exists(path)) return "folder";
        if (!info.Exists) return null;
        if (OperatingSystem.IsLinux() && Mode(path) is { } mode)
            return (mode & 0xF000) switch
            {
                0x8000 => "regular file",
                0x1000 => "FIFO (named pipe)",
                0x2000 => "character device",
                0x6000 => "block device",
                0xC000 => "socket",
                _ => "special file",
            };
        return "regular file";
    }

    static unsafe uint? Mode(string path)
    {
        // struct stat: st_mode at offset 24 on x86-64, 16 on arm64 (glibc ≥ 2.33 exports lstat).
        int at = RuntimeInformation.ProcessArchitecture switch { Architecture.X64 => 24, Architecture.Arm64 => 16, _ => -1 };
        if (at < 0) return null;
        byte* buf = stackalloc byte[256];
        try { return lstat(path, buf) == 0 ? *(uint*)(buf + at) : null; }
        catch (EntryPointNotFoundException) { return null; }
    }

    [DllImport("libc", EntryPoint = "lstat", CharSet = CharSet.Ansi, SetLastError = true)]
    static extern unsafe int lstat(string path, byte* buf);
}
