using System.Security.Cryptography;
using System.Text;

namespace Llama4Native.Kernels;

/// <summary>
/// The on-disk cache of compiled kernels. Keys are exactly the compile-time inputs: source hash (with
/// includes), defines, compiler options, target and compiler version. Entries are written to a temporary
/// file and renamed, so concurrent processes never read half a file.
/// Location: $LLAMA4_CACHE/kernels, else $XDG_CACHE_HOME/llama4native/kernels, else ~/.cache/llama4native/kernels.
/// </summary>
internal sealed class KernelCache(string root)
{
    public string Root { get; } = root;

    public static string DefaultRoot()
    {
        var env = Environment.GetEnvironmentVariable("LLAMA4_CACHE");
        if (!string.IsNullOrEmpty(env)) return Path.Combine(Path.GetFullPath(env), "kernels");
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var baseDir = !string.IsNullOrEmpty(xdg) ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(baseDir, "llama4native", "kernels");
    }

    public static KernelCache Default { get; } = new(DefaultRoot());

    /// <summary>A short stable digest of the key parts, used in file names.</summary>
    public static string Digest(params string[] parts)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\u0001", parts)));
        return Convert.ToHexStringLower(bytes)[..20];
    }

    public string PathFor(string target, string fileName) => Path.Combine(Root, target, fileName);

    public bool TryRead(string target, string fileName, out byte[] bytes)
    {
        var p = PathFor(target, fileName);
        if (File.Exists(p)) { bytes = File.ReadAllBytes(p); return true; }
        bytes = [];
        return false;
    }

    public string Write(string target, string fileName, ReadOnlySpan<byte> bytes)
    {
        var p = PathFor(target, fileName);
        Directory.CreateDirectory(Path.GetDirectoryName(p)!);
        var tmp = $"{p}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        File.WriteAllBytes(tmp, bytes.ToArray());
        File.Move(tmp, p, overwrite: true);
        return p;
    }
}
