using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Distributed;
using Llama4Native.Model;
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

    static Run Forward(Checkpoint ckpt, int devices, int[] ids)
    {
        var devs = Enumerable.Range(0, devices).Select(_ => TestDevices.Emulated()).ToArray();
        try
        {
            using var group = DeviceGroup.Over(devs, $"emu:{devices}");
            using var w = ShardedWeights.Load(ckpt, group, new LoadOptions());
            using var graph = new ShardedTextGraph(w, ids.Length, ComputeMode.F32);
            var layers = new Dictionary<string, float[]>();
            var logits = graph.Forward(ids, n => n.EndsWith(".out", StringComparison.Ordinal) || n is "embed.allreduce" or "embed",
                                       (name, _, data) => layers[name] = data);
            return new Run(logits, layers);
        }
        finally { foreach (var d in devs) d.Dispose(); }
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var f in new[] { "tiny-scout", "tiny-maverick" })
            foreach (int n in new[] { 2, 4 })
                yield return new TestCaseData(f, n).SetName($"Sharded_{f}_emu{n}_matches_one_device");
    }

    [TestCaseSource(nameof(Cases))]
    public void LogitsAndLayersMatchOneDevice(string fixture, int n)
    {
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel(fixture));
        var ids = Prompt(fixture);
        var one = Forward(ckpt, 1, ids);
        var many = Forward(ckpt, n, ids);
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
        for (int p = 0; p < ids.Length; p++)
            Assert.That(Argmax(many.Logits.AsSpan(p * v, v)), Is.EqualTo(Argmax(one.Logits.AsSpan(p * v, v))), $"greedy token at position {p}");
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
