using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Kernels;
using Llama4Native.Ops;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// The emulator's checker (kernels/emu/runtime.cpp, "checker") proven on real kernels: each case copies a
/// kernel's source at test time, plants one bug by a textual edit that must match exactly once (so the test
/// breaks loudly when the kernel changes), compiles the instrumented variant and runs an op-table case.
/// The launch must fail with the right check naming the right source line. The clean kernels are the
/// op-table cases themselves (<see cref="EmulatedKernelTests"/> runs all of them checked, 0 reports).
/// </summary>
[TestFixture, Category("Emulator")]
internal sealed class CheckerPlantedBugTests
{
    /// <param name="Name">test name</param>
    /// <param name="File">kernel source to edit (relative to kernels/)</param>
    /// <param name="Find">exact text to replace (must occur once)</param>
    /// <param name="Replace">the bug</param>
    /// <param name="Case">op-table case id prefix to run</param>
    /// <param name="Check">expected check: race, memory, sync, init</param>
    /// <param name="SiteFile">file of the expected reported line</param>
    /// <param name="SiteText">unique text on the expected line (in the edited source)</param>
    /// <param name="Checks">the checks enabled (default all)</param>
    public sealed record Plant(string Name, string File, string Find, string Replace, string Case, string Check, string SiteFile, string SiteText,
                               EmuCheck Checks = EmuCheck.All)
    {
        public override string ToString() => Name;
    }

    const string ReduceBarrier1 = "    __syncthreads();  // a previous call may still be reading l4_red\n";
    const string ReduceStore = "    if (lane == 0) l4_red[warp] = v;\n";

