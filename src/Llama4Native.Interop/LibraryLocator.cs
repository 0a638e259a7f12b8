namespace Llama4Native.Interop;

/// <summary>
/// The search <see cref="NvrtcLocator"/> and <see cref="NcclLocator"/> share: one ordered list of places — an explicit
/// path, an environment variable, CUDA_PATH/CUDA_HOME, the default loader's sonames, CUDA installs, Python wheels, our
/// <c>.cache</c> above the app folder and under <c>$LLAMA4_CACHE</c> — each turned into candidates (a file, a folder to
/// look into, a bare name for the loader) and tried in order by the library's own probe (which loads it and asks its
/// version). What differs between the libraries (names, variables, sub-folders, the probe, the not-found message) is a
/// <see cref="Spec"/>; every place that yields nothing is written to the search log the error shows.
/// </summary>
internal static class LibraryLocator
{
    /// <summary>The environment variable naming our cache root (build.sh's <c>.cache</c>).</summary>
    public const string CacheEnvironmentVariable = "LLAMA4_CACHE";

    internal enum CandidateKind { File, Folder, LoaderName }

    /// <summary>A place to try: a file, a folder to look into, or a bare name for the default loader.</summary>
    internal readonly record struct Candidate(string Origin, string Target, CandidateKind Kind);

    /// <summary>What one library's search needs.</summary>
    /// <param name="Library">the file stem for the log ("libnvrtc")</param>
    /// <param name="ExplicitOrigin">how the explicit path is named in the log ("NvrtcLocator.ExplicitPath")</param>
    /// <param name="ExplicitPath">a file or folder set in code; wins over every other place</param>
    /// <param name="EnvironmentVariable">the variable naming a file or folder ("LLAMA4_NCCL")</param>
    /// <param name="CudaSubfolders">where under CUDA_PATH/CUDA_HOME to look</param>
    /// <param name="Sonames">names the default loader is asked for, preferred first</param>
    /// <param name="InstallFolders">CUDA install folders, preferred first</param>
    /// <param name="WheelSubpaths">under each Python site-/dist-packages (e.g. nvidia/nccl/lib)</param>
    /// <param name="CacheRelativeFolder">our cache folder relative to a folder above the app (".cache/nccl/usr/lib/x86_64-linux-gnu")</param>
    /// <param name="CacheName">the folder under $LLAMA4_CACHE ("nccl")</param>
    /// <param name="CacheHint">appended to the log line when no cache is found (how to fetch it)</param>
    /// <param name="FilesIn">the library's files in a folder, preferred first</param>
    /// <param name="NotFound">the library's error for a search log and an optional cause</param>
    internal sealed record Spec(string Library, string ExplicitOrigin, string? ExplicitPath, string EnvironmentVariable, string[] CudaSubfolders,
                                IReadOnlyList<string> Sonames, Func<IEnumerable<string>> InstallFolders, string[] WheelSubpaths,
                                string CacheRelativeFolder, string CacheName, string CacheHint,
                                Func<string, IEnumerable<string>> FilesIn, Func<List<string>, string?, Exception> NotFound);

    /// <summary>The places in search order. Logs places that yield nothing; an explicit path or variable naming nothing throws.</summary>
    public static IEnumerable<Candidate> Candidates(Spec s, List<string> log)
    {
        foreach (var c in UserSetting(s, s.ExplicitOrigin, s.ExplicitPath, log)) yield return c;
        foreach (var c in UserSetting(s, s.EnvironmentVariable, Environment.GetEnvironmentVariable(s.EnvironmentVariable), log)) yield return c;

        foreach (var variable in new[] { "CUDA_PATH", "CUDA_HOME" })
        {
            var root = Environment.GetEnvironmentVariable(variable);
            if (string.IsNullOrEmpty(root)) { log.Add($"{variable}: not set"); continue; }
            foreach (var sub in s.CudaSubfolders)
                foreach (var c in IfFolder(variable, Path.Combine(root, sub), log)) yield return c;
        }

        foreach (var name in s.Sonames) yield return new Candidate("default loader", name, CandidateKind.LoaderName);

        foreach (var dir in s.InstallFolders())
            foreach (var c in IfFolder("CUDA install", dir, log)) yield return c;

        foreach (var dir in PythonWheelFolders(s.WheelSubpaths))
            foreach (var c in IfFolder("Python wheel", dir, log)) yield return c;

        var cache = FindCacheAbove(AppContext.BaseDirectory, s.CacheRelativeFolder);
        if (cache is null) log.Add($"cache: no {s.CacheRelativeFolder} above {AppContext.BaseDirectory}{s.CacheHint}");
        else yield return new Candidate("cache above the app folder", cache, CandidateKind.Folder);

        var cacheRoot = Environment.GetEnvironmentVariable(CacheEnvironmentVariable);
        if (string.IsNullOrEmpty(cacheRoot)) log.Add($"{CacheEnvironmentVariable}: not set");
        else foreach (var c in IfFolder(CacheEnvironmentVariable, Path.Combine(cacheRoot, s.CacheName, "usr", "lib", "x86_64-linux-gnu"), log)) yield return c;
    }

