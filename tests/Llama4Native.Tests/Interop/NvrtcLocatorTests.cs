using Llama4Native.Interop;
using NUnit.Framework;

namespace Llama4Native.Tests.Interop;

/// <summary>The search itself, run afresh (NvrtcLocator.Search) without disturbing the location in use.</summary>
[TestFixture]
[NonParallelizable]
public class NvrtcLocatorTests
{
    private string? _savedExplicit;
    private string? _savedEnv;

    [SetUp]
    public void Save()
    {
        _savedExplicit = NvrtcLocator.ExplicitPath;
        _savedEnv = Environment.GetEnvironmentVariable(NvrtcLocator.EnvironmentVariable);
    }

    [TearDown]
    public void Restore()
    {
        NvrtcLocator.ExplicitPath = _savedExplicit;
        Environment.SetEnvironmentVariable(NvrtcLocator.EnvironmentVariable, _savedEnv);
    }

    private static string CacheOrIgnore()
    {
        var cache = NvrtcLocator.FindCacheAbove(AppContext.BaseDirectory);
        if (cache == null) Assert.Ignore("no .cache/nvrtc above the test folder");  // throws: the test stops here, ignored
        return cache!;
    }

    [Test]
    public void The_cache_is_found_walking_up_from_the_app_folder()
    {
        var cache = CacheOrIgnore();
        Assert.That(File.Exists(Path.Combine(cache, "libnvrtc.so.12")), Is.True);
        Assert.That(NvrtcLocator.LibraryFilesIn(cache).First(), Does.EndWith("libnvrtc.so.12"));
        Assert.That(NvrtcLocator.BuiltinsIn(cache, 12, 4), Does.EndWith("libnvrtc-builtins.so.12.4"));
        Assert.That(NvrtcLocator.BuiltinsIn(cache, 13, 0), Is.Null);
    }

    [Test]
    public void Explicit_path_to_a_folder_wins()
    {
        var cache = CacheOrIgnore();
        NvrtcLocator.ExplicitPath = cache;
        var log = new List<string>();
        var loc = NvrtcLocator.Search(log);
        Assert.That(loc.Origin, Is.EqualTo("NvrtcLocator.ExplicitPath"));
        Assert.That(loc.LibraryPath, Does.StartWith(cache));
        Assert.That(log, Has.Count.EqualTo(1), "nothing else was tried");
    }

    [Test]
    public void Environment_variable_naming_a_file_is_used()
    {
        var cache = CacheOrIgnore();
        NvrtcLocator.ExplicitPath = null;
        Environment.SetEnvironmentVariable(NvrtcLocator.EnvironmentVariable, Path.Combine(cache, "libnvrtc.so.12"));
        var log = new List<string>();
        var loc = NvrtcLocator.Search(log);
        Assert.That(loc.Origin, Is.EqualTo(NvrtcLocator.EnvironmentVariable));
        Assert.That(loc.BuiltinsPath, Does.EndWith("libnvrtc-builtins.so.12.4"));
        Assert.That(log[0], Does.StartWith("NvrtcLocator.ExplicitPath: not set"));
    }

    [Test]
    public void A_missing_explicit_path_fails_listing_what_was_searched_and_the_fix()
    {
        NvrtcLocator.ExplicitPath = "/nonexistent/libnvrtc.so.12";
        var e = Assert.Throws<NvrtcNotFoundException>(() => NvrtcLocator.Search([]))!;
        Assert.That(e.Message, Does.Contain("'/nonexistent/libnvrtc.so.12', which does not exist"));
        Assert.That(e.Message, Does.Contain("./build.sh").And.Contain("LLAMA4_NVRTC"));
        Assert.That(e.Searched, Has.Some.Contains("/nonexistent/libnvrtc.so.12"));
    }

    [Test]
    public void Search_order_starts_with_the_user_settings_and_ends_with_the_caches()
    {
        NvrtcLocator.ExplicitPath = null;
        Environment.SetEnvironmentVariable(NvrtcLocator.EnvironmentVariable, null);
        var log = new List<string>();
        var origins = NvrtcLocator.Candidates(log).Select(c => c.Origin).Distinct().ToList();
        Assert.That(log[0], Does.StartWith("NvrtcLocator.ExplicitPath: not set"));
        Assert.That(log[1], Does.StartWith("LLAMA4_NVRTC: not set"));
        Assert.That(origins, Does.Contain("default loader"));
        int loader = origins.IndexOf("default loader");
        int cache = origins.IndexOf("cache above the app folder");
        if (cache >= 0) Assert.That(cache, Is.GreaterThan(loader));
        var names = NvrtcLocator.Candidates([]).Where(c => c.Origin == "default loader").Select(c => c.Target);
        Assert.That(names, Is.EqualTo(NativeLibraryNames.NvrtcSonames));
    }

    [Test]
    public void Versioned_folders_sort_newest_first()
    {
        var sorted = NvrtcLocator.NewestFirst(["/usr/local/cuda-11.8", "/usr/local/cuda-12.10", "/usr/local/cuda-12.4", "/usr/local/cuda-13.0"], "cuda-");
        Assert.That(sorted, Is.EqualTo(new[] { "/usr/local/cuda-13.0", "/usr/local/cuda-12.10", "/usr/local/cuda-12.4", "/usr/local/cuda-11.8" }));
        Assert.That(NvrtcLocator.ParseVersion("12.4.127"), Is.EqualTo(new Version(12, 4, 127)));
        Assert.That(NvrtcLocator.ParseVersion("3.11"), Is.EqualTo(new Version(3, 11)));
        Assert.That(NvrtcLocator.ParseVersion("13"), Is.EqualTo(new Version(13, 0)));
    }
}
