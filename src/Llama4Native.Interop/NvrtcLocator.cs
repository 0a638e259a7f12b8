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
    public const string CacheEnvironmentVariable = LibraryLocator.CacheEnvironmentVariable;
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
    internal static NvrtcLocation Search(List<string> log) => LibraryLocator.Search(Places, log, (o, t, named) => TryLibrary(o, t, named, log));

    /// <summary>NVRTC's places for the shared search (<see cref="LibraryLocator"/>): CUDA_PATH's lib64, lib/x64, bin, bin/x64;
    /// the CUDA installs (Windows' toolkit folders too); the nvidia-cuda-nvrtc-cu12 and cu13 wheels; .cache/nvrtc.</summary>
    static LibraryLocator.Spec Places => new("libnvrtc", $"{nameof(NvrtcLocator)}.{nameof(ExplicitPath)}", ExplicitPath, EnvironmentVariable,
        ["lib64", Path.Combine("lib", "x64"), "bin", Path.Combine("bin", "x64")], NativeLibraryNames.NvrtcSonames, StandardInstallFolders,
        [Path.Combine("nvidia", "cuda_nvrtc", "lib"), Path.Combine("nvidia", "cu13", "lib")], CacheRelativeFolder, "nvrtc", "",
        LibraryFilesIn, (log, cause) => NotFound(log, cause));

    /// <summary>The places in search order. Logs places that yield nothing (unset variables, missing folders).</summary>
    internal static IEnumerable<LibraryLocator.Candidate> Candidates(List<string> log) => LibraryLocator.Candidates(Places, log);

    /// <summary>The first <c>.cache/nvrtc/usr/lib/x86_64-linux-gnu</c> in <paramref name="start"/> or a folder above it.</summary>
    internal static string? FindCacheAbove(string start) => LibraryLocator.FindCacheAbove(start, CacheRelativeFolder);

    private static IEnumerable<string> StandardInstallFolders()
    {
        if (!OperatingSystem.IsWindows()) return LibraryLocator.UnixCudaInstalls();
        var root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles), "NVIDIA GPU Computing Toolkit", "CUDA");
        if (!Directory.Exists(root)) return [];
        return NewestFirst(Directory.GetDirectories(root, "v*"), "v").SelectMany(v => new[] { Path.Combine(v, "bin", "x64"), Path.Combine(v, "bin") });
    }

    /// <summary>Sorts folder names by the version after <paramref name="prefix"/> ("cuda-12.4" → 12.4), newest first.</summary>
    internal static IEnumerable<string> NewestFirst(IEnumerable<string> paths, string prefix) => LibraryLocator.NewestFirst(paths, prefix);

    internal static Version ParseVersion(ReadOnlySpan<char> s) => LibraryLocator.ParseVersion(s);

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