    public static IEnumerable<TestCaseData> Plants() => new Plant[]
    {
        // WAR at common.cuh's reduction-array reuse: the barrier before refilling l4_red removed. layernorm's
        // block variant calls block_sum twice (mean, then variance), so a warp refills l4_red while other
        // warps may still read the first call's partials.
        new("race-war-reduction-reuse", "common.cuh", ReduceBarrier1, "", "layernorm/block/f32,f32>f32/7x1000",
            "race", "common.cuh", "if (lane == 0) l4_red[warp] = v;"),
        // The barrier between the per-warp partials and their read removed. Threads run one at a time, so the
        // early readers read before the late writers: with all checks that is an init report (the slot was never
        // written in this block); with the race check alone, the pair is reported at the late write.
        new("race-raw-reduction", "common.cuh", ReduceStore + "    __syncthreads();\n", ReduceStore, "rmsnorm/block/",
            "race", "common.cuh", "if (lane == 0) l4_red[warp] = v;", EmuCheck.Race),
        new("init-raw-reduction", "common.cuh", ReduceStore + "    __syncthreads();\n", ReduceStore, "rmsnorm/block/",
            "init", "common.cuh", "v = lane < nwarps ? l4_red[lane] : ident;"),
        // Off-by-one global read/write: `e <= n` in add's scalar tail.
        new("memory-off-by-one", "add.cu", "for (long long e = done + tid; e < n; e += stride)", "for (long long e = done + tid; e <= n; e += stride)",
            "add/default/f32/7", "memory", "add.cu", "e <= n"),
        // Index shifted by one: softmax writes y[c + 1] (past the end from the last row). Not the 1×1 case: its one
        // entry is −inf in 1 run of 8 (masked scores), and a fully masked row never reaches the planted line.
        new("memory-index-shift", "softmax.cu", "        yr[c] = e;\n", "        yr[c + 1] = e;\n", "softmax/block/f32/4x32",
            "memory", "softmax.cu", "yr[c + 1] = e;"),
        // Read before the write: every lane reads l4_red (32 slots), only nwarps were written in this block.
        new("init-read-before-write", "common.cuh", "    v = lane < nwarps ? l4_red[lane] : ident;\n", "    v = l4_red[lane];\n", "rmsnorm/block/",
            "init", "common.cuh", "v = l4_red[lane];"),
        // A barrier under a lane condition: lanes 0 reach one __syncthreads, the others the next one.
        new("sync-barrier-under-lane-condition", "common.cuh", ReduceBarrier1, "    if (lane == 0) __syncthreads();\n", "rmsnorm/block/",
            "sync", "common.cuh", "if (lane == 0) __syncthreads();"),
        // Divergent __syncthreads_count-style barrier in sample's argmax: only lane-0 threads wait.
        new("sync-divergent-argmax-barrier", "sample.cu", "    __syncthreads();\n    if (lane == 0) { sv[warp] = v; si[warp] = i; }\n",
            "    if (lane == 0) __syncthreads();\n    if (lane == 0) { sv[warp] = v; si[warp] = i; }\n", "sample/greedy/",
            "sync", "sample.cu", "if (lane == 0) __syncthreads();"),
        // One barrier line reached through two different calls: block_sum inlined twice (on two lines), odd warps in
        // one copy, even warps in the other. Barriers are compared by line; the two code addresses of line 208 are
        // told apart by their inline chains (a duplicate made by g++ has the same chain, see DuplicatedBarrier...).
        new("sync-same-line-different-calls", "rmsnorm.cu", "    ss = WARP ? warp_sum(ss) : block_sum(ss);\n",
            "    ss = WARP ? warp_sum(ss) : (threadIdx.x & 32) ? block_sum(ss)\n        : -block_sum(-ss);\n", "rmsnorm/block/",
            "sync", "common.cuh", ReduceBarrier1.Trim()),
        // Write after write: two warps store their partial into one slot (warp >> 1).
        new("race-waw-reduction-slot", "common.cuh", ReduceStore, "    if (lane == 0) l4_red[warp >> 1] = v;\n", "rmsnorm/block/",
            "race", "common.cuh", "l4_red[warp >> 1] = v;"),
        // Warp-synchronous code: topk_warp's __syncwarp removed. Lane 0 marks the chosen expert taken; in the next
        // round the lane that owns that expert reads the mark — ordered only by the shuffles, which do not order a
        // store before another lane's load (PTX): read after write within the warp. The owner is lane 0 itself
        // (no race) when the chosen expert is 0 — with one token and k = 2 a random router picked expert 0 first in
        // ~1 run of 16 (a flaky plant); k = 3 has a second choice ≠ 0 read in the third round, in each of 65 tokens.
        new("race-warp-missing-syncwarp", "moe.cu", "        __syncwarp();\n", "", "moe/simple/f32/65x100x70x4x3",
            "race", "moe.cu", "if (s_taken[e]) continue;"),
        // Warp collective with inconsistent masks: lanes 16..31 of warp_sum pass 0xffff0000 while lanes 0..15 pass
        // the full mask (which names lanes 16..31).
        new("sync-inconsistent-shuffle-masks", "common.cuh", "    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n",
            "    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync((threadIdx.x & 16) ? 0xffff0000u : 0xffffffffu, v, o);\n", "rmsnorm/block/",
            "sync", "common.cuh", "v += __shfl_xor_sync((threadIdx.x & 16)"),
        // Misaligned vector access: quantize_fp8's row path takes the 16-byte loads without checking the row's
        // alignment; the rows-misaligned case starts x one element off 16 bytes.
        new("memory-misaligned-vector-load", "quantize_fp8.cu", "const bool vec = K % 8 == 0 && aligned16(xr) && ", "const bool vec = K % 8 == 0 && ",
            "quantize_fp8/rows-misaligned/f32/5x64", "memory", "quantize_fp8.cu", "load8(xr + c, v)"),
        // Overrun of the requested dynamic shared memory: gemm's B tiles start 64 elements late.
        new("memory-dynamic-smem-overrun", "gemm.cu", "bf16* Bs = smem + STAGES * A_STAGE;", "bf16* Bs = smem + STAGES * A_STAGE + 64;",
            "gemm/mma-nk/bf16,bf16>f32/130x70x200", "memory", "gemm.cu", "else l4_load_tile<BN, BK, B_LD, NT>(Bs + stage * B_STAGE"),
    }.Select(p => new TestCaseData(p).SetName("planted." + p.Name));

