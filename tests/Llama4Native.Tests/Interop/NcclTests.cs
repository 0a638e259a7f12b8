using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using Llama4Native.Interop;

namespace Llama4Native.Tests.Interop;

/// <summary>
/// What can be checked of the NCCL path without a GPU: every binding names a symbol libnccl.so.2 exports (read from the
/// ELF dynamic symbol table of the library build.sh fetched, so it runs even where that build cannot be loaded), the
/// library loads and answers ncclGetVersion / ncclGetErrorString (where this machine's glibc allows: Debian trixie's
/// build needs glibc 2.38), error results become exceptions naming the result and the fix, and a library that does not
/// load is reported with the loader's reason.
/// </summary>
public class NcclTests
{
    static string? CachedLibrary()
    {
        var env = Environment.GetEnvironmentVariable(NcclLocator.EnvironmentVariable);
        if (!string.IsNullOrEmpty(env)) return Directory.Exists(env) ? Path.Combine(env, "libnccl.so.2") : env;
        var dir = NcclLocator.FindCacheAbove(AppContext.BaseDirectory);
        return dir is null ? null : Path.Combine(dir, "libnccl.so.2");
    }

    [Test]
    public void EveryBindingIsInTheSymbolListAndExportedByLibnccl()
    {
        var imported = typeof(Nccl).GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Where(m => m.GetCustomAttribute<LibraryImportAttribute>() is not null).Select(m => m.Name).ToHashSet();
        Assert.That(imported, Is.Not.Empty);
        Assert.That(Nccl.Symbols, Is.EquivalentTo(imported), "Nccl.Symbols lists exactly the [LibraryImport] entry points");
        var lib = CachedLibrary();
        if (lib is null || !File.Exists(lib)) Assert.Ignore($"no libnccl.so.2 fetched (./build.sh nccl) and LLAMA4_NCCL not set");
        var exported = ElfDynamicSymbols(File.ReadAllBytes(Path.GetFullPath(lib)));
        Assert.That(exported, Does.Contain("ncclCommInitRank"), "a real libnccl");
        var missing = Nccl.Symbols.Where(s => !exported.Contains(s)).ToList();
        Assert.That(missing, Is.Empty, $"{lib} does not export: {string.Join(", ", missing)}");
        TestContext.Out.WriteLine($"{lib}: all {Nccl.Symbols.Count} bound symbols exported (of {exported.Count(s => s.StartsWith("nccl", StringComparison.Ordinal))} nccl* symbols)");
    }

    [Test]
    public void LoadsAndAnswersWithoutAGpu_OrSaysWhyNot()
    {
        if (!NcclLocator.TryLoad(out var reason))
        {
            // The failure must say where it looked and why the library it found did not load.
            Assert.That(reason, Does.Contain("Searched, in order:").And.Contain("To fix:"));
            if (CachedLibrary() is { } lib && File.Exists(lib))
                Assert.That(reason, Does.Contain(": could not be loaded: "), "a library that exists but does not load is reported with the loader's reason");
            Assert.Ignore($"NCCL does not load here: {reason.Split('\n').FirstOrDefault(l => l.Contains(": could not be loaded")) ?? reason.Split('\n')[0]}");
        }
        int v = Nccl.Version;
        Assert.That(v, Is.GreaterThanOrEqualTo(20000));
        TestContext.Out.WriteLine(NcclLocator.Chosen!.Describe());
        Assert.That(Nccl.ErrorString(ncclResult_t.ncclInvalidArgument), Is.Not.Empty);
        Assert.That(Nccl.ErrorString(ncclResult_t.ncclSuccess), Is.Not.Empty);
        // An error result from the real library: a null communicator.
        var r = Nccl.ncclCommCount(default, out _);
        Assert.That(r, Is.EqualTo(ncclResult_t.ncclInvalidArgument));
        var e = Assert.Throws<NcclException>(() => Nccl.Check(r));
        Assert.That(e!.Message, Does.Contain("ncclInvalidArgument").And.Contain("Fix:").And.Contain(Nccl.ErrorString(r)));
        Assert.That(Nccl.ncclAllReduce(0, 0, 1, ncclDataType_t.ncclFloat32, ncclRedOp_t.ncclSum, default, 0), Is.Not.EqualTo(ncclResult_t.ncclSuccess));
    }

    [Test]
    public void ErrorResultsNameTheResultAndTheFix()
    {
        var fixes = new HashSet<string>();
        foreach (var r in Enum.GetValues<ncclResult_t>().Where(r => r != ncclResult_t.ncclSuccess))
        {
            var e = new NcclException(r, "ncclAllReduce(send, recv, n, ncclFloat32, ncclSum, comm, stream)", "peer 3 went away");
            Assert.That(e.Message, Does.StartWith("ncclAllReduce(").And.Contain($"failed: {r}").And.Contain("peer 3 went away").And.Contain("Fix: "));
            Assert.That(fixes.Add(NcclException.Fix(r)), $"{r} has its own fix");
        }
        Assert.That(NcclException.Fix(ncclResult_t.ncclInvalidUsage), Does.Contain("same collectives"));
        Assert.That(Llama4Native.Distributed.NcclCommunicatorTypes.DataTypeOf(Tensors.DType.BF16), Is.EqualTo(ncclDataType_t.ncclBfloat16));
        Assert.That(() => Llama4Native.Distributed.NcclCommunicatorTypes.DataTypeOf(Tensors.DType.I4), Throws.ArgumentException.With.Message.Contains("I4"));
    }

