using System.Runtime.InteropServices;
using System.Text;

namespace Llama4Native.Interop;

/// <summary>The NVRTC library in use and where it came from.</summary>
/// <param name="Origin">Which search step found it, e.g. "LLAMA4_NVRTC" or "cache above the app folder".</param>
/// <param name="LibraryPath">Full path, or the bare soname when the default loader found it and /proc did not tell us more.</param>
/// <param name="BuiltinsPath">The builtins library we preloaded, or null when none was found beside it (then libnvrtc must find it itself).</param>
/// <param name="Major">NVRTC major version (nvrtcVersion).</param>
/// <param name="Minor">NVRTC minor version.</param>
/// <param name="Handle">The loaded library handle (NativeLibrary.Load).</param>
internal sealed record NvrtcLocation(string Origin, string LibraryPath, string? BuiltinsPath, int Major, int Minor, nint Handle)
{
    public string Describe() =>
        $"NVRTC {Major}.{Minor} from {LibraryPath} ({Origin}); builtins: {BuiltinsPath ?? "not preloaded (none beside it)"}";
}

/// <summary>NVRTC could not be found; the message lists every place searched and how to fix it.</summary>
public sealed class NvrtcNotFoundException(string message, IReadOnlyList<string> searched) : DllNotFoundException(message)
{
    /// <summary>One line per place tried, in search order, with what was found there.</summary>
    public IReadOnlyList<string> Searched { get; } = searched;
}

/// <summary>
/// Finds and loads NVRTC. NVRTC's file name changes with every CUDA major (libnvrtc.so.12, .so.13, ...)
/// and it often lives outside the loader path, so we search, in this order, and remember what we took:
/// <list type="number">
/// <item><see cref="ExplicitPath"/> (a file or a folder), set in code before the first NVRTC call;</item>
/// <item>the environment variable <c>LLAMA4_NVRTC</c> (a file or a folder);</item>
/// <item><c>CUDA_PATH</c>, then <c>CUDA_HOME</c>: their lib64/, lib/x64/, bin/, bin/x64/;</item>
/// <item>the sonames libnvrtc.so.13, .so.12, .so.11.2, .so through the default loader (LD_LIBRARY_PATH, ld.so.cache);</item>
/// <item>standard installs: /usr/local/cuda/lib64, then /usr/local/cuda-*/lib64 newest first
/// (Windows: the toolkit folders under Program Files, newest first);</item>
/// <item>Python wheels: nvidia/cuda_nvrtc/lib and nvidia/cu13/lib under the site-/dist-packages of
/// /usr/lib/python3*, /usr/local/lib/python3*, ~/.local/lib/python3*, $VIRTUAL_ENV and $CONDA_PREFIX;</item>
/// <item>our cache: the first <c>.cache/nvrtc/usr/lib/x86_64-linux-gnu/</c> walking up from
/// AppContext.BaseDirectory, then <c>$LLAMA4_CACHE/nvrtc/usr/lib/x86_64-linux-gnu/</c>.</item>
/// </list>
/// An explicit path or LLAMA4_NVRTC that does not exist is an error, not a reason to look elsewhere.
/// A library older than <see cref="MinimumVersion"/> is skipped. Before returning, the builtins library
/// beside the chosen one (libnvrtc-builtins.so.M.m / nvrtc-builtins64_Mm.dll) is loaded by full path,
/// because libnvrtc dlopens it by bare name at its first compile and would not find it in our folders.
/// </summary>
internal static class NvrtcLocator
{
    public const string EnvironmentVariable = "LLAMA4_NVRTC";
    public const string CacheEnvironmentVariable = "LLAMA4_CACHE";
    /// <summary>Where build.sh unpacks the NVRTC .debs, relative to the repository (or LLAMA4_CACHE's parent of nvrtc/).</summary>
    public const string CacheRelativeFolder = ".cache/nvrtc/usr/lib/x86_64-linux-gnu";

    private static readonly Lock Gate = new();
    private static NvrtcLocation? _chosen;
    private static List<string> _searched = [];

    /// <summary>A libnvrtc file or the folder holding it; wins over every other place. Set before the first NVRTC call.</summary>
    public static string? ExplicitPath { get; set; }

    /// <summary>Candidates older than this are skipped (default 11.2, i.e. all). Raise to (12, 0) to require sm_90a support.</summary>
    public static (int Major, int Minor) MinimumVersion { get; set; } = (11, 2);

