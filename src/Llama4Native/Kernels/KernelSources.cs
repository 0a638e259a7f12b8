using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Llama4Native.Kernels;

/// <summary>
/// The kernel sources (`kernels/*.cu`, `kernels/*.cuh`, `kernels/emu/*`) embedded in this assembly, so a host
/// that links the library needs no repo checkout. Setting LLAMA4_KERNELS to a `kernels/` folder overrides
/// them (edit-and-rerun while developing a kernel).
/// </summary>
internal static partial class KernelSources
{
    static readonly Lazy<IReadOnlyDictionary<string, string>> all = new(Load);

    /// <summary>Every source, keyed by its path relative to `kernels/` ("rmsnorm.cu", "emu/emu.h").</summary>
    public static IReadOnlyDictionary<string, string> All => all.Value;

    /// <summary>The kernel files (`*.cu` at the top of `kernels/`), sorted.</summary>
    public static IEnumerable<string> KernelFiles =>
        All.Keys.Where(k => k.EndsWith(".cu", StringComparison.Ordinal) && !k.Contains('/')).Order(StringComparer.Ordinal);

    public static string Get(string name) =>
        All.TryGetValue(name, out var s) ? s
        : throw new KeyNotFoundException($"kernel source '{name}' is not embedded (known: {string.Join(", ", All.Keys.Order())})");

    static Dictionary<string, string> Load()
    {
        var dict = new Dictionary<string, string>(StringComparer.Ordinal);
        var overrideDir = Environment.GetEnvironmentVariable("LLAMA4_KERNELS");
        if (!string.IsNullOrEmpty(overrideDir))
        {
            if (!Directory.Exists(overrideDir))
                throw new DirectoryNotFoundException($"LLAMA4_KERNELS points at '{overrideDir}', which does not exist");
            foreach (var f in Directory.EnumerateFiles(overrideDir, "*", SearchOption.AllDirectories))
                dict[Path.GetRelativePath(overrideDir, f).Replace('\\', '/')] = File.ReadAllText(f);
            return dict;
        }
        var asm = typeof(KernelSources).Assembly;
        foreach (var res in asm.GetManifestResourceNames())
        {
            if (!res.StartsWith("kernels/", StringComparison.Ordinal)) continue;
            using var s = asm.GetManifestResourceStream(res)!;
            using var r = new StreamReader(s, Encoding.UTF8);
            dict[res["kernels/".Length..]] = r.ReadToEnd();
        }
        return dict;
    }

    [GeneratedRegex("""^\s*#\s*include\s*"([^"]+)"\s*$""", RegexOptions.Multiline)]
    private static partial Regex IncludeRegex();

    /// <summary>The quoted includes a source pulls in, transitively (paths relative to `kernels/`).</summary>
    public static IReadOnlyList<string> Includes(string name)
    {
        var seen = new List<string>();
        void Walk(string file)
        {
            var dir = file.Contains('/') ? file[..(file.LastIndexOf('/') + 1)] : "";
            foreach (Match m in IncludeRegex().Matches(Get(file)))
            {
                var inc = All.ContainsKey(dir + m.Groups[1].Value) ? dir + m.Groups[1].Value : m.Groups[1].Value;
                if (!All.ContainsKey(inc) || seen.Contains(inc)) continue;
                seen.Add(inc);
                Walk(inc);
            }
        }
        Walk(name);
        return seen;
    }

    /// <summary>SHA-256 over the file and everything it includes: a change in common.cuh invalidates every kernel.</summary>
    public static string Hash(string name, IEnumerable<string>? extra = null)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var f in new[] { name }.Concat(Includes(name)).Concat(extra ?? []))
        {
            h.AppendData(Encoding.UTF8.GetBytes(f + "\0"));
            h.AppendData(Encoding.UTF8.GetBytes(Get(f) + "\0"));
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    [GeneratedRegex(@"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(")]
    private static partial Regex GlobalRegex();

    /// <summary>The `__global__` entry points a kernel file defines, in source order.</summary>
    public static IReadOnlyList<string> EntryPoints(string name) =>
        GlobalRegex().Matches(StripComments(Get(name))).Select(m => m.Groups[1].Value).Distinct().ToList();

    [GeneratedRegex(@"//[^\n]*|/\*.*?\*/", RegexOptions.Singleline)]
    private static partial Regex CommentRegex();
    static string StripComments(string s) => CommentRegex().Replace(s, "");
}