    [Test]
    public void AMissingExplicitPathIsAnErrorNotASearch()
    {
        if (NcclLocator.Chosen is not null) Assert.Ignore("NCCL is already loaded in this process (the choice is kept)");
        NcclLocator.ExplicitPath = "/nonexistent/libnccl.so.2";
        try
        {
            var e = Assert.Throws<NcclNotFoundException>(() => NcclLocator.Load());
            Assert.That(e!.Message, Does.Contain("which does not exist").And.Contain("LLAMA4_NCCL"));
        }
        finally { NcclLocator.ExplicitPath = null; }
    }

    /// <summary>The 1-rank NCCL smoke test `bench/gpu-check.sh run` gets through the suite on a GPU machine (NCCL from
    /// LLAMA4_NCCL, CUDA, or PyTorch's nvidia/nccl wheel): every collective of the interface on cuda:0 through NCCL.</summary>
    [Test]
    public void OneRankCollectivesOnCuda()
    {
        using var dev = TestDevices.CudaOrIgnore();
        if (!NcclLocator.TryLoad(out var reason)) Assert.Ignore($"a GPU but no NCCL: {reason}");
        TestContext.Out.WriteLine(NcclLocator.Chosen!.Describe());
        using var group = Llama4Native.Distributed.NcclGroup.CreateLocal([(Llama4Native.Devices.Cuda.CudaDevice)dev]);
        var comm = group.Ranks[0];
        var rng = new Random(TestSeed.For("nccl 1-rank"));
        var x = Ops.DeviceData.Normal(rng, 1001);
        using var a = Ops.DeviceData.Upload(dev, x, Tensors.DType.F32);
        using var b = Ops.DeviceData.Poisoned(dev, 1001, Tensors.DType.F32);
        var ta = new Tensors.Tensor(a.Ptr, Tensors.DType.F32, new Tensors.Shape(1001));
        var tb = new Tensors.Tensor(b.Ptr, Tensors.DType.F32, new Tensors.Shape(1001));
        foreach (var (name, op) in new (string, Action)[] {
            ("all-reduce", () => comm.AllReduceSum(ta, tb)), ("all-gather", () => comm.AllGather(ta, tb)),
            ("reduce-scatter", () => comm.ReduceScatterSum(ta, tb)), ("broadcast", () => comm.Broadcast(ta, tb, 0)),
            ("all-to-all", () => comm.AllToAll(ta, tb)) })
        {
            dev.Memset(b.Ptr, 0xFF, b.Bytes);
            op();
            dev.Synchronize();
            Assert.That(Ops.DeviceData.Download(dev, b.Ptr, 1001, Tensors.DType.F32), Is.EqualTo(x), $"NCCL {name} on one rank is the identity");
        }
    }

    /// <summary>Names of the defined symbols in an ELF64 little-endian shared object's .dynsym.</summary>
    static HashSet<string> ElfDynamicSymbols(byte[] f)
    {
        Assert.That(f.AsSpan(0, 4).ToArray(), Is.EqualTo(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }), "an ELF file");
        Assert.That(f[4], Is.EqualTo(2), "ELF64");
        long shoff = BitConverter.ToInt64(f, 0x28);
        int shentsize = BitConverter.ToUInt16(f, 0x3A), shnum = BitConverter.ToUInt16(f, 0x3C);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (BitConverter.ToUInt32(f, (int)sh + 4) != 11) continue; // SHT_DYNSYM
            long off = BitConverter.ToInt64(f, (int)sh + 0x18), size = BitConverter.ToInt64(f, (int)sh + 0x20), ent = BitConverter.ToInt64(f, (int)sh + 0x38);
            int link = (int)BitConverter.ToUInt32(f, (int)sh + 0x28);
            long str = BitConverter.ToInt64(f, (int)(shoff + (long)link * shentsize) + 0x18);
            for (long s = off; s < off + size; s += ent)
            {
                uint name = BitConverter.ToUInt32(f, (int)s);
                ushort shndx = BitConverter.ToUInt16(f, (int)s + 6);
                if (name == 0 || shndx == 0) continue; // undefined: imported, not exported
                int end = Array.IndexOf(f, (byte)0, (int)(str + name));
                names.Add(Encoding.ASCII.GetString(f, (int)(str + name), end - (int)(str + name)));
            }
        }
        return names;
    }
}
