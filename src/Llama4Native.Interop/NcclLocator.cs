using System.Runtime.InteropServices;
using System.Text;

namespace Llama4Native.Interop;

/// <summary>The NCCL library in use: where it came from and its version (<c>ncclGetVersion</c>: 22203 for 2.22.3).</summary>
internal sealed record NcclLocation(string Origin, string LibraryPath, int Version, nint Handle)
{
    public (int Major, int Minor, int Patch) Parts => (Version / 10000, Version / 100 % 100, Version % 100);
    public string Describe() => $"NCCL {Parts.Major}.{Parts.Minor}.{Parts.Patch} from {LibraryPath} ({Origin})";
}

/// <summary>NCCL could not be found or loaded; the message lists every place searched and how to fix it.</summary>
internal sealed class NcclNotFoundException(string message, IReadOnlyList<string> searched) : DllNotFoundException(message)
{
    public IReadOnlyList<string> Searched { get; } = searched;
}

/// <summary>
/// Finds and loads NCCL (<c>libnccl.so.2</c>) the way <see cref="NvrtcLocator"/> finds NVRTC, in this order:
/// <list type="number">
/// <item><see cref="ExplicitPath"/> (a file or a folder), set in code before the first NCCL call;</item>
/// <item>the environment variable <c>LLAMA4_NCCL</c> (a file or a folder);</item>
/// <item><c>CUDA_PATH</c>, then <c>CUDA_HOME</c>: their lib64/ and lib/;</item>
/// <item>the sonames libnccl.so.2, libnccl.so through the default loader (LD_LIBRARY_PATH, ld.so.cache);</item>
/// <item>/usr/local/cuda/lib64, then /usr/local/cuda-*/lib64 newest first;</item>
/// <item>Python wheels: nvidia/nccl/lib under the site-/dist-packages of /usr/lib/python3*, /usr/local/lib/python3*,
/// ~/.local/lib/python3*, $VIRTUAL_ENV, $CONDA_PREFIX (the <c>nvidia-nccl-cu12</c> package PyTorch installs);</item>
/// <item>our cache: the first <c>.cache/nccl/usr/lib/x86_64-linux-gnu/</c> walking up from AppContext.BaseDirectory
/// (where build.sh unpacks Debian trixie contrib's libnccl2 2.22.3), then <c>$LLAMA4_CACHE/nccl/usr/lib/x86_64-linux-gnu/</c>.</item>
/// </list>
/// A candidate counts when it loads and exports <c>ncclGetVersion</c>, which answers without a GPU. Why a candidate
/// did not load (the loader's own message, e.g. a glibc too old for Debian trixie's build) is kept in the search log.
/// An explicit path or LLAMA4_NCCL that does not exist is an error, not a reason to look elsewhere. Failure is not cached.
/// </summary>
internal static class NcclLocator
{
    public const string EnvironmentVariable = "LLAMA4_NCCL";
    public const string CacheRelativeFolder = ".cache/nccl/usr/lib/x86_64-linux-gnu";

    static readonly Lock Gate = new();
    static NcclLocation? _chosen;
    static List<string> _searched = [];

    /// <summary>A libnccl file or the folder holding it; wins over every other place. Set before the first NCCL call.</summary>
    public static string? ExplicitPath { get; set; }

    public static NcclLocation? Chosen => Volatile.Read(ref _chosen);

    public static IReadOnlyList<string> Searched { get { lock (Gate) return _searched.ToArray(); } }

    /// <summary>Finds and loads NCCL on first call; throws <see cref="NcclNotFoundException"/> when nothing usable is found.</summary>
    public static NcclLocation Load()
    {
        var chosen = Volatile.Read(ref _chosen);
        if (chosen is not null) return chosen;
        lock (Gate)
        {
            if (_chosen is not null) return _chosen;
            var log = new List<string>();
            _searched = log;
            var found = LibraryLocator.Search(Places, log, (o, t, named) => TryLibrary(o, t, named, log));
            Volatile.Write(ref _chosen, found);
            return found;
        }
    }

