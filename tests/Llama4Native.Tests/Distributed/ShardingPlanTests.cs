using Llama4Native.Checkpoints;
using Llama4Native.Distributed;
using Llama4Native.Model;

namespace Llama4Native.Tests.Distributed;

/// <summary>The plan itself: every split tensor is covered exactly once by the ranks' slices (KV heads: once per replica
/// group), and Maverick FP8 on 8 × 80 GB fits with the KV cache of a 128K context, as `plan --devices 8` reports.</summary>
public class ShardingPlanTests
{
    [TestCase("maverick", 8)]
    [TestCase("scout", 4)]
    [TestCase("maverick", 2)]
    public void SlicesCoverEachTensorExactlyOnce(string preset, int n)
    {
        var config = Llama4Config.Parse(Presets.ConfigJson(preset), preset);
        var plan = ShardingPlan.Create(config, n);
        foreach (var e in TensorNames.Expected(config))
        {
            var slices = Enumerable.Range(0, n).Select(r => plan.ForRank(r).SliceOf(e, e.Shape)).ToList();
            if (slices.All(s => s is null)) continue;
            Assert.That(slices, Has.None.Null, $"{e.Ours}: split on some ranks only");
            int axis = slices[0]!.Value.Axis;
            var distinct = slices.Select(s => (s!.Value.Start, s.Value.Count)).Distinct().OrderBy(s => s.Start).ToList();
            long at = 0;
            foreach (var (start, count) in distinct) { Assert.That(start, Is.EqualTo(at), $"{e.Ours}: a gap or overlap at {at}"); at += count; }
            Assert.That(at, Is.EqualTo(e.Shape[axis]), $"{e.Ours}: the slices cover axis {axis}");
            Assert.That(slices.Count / distinct.Count, Is.EqualTo(e.Ours.EndsWith("attn_k", StringComparison.Ordinal) || e.Ours.EndsWith("attn_v", StringComparison.Ordinal) ? plan.KvReplicas : 1));
        }
    }

    [Test]
    public void MaverickFp8FitsEightCardsOf80GBWith128KContext()
    {
        var config = Llama4Config.Parse(Presets.ConfigJson("maverick"), "maverick");
        var plan = ShardingPlan.Create(config, 8);
        var options = new LoadOptions(Quantize: new QuantizeOptions(QuantizeMode.Fp8, 128));
        var mem = ShardingReport.Memory(plan, options, 131072);
        long one = WeightLoader.Footprint(config, options).Total;
        foreach (var m in mem)
        {
            Assert.That(m.Total + (3L << 30), Is.LessThan(80L << 30), $"rank {m.Rank}: {Format.Bytes(m.Total)} + 3 GiB of activations");
            Assert.That(m.Weights, Is.GreaterThan(one / 8), "each rank holds at least its share");
        }
        Assert.That(mem.Sum(m => m.Weights), Is.LessThan(one + 8L * (2L << 30)), "only norms, router and the vision tower are replicated");
        var text = ShardingReport.Render(plan, options, 131072, 80L << 30, "H100 80GB");
        TestContext.Out.WriteLine(text);
        Assert.That(text, Does.Contain("fits").And.Contain("blk.{i}.moe.allreduce").And.Contain("output.allgather"));
        var uses = plan.DecodeCollectives(1, Tensors.DType.BF16);
        Assert.That(uses.Sum(u => u.PerStep), Is.EqualTo(1 + 48 + 48 + 1), "embed + attn_o per layer + FFN/MoE per layer + logits");
    }
}
