using System.Text.Json;
using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Devices.Recording;
using Llama4Native.Generation;
using Llama4Native.Kernels;
using Llama4Native.Model;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Devices;

public class RecordingDeviceTests
{
    [Test]
    public void AllocationsAreFakeAlignedDisjointAndCounted()
    {
        var rng = new Random(TestSeed.For(nameof(AllocationsAreFakeAlignedDisjointAndCounted)));
        using var dev = new RecordingDevice(1L << 40);
        var bufs = Enumerable.Range(0, 20).Select(_ => dev.Allocate(rng.NextInt64(1, 1L << 36))).ToList(); // far more than this host has
        long sum = bufs.Sum(b => b.Bytes);
        Assert.That(dev.AllocatedBytes, Is.EqualTo(sum));
        Assert.That(dev.PeakBytes, Is.EqualTo(sum));
        foreach (var b in bufs) Assert.That(b.Ptr.Value % 256, Is.Zero);
        var sorted = bufs.OrderBy(b => b.Ptr.Value).ToList();
        for (int i = 1; i < sorted.Count; i++)
            Assert.That(sorted[i].Ptr.Value, Is.GreaterThanOrEqualTo(sorted[i - 1].Ptr.Value + (ulong)sorted[i - 1].Bytes));
        bufs[3].Dispose(); bufs[3].Dispose();
        Assert.That(dev.AllocatedBytes, Is.EqualTo(sum - bufs[3].Bytes));
        Assert.That(dev.PeakBytes, Is.EqualTo(sum));
    }

    [Test]
    public void AGemvIsOneLaunchMovingItsWeightAndActivations()
    {
        var rng = new Random(TestSeed.For(nameof(AGemvIsOneLaunchMovingItsWeightAndActivations)));
        int m = rng.Next(1, 9), n = rng.Next(1, 5000), k = 8 * rng.Next(1, 700);
        using var dev = new RecordingDevice();
        using var bx = dev.Allocate(2L * m * k); using var bw = dev.Allocate(2L * n * k); using var by = dev.Allocate(4L * m * n);
        Gemv.Run(dev, new Tensor(bx.Ptr, DType.BF16, new Shape(m, k)), new Tensor(bw.Ptr, DType.BF16, new Shape(n, k)),
                 new Tensor(by.Ptr, DType.F32, new Shape(m, n)));
        var s = dev.Summarize();
        Assert.That(s.Launches, Is.EqualTo(1));
        Assert.That(s.Uncosted, Is.Zero);
        Assert.That(s.Bytes, Is.EqualTo(2L * m * k + 2L * n * k + 4L * m * n));
        Assert.That(s.Flops, Is.EqualTo(2.0 * m * n * k));
        Assert.That(dev.Ops[0].Kernel, Is.EqualTo("gemv_bf16_f32"));
        Assert.That(s.HostSyncs, Is.Zero);
        dev.Synchronize(); dev.Synchronize();     // two waits in a row are one stall
        Assert.That(dev.Summarize().HostSyncs, Is.EqualTo(1));
    }

    [Test]
    public void AnUndeclaredLaunchIsCountedNotAnError()
    {
        using var dev = new RecordingDevice();
        unsafe
        {
            var fn = dev.Kernels.Get(Add.File, "add_f32");
            dev.Launch(fn, 1, 32, 0, null);
        }
        var s = dev.Summarize();
        Assert.That((s.Launches, s.Uncosted, s.UncostedKernels[0]), Is.EqualTo((1, 1, "add.cu:add_f32")));
        Assert.Throws<ArgumentException>(() => dev.Kernels.Get(Add.File, "no_such_kernel"));
    }

    [Test]
    public void CaptureRefusesHostWorkAndReplaysTheLaunchList()
    {
        using var dev = new RecordingDevice();
        using var a = dev.Allocate(4096);
        var t = new Tensor(a.Ptr, DType.F32, new Shape(1024));
        dev.BeginCapture();
        Add.Run(dev, t, t, t);
        Add.Run(dev, t, t, t);
        Assert.Throws<InvalidOperationException>(() => dev.Allocate(16));
        Assert.Throws<InvalidOperationException>(() => dev.Synchronize());
        using var g = dev.EndCapture();
        Assert.That(dev.Summarize().Launches, Is.Zero);
        g.Launch(); g.Launch();
        var s = dev.Summarize();
        Assert.That((s.Launches, s.HostLaunches, s.GraphLaunches, s.Bytes), Is.EqualTo((4, 0, 2, 4 * 3 * 4096L)));
    }

