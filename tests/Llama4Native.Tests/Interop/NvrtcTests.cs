using NUnit.Framework;
using System.Text;
using Llama4Native.Interop;

namespace Llama4Native.Tests.Interop;

/// <summary>NVRTC needs no GPU: these run everywhere NVRTC can be found (here: the repo's .cache).</summary>
[TestFixture]
public class NvrtcTests
{
    [Test]
    public void Locator_finds_an_nvrtc_and_remembers_where()
    {
        var loc = NvrtcLocator.Load();
        Assert.That(loc.Handle, Is.Not.Zero);
        Assert.That(NvrtcLocator.Chosen, Is.SameAs(loc));
        Assert.That(NvrtcLocator.Searched, Is.Not.Empty);
        TestContext.Out.WriteLine(loc.Describe());
        foreach (var line in NvrtcLocator.Searched) TestContext.Out.WriteLine("  " + line);
    }

    /// <summary>Our cache (the origin may read "default loader" when another test already loaded it by path).</summary>
    private static bool FromOurCache(NvrtcLocation loc) =>
        loc.LibraryPath.Replace('\\', '/').Contains("/" + NvrtcLocator.CacheRelativeFolder + "/", StringComparison.Ordinal);

    [Test]
    public void Locator_uses_the_repo_cache_on_a_machine_without_cuda()
    {
        // On the dev machines nothing but our cache has NVRTC; elsewhere a system NVRTC may legitimately win.
        var loc = NvrtcLocator.Load();
        if (NvrtcLocator.FindCacheAbove(AppContext.BaseDirectory) is null || !FromOurCache(loc))
            Assert.Ignore($"NVRTC came from elsewhere: {loc.Describe()}");
        Assert.That(loc.BuiltinsPath, Is.Not.Null.And.EndsWith("libnvrtc-builtins.so.12.4"));
        Assert.That(Path.GetDirectoryName(loc.BuiltinsPath), Is.EqualTo(Path.GetDirectoryName(loc.LibraryPath)));
    }

    [Test]
    public void Version_is_12_4_from_the_cache()
    {
        var (major, minor) = Nvrtc.Version;
        Assert.That(major, Is.GreaterThanOrEqualTo(12));
        if (FromOurCache(NvrtcLocator.Chosen!))
            Assert.That((major, minor), Is.EqualTo((12, 4)));
    }

    [Test]
    public void Supported_archs_include_ampere_and_hopper()
    {
        var archs = Nvrtc.SupportedArchs;
        TestContext.Out.WriteLine(string.Join(", ", archs));
        Assert.That(archs, Does.Contain(80).And.Contain(90));
        Assert.That(archs, Is.Ordered);
    }

    [TestCase("--gpu-architecture=compute_90a")]
    [TestCase("--gpu-architecture=compute_80")]
    public void Compiles_to_ptx_with_entries_and_a_trailing_nul(string arch)
    {
        var r = NvrtcCompiler.Compile(TestKernels.Saxpy, "saxpy.cu", [arch], wantCubin: false);
        Assert.That(r.Ptx[^1], Is.EqualTo((byte)0), "PTX ends with NUL as NVRTC gives it");
        Assert.That(r.PtxText, Does.Contain(".entry saxpy"));
        Assert.That(r.PtxText, Does.Contain(".entry add_one"));
        Assert.That(r.Cubin, Is.Null);
        Assert.That(r.PtxText, Does.Contain(".target sm_" + arch[(arch.IndexOf('_') + 1)..]));
    }

