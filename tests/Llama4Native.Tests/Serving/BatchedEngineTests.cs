using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Serving;

/// <summary>
/// The batched step engine under the continuous-batching scheduler (tiny Maverick fixture, fp32, emulator): replies are
/// the lone <see cref="TokenGenerator"/>'s tokens, alone and among others (greedy and seeded sampling, penalties),
/// while steps really hold several sequences (fewer forwards than pieces), and every page comes back.
/// </summary>
[Category("Emulator")]
[NonParallelizable]
public class BatchedEngineTests
{
    const int Context = 128, Piece = 32, Slots = 6;

    static async Task<List<int>> Collect(ServingSequence s)
    {
        var ids = new List<int>();
        await foreach (var p in s.Pieces.ReadAllAsync()) if (p.TokenId >= 0) ids.Add(p.TokenId);
        await s.Completion;
        return ids;
    }

    [Test]
    public async Task RepliesMatchALoneGeneratorAloneAndInABatch()
    {
        var rng = new Random((int)CkptTestUtil.Seed("batched-engine"));
        using var model = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"),
                                           new Llama4ModelOptions(Device: "emu", Compute: ComputeMode.F32, MaxContext: Context, MaxPrefillPiece: Piece));
        var engine = new BatchedStepEngine(model.Weights, ComputeMode.F32, Slots, Context, Piece, pageSize: 16);
        using var scheduler = new ServingScheduler(engine, null, new ServingOptions { MaxQueue = 16, StepTokenBudget = 40 });
        int[] lengths = [1, 7, 32, 33, 50, 70, 12];
        var requests = lengths.Select((n, i) => new ServingRequest
        {
            Prompt = Enumerable.Range(0, n).Select(_ => rng.Next(0, 448)).ToArray(),
            Options = (i % 3) switch
            {
                0 => new GenerationOptions { MaxNewTokens = 6 },
                1 => new GenerationOptions { MaxNewTokens = 6, Temperature = 0.9f, TopP = 0.95f, Seed = (ulong)rng.NextInt64() },
                _ => new GenerationOptions { MaxNewTokens = 6, Temperature = 0.7f, TopK = 20, RepetitionPenalty = 1.3f, Seed = (ulong)rng.NextInt64() },
            },
        }).ToArray();

        var alone = new List<List<int>>();
        foreach (var r in requests) alone.Add(await Collect(scheduler.Submit(r)));
        long forwardsBefore = engine.Forwards;
        var together = await Task.WhenAll(requests.Select(r => scheduler.Submit(r)).ToList().Select(Collect));
        long forwards = engine.Forwards - forwardsBefore;

        var stops = new HashSet<int>(engine.ModelStops);
        for (int i = 0; i < requests.Length; i++)
        {
            using var gen = new TokenGenerator(model.Weights, ComputeMode.F32, Context, Piece);
            var lone = new List<int>();
            foreach (var t in gen.Generate(requests[i].Prompt.ToArray(), requests[i].Options with { StopAtModelStops = false, MaxNewTokens = int.MaxValue }))
            {
                lone.Add(t);
                if (stops.Contains(t) || lone.Count == requests[i].Options.MaxNewTokens) break;
            }
            Assert.That(alone[i], Is.EqualTo(lone), $"request {i} ({lengths[i]} prompt tokens): batched engine alone vs a lone TokenGenerator");
            Assert.That(together[i], Is.EqualTo(alone[i]), $"request {i}: alone vs among {requests.Length - 1} others");
        }
        int pieces = requests.Select((r, i) => (r.Prompt.Count + Piece - 1) / Piece + together[i].Count - 1).Sum();
        Assert.That(forwards, Is.LessThan(pieces / 2), $"{forwards} forwards for {pieces} pieces: steps hold several sequences");
        for (int i = 0; i < 200 && scheduler.Snapshot().Running > 0; i++) await Task.Delay(25);
        Assert.That(scheduler.Snapshot().KvBlocksUsed, Is.Zero);
        Assert.That(engine.Cache.FreePages, Is.EqualTo(engine.Cache.NopePages), "every retired sequence returned its pages");
        TestContext.Out.WriteLine($"{requests.Length} requests together: {forwards} forwards (sequential engine: one per piece, ≥ {pieces})");
    }
}
