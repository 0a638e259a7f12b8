using Llama4Native.Cli.Verbs;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Generation;

/// <summary>
/// A short soak (the long run is `llama4 soak`, numbers in bench/RESULTS.md): 100 generations of 2 tokens on the
/// tiny fixture, the session replaced every 25, memory sampled every 10. A leak is a positive trend (one-sided bounds:
/// after warm-up the heap usually shrinks a little as tiered compilation settles).
/// Bounds, from the data: after a full collection the managed heap moves by ±0.2 MiB between samples (JIT, tiered
/// compilation, pooled buffers; measured slopes −0.6 and −2.8 KiB/generation) — a slope below +2 KiB/generation is
/// that noise, while the smallest leak that matters (one logits row of the real vocabulary, 790 KiB, or even one
/// prompt's ids and text, a few KiB) is above it. RSS is noisier (the GC returns memory lazily; the 300-generation run's
/// slope was −3.7 KiB/generation, its samples within ±4 MiB) so its bound is 64 KiB/generation, which still catches a leaked logits
/// row. Device memory is exact: after the last session is disposed it is what the weights alone use.
/// </summary>
[Category("Emulator")]
public class SoakTests
{
    [Test]
    public void NoGrowthOverManyGenerations()
    {
        using var dev = TestDevices.Emulated();
        using var model = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-scout"),
            new Llama4ModelOptions(Device: "emu", MaxContext: 256, MaxPrefillPiece: 32, Codec: new ChatApiTests.ByteCodec()), dev);
        long weightsOnly = dev.TotalMemory - dev.FreeMemory;
        int seed = TestSeed.For(nameof(NoGrowthOverManyGenerations));
        var r = SoakVerb.Soak(model, n: 100, tokens: 2, every: 10, sessionEvery: 25, seed: seed,
                              s => TestContext.Out.WriteLine($"{s.Generation,4}: rss {s.Rss >> 10} KiB, managed {s.Managed >> 10} KiB, device {s.Device >> 10} KiB"));
        TestContext.Out.WriteLine($"slopes (B/generation): rss {r.RssSlope:0}, managed {r.ManagedSlope:0}, device {r.DeviceSlope:0}; seed {seed}");
        Assert.That(r.Samples, Has.Count.EqualTo(11));
        Assert.That(r.ManagedSlope, Is.LessThan(2048), "managed heap trend after warm-up");
        Assert.That(r.RssSlope, Is.LessThan(64 * 1024), "RSS trend after warm-up");
        Assert.That(r.Samples.Skip(r.WarmupSamples).Max(s => s.Device), Is.LessThanOrEqualTo(r.Samples.Max(s => s.Device)));
        Assert.That(dev.TotalMemory - dev.FreeMemory, Is.EqualTo(weightsOnly), "device memory after the last session is the weights' alone");
    }
}