    [TestCaseSource(nameof(Plants))]
    public void IsReportedWithItsLine(Plant p)
    {
        var original = KernelSources.Get(p.File);
        int at = original.IndexOf(p.Find, StringComparison.Ordinal);
        Assert.That(at, Is.GreaterThanOrEqualTo(0), $"{p.File} no longer contains the text this planted bug edits: update the test");
        Assert.That(original.IndexOf(p.Find, at + 1, StringComparison.Ordinal), Is.LessThan(0), $"{p.File}: the edited text occurs twice");
        var mutated = original[..at] + p.Replace + original[(at + p.Find.Length)..];
        var siteSource = p.SiteFile == p.File ? mutated : KernelSources.Get(p.SiteFile);
        var lines = siteSource.Split('\n');
        var hits = Enumerable.Range(0, lines.Length).Where(i => lines[i].Contains(p.SiteText, StringComparison.Ordinal)).ToList();
        Assert.That(hits, Has.Count.EqualTo(1), $"{p.SiteFile}: the expected site text must be on exactly one line");
        var site = $"{p.SiteFile}:{hits[0] + 1}";

        var overrides = new Dictionary<string, string> { [p.File] = mutated };
        using var dev = new EmuDevice(new EmuOptions(Check: p.Checks), new EmuCompiler(instrumented: true, sourceOverrides: overrides));
        var c = OpSpecs.AllCases().First(x => x.Id.StartsWith(p.Case, StringComparison.Ordinal));
        using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
        var ex = Assert.Throws<EmulatorException>(() => inst.Launch(), $"planted bug '{p.Name}' in {p.File} was not reported (case {c.Id})")!;
        TestContext.Out.WriteLine(ex.Message);
        Assert.That(ex.Check, Is.EqualTo(p.Check), ex.Message);
        Assert.That(ex.Message, Does.Contain(site), $"expected the report to name {site}: {ex.Message}");
    }

    /// <summary>quantize_fp8's colscale as it was before 98ef4fa: threads past N branch around the load loop and
    /// test `n &lt; N` again after the barrier, so g++'s jump threading duplicates the block holding the barrier
    /// (two calls of the barrier at one source line, one per path). That is ONE barrier: the checked run must
    /// report nothing (it reported "reached __syncthreads at quantize_fp8.cu:L while ... wait at quantize_fp8.cu:L"
    /// when barriers were compared by code address).</summary>
    [Test]
    public void DuplicatedBarrierIsOneBarrier()
    {
        const string now = "    const int kend = n < N ? K : 0;  // one path to the barrier for every thread (no branch around it)\n" +
                           "    for (int k = ty; k < kend; k += 8) amax = fmaxf(amax, fabsf(to_f32(w[(e * K + k) * N + n])));\n";
        const string before = "    if (n < N)\n        for (int k = ty; k < K; k += 8) amax = fmaxf(amax, fabsf(to_f32(w[(e * K + k) * N + n])));\n";
        var original = KernelSources.Get("quantize_fp8.cu");
        Assert.That(original, Does.Contain(now), "quantize_fp8.cu's colscale changed: update the test");
        var overrides = new Dictionary<string, string> { ["quantize_fp8.cu"] = original.Replace(now, before) };
        using var dev = new EmuDevice(new EmuOptions(Check: EmuCheck.All), new EmuCompiler(instrumented: true, sourceOverrides: overrides));
        foreach (var c in OpSpecs.AllCases().Where(x => x.Op == "quantize_fp8" && x.Variant is "weights" or "weights-im"))
        {
            using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
            Assert.DoesNotThrow(() => inst.Launch(), c.Id);
            Assert.That(inst.Check().Passed, Is.True, c.Id);
        }
    }

    [Test]
    public void CleanKernelsReportNothing()
    {
        // The same cases as above, unedited, on a checked device.
        using var dev = new EmuDevice(new EmuOptions(Check: EmuCheck.All));
        foreach (var prefix in new[] { "layernorm/block/f32,f32>f32/7x1000", "rmsnorm/block/", "add/default/f32/7", "softmax/block/f32/", "sample/greedy/", "gemm/mma-nk/bf16,bf16>f32/130x70x200" })
        {
            var c = OpSpecs.AllCases().First(x => x.Id.StartsWith(prefix, StringComparison.Ordinal));
            using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
            Assert.DoesNotThrow(() => inst.Launch(), c.Id);
            Assert.That(inst.Check().Passed, Is.True, c.Id);
        }
    }

    [Test]
    public void UncheckedDeviceRefusesChecks()
    {
        using var dev = new EmuDevice(new EmuOptions(Check: EmuCheck.None));
        Assert.That(dev.Instrumented, Is.False);
        var ex = Assert.Throws<InvalidOperationException>(() => dev.Check = EmuCheck.Race)!;
        Assert.That(ex.Message, Does.Contain("EmuOptions(Check:"));
    }