    /// <summary>Generation on the recording device launches exactly what the emulator launches for the same model and prompt.</summary>
    [Category("Emulator")]
    [TestCase("tiny-scout")]
    [TestCase("tiny-maverick")]
    public void ThePlanLaunchesWhatTheEmulatorLaunches(string fixture)
    {
        var rng = new Random(TestSeed.For(nameof(ThePlanLaunchesWhatTheEmulatorLaunches) + fixture));
        string dir = CkptTestUtil.FixtureModel(fixture);
        var config = Llama4Config.Load(dir);
        int promptLen = rng.Next(5, 40), newTokens = rng.Next(2, 6);
        var prompt = Enumerable.Range(0, promptLen).Select(_ => rng.Next(1, 400)).ToArray();
        var o = new GenerationOptions { MaxNewTokens = newTokens, StopAtModelStops = false };

        var emuLaunches = new List<string>();
        using (var emu = new EmuDevice())
        using (var w = WeightLoader.Load(dir, emu))
        using (var gen = new TokenGenerator(w, ComputeMode.BF16, 64, 16))
        {
            emu.LaunchObserver = (f, g, b, s) => emuLaunches.Add($"{f.Name} {g} {b} {s}");
            Assert.That(gen.Generate(prompt, o).Count(), Is.EqualTo(newTokens));
        }
        using var rec = new RecordingDevice();
        using (var w = WeightLoader.Describe(config, rec))
        using (var gen = new TokenGenerator(w, ComputeMode.BF16, 64, 16))
            Assert.That(gen.Generate(prompt, o).Count(), Is.EqualTo(newTokens));
        var recLaunches = rec.Ops.Where(x => x.Kind == RecordedKind.Launch).Select(x => $"{x.Kernel} {x.Grid} {x.Block} {x.Shared}").ToList();
        Assert.That(recLaunches, Is.EqualTo(emuLaunches));
        Assert.That(rec.Summarize().Uncosted, Is.Zero, "every kernel wrapper declares its cost");
    }

    [Test]
    public void PlanJsonHasTheKeysAndTheyAgree()
    {
        var o = new StringWriter(); var e = new StringWriter();
        int rc = Commands.Run(["plan", "--preset", "tiny-maverick", "--context", "48", "--steps", "12", "--device-memory", "1MiB", "--json"], o, e);
        Assert.That(rc, Is.Zero, e.ToString());
        using var doc = JsonDocument.Parse(o.ToString());
        var r = doc.RootElement;
        JsonElement Get(string path) { var x = r; foreach (var p in path.Split('.')) x = x.GetProperty(p); return x; }
        foreach (var key in new[] { "fits", "total_bytes", "decode.launches", "decode.graph_launches", "decode.host_syncs", "decode.bytes",
                                    "decode.min_bytes", "decode.host_us", "decode.modelled_tokens_per_s", "prefill.flops", "prefill.modelled_s" })
            Assert.DoesNotThrow(() => Get(key), key);
        long total = Get("total_bytes").GetInt64();
        Assert.That(Get("fits").GetBoolean(), Is.EqualTo(total <= 1 << 20));
        Assert.That(Get("memory").EnumerateObject().Sum(m => m.Value.GetInt64()), Is.EqualTo(total));
        Assert.That(Get("decode.launches").GetInt32(), Is.GreaterThanOrEqualTo(Get("decode.host_launches").GetInt32()).And.GreaterThan(0));
        Assert.That(Get("decode.bytes").GetInt64(), Is.GreaterThanOrEqualTo(Get("decode.min_bytes").GetInt64()));
        Assert.That(Get("decode.bytes").GetInt64(), Is.LessThan(2 * Get("decode.min_bytes").GetInt64()));
        Assert.That(Get("decode.modelled_tokens_per_s").GetDouble() * Get("decode.modelled_s").GetDouble(), Is.EqualTo(1).Within(1e-9));
        Assert.That(Get("decode.host_syncs").GetInt32(), Is.GreaterThanOrEqualTo(1));
        Assert.That(Get("prefill.flops").GetDouble(), Is.GreaterThan(Get("decode.flops").GetDouble()));
        Assert.That(Get("prefill.modelled_s").GetDouble(), Is.GreaterThan(0));
    }

