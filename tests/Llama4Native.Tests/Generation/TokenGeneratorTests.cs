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

    [TestCase("tiny-scout", 16)]
    [TestCase("tiny-maverick", 7)]
    public void GreedyGenerationInPiecesReproducesTheGolden(string fixture, int maxPiece)
    {
        var (prompt, want) = Golden(fixture);
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        using var gen = new TokenGenerator(w, ComputeMode.F32, maxContext: 128, maxPiece: maxPiece);
        var got = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = want.Length, StopAtModelStops = false }).ToList();
        Assert.That(got, Is.EqualTo(want));
        Assert.That(gen.LastStats!.PromptTokens, Is.EqualTo(prompt.Length));
        Assert.That(gen.LastStats.StopReason, Is.EqualTo("max new tokens"));
    }

    [Test]
    public void ContinuingAConversationOrCancellingLeavesTheSameSequence()
    {
        var (prompt, want) = Golden("tiny-maverick");
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-maverick"), dev);
        using var gen = new TokenGenerator(w, ComputeMode.F32, maxContext: 128, maxPiece: 32);
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
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-maverick"), dev);
        using var gen = new TokenGenerator(w, ComputeMode.F32, maxContext: prompt.Length + 3, maxPiece: 16);
        var e = Assert.Throws<ContextLengthException>(() => gen.Generate([.. prompt, .. prompt], new GenerationOptions()).ToList());
        Assert.That(e!.Message, Does.Contain("context"));
        var got = gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 50, StopAtModelStops = false }).ToList();
        Assert.That(got, Has.Count.EqualTo(4));
        Assert.That(gen.LastStats!.StopReason, Is.EqualTo("context full"));
        Assert.Throws<ArgumentException>(() => gen.Generate([w.Config.Text.VocabSize], new GenerationOptions()).ToList());
    }
}