    /// <summary>The library in use, or null before the first successful <see cref="Load"/>.</summary>
    public static NvrtcLocation? Chosen => Volatile.Read(ref _chosen);

    /// <summary>What the last search tried, one line per place (diagnostics).</summary>
    public static IReadOnlyList<string> Searched
    {
        get { lock (Gate) return _searched.ToArray(); }
    }

    /// <summary>
    /// Finds and loads NVRTC on first call (later calls return the same location); throws
    /// <see cref="NvrtcNotFoundException"/> when nothing usable is found. Failure is not cached.
    /// </summary>
    public static NvrtcLocation Load()
    {
        var chosen = Volatile.Read(ref _chosen);
        if (chosen is not null) return chosen;
        lock (Gate)
        {
            if (_chosen is not null) return _chosen;
            var log = new List<string>();
            _searched = log;
            var found = Search(log);
            Volatile.Write(ref _chosen, found);
            return found;
        }
    }

    /// <summary>
    /// One full search, independent of what <see cref="Load"/> remembered: loads (and keeps loaded) the
    /// first usable candidate and its builtins, or throws <see cref="NvrtcNotFoundException"/>.
    /// </summary>
    internal static NvrtcLocation Search(List<string> log)
    {
        foreach (var candidate in Candidates(log))
            if (TryCandidate(candidate, log) is { } loaded) return loaded;
        throw NotFound(log);
    }

    /// <summary>A place to try: a file, a folder to look into, or a bare name for the default loader.</summary>
    internal readonly record struct Candidate(string Origin, string Target, CandidateKind Kind);

    internal enum CandidateKind { File, Folder, LoaderName }

    /// <summary>The places in search order. Logs places that yield nothing (unset variables, missing folders).</summary>
    internal static IEnumerable<Candidate> Candidates(List<string> log)
    {
        foreach (var c in UserSetting($"{nameof(NvrtcLocator)}.{nameof(ExplicitPath)}", ExplicitPath, log)) yield return c;
        foreach (var c in UserSetting(EnvironmentVariable, Environment.GetEnvironmentVariable(EnvironmentVariable), log)) yield return c;

        foreach (var variable in new[] { "CUDA_PATH", "CUDA_HOME" })
        {
            var root = Environment.GetEnvironmentVariable(variable);
            if (string.IsNullOrEmpty(root)) { log.Add($"{variable}: not set"); continue; }
            foreach (var sub in new[] { "lib64", Path.Combine("lib", "x64"), "bin", Path.Combine("bin", "x64") })
                foreach (var c in IfFolder(variable, Path.Combine(root, sub), log)) yield return c;
        }

        foreach (var name in NativeLibraryNames.NvrtcSonames)
            yield return new Candidate("default loader", name, CandidateKind.LoaderName);

        foreach (var dir in StandardInstallFolders())
            foreach (var c in IfFolder("CUDA install", dir, log)) yield return c;

        foreach (var dir in PythonWheelFolders())
            foreach (var c in IfFolder("Python wheel", dir, log)) yield return c;

        var cache = FindCacheAbove(AppContext.BaseDirectory);
        if (cache is null) log.Add($"cache: no {CacheRelativeFolder} above {AppContext.BaseDirectory}");
        else yield return new Candidate("cache above the app folder", cache, CandidateKind.Folder);

        var cacheRoot = Environment.GetEnvironmentVariable(CacheEnvironmentVariable);
        if (string.IsNullOrEmpty(cacheRoot)) log.Add($"{CacheEnvironmentVariable}: not set");
        else foreach (var c in IfFolder(CacheEnvironmentVariable, Path.Combine(cacheRoot, "nvrtc", "usr", "lib", "x86_64-linux-gnu"), log)) yield return c;
    }

