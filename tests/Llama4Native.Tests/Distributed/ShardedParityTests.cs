using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Distributed;
using Llama4Native.Model;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Distributed;

/// <summary>
/// Several emulated devices against one (fp32): the logits and every layer's output ("blk.i.out", the goldens'
/// layer_out.i) within 1e-5, the same greedy tokens, and generation with a KV cache on every rank equal to one device.
/// tiny-scout has 2 KV heads (emu:4 replicates each on 2 ranks), tiny-maverick 1 (replicated on every rank); neither
/// splits over 3 devices (4 query heads), which must be the clear error naming the dimension.
/// </summary>
[Category("Emulator")]
public class ShardedParityTests
{
    static readonly Ops.Tolerance Tol = new(1e-5, 1e-5);

    sealed record Run(float[] Logits, Dictionary<string, float[]> Layers);

    static int[] Prompt(string fixture)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.safetensors"));
        return f.Span<long>(f.Get("input_ids")).ToArray().Select(v => (int)v).ToArray();
    }

    static Run Forward(Checkpoint ckpt, int devices, int[] ids, LoadOptions? options = null, (float[] Pixels, int Tiles)? image = null)
    {
        var devs = Enumerable.Range(0, devices).Select(_ => TestDevices.Emulated()).ToArray();
        var visions = new List<Llama4VisionGraph>();
        try
        {
            using var group = DeviceGroup.Over(devs, $"emu:{devices}");
            using var w = ShardedWeights.Load(ckpt, group, options ?? new LoadOptions());
            using var graph = new ShardedTextGraph(w, ids.Length, ComputeMode.F32);
            // The vision tower is replicated: every rank encodes the image on its own device from its own copy of the weights.
            Tensor[]? rows = null;
            if (image is { } im)
            {
                visions.AddRange(w.Ranks.Select(rw => new Llama4VisionGraph(rw, im.Tiles, ComputeMode.F32)));
                rows = visions.Select(v => v.Forward(im.Pixels, im.Tiles)).ToArray();
            }
            var layers = new Dictionary<string, float[]>();
            var logits = graph.Forward(ids, n => n.EndsWith(".out", StringComparison.Ordinal) || n is "embed.allreduce" or "embed",
                                       (name, _, data) => layers[name] = data, rows is null ? null : r => rows[r]);
            return new Run(logits, layers);
        }
        finally
        {
            foreach (var v in visions) v.Dispose();
            foreach (var d in devs) d.Dispose();
        }
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var f in new[] { "tiny-scout", "tiny-maverick" })
            foreach (int n in new[] { 2, 4 })
                yield return new TestCaseData(f, n).SetName($"Sharded_{f}_emu{n}_matches_one_device");
    }

    /// <summary>
    /// Quantized weights sharded: the FP8 checkpoint, and the bf16 fixtures quantized at load — int4 (W4A16: activations
    /// stay fp32, so 1e-5 as unquantized) and row-wise fp8 experts. Each is compared with ONE device holding the same
    /// quantized weights. Int4 groups must divide each device's K of the row-parallel weights (shared-expert down: I/n),
    /// so the groups are 4 (tiny-scout I 48: 24, 12) and 4 / 2 (tiny-maverick I 40: 20, 10). FP8 also quantizes the
    /// expert activations per token (W8A8): the 1e-6 all-reduce noise in x can move an e4m3 rounding by one step, so its
    /// tolerance is the FP8 layer's own (<c>moe_fp8.layer</c> in Tolerances.cs, a few flips), with greedy tokens ≥ 95%.
    /// </summary>
    public static IEnumerable<TestCaseData> QuantizedCases()
    {
        foreach (int n in new[] { 2, 4 })
        {
            yield return new TestCaseData("tiny-maverick-fp8", QuantizeMode.None, 0, n).SetName($"Sharded_tiny-maverick-fp8_checkpoint_emu{n}_matches_one_device");
            yield return new TestCaseData("tiny-scout", QuantizeMode.Int4, 4, n).SetName($"Sharded_tiny-scout_int4_g4_emu{n}_matches_one_device");
            yield return new TestCaseData("tiny-maverick", QuantizeMode.Int4, 8 / n, n).SetName($"Sharded_tiny-maverick_int4_g{8 / n}_emu{n}_matches_one_device");
            yield return new TestCaseData("tiny-scout", QuantizeMode.Fp8, 0, n).SetName($"Sharded_tiny-scout_fp8_emu{n}_matches_one_device");
        }
    }

    [TestCaseSource(nameof(QuantizedCases))]
    public void QuantizedWeightsMatchOneDevice(string fixture, QuantizeMode mode, int group, int n)
    {
        var options = new LoadOptions(Quantize: new QuantizeOptions(mode, group == 0 ? 128 : group));
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var ids = Prompt(fixture);
        var one = Forward(ckpt, 1, ids, options);
        var many = Forward(ckpt, n, ids, options);
        bool w8a8 = mode == QuantizeMode.Fp8 || fixture.EndsWith("-fp8", StringComparison.Ordinal);
        Compare($"{fixture} {mode}{(group > 0 ? $" g{group}" : "")}", ckpt, n, ids, one, many, w8a8 ? Fp8Tol : null);
    }

    /// <summary>The FP8 layer's tolerance (Tolerances.cs moe_fp8.layer) allowing a few e4m3 rounding flips across the layers.</summary>
    static readonly Ops.Tolerance Fp8Tol = new(5e-2, 2e-2);

    /// <summary>The image fixtures: the prompt with its &lt;|patch|&gt; rows from the (replicated) vision tower.</summary>
    [TestCase("tiny-scout", 2)]
    [TestCase("tiny-scout", 4)]
    [TestCase("tiny-maverick", 2)]
    [TestCase("tiny-maverick", 4)]
    public void ImagePromptsMatchOneDevice(string fixture, int n)
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var gold = Llama4Native.Tests.Model.VisionParityTests.Read(fixture);
        var one = Forward(ckpt, 1, gold.Ids, image: (gold.Pixels, gold.Tiles));
        var many = Forward(ckpt, n, gold.Ids, image: (gold.Pixels, gold.Tiles));
        Compare($"{fixture} image", ckpt, n, gold.Ids, one, many);
        // and one device is the goldens' image forward (the fixture's own tolerance is VisionParityTests'; here: argmax)
        Assert.That(Llama4Native.Tests.Model.VisionParityTests.Argmax(many.Logits, gold.Vocab), Is.EqualTo(Llama4Native.Tests.Model.VisionParityTests.Argmax(gold.Tensors["logits"], gold.Vocab)),
                    $"{fixture} image emu:{n}: the goldens' greedy tokens");
    }

    [TestCaseSource(nameof(Cases))]
    public void LogitsAndLayersMatchOneDevice(string fixture, int n)
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var ids = Prompt(fixture);
        var one = Forward(ckpt, 1, ids);
        var many = Forward(ckpt, n, ids);
        Compare(fixture, ckpt, n, ids, one, many);
    }

    static void Compare(string fixture, Checkpoint ckpt, int n, int[] ids, Run one, Run many, Ops.Tolerance? tolerance = null)
    {
        var Tol = tolerance ?? ShardedParityTests.Tol;
        var plan = ShardingPlan.Create(ckpt.Config, n);
        TestContext.Out.WriteLine($"{fixture} emu:{n}: {plan.Heads} q heads, {plan.KvHeads} kv heads ×{plan.KvReplicas} replicas, {plan.Experts} experts, vocab {plan.Vocab} per device");
        int layers = ckpt.Config.Text.NumHiddenLayers;
        double worst = 0;
        for (int i = 0; i < layers; i++)
        {
            var r = Ops.OpCheck.Compare($"layer_out.{i}", many.Layers[$"blk.{i}.out"], one.Layers[$"blk.{i}.out"], Tol);
            worst = Math.Max(worst, r.MaxAbs);
            Assert.That(r.Passed, $"{fixture} emu:{n}: {r}");
        }
        Assert.That(many.Layers["embed.allreduce"], Is.EqualTo(one.Layers["embed"]), "the vocab-parallel embedding is exact");
        var lr = Ops.OpCheck.Compare("logits", many.Logits, one.Logits, Tol);
        TestContext.Out.WriteLine($"{fixture} emu:{n}: {lr}; worst layer_out max abs {worst:g3}");
        Assert.That(lr.Passed, $"{fixture} emu:{n}: {lr}");
        int v = ckpt.Config.Text.VocabSize;
        int same = Enumerable.Range(0, ids.Length).Count(p => Argmax(many.Logits.AsSpan(p * v, v)) == Argmax(one.Logits.AsSpan(p * v, v)));
        TestContext.Out.WriteLine($"{fixture} emu:{n}: greedy tokens equal at {same} of {ids.Length} positions");
        if (tolerance is null) Assert.That(same, Is.EqualTo(ids.Length), $"{fixture} emu:{n}: greedy tokens at every position");
        else Assert.That(same, Is.GreaterThanOrEqualTo(0.95 * ids.Length), $"{fixture} emu:{n}: greedy tokens at ≥ 95% of positions (FP8 rounding flips)");
    }

    /// <summary>Ranks as separate groups joined over the TCP rendezvous (one thread each here, one process each in the
    /// CLI): the socket communicator's logits and layers within 1e-5 of one device, identical on every rank.</summary>
    [TestCase("tiny-scout", 2)]
    [TestCase("tiny-maverick", 4)]
    public void RanksJoinedOverTcpMatchOneDevice(string fixture, int n)
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var ids = Prompt(fixture);
        var one = Forward(ckpt, 1, ids);
        string init = $"tcp://127.0.0.1:{CollectiveTests.FreePort()}";
        var ranks = Enumerable.Range(0, n).Select(r => Task.Run(() =>
        {
            using var group = DeviceGroup.Join("emu", r, n, init, TimeSpan.FromSeconds(120), fixture);
            using var w = ShardedWeights.Load(ckpt, group);
            using var graph = new ShardedTextGraph(w, ids.Length, ComputeMode.F32);
            var layers = new Dictionary<string, float[]>();
            var logits = graph.Forward(ids, name => name.EndsWith(".out", StringComparison.Ordinal) || name is "embed.allreduce",
                                       (name, _, data) => layers[name] = data);
            return new Run(logits, layers);
        })).ToArray();
        Task.WaitAll(ranks);
        Compare($"{fixture} tcp", ckpt, n, ids, one, ranks[0].Result);
        for (int r = 1; r < n; r++) Assert.That(ranks[r].Result.Logits, Is.EqualTo(ranks[0].Result.Logits), $"rank {r}'s logits are rank 0's");
    }

    [Test]
    public void DecodeCaptureOnSeveralDevicesIsAClearError()
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel("tiny-scout"));
        var devs = Enumerable.Range(0, 2).Select(_ => TestDevices.Emulated()).ToArray();
        try
        {
            using var group = DeviceGroup.Over(devs, "emu:2");
            using var w = ShardedWeights.Load(ckpt, group);
            var e = Assert.Throws<NotSupportedException>(() => new Llama4Native.Generation.TokenGenerator(w, ComputeMode.F32, 64, captureDecode: true));
            Assert.That(e!.Message, Does.Contain("decode capture on several devices (emu:2) is not implemented"));
        }
        finally { foreach (var d in devs) d.Dispose(); }
    }

    [TestCase("tiny-scout")]
    [TestCase("tiny-maverick")]
    public void ThreeDevicesIsAClearErrorNamingTheDimension(string fixture)
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var e = Assert.Throws<ShardingException>(() => ShardingPlan.Create(ckpt.Config, 3));
        Assert.That(e!.Message, Does.Contain("num_attention_heads (4) is not divisible by 3").And.Contain("Device counts that work for it: 1, 2, 4"));
    }

    [TestCase("tiny-scout", 2)]
    [TestCase("tiny-maverick", 4)]
    public void GenerationWithKvCacheMatchesOneDevice(string fixture, int n)
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var ids = Prompt(fixture);
        (int[] Ids, float[][] Logits) Gen(int devices)
        {
            var devs = Enumerable.Range(0, devices).Select(_ => TestDevices.Emulated()).ToArray();
            try
            {
                using var group = DeviceGroup.Over(devs);
                using var w = ShardedWeights.Load(ckpt, group, new LoadOptions());
                return ShardedTextGraph.Greedy(w, ids, 6, ComputeMode.F32);
            }
            finally { foreach (var d in devs) d.Dispose(); }
        }
        var one = Gen(1);
        var many = Gen(n);
        Assert.That(many.Ids, Is.EqualTo(one.Ids), $"{fixture} emu:{n}: greedy tokens");
        for (int s = 0; s < one.Logits.Length; s++)
        {
            var r = Ops.OpCheck.Compare($"step {s} logits", many.Logits[s], one.Logits[s], Tol);
            Assert.That(r.Passed, $"{fixture} emu:{n}: {r}");
        }
        // and one device's cached generation is the goldens' greedy continuation
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.safetensors"));
        if (f.Tensors.Any(t => t.Name == "generated_ids"))
        {
            var gold = f.Span<long>(f.Get("generated_ids")).ToArray().Select(v => (int)v).Take(one.Ids.Length).ToArray();
            Assert.That(many.Ids.Take(gold.Length), Is.EqualTo(gold), $"{fixture} emu:{n}: the goldens' greedy tokens");
        }
    }

    static int Argmax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}