    /// <summary>Whether NCCL can be loaded here; <paramref name="reason"/> says why not (the search log).</summary>
    public static bool TryLoad(out string reason)
    {
        try { reason = Load().Describe(); return true; }
        catch (NcclNotFoundException e) { reason = e.Message; return false; }
    }

    /// <summary>NCCL's places for the shared search (<see cref="LibraryLocator"/>): CUDA_PATH's lib64 and lib, the CUDA
    /// installs, the nvidia-nccl-cu12 wheel, .cache/nccl.</summary>
    static LibraryLocator.Spec Places => new("libnccl", $"{nameof(NcclLocator)}.{nameof(ExplicitPath)}", ExplicitPath, EnvironmentVariable,
        ["lib64", "lib"], NativeLibraryNames.NcclSonames, LibraryLocator.UnixCudaInstalls, [Path.Combine("nvidia", "nccl", "lib")],
        CacheRelativeFolder, "nccl", " (./build.sh nccl fetches it)", FilesIn, (log, cause) => NotFound(log, cause));

    internal static string? FindCacheAbove(string start) => LibraryLocator.FindCacheAbove(start, CacheRelativeFolder);

    static IEnumerable<string> FilesIn(string dir) =>
        NativeLibraryNames.NcclSonames.Select(n => Path.Combine(dir, n)).Where(File.Exists)
            .Concat(LibraryLocator.NewestFirst(Directory.GetFiles(dir, "libnccl.so.*"), "libnccl.so.")).Distinct();

    static unsafe NcclLocation? TryLibrary(string origin, string target, bool loaderName, List<string> log)
    {
        nint handle;
        try { handle = NativeLibrary.Load(target); }
        catch (DllNotFoundException e)
        {
            // The loader's message says why (missing file, or e.g. "version `GLIBC_2.38' not found").
            log.Add($"{origin}: {target}: {(loaderName ? "not found by the loader" : "could not be loaded: " + LoaderReason(e.Message, target))}");
            return null;
        }
        catch (BadImageFormatException e) { log.Add($"{origin}: {target}: not a library for this machine: {FirstLine(e.Message)}"); return null; }
        if (!NativeLibrary.TryGetExport(handle, "ncclGetVersion", out var export))
        {
            log.Add($"{origin}: {target}: loaded, but has no ncclGetVersion (not NCCL)");
            NativeLibrary.Free(handle);
            return null;
        }
        int version;
        var r = ((delegate* unmanaged<int*, ncclResult_t>)export)(&version);
        if (r != ncclResult_t.ncclSuccess || version < 20000)
        {
            log.Add(r != ncclResult_t.ncclSuccess ? $"{origin}: {target}: ncclGetVersion failed: {r}" : $"{origin}: {target}: NCCL {version} is not NCCL 2");
            NativeLibrary.Free(handle);
            return null;
        }
        log.Add($"{origin}: {target}: NCCL {version} — taken");
        return new NcclLocation(origin, target, version, handle);
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    /// <summary>The dynamic loader's own line from .NET's message (e.g. "…: version `GLIBC_2.38' not found"), else its first line.</summary>
    static string LoaderReason(string message, string target) =>
        message.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith(target + ":", StringComparison.Ordinal) || l.Contains("GLIBC", StringComparison.Ordinal))
        ?? FirstLine(message);

    static NcclNotFoundException NotFound(List<string> log, string? cause = null)
    {
        var sb = new StringBuilder();
        sb.AppendLine(cause ?? "NCCL (NVIDIA's collective library, libnccl.so.2) was not found or could not be loaded; several CUDA devices need it.");
        sb.AppendLine("Searched, in order:");
        foreach (var line in log) sb.Append("  - ").AppendLine(line);
        sb.AppendLine("To fix: ./build.sh nccl (fetches Debian trixie's libnccl2 2.22.3 into .cache/nccl; it needs glibc ≥ 2.38), or");
        sb.Append("pip install nvidia-nccl-cu12, or set LLAMA4_NCCL to a libnccl.so.2 file or its folder (NcclLocator.ExplicitPath in code).");
        return new NcclNotFoundException(sb.ToString(), log.ToArray());
    }
}
