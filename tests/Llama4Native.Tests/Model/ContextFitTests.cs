using Llama4Native.Checkpoints;
using Llama4Native.Devices.Recording;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Model;

/// <summary>The "what fits" arithmetic behind the default --max-context and plan/inspect's largest context.</summary>
internal class ContextFitTests
{
    static Llama4Config Scout() => Llama4Config.Parse(Presets.ConfigJson("scout"), "preset scout");

    [TestCase(KvCacheFormat.Default, DType.BF16, 8192, 256)]
    [TestCase(KvCacheFormat.Fp8, DType.BF16, 100_000, 256)]
    [TestCase(KvCacheFormat.Fp8, DType.F32, 5000, 64)]
    [TestCase(KvCacheFormat.Default, DType.F32, 100, 256)]
    public void KvBytesIsWhatTheCacheAllocates(KvCacheFormat f, DType act, int context, int piece)
    {
        var c = Scout().Text;
        using var dev = new RecordingDevice();
        using var cache = new KvCache(dev, c, act, context, Math.Min(piece, context), f == KvCacheFormat.Fp8 ? DType.F8E4M3 : null);
        Assert.That(ContextFit.KvBytes(c, context, Math.Min(piece, context), act, f), Is.EqualTo(cache.Bytes));
    }

    [Test]
    public void LargestIsTheEdgeOfTheBudget()
    {
        var c = Scout().Text;
        long budget = 70L << 30;
        foreach (var f in new[] { KvCacheFormat.Default, KvCacheFormat.Fp8 })
        {
            long n = ContextFit.Largest(c, budget, 256, DType.BF16, f);
            Assert.That(ContextFit.KvBytes(c, n, 256, DType.BF16, f), Is.LessThanOrEqualTo(budget));
            Assert.That(ContextFit.KvBytes(c, n + 1, 256, DType.BF16, f), Is.GreaterThan(budget));
        }
        // FP8 holds 2·d/(d + 4) = 1.94× the tokens of bf16 (the chunked layers' fixed part aside)
        double ratio = (double)ContextFit.Largest(c, budget, 256, DType.BF16, KvCacheFormat.Fp8) / ContextFit.Largest(c, budget, 256, DType.BF16, KvCacheFormat.Default);
        Assert.That(ratio, Is.InRange(2.0 * 128 / 132, 2.0));
        Assert.That(ContextFit.Largest(c, budget, 256, DType.BF16, KvCacheFormat.Fp8, cap: 1000), Is.EqualTo(1000));
        Assert.That(ContextFit.Largest(c, 0, 256, DType.BF16, KvCacheFormat.Fp8), Is.Zero);
    }
}

/// <summary>
/// The split-KV decode attention's split policy fills an H100/H200 over long histories (issue #15: ≥ 80 % of bandwidth in
/// the model of the kernel's own traffic): for Scout's decode (40 query heads over 8 kv heads, one token) the grid is
/// splits × 8 blocks, and at one block per SM (the worst case) its waves are ≥ 80 % full at every history from 8K to 10M keys.
/// </summary>
internal class SplitKvPolicyTests
{
    [Test]
    public void ScoutDecodeGridFillsTheSmsFrom8KTo10MKeys()
    {
        const int hkv = 8, g = 5, sms = Plan.Sms;
        long qTiles = (1L * g + 7) / 8;   // DecRows = 8 (query row, head) combos per block
        var worst = (Keys: 0, Fill: 1.0);
        for (long kv = 8192; kv <= 10_485_760; kv += kv / 97 / 256 * 256 + 256)
        {
            int kps = Llama4Native.Kernels.Attention.DefaultKeysPerSplit((int)kv, qTiles * hkv);
            long blocks = (long)Llama4Native.Kernels.Attention.Splits((int)kv, kps) * qTiles * hkv;
            long waves = (blocks + sms - 1) / sms;
            double fill = (double)blocks / (waves * sms);
            if (fill < worst.Fill) worst = ((int)kv, fill);
        }
        TestContext.Out.WriteLine($"worst wave fill {worst.Fill:P1} at {worst.Keys} keys");
        Assert.That(worst.Fill, Is.GreaterThanOrEqualTo(0.8));
    }

    [Test]
    public void PlanReportsTheSplitAndTheLargestContexts()
    {
        var config = Llama4Config.Parse(Presets.ConfigJson("tiny-scout"), "preset tiny-scout");
        var plan = Planner.Run(config, new PlanOptions(Context: 70_000, DeviceMemory: 1L << 30, Steps: 2, MaxPiece: 4096, KvCache: KvCacheFormat.Fp8));
        Assert.That(plan.SplitKv, Is.Not.Null);
        Assert.That(plan.SplitKv!.Keys, Is.EqualTo(plan.Decode.Position + 1));
        Assert.That(plan.SplitKv.Fraction, Is.InRange(0.0, 1.0));
        Assert.That(plan.LargestContext["fp8"], Is.GreaterThan(plan.LargestContext["bf16"]));
        // the largest fp8 context re-planned fits the same memory
        long fixedBytes = plan.TotalBytes - plan.Memory.Single(m => m.What.StartsWith("KV cache", StringComparison.Ordinal)).Bytes;
        Assert.That(fixedBytes + ContextFit.KvBytes(config.Text, plan.LargestContext["fp8"], 4096, DType.BF16, KvCacheFormat.Fp8), Is.LessThanOrEqualTo(1L << 30));
        var text = plan.RenderText();
        Assert.That(text, Does.Contain("largest context in 1 GiB").And.Contain("split-KV attention over").And.Contain("fp8 KV cache"));
    }
}
