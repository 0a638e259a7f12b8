using Llama4Native.Checkpoints;
using Llama4Native.Devices.Recording;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Model;

/// <summary>The "what fits" arithmetic behind the default --max-context and plan/inspect's largest context.</summary>
public class ContextFitTests
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
