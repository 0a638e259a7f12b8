using Llama4Native.Checkpoints;
using Llama4Native.Devices.Emulated;
using Llama4Native.Devices.Recording;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Generation;

/// <summary>The captured decode step (device-side ids/positions/descriptors, graph replay) against the host-driven one.</summary>
[Category("Emulator")]
public class CapturedDecodeTests
{
    static List<int> Run(string fixture, int[] prompt, GenerationOptions o, bool capture, int maxContext, out TokenGenerator? kept, EmuDevice dev, ModelWeights w)
    {
        var gen = new TokenGenerator(w, ComputeMode.BF16, maxContext, 16, captureDecode: capture);
        var got = gen.Generate(prompt, o).ToList();
        got.AddRange(gen.Generate([], o with { MaxNewTokens = 3 }));   // a second call continues the sequence
        kept = gen;
        return got;
    }

    [TestCase("tiny-scout", 0f)]
    [TestCase("tiny-maverick", 0f)]
    [TestCase("tiny-maverick", 0.8f)]
    public void CapturedStepsGiveTheSameTokensAsHostSteps(string fixture, float temperature)
    {
        var rng = new Random(TestSeed.For(nameof(CapturedStepsGiveTheSameTokensAsHostSteps) + fixture + temperature));
        // a prompt that ends just below the first 256-key bound, so decoding crosses it (a re-capture) and several chunks
        int promptLen = rng.Next(230, 250), newTokens = 300 - promptLen - 8;
        var prompt = Enumerable.Range(0, promptLen).Select(_ => rng.Next(1, 480)).ToArray();
        var o = new GenerationOptions { MaxNewTokens = newTokens, StopAtModelStops = false, Temperature = temperature, TopK = 20, Seed = (ulong)rng.Next(),
                                        RepetitionPenalty = temperature > 0 ? 1.1f : 1f };
        using var dev = new EmuDevice();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        var plain = Run(fixture, prompt, o, false, 320, out var g1, dev, w);
        var captured = Run(fixture, prompt, o, true, 320, out var g2, dev, w);
        try
        {
            Assert.That(captured, Is.EqualTo(plain));
            Assert.That(g2!.CapturedSteps, Is.GreaterThanOrEqualTo(2), "the 256-key bound was crossed: two captured variants");
            Assert.That(g2.GraphReplays, Is.GreaterThan(newTokens / 2));
            Assert.That(g2.LastLogits, Is.EqualTo(g1!.LastLogits));
        }
        finally { g1?.Dispose(); g2?.Dispose(); }
    }

    [Test]
    public void ThePlanOfACapturedStepIsOneGraphLaunchAndOneSync()
    {
        var config = Llama4Config.Load(CkptTestUtil.FixtureModel("tiny-scout"));
        var before = Planner.Run(config, new PlanOptions(Context: 80, Steps: 20));
        var after = Planner.Run(config, new PlanOptions(Context: 80, Steps: 20, Capture: true));
        Assert.That(before.Decode.Trace.GraphLaunches, Is.Zero);
        Assert.That(before.Decode.Trace.HostSyncs, Is.GreaterThan(1));
        Assert.That(after.Decode.Trace.GraphLaunches, Is.EqualTo(1));
        Assert.That(after.Decode.Trace.HostSyncs, Is.LessThanOrEqualTo(1));
        Assert.That(after.Decode.Trace.HostLaunches, Is.Zero);
        Assert.That(after.Decode.Trace.Launches, Is.EqualTo(before.Decode.Trace.Launches + 1), "the same kernels plus the step kernel");
        Assert.That(after.Decode.Trace.Copies, Is.LessThan(before.Decode.Trace.Copies));
    }
}

/// <summary>The same on a GPU: CUDA stream capture, cuGraphInstantiate, cuGraphLaunch (ignored without one).</summary>
[Category("Cuda")]
public class CapturedDecodeCudaTests
{
    [TestCase("tiny-scout")]
    [TestCase("tiny-maverick")]
    public void CudaGraphStepsGiveTheSameTokensAsHostSteps(string fixture)
    {
        var rng = new Random(TestSeed.For(nameof(CudaGraphStepsGiveTheSameTokensAsHostSteps) + fixture));
        int promptLen = rng.Next(230, 250);
        var prompt = Enumerable.Range(0, promptLen).Select(_ => rng.Next(1, 480)).ToArray();
        var o = new GenerationOptions { MaxNewTokens = 300 - promptLen - 8, StopAtModelStops = false, Temperature = 0.7f, TopP = 0.9f, Seed = (ulong)rng.Next() };
        using var dev = TestDevices.CudaOrIgnore();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        using var plain = new TokenGenerator(w, ComputeMode.BF16, 320, 16);
        using var captured = new TokenGenerator(w, ComputeMode.BF16, 320, 16, captureDecode: true);
        Assert.That(captured.Generate(prompt, o).ToList(), Is.EqualTo(plain.Generate(prompt, o).ToList()));
        Assert.That(captured.CapturedSteps, Is.GreaterThanOrEqualTo(2));
        Assert.That(captured.GraphReplays, Is.GreaterThan(o.MaxNewTokens / 2));
    }
}

[Category("Emulator")]
public class SyntheticBenchTests
{
    [Test]
    public void BenchE2eRunsASyntheticPresetHostDrivenAndCaptured()
    {
        var o = new StringWriter(); var e = new StringWriter();
        int rc = Llama4Native.Cli.Commands.Run(["bench-e2e", "--preset", "tiny-maverick", "--synthetic", "--device", "emu", "--prompt-tokens", "20", "--new-tokens", "4"], o, e);
        Assert.That(rc, Is.Zero, e.ToString());
        Assert.That(o.ToString(), Does.Contain("generated in").And.Contain("host-driven").And.Contain("captured step replayed"));
        rc = Llama4Native.Cli.Commands.Run(["bench-e2e", "--preset", "tiny-maverick", "--device", "emu"], o, e);
        Assert.That(rc, Is.EqualTo(2), "a preset without --synthetic is a usage error");
    }
}