    /// <summary>Tries every candidate in order with <paramref name="tryLibrary"/> (origin, path or name, whether it is a
    /// loader name); the first it accepts wins. Throws the spec's not-found error, with the log, when none does.</summary>
    public static T Search<T>(Spec s, List<string> log, Func<string, string, bool, T?> tryLibrary) where T : class
    {
        foreach (var c in Candidates(s, log))
        {
            switch (c.Kind)
            {
                case CandidateKind.Folder:
                    var files = s.FilesIn(c.Target).ToList();
                    if (files.Count == 0) { log.Add($"{c.Origin}: {c.Target}: no {s.Library} here"); continue; }
                    foreach (var f in files)
                        if (tryLibrary(c.Origin, f, false) is { } found) return found;
                    break;
                case CandidateKind.File:
                    if (tryLibrary(c.Origin, c.Target, false) is { } file) return file;
                    break;
                default:
                    if (tryLibrary(c.Origin, c.Target, true) is { } named) return named;
                    break;
            }
        }
        throw s.NotFound(log, null);
    }

    /// <summary>The first <paramref name="relative"/> folder in <paramref name="start"/> or a folder above it.</summary>
    public static string? FindCacheAbove(string start, string relative)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            var probe = Path.Combine(dir.FullName, relative);
            if (Directory.Exists(probe)) return probe;
        }
        return null;
    }

    static IEnumerable<Candidate> UserSetting(Spec s, string origin, string? value, List<string> log)
    {
        if (string.IsNullOrEmpty(value)) { log.Add($"{origin}: not set"); yield break; }
        if (File.Exists(value)) yield return new Candidate(origin, Path.GetFullPath(value), CandidateKind.File);
        else if (Directory.Exists(value)) yield return new Candidate(origin, Path.GetFullPath(value), CandidateKind.Folder);
        else
        {
            log.Add($"{origin}={value}: no such file or folder");
            throw s.NotFound(log, $"{origin} is set to '{value}', which does not exist.");
        }
    }

    static IEnumerable<Candidate> IfFolder(string origin, string dir, List<string> log)
    {
        if (Directory.Exists(dir)) yield return new Candidate(origin, dir, CandidateKind.Folder);
        else log.Add($"{origin}: {dir}: no such folder");
    }

    /// <summary>/usr/local/cuda/lib64, then /usr/local/cuda-*/lib64 newest first.</summary>
    public static IEnumerable<string> UnixCudaInstalls()
    {
        yield return "/usr/local/cuda/lib64";
        if (Directory.Exists("/usr/local"))
            foreach (var d in NewestFirst(Directory.GetDirectories("/usr/local", "cuda-*"), "cuda-"))
                yield return Path.Combine(d, "lib64");
    }

    /// <summary>Each <paramref name="subpaths"/> under the site-/dist-packages of /usr/lib/python3*, /usr/local/lib/python3*,
    /// ~/.local/lib/python3*, $VIRTUAL_ENV and $CONDA_PREFIX (newest Python first).</summary>
    public static IEnumerable<string> PythonWheelFolders(string[] subpaths)
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
                    foreach (var sub in subpaths)
                        yield return Path.Combine(py, packages, sub);
        }
    }

    /// <summary>Sorts names by the version after <paramref name="prefix"/> ("cuda-12.4" → 12.4), newest first.</summary>
    public static IEnumerable<string> NewestFirst(IEnumerable<string> paths, string prefix) =>
        paths.OrderByDescending(p => ParseVersion(Path.GetFileName(p).AsSpan(prefix.Length)));

    /// <summary>The leading dotted number of <paramref name="s"/> ("12.4.127" → 12.4.127; "12" → 12.0).</summary>
    public static Version ParseVersion(ReadOnlySpan<char> s)
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
}