/// <summary>
/// A random checkpoint whose sizes divide by 3 and 6 (6 query heads, 3 KV heads, I 48, Im 96, 6 experts) and whose
/// vocab (500) does not: emu:3 splits KV heads, emu:6 replicates each KV head on 2 ranks and holds 1 expert per rank, and
/// both zero-pad the vocab slices (167 / 84 rows per rank). Written in several small shards, so slices cross shard files.
/// </summary>
[Category("Emulator")]
public class ShardedSynthParityTests
{
    static string? dir;

    [OneTimeSetUp]
    public void Write()
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(CkptTestUtil.FixtureModel("tiny-maverick"), "config.json")))!;
        var t = json["text_config"]!;
        t["num_attention_heads"] = 6; t["num_key_value_heads"] = 3; t["intermediate_size"] = 48; t["intermediate_size_mlp"] = 96;
        t["num_local_experts"] = 6; t["vocab_size"] = 500;
        dir = Path.Combine(Path.GetTempPath(), $"l4-shard-synth-{Environment.ProcessId}");
        ulong seed = CkptTestUtil.Seed("sharded synth checkpoint");
        Synth.Write(json.ToJsonString(), dir, new SynthOptions(Seed: seed, MaxShardBytes: 200_000));
    }

    [OneTimeTearDown]
    public void Remove() { if (dir is not null && Directory.Exists(dir)) Directory.Delete(dir, true); }

    static (float[] Logits, Dictionary<string, float[]> Layers, int[] Greedy) Run(Checkpoint ckpt, int n, int[] ids)
    {
        var devs = Enumerable.Range(0, n).Select(_ => TestDevices.Emulated()).ToArray();
        try
        {
            using var group = DeviceGroup.Over(devs);
            using var w = ShardedWeights.Load(ckpt, group);
            var layers = new Dictionary<string, float[]>();
            float[] logits;
            using (var graph = new ShardedTextGraph(w, ids.Length, ComputeMode.F32))
                logits = graph.Forward(ids, name => name.EndsWith(".out", StringComparison.Ordinal), (name, _, data) => layers[name] = data);
            var greedy = ShardedTextGraph.Greedy(w, ids, 5, ComputeMode.F32).Ids;
            return (logits, layers, greedy);
        }
        finally { foreach (var d in devs) d.Dispose(); }
    }

    [TestCase(3)]
    [TestCase(6)]
    public void UnevenVocabAndReplicatedKvHeadsMatchOneDevice(int n)
    {
        using var ckpt = Checkpoint.Open(dir!);
        Assert.That(Directory.GetFiles(dir!, "*.safetensors").Length, Is.GreaterThan(2), "several shards");
        var rng = new Random(TestSeed.For($"synth ids {n}"));
        var ids = Enumerable.Range(0, 13).Select(_ => rng.Next(0, 500)).ToArray();
        ids[^1] = 499; // the last vocab row: on the last rank, next to its padding
        var plan = ShardingPlan.Create(ckpt.Config, n);
        Assert.That(plan.Vocab * n, Is.GreaterThan(500), "the vocab slices are padded");
        var one = Run(ckpt, 1, ids);
        var many = Run(ckpt, n, ids);
        var tol = new Ops.Tolerance(1e-5, 1e-5);
        for (int i = 0; i < ckpt.Config.Text.NumHiddenLayers; i++)
        {
            var r = Ops.OpCheck.Compare($"layer_out.{i}", many.Layers[$"blk.{i}.out"], one.Layers[$"blk.{i}.out"], tol);
            Assert.That(r.Passed, $"emu:{n}: {r}");
        }
        var lr = Ops.OpCheck.Compare("logits", many.Logits, one.Logits, tol);
        TestContext.Out.WriteLine($"synth emu:{n} ({plan.KvHeads} kv heads ×{plan.KvReplicas}, {plan.Experts} experts, vocab {plan.Vocab}/rank): {lr}");
        Assert.That(lr.Passed, $"emu:{n}: {lr}");
        Assert.That(many.Greedy, Is.EqualTo(one.Greedy), $"emu:{n}: greedy generation with the kv cache");
    }

    [Test]
    public void FourAndFiveDevicesNameTheDimensions()
    {
        using var ckpt = Checkpoint.Open(dir!);
        var e = Assert.Throws<ShardingException>(() => ShardingPlan.Create(ckpt.Config, 4));
        Assert.That(e!.Message, Does.Contain("num_attention_heads (6)").And.Contain("num_key_value_heads (3)").And.Contain("num_local_experts (6)")
                                    .And.Contain("Device counts that work for it: 1, 3, 6."));
        Assert.That(() => ShardingPlan.Create(ckpt.Config, 5), Throws.TypeOf<ShardingException>().With.Message.Contains("intermediate_size (48)"));
    }
}