    /// <summary>Issue #15: `plan` models decode attention at 128K and 1M keys for bf16 and FP8 KV from the wrappers' declared
    /// costs: the KV bytes a token step must read (checked here from the config alone), the kernels' bytes (≥ the KV, ≤ 2 %
    /// more), and the modelled fraction of bandwidth (≥ 80 %: enough splits to fill 132 SMs at any length).</summary>
    [Test]
    public void PlanModelsDecodeAttentionAtLongContexts()
    {
        var o = new StringWriter(); var e = new StringWriter();
        int rc = Commands.Run(["plan", "--preset", "scout", "--quantize", "int4", "--context", "512", "--steps", "2", "--max-piece", "256", "--json"], o, e);
        Assert.That(rc, Is.Zero, e.ToString());
        var att = JsonDocument.Parse(o.ToString()).RootElement.GetProperty("decode_attention").EnumerateArray().ToArray();
        var c = Llama4Native.Model.Llama4Config.Parse(Presets.ConfigJson("scout"), "scout").Text;
        Assert.That(att.Select(a => (a.GetProperty("context").GetInt64(), a.GetProperty("kv_cache").GetString())),
                    Is.EqualTo(new[] { (131072L, "bf16"), (131072L, "fp8"), (1048576L, "bf16"), (1048576L, "fp8") }));
        foreach (var a in att)
        {
            long n = a.GetProperty("context").GetInt64();
            bool f8 = a.GetProperty("kv_cache").GetString() == "fp8";
            long row = f8 ? 2L * c.NumKeyValueHeads * (c.HeadDim + 4) : 4L * c.NumKeyValueHeads * c.HeadDim;
            long want = Enumerable.Range(0, c.NumHiddenLayers).Sum(i => (c.UsesRope[i] ? (n - 1) % c.AttentionChunkSize + 1 : n) * row);
            string what = $"{n} keys, {(f8 ? "fp8" : "bf16")} KV";
            Assert.That(a.GetProperty("kv_bytes_per_step").GetInt64(), Is.EqualTo(want), what);
            Assert.That(a.GetProperty("kernel_bytes").GetInt64(), Is.InRange(want, (long)(want * 1.02)), what + ": the kernels move the KV and little else");
            Assert.That(a.GetProperty("bytes_efficiency").GetDouble(), Is.InRange(0.98, 1.0), what);
            Assert.That(a.GetProperty("fraction_of_bandwidth").GetDouble(), Is.InRange(0.8, 1.0), what + ": ≥ 80 % of bandwidth (issue #15)");
            Assert.That(a.GetProperty("splits").GetInt32() * c.NumKeyValueHeads, Is.GreaterThanOrEqualTo(Llama4Native.Devices.Recording.Plan.Sms), what + ": the grid fills the SMs");
            Assert.That(a.GetProperty("launches").GetInt32(), Is.EqualTo(2 * c.NumHiddenLayers), what + ": split + combine per layer");
        }
        // FP8 KV reads (d + 4) / 2d of bf16's bytes at the same context
        Assert.That((double)att[3].GetProperty("kv_bytes_per_step").GetInt64() / att[2].GetProperty("kv_bytes_per_step").GetInt64(),
                    Is.EqualTo((c.HeadDim + 4) / (2.0 * c.HeadDim)).Within(1e-9));
    }

    [Test]
    public void PlanPicksTheLargestPrefillPieceThatFits()
    {
        JsonElement Plan(params string[] extra)
        {
            var o = new StringWriter(); var e = new StringWriter();
            int rc = Commands.Run(["plan", "--preset", "tiny-maverick", "--context", "600", "--steps", "4", "--json", .. extra], o, e);
            Assert.That(rc, Is.Zero, e.ToString());
            return JsonDocument.Parse(o.ToString()).RootElement.Clone();
        }
        // auto: 2048 and 1024 exceed the prompt; 512 fits 1 GiB.
        Assert.That(Plan("--device-memory", "1GiB").GetProperty("prefill").GetProperty("piece").GetInt32(), Is.EqualTo(512));
        Assert.That(Plan("--device-memory", "1GiB", "--max-piece", "64").GetProperty("prefill").GetProperty("piece").GetInt32(), Is.EqualTo(64));
        // Nothing fits 1 MiB: auto ends at the smallest candidate, and says it does not fit.
        var tiny = Plan("--device-memory", "1MiB");
        Assert.That(tiny.GetProperty("prefill").GetProperty("piece").GetInt32(), Is.EqualTo(256));
        Assert.That(tiny.GetProperty("fits").GetBoolean(), Is.False);
    }