    [Test]
    public void Compiles_to_cubin_for_sm_90a()
    {
        var r = NvrtcCompiler.Compile(TestKernels.Saxpy, "saxpy.cu", ["-arch=sm_90a"], wantCubin: true);
        Assert.That(r.Cubin, Is.Not.Null);
        Assert.That(r.Cubin!.Take(4), Is.EqualTo(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }));
        Assert.That(r.PtxText, Does.Contain(".entry saxpy"));
    }

    [Test]
    public void Cubin_without_a_real_arch_is_refused_up_front()
    {
        Assert.Throws<ArgumentException>(() =>
            NvrtcCompiler.Compile(TestKernels.Saxpy, "saxpy.cu", ["--gpu-architecture=compute_90a"], wantCubin: true));
    }

    [Test]
    public void In_memory_headers_are_included()
    {
        const string header = "#pragma once\ntypedef unsigned int u32;\n#define SCALE 3.0f\n";
        const string source = "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* y, u32 n) { if (threadIdx.x < n) y[threadIdx.x] *= SCALE; }\n";
        var r = NvrtcCompiler.Compile(source, "k.cu", [("common.cuh", header)], ["--gpu-architecture=compute_90a"], wantCubin: false);
        Assert.That(r.PtxText, Does.Contain(".entry k"));
    }

    [Test]
    public void A_syntax_error_throws_with_the_log_naming_the_line()
    {
        var e = Assert.Throws<NvrtcException>(() =>
            NvrtcCompiler.Compile(TestKernels.SyntaxError, "broken.cu", ["--gpu-architecture=compute_90a"], wantCubin: false))!;
        Assert.That(e.Result, Is.EqualTo(nvrtcResult.NVRTC_ERROR_COMPILATION));
        Assert.That(e.Log, Does.Contain("broken.cu(3)"));
        Assert.That(e.Message, Does.Contain("broken.cu(3)").And.Contain("NVRTC_ERROR_COMPILATION"));
        TestContext.Out.WriteLine(e.Message);
    }

    [Test]
    public void An_unknown_option_throws_invalid_option()
    {
        var e = Assert.Throws<NvrtcException>(() =>
            NvrtcCompiler.Compile(TestKernels.Saxpy, "saxpy.cu", ["--gpu-arch=compute_90a"], wantCubin: false))!;
        Assert.That(e.Result, Is.EqualTo(nvrtcResult.NVRTC_ERROR_INVALID_OPTION));
    }

    [Test]
    public void Log_is_returned_on_success_and_ptxas_v_parses_without_spills()
    {
        var r = NvrtcCompiler.Compile(TestKernels.Saxpy, "saxpy.cu", ["-arch=sm_90a", "--ptxas-options=-v"], wantCubin: true);
        Assert.That(r.Log, Does.Contain("Used"));
        var info = r.KernelInfo.ToDictionary(k => k.Name);
        Assert.That(info.Keys, Is.EquivalentTo(new[] { "saxpy", "add_one", "reverse_block" }));
        foreach (var k in info.Values)
        {
            Assert.That(k.Arch, Is.EqualTo("sm_90a"));
            Assert.That(k.Registers, Is.GreaterThan(0), k.Name);
            Assert.That(k.Spills, Is.False, k.Name);
        }
    }

    [Test]
    public void Ptxas_v_reports_spills_under_a_tight_register_cap()
    {
        var r = NvrtcCompiler.Compile(TestKernels.Spill, "spill.cu",
            ["-arch=sm_90a", "--ptxas-options=-v", "-maxrregcount=16"], wantCubin: true);
        var k = r.KernelInfo.Single();
        TestContext.Out.WriteLine(k);
        Assert.That(k.Name, Is.EqualTo("spill"));
        Assert.That(k.SpillStoreBytes, Is.GreaterThan(0));
        Assert.That(k.SpillLoadBytes, Is.GreaterThan(0));
        Assert.That(k.StackFrameBytes, Is.GreaterThan(1000), "the 1 KiB local array lives on the stack");
        Assert.That(k.SharedMemoryBytes, Is.EqualTo(256));
    }

    [Test]
    public void Compiles_concurrently()
    {
        var results = new NvrtcCompileResult[4];
        Parallel.For(0, results.Length, i => results[i] =
            NvrtcCompiler.Compile(TestKernels.Saxpy, $"saxpy{i}.cu", ["--gpu-architecture=compute_90a"], wantCubin: false));
        Assert.That(results.Select(r => Encoding.ASCII.GetString(r.Ptx)).Distinct().Count(), Is.EqualTo(1));
    }
}