    [Test]
    public void ParsesCheckSpecs()
    {
        Assert.That(EmuChecks.Parse("all"), Is.EqualTo(EmuCheck.All));
        Assert.That(EmuChecks.Parse("race, memory"), Is.EqualTo(EmuCheck.Race | EmuCheck.Memory));
        Assert.That(EmuChecks.Parse(""), Is.EqualTo(EmuCheck.None));
        Assert.That(() => EmuChecks.Parse("races"), Throws.ArgumentException.With.Message.Contains("race, memory, sync, init"));
    }
}

/// <summary>A bad access never takes the host down: a kernel that writes to unmapped memory (or divides an integer
/// by zero) fails ITS launch with a message naming the kernel, block and thread; the process, the device and later
/// launches carry on. Unchecked runs: the emulator's fault handler (kernels/emu/runtime.cpp, "faults"); checked runs:
/// the memory check reports the access before it is made.</summary>
[TestFixture, Category("Emulator")]
public sealed class EmulatorFaultTests
{
    // softmax's store shifted 2^48 bytes up: a non-canonical address on x86-64, so always a fault (never another
    // allocation silently overwritten), whatever the allocator did.
    const string SoftmaxStore = "        yr[c] = e;\n";
    const string WildStore = "        yr[c + (1LL << 46)] = e;\n";
    // 4×32, not 1×1: that one entry is −inf in 1 run of 8 (masked scores) and a fully masked row never stores there.
    const string SoftmaxCase = "softmax/block/f32/4x32";

    static (EmuDevice dev, OpCase c) Planted(string file, string find, string replace, string casePrefix, EmuCheck check)
    {
        var original = KernelSources.Get(file);
        int at = original.IndexOf(find, StringComparison.Ordinal);
        Assert.That(at, Is.GreaterThanOrEqualTo(0), $"{file} no longer contains the text this planted bug edits: update the test");
        var mutated = original[..at] + replace + original[(at + find.Length)..];
        var dev = new EmuDevice(new EmuOptions(Check: check),
            new EmuCompiler(instrumented: check != EmuCheck.None, sourceOverrides: new Dictionary<string, string> { [file] = mutated }));
        return (dev, OpSpecs.AllCases().First(x => x.Id.StartsWith(casePrefix, StringComparison.Ordinal)));
    }

    static void RunsClean(Device dev, string casePrefix)
    {
        var c = OpSpecs.AllCases().First(x => x.Id.StartsWith(casePrefix, StringComparison.Ordinal));
        using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
        Assert.DoesNotThrow(() => inst.Launch(), c.Id);
        Assert.That(inst.Check().Passed, Is.True, c.Id);
    }

    [Test]
    public void WildWriteFailsItsLaunchNotTheHost()
    {
        var (dev, c) = Planted("softmax.cu", SoftmaxStore, WildStore, SoftmaxCase, EmuCheck.None);
        using (dev)
        {
            for (int round = 0; round < 2; ++round)  // twice: the handler is still armed after one fault
            {
                using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
                var ex = Assert.Throws<EmulatorException>(() => inst.Launch())!;
                TestContext.Out.WriteLine(ex.Message);
                Assert.That(ex.Message, Does.Contain("kernel softmax_").And.Contain("fault: SIGSEGV").And.Contain("block (").And.Contain("thread "));
                Assert.That(ex.Message, Does.Contain("L4EMU_CHECK=memory"), "an unchecked fault points at the checker for the line");
            }
            RunsClean(dev, "add/default/f32/7");  // the same device launches again (its workers abandoned the faulted block)
        }
        using var fresh = new EmuDevice(new EmuOptions(Check: EmuCheck.None));
        RunsClean(fresh, SoftmaxCase);
    }

    [Test]
    public void WildWriteIsAMemoryReportWhenChecked()
    {
        var (dev, c) = Planted("softmax.cu", SoftmaxStore, WildStore, SoftmaxCase, EmuCheck.All);
        using (dev)
        {
            using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
            var ex = Assert.Throws<EmulatorException>(() => inst.Launch())!;
            TestContext.Out.WriteLine(ex.Message);
            Assert.That(ex.Check, Is.EqualTo("memory"), ex.Message);
            Assert.That(ex.Message, Does.Contain("outside every live device allocation").And.Not.Contain("fault:"));
            var line = Array.FindIndex(KernelSources.Get("softmax.cu").Split('\n'), l => l == SoftmaxStore.TrimEnd('\n')) + 1;
            Assert.That(ex.Site, Is.EqualTo($"softmax.cu:{line}"), ex.Message);
        }
    }

