using Llama4Native.Devices.Cuda;
using Llama4Native.Devices.Emulated;
using Llama4Native.Kernels;

namespace Llama4Native.Tests.Devices;

public class KernelJitTests
{
    [Test]
    public void EveryKernelFileIsEmbeddedWithItsEntryPointsAndIncludes()
    {
        var files = KernelSources.KernelFiles.ToList();
        Assert.That(files, Does.Contain("gemm.cu").And.Contain("rmsnorm.cu"));
        foreach (var f in files)
        {
            Assert.That(KernelSources.EntryPoints(f), Is.Not.Empty, f);
            Assert.That(KernelSources.Includes(f), Does.Contain("common.cuh"), f);
        }
        Assert.That(KernelSources.EntryPoints("gemm.cu"), Does.Contain("gemm_mma_kn_bf16_bf16_bf16"));
    }

    [Test]
    public void DefinesAreCanonicalAndRejectInjection()
    {
        var a = KernelDefines.Of(("B", 2), ("A", 1));
        var b = KernelDefines.Of(("A", 1), ("B", 2));
        Assert.That(a, Is.EqualTo(b));
        Assert.That(a.Key, Is.EqualTo("A=1;B=2"));
        Assert.That(KernelDefines.Of(("A", 1)), Is.Not.EqualTo(a));
        Assert.Throws<ArgumentException>(() => KernelDefines.Of(("A -DX", 1)));
        Assert.Throws<ArgumentException>(() => KernelDefines.Of(("A", "1 --evil")));
    }

    [Test, Category("Emulator")]
    public void EmulatorModulesAreCachedByDefines()
    {
        var dir = Path.Combine(Path.GetTempPath(), "l4-jit-" + Guid.NewGuid().ToString("N"));
        try
        {
            var comp = new EmuCompiler(new KernelCache(dir));
            var m1 = comp.Compile(Softmax.File, KernelDefines.None);
            var m2 = comp.Compile(Softmax.File, KernelDefines.None);
            var m3 = comp.Compile(Softmax.File, KernelDefines.Of(("SOFTMAX_THREADS", 128)));
            Assert.That(m2.LibraryPath, Is.EqualTo(m1.LibraryPath));
            Assert.That(m2.Log, Is.EqualTo("(cached)"));
            Assert.That(m3.LibraryPath, Is.Not.EqualTo(m1.LibraryPath));
            Assert.That(File.Exists(m3.LibraryPath));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void NvrtcCubinsAreCachedAndUsedAsIs()
    {
        var dir = Path.Combine(Path.GetTempPath(), "l4-jit-" + Guid.NewGuid().ToString("N"));
        try
        {
            var comp = new NvrtcKernelCompiler("sm_90a", new KernelCache(dir));
            var (m1, info) = comp.CompileWithInfo(Softmax.File, KernelDefines.None);
            Assert.That(m1.Image.Length, Is.GreaterThan(1000));
            Assert.That(info.Select(k => k.Name), Does.Contain("softmax_f32"));
            Assert.That(info.All(k => !k.Spills));
            var cubins = Directory.GetFiles(Path.Combine(dir, "sm_90a"), "*.cubin");
            Assert.That(cubins, Has.Length.EqualTo(1));
            // Tamper with the cached file: a second compile must return the cached bytes, not recompile.
            var bytes = File.ReadAllBytes(cubins[0]);
            bytes[^1] ^= 0x5a;
            File.WriteAllBytes(cubins[0], bytes);
            var (m2, _) = comp.CompileWithInfo(Softmax.File, KernelDefines.None);
            Assert.That(m2.Image, Is.EqualTo(bytes));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void AnNvrtcCompileErrorCarriesTheLog()
    {
        // A define that breaks the kernel's own static checks (GEMM_BK must be a multiple of 16).
        var dir = Path.Combine(Path.GetTempPath(), "l4-jit-" + Guid.NewGuid().ToString("N"));
        try
        {
            var comp = new NvrtcKernelCompiler("sm_80", new KernelCache(dir));
            var e = Assert.Throws<KernelCompileException>(() => comp.Compile(Gemm.File, KernelDefines.Of(("GEMM_BK", 7))));
            Assert.That(e!.Message, Does.Contain("gemm.cu").And.Contain("sm_80"));
            Assert.That(e.Log, Does.Contain("error"));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