    /// <summary>The first <c>.cache/nvrtc/usr/lib/x86_64-linux-gnu</c> in <paramref name="start"/> or a folder above it.</summary>
    internal static string? FindCacheAbove(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            var probe = Path.Combine(dir.FullName, CacheRelativeFolder);
            if (Directory.Exists(probe)) return probe;
        }
        return null;
    }

    private static IEnumerable<Candidate> UserSetting(string origin, string? value, List<string> log)
    {
        if (string.IsNullOrEmpty(value)) { log.Add($"{origin}: not set"); yield break; }
        if (File.Exists(value)) yield return new Candidate(origin, Path.GetFullPath(value), CandidateKind.File);
        else if (Directory.Exists(value)) yield return new Candidate(origin, Path.GetFullPath(value), CandidateKind.Folder);
        else
        {
            log.Add($"{origin}={value}: no such file or folder");
            throw NotFound(log, $"{origin} is set to '{value}', which does not exist.");
        }
    }

    private static IEnumerable<Candidate> IfFolder(string origin, string dir, List<string> log)
    {
        if (Directory.Exists(dir)) yield return new Candidate(origin, dir, CandidateKind.Folder);
        else log.Add($"{origin}: {dir}: no such folder");
    }

    private static IEnumerable<string> StandardInstallFolders()
    {
        if (OperatingSystem.IsWindows())
        {
            var pf = Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles);
            var root = Path.Combine(pf, "NVIDIA GPU Computing Toolkit", "CUDA");
            if (!Directory.Exists(root)) yield break;
            foreach (var v in NewestFirst(Directory.GetDirectories(root, "v*"), "v"))
            {
                yield return Path.Combine(v, "bin", "x64");
                yield return Path.Combine(v, "bin");
            }
            yield break;
        }
        yield return "/usr/local/cuda/lib64";
        if (Directory.Exists("/usr/local"))
            foreach (var d in NewestFirst(Directory.GetDirectories("/usr/local", "cuda-*"), "cuda-"))
                yield return Path.Combine(d, "lib64");
    }

    private static IEnumerable<string> PythonWheelFolders()
    {
        var bases = new List<string> { "/usr/lib", "/usr/local/lib" };
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (!string.IsNullOrEmpty(home)) bases.Add(Path.Combine(home, ".local", "lib"));
        foreach (var env in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (Environment.GetEnvironmentVariable(env) is { Length: > 0 } prefix) bases.Add(Path.Combine(prefix, "lib"));
        foreach (var b in bases)
        {
            if (!Directory.Exists(b)) continue;
            foreach (var py in NewestFirst(Directory.GetDirectories(b, "python3*"), "python"))
                foreach (var packages in new[] { "site-packages", "dist-packages" })
                    foreach (var wheel in new[] { Path.Combine("nvidia", "cuda_nvrtc", "lib"), Path.Combine("nvidia", "cu13", "lib") })
                        yield return Path.Combine(py, packages, wheel);
        }
    }

    /// <summary>Sorts folder names by the version after <paramref name="prefix"/> ("cuda-12.4" → 12.4), newest first.</summary>
    internal static IEnumerable<string> NewestFirst(IEnumerable<string> paths, string prefix) =>
        paths.OrderByDescending(p => ParseVersion(Path.GetFileName(p).AsSpan(prefix.Length)));

    internal static Version ParseVersion(ReadOnlySpan<char> s)
    {
        var parts = new List<int>();
        foreach (var range in s.Split('.'))
        {
            var part = s[range];
            int n = 0, i = 0;
            while (i < part.Length && char.IsAsciiDigit(part[i])) n = n * 10 + (part[i++] - '0');
            if (i == 0) break;
            parts.Add(n);
            if (i < part.Length) break;
        }
        while (parts.Count < 2) parts.Add(0);
        return parts.Count switch
        {
            2 => new Version(parts[0], parts[1]),
            3 => new Version(parts[0], parts[1], parts[2]),
            _ => new Version(parts[0], parts[1], parts[2], parts[3]),
        };
    }

    /// <summary>NVRTC library files in a folder, preferred first (sonames newest first, then versioned names).</summary>
    internal static IEnumerable<string> LibraryFilesIn(string dir)
    {
        if (OperatingSystem.IsWindows())
            return NewestFirst(Directory.GetFiles(dir, "nvrtc64_*.dll"), "nvrtc64_");
        var named = NativeLibraryNames.NvrtcSonames.Select(n => Path.Combine(dir, n)).Where(File.Exists);
        var versioned = NewestFirst(Directory.GetFiles(dir, "libnvrtc.so.*"), "libnvrtc.so.");
        return named.Concat(versioned).Distinct();
    }

    /// <summary>The builtins library matching NVRTC <paramref name="major"/>.<paramref name="minor"/> in <paramref name="dir"/>, or null.</summary>
    internal static string? BuiltinsIn(string dir, int major, int minor)
    {
        if (!Directory.Exists(dir)) return null;
        string exact, pattern, prefix;
        if (OperatingSystem.IsWindows())
            (exact, pattern, prefix) = ($"nvrtc-builtins64_{major}{minor}.dll", "nvrtc-builtins64_*.dll", "nvrtc-builtins64_");
        else
            (exact, pattern, prefix) = ($"libnvrtc-builtins.so.{major}.{minor}", $"libnvrtc-builtins.so.{major}.{minor}*", "libnvrtc-builtins.so.");
        var path = Path.Combine(dir, exact);
        if (File.Exists(path)) return path;
        return NewestFirst(Directory.GetFiles(dir, pattern), prefix).FirstOrDefault();
    }

    private static NvrtcLocation? TryCandidate(Candidate c, List<string> log)
    {
        switch (c.Kind)
        {
            case CandidateKind.Folder:
                var files = LibraryFilesIn(c.Target).ToList();
                if (files.Count == 0) { log.Add($"{c.Origin}: {c.Target}: no libnvrtc here"); return null; }
                foreach (var f in files)
                    if (TryLibrary(c.Origin, f, isLoaderName: false, log) is { } found) return found;
                return null;
            case CandidateKind.File:
                return TryLibrary(c.Origin, c.Target, isLoaderName: false, log);
            default:
                return TryLibrary(c.Origin, c.Target, isLoaderName: true, log);
        }
    }

    private static unsafe NvrtcLocation? TryLibrary(string origin, string target, bool isLoaderName, List<string> log)
    {
        if (!NativeLibrary.TryLoad(target, out var handle))
        {
            log.Add($"{origin}: {target}: {(isLoaderName ? "not found by the loader" : "could not be loaded")}");
            return null;
        }
        if (!NativeLibrary.TryGetExport(handle, "nvrtcVersion", out var export))
        {
            log.Add($"{origin}: {target}: loaded, but has no nvrtcVersion (not NVRTC)");
            NativeLibrary.Free(handle);
            return null;
        }
        int major, minor;
        var r = ((delegate* unmanaged<int*, int*, nvrtcResult>)export)(&major, &minor);
        if (r != nvrtcResult.NVRTC_SUCCESS || (major, minor).CompareTo(MinimumVersion) < 0)
        {
            log.Add(r != nvrtcResult.NVRTC_SUCCESS
                ? $"{origin}: {target}: nvrtcVersion failed: {r}"
                : $"{origin}: {target}: NVRTC {major}.{minor} is older than the minimum {MinimumVersion.Major}.{MinimumVersion.Minor}");
            NativeLibrary.Free(handle);
            return null;
        }

        string path = isLoaderName ? (LoadedPathOf(Path.GetFileName(target)) ?? target) : target;
        string? builtins = Path.IsPathRooted(path) ? BuiltinsIn(Path.GetDirectoryName(path)!, major, minor) : null;
        if (builtins is not null && !NativeLibrary.TryLoad(builtins, out _))
        {
            log.Add($"{origin}: {builtins}: builtins library found but could not be loaded");
            builtins = null;
        }
        log.Add($"{origin}: {path}: NVRTC {major}.{minor} — taken");
        return new NvrtcLocation(origin, path, builtins, major, minor, handle);
    }

    /// <summary>Full path of a loaded library whose file name starts with <paramref name="fileName"/> (Linux, from /proc/self/maps).</summary>
    private static string? LoadedPathOf(string fileName)
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash < 0) continue;
                var path = line[slash..];
                if (Path.GetFileName(path).StartsWith(fileName, StringComparison.Ordinal)) return path;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    private static NvrtcNotFoundException NotFound(List<string> log, string? cause = null)
    {
        var sb = new StringBuilder();
        sb.AppendLine(cause ?? "NVRTC (the CUDA runtime compiler, libnvrtc) was not found.");
        sb.AppendLine("Searched, in order:");
        foreach (var line in log) sb.Append("  - ").AppendLine(line);
        sb.AppendLine("To fix: run ./build.sh (it fetches NVRTC 12.4 into .cache/nvrtc), or set LLAMA4_NVRTC to a libnvrtc file or");
        sb.Append("its folder (or NvrtcLocator.ExplicitPath in code), or install the CUDA toolkit / pip install nvidia-cuda-nvrtc-cu12.");
        return new NvrtcNotFoundException(sb.ToString(), log.ToArray());
    }
}