    [Test]
    public void PrefillPiecesBeforeTheLastSkipTheLmHead()
    {
        // The lm_head launch is the one that reads the whole [V, D] weight for one row: 2·V·D FLOPs, ≥ V·D·2 bytes.
        var config = Llama4Config.Load(CkptTestUtil.FixtureModel("tiny-maverick"));
        long v = config.Text.VocabSize, d = config.Text.HiddenSize;
        int LmHeads(int prompt, int piece)
        {
            using var rec = new RecordingDevice();
            using var w = WeightLoader.Describe(config, rec);
            using var gen = new TokenGenerator(w, ComputeMode.BF16, 256, piece);
            int at = rec.Mark;
            foreach (var _ in gen.Generate(Enumerable.Range(1, prompt).ToArray(), new GenerationOptions { Temperature = 0, MaxNewTokens = 1, StopAtModelStops = false })) { }
            return rec.Ops.Skip(at).Count(x => x.Kind == RecordedKind.Launch && x.Flops == 2.0 * v * d && x.Bytes >= v * d * 2);
        }
        Assert.That(LmHeads(16, 16), Is.EqualTo(1));
        Assert.That(LmHeads(64, 16), Is.EqualTo(1), "4 pieces: the lm_head runs on the last only");
        Assert.That(LmHeads(40, 16), Is.EqualTo(1), "pieces of 16, 16, 8: the last only");
    }

    [Test]
    public void DecodeStepRunsTheFusedKernels()
    {
        // One decode step of tiny-maverick (MoE and dense layers, RoPE and NoPE): q|k|v and gate|up are single
        // projections, every residual add rides on the next norm, q and k rotate in one launch, MoE routes in one.
        var config = Llama4Config.Load(CkptTestUtil.FixtureModel("tiny-maverick"));
        var c = config.Text;
        using var rec = new RecordingDevice();
        using var w = WeightLoader.Describe(config, rec);
        using var gen = new TokenGenerator(w, ComputeMode.BF16, 64, 16);
        using var e = gen.Generate(Enumerable.Range(1, 8).ToArray(), new GenerationOptions { Temperature = 0, MaxNewTokens = 3, StopAtModelStops = false }).GetEnumerator();
        Assert.That(e.MoveNext());
        int at = rec.Mark;
        Assert.That(e.MoveNext());
        var kernels = rec.Ops.Skip(at).Where(x => x.Kind == RecordedKind.Launch).Select(x => x.Kernel).ToList();
        int Count(string prefix) => kernels.Count(k => k.StartsWith(prefix, StringComparison.Ordinal));
        int layers = c.NumHiddenLayers, moe = c.NumMoeLayers, rope = Enumerable.Range(0, layers).Count(i => c.UsesRope[i]);
        Assert.That(Count("add_bf16"), Is.Zero, "no separate residual add");
        Assert.That(Count("add_rmsnorm_"), Is.EqualTo(2 * layers), "ffn_norm of each layer, attn_norm of layers 1.., output_norm");
        Assert.That(Count("rmsnorm_"), Is.EqualTo(1), "layer 0's attn_norm has no residual to add");
        Assert.That(Count("rope_"), Is.EqualTo(rope), "q and k in one launch per RoPE layer");
        Assert.That(Count("moe_route_"), Is.EqualTo(moe));
        Assert.That(Count("moe_topk_") + Count("moe_align") + Count("moe_router_logits_"), Is.Zero);
        Assert.That(w.Concat("blk.0.attn_q", "blk.0.attn_k", "blk.0.attn_v"), Is.Not.Null);
        // Projections: q|k|v, o, then gate|up + down (dense) or router-free shared gate|up + down (MoE), and the lm_head.
        Assert.That(Count("gemv_bf16_"), Is.EqualTo(2 * layers + 2 * layers + 1), string.Join(", ", kernels));
    }
}