    [Test]
    public void IntegerDivisionByZeroFailsItsLaunch()
    {
        // add's grid stride divided by a zero the compiler cannot see (a volatile local): x86's idiv traps.
        var (dev, c) = Planted("add.cu", "const long long stride = (long long)gridDim.x * blockDim.x;",
            "volatile long long l4_zero = 0; const long long stride = (long long)gridDim.x * blockDim.x / l4_zero;",
            "add/default/f32/7", EmuCheck.None);
        using (dev)
        {
            using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(c.Id)));
            var ex = Assert.Throws<EmulatorException>(() => inst.Launch())!;
            TestContext.Out.WriteLine(ex.Message);
            Assert.That(ex.Message, Does.Contain("kernel add_f32").And.Contain("fault: SIGFPE"));
            RunsClean(dev, SoftmaxCase);
        }
    }
}

/// <summary>LLAMA4_TEST_SEED replays: a test's seed is a fixed function of (run seed, test name), the same in
/// every process (the expected values were computed independently, in Python, from the same FNV-1a +
/// splitmix64 definition).</summary>
[TestFixture]
public sealed class TestSeedTests
{
    [Test]
    public void SeedsAreTheSameInEveryProcess()
    {
        Assert.That(TestSeed.For(12345, "rmsnorm/block/f32,f32>f32/3x7"), Is.EqualTo(-2103864268));
        Assert.That(TestSeed.For(-7, "a"), Is.EqualTo(-1611966926));
        Assert.That(TestSeed.For(1, "a"), Is.Not.EqualTo(TestSeed.For(2, "a")));
        Assert.That(TestSeed.For(1, "a"), Is.Not.EqualTo(TestSeed.For(1, "b")));
    }

    /// <summary>A failing seed replays exactly. add's scalar path is planted with a data-dependent bug (b is dropped
    /// where a &gt; 3), so some run seeds fail and some pass; the first failing seed, run again on a fresh device,
    /// fails with the same report (same worst element, same error), and a passing seed passes again — what
    /// `LLAMA4_TEST_SEED=S` / `llama4 selftest --seed S` (tests/kernel-seeds.sh prints the command) rely on.</summary>
    [Test, Category("Emulator")]
    public void AFailingSeedReplaysExactly()
    {
        const string find = "y[e] = from_f32<T>(to_f32(a[e]) + to_f32(b[e]));";
        var original = KernelSources.Get("add.cu");
        Assert.That(original, Does.Contain(find), "add.cu changed: update the test");
        var overrides = new Dictionary<string, string> { ["add.cu"] = original.Replace(find, "y[e] = from_f32<T>(to_f32(a[e]) + (to_f32(a[e]) > 3.0f ? 0.f : to_f32(b[e])));") };
        var c = OpSpecs.AllCases().First(x => x.Id == "add/default/f32/7");
        string Run(int runSeed)
        {
            using var dev = new EmuDevice(new EmuOptions(Check: EmuCheck.None), new EmuCompiler(sourceOverrides: overrides));
            using var inst = OpSpecs.For(c).Create(dev, c, new Random(TestSeed.For(runSeed, c.Id)));
            inst.Launch();
            var r = inst.Check();
            return r.Passed ? "passed" : r.ToString()!;
        }
        var results = Enumerable.Range(1, 24).Select(s => (seed: s, result: Run(s))).ToList();
        var failing = results.FirstOrDefault(r => r.result != "passed");
        var passing = results.FirstOrDefault(r => r.result == "passed");
        Assert.That(failing.result, Is.Not.Null, "the planted bug never fired in 24 seeds: the inputs are not random");
        Assert.That(passing.result, Is.Not.Null, "every seed failed: the planted bug is not data-dependent");
        TestContext.Out.WriteLine($"seed {failing.seed}: {failing.result}");
        Assert.That(Run(failing.seed), Is.EqualTo(failing.result), "the failing seed did not replay exactly");
        Assert.That(Run(passing.seed), Is.EqualTo("passed"));
    }
}
