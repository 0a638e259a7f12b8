using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Generation;

[Category("Emulator")]
public class TokenGeneratorTests
{
    static (int[] Prompt, int[] Generated) Golden(string fixture)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.safetensors"));
        return (f.Span<long>(f.Get("input_ids")).ToArray().Select(v => (int)v).ToArray(),
                f.Span<long>(f.Get("generated_ids")).ToArray().Select(v => (int)v).ToArray());
    }

    /// <summary>A fixture model on the emulator with a generator over it (fp32, the parity mode).</summary>
    sealed class Rig : IDisposable
    {
        readonly Llama4Native.Devices.Device dev = TestDevices.Emulated();
        public ModelWeights Weights { get; }
        public TokenGenerator Gen { get; }
        public Rig(string fixture, int maxContext, int maxPiece)
        {
            Weights = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
            Gen = new TokenGenerator(Weights, ComputeMode.F32, maxContext, maxPiece);
        }
        public void Dispose() { Gen.Dispose(); Weights.Dispose(); dev.Dispose(); }
    }

    [TestCase("tiny-scout", 16)]
    [TestCase("tiny-maverick", 7)]
    public void GreedyGenerationInPiecesReproducesTheGolden(string fixture, int maxPiece)
    {
        var (prompt, want) = Golden(fixture);
        using var rig = new Rig(fixture, 128, maxPiece);
        var gen = rig.Gen;
        var got = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = want.Length, StopAtModelStops = false }).ToList();
        Assert.That(got, Is.EqualTo(want));
        Assert.That(gen.LastStats!.PromptTokens, Is.EqualTo(prompt.Length));
        Assert.That(gen.LastStats.StopReason, Is.EqualTo("max new tokens"));
    }

    [Test]
    public void ContinuingAConversationOrCancellingLeavesTheSameSequence()
    {
        var (prompt, want) = Golden("tiny-maverick");
        using var rig = new Rig("tiny-maverick", 128, 32);
        var gen = rig.Gen;
        var o = new GenerationOptions { MaxNewTokens = 5, StopAtModelStops = false };
        var first = gen.Generate(prompt, o).ToList();
        var second = gen.Generate([], o).ToList();                  // continues: the 5th token is fed first
        Assert.That(first.Concat(second), Is.EqualTo(want.Take(10)));

        gen.Reset();
        using var cts = new CancellationTokenSource();
        var seen = new List<int>();
        Assert.Throws<OperationCanceledException>(() =>
        {
            foreach (var t in gen.Generate(prompt, o with { MaxNewTokens = 16 }, cts.Token)) { seen.Add(t); if (seen.Count == 3) cts.Cancel(); }
        });
        var rest = gen.Generate([], o with { MaxNewTokens = 16 - 3 }).ToList();  // the session is still usable
        Assert.That(seen.Concat(rest), Is.EqualTo(want));
    }

    [Test]
    public void TheContextLimitIsAClearErrorOrAStop()
    {
        var (prompt, _) = Golden("tiny-maverick");
        using var rig = new Rig("tiny-maverick", prompt.Length + 3, 16);
        var gen = rig.Gen;
        var e = Assert.Throws<ContextLengthException>(() => gen.Generate([.. prompt, .. prompt], new GenerationOptions()).ToList());
        Assert.That(e!.Message, Does.Contain("context"));
        var got = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 50, StopAtModelStops = false }).ToList();
        Assert.That(got, Has.Count.EqualTo(4));
        Assert.That(gen.LastStats!.StopReason, Is.EqualTo("context full"));
        Assert.Throws<ArgumentException>(() => gen.Generate([rig.Weights.Config.Text.VocabSize], new GenerationOptions()).ToList());
    }

    // ---- sampling through the generator (the kernel's distributions are tested in Kernels/SampleTests) ----

    [Test]
    public void SeededSamplingIsReproducibleAndTheSeedMatters()
    {
        var (prompt, _) = Golden("tiny-maverick");
        using var rig = new Rig("tiny-maverick", 128, 32);
        var gen = rig.Gen;
        ulong seed = (ulong)TestContext.CurrentContext.Random.NextInt64();
        var o = new GenerationOptions { MaxNewTokens = 12, StopAtModelStops = false, Temperature = 1.5f, Seed = seed };
        var a = gen.Generate(prompt, o).ToList();
        gen.Reset();
        var b = gen.Generate(prompt, o).ToList();
        gen.Reset();
        var c = gen.Generate(prompt, o with { Seed = seed + 1 }).ToList();
        Assert.That(b, Is.EqualTo(a), $"seed {seed} must reproduce its tokens");
        Assert.That(c, Is.Not.EqualTo(a), $"seeds {seed} and {seed + 1} gave the same 12 tokens");
    }

    [Test]
    public void TopKOfOneIsGreedyAtAnyTemperature()
    {
        var (prompt, want) = Golden("tiny-scout");
        using var rig = new Rig("tiny-scout", 128, 64);
        var gen = rig.Gen;
        var o = new GenerationOptions { MaxNewTokens = want.Length, StopAtModelStops = false, Temperature = 2f, TopK = 1,
                                        Seed = (ulong)TestContext.CurrentContext.Random.NextInt64() };
        Assert.That(gen.Generate(prompt, o).ToList(), Is.EqualTo(want));
    }

    [Test]
    public void EveryDrawIsInsideTheNucleusOfItsStep()
    {
        var (prompt, _) = Golden("tiny-maverick");
        using var rig = new Rig("tiny-maverick", 128, 32);
        var gen = rig.Gen;
        const float temperature = 1.3f, topP = 0.6f;
        var o = new GenerationOptions { MaxNewTokens = 20, StopAtModelStops = false, Temperature = temperature, TopP = topP,
                                        Seed = (ulong)TestContext.CurrentContext.Random.NextInt64() };
        int steps = 0;
        foreach (var id in gen.Generate(prompt, o))
        {
            // The nucleus on the host: most likely first, while the mass before a token is < p.
            var z = gen.LastLogits.Select(x => (double)x / temperature).ToArray();
            double m = z.Max(), sum = z.Sum(x => Math.Exp(x - m));
            var order = Enumerable.Range(0, z.Length).OrderByDescending(j => z[j]).ToArray();
            var nucleus = new HashSet<int>();
            double before = 0;
            foreach (var j in order)
            {
                if (before >= topP * (1 - 1e-5)) break;
                nucleus.Add(j);
                before += Math.Exp(z[j] - m) / sum;
            }
            Assert.That(nucleus, Does.Contain(id), $"step {steps}: token {id} is outside the top-p {topP} nucleus of {nucleus.Count} tokens");
            steps++;
        }
        Assert.That(steps, Is.EqualTo(20));
    }

    [Test]
    public void PresencePenaltyKeepsGreedyOffTokensItAlreadyProduced()
    {
        var (prompt, want) = Golden("tiny-scout");
        Assert.That(want.Distinct().Count(), Is.LessThan(want.Length), "precondition: the plain greedy output repeats a token");
        using var rig = new Rig("tiny-scout", 128, 64);
        var gen = rig.Gen;
        var o = new GenerationOptions { MaxNewTokens = want.Length, StopAtModelStops = false, PresencePenalty = 1000 };
        var got = gen.Generate(prompt, o).ToList();
        Assert.That(got.Distinct().Count(), Is.EqualTo(got.Count), string.Join(",", got));
        Assert.That(got[0], Is.EqualTo(want[0]), "nothing is penalised before the first token");
        // Penalties count this call's output only: a new call starts clean, so its first token is greedy again.
        gen.Reset();
        Assert.That(gen.Generate(prompt, o with { MaxNewTokens = 1 }).Single(), Is.EqualTo(want[0]));
    }
}
