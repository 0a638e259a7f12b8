using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Kernels;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Serving;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Tests.Model;

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

    /// <summary>sample_slots_f32 (the batched engine's one launch) against sample_f32 one row at a time on copies of the
    /// same per-sequence state (each as row 0 of its own launch): ids and probabilities bit for bit, and the updated
    /// steps and penalty counts equal, over several steps so the states advance.</summary>
    [Test]
    public void OneLaunchSamplingEqualsPerRowSamplingBitForBit()
    {
        var rng = new Random((int)CkptTestUtil.Seed("sample-slots"));
        using var dev = TestDevices.Emulated();
        const int S = 7, V = 1531, B = 5;
        var ps = Enumerable.Range(0, S).Select(r => Ops.SampleSpec.Params("all", r, rng)).ToArray();
        ps[1] = ps[1] with { Repetition = 1, Frequency = 0, Presence = 0 }; // penalties off: the counts change nothing
        var counts = Enumerable.Range(0, S * V).Select(_ => rng.NextDouble() < 0.05 ? rng.Next(1, 4) : 0).ToArray();
        var steps = Enumerable.Range(0, S).Select(_ => rng.Next(0, 1000)).ToArray();
        using var pp = Ops.DeviceData.Upload<SampleParams>(dev, ps);
        using var cAll = Ops.DeviceData.Upload<int>(dev, counts);
        using var sAll = Ops.DeviceData.Upload<int>(dev, steps);
        // Per-row state: one buffer per sequence (params | step | counts), as a lone TokenGenerator keeps it.
        var lone = Enumerable.Range(0, S).Select(q => (P: Ops.DeviceData.Upload<SampleParams>(dev, [ps[q]]), St: Ops.DeviceData.Upload<int>(dev, [steps[q]]),
                                                       C: Ops.DeviceData.Upload<int>(dev, counts.AsSpan(q * V, V).ToArray()))).ToArray();
        using var io = dev.Allocate(8L * B);
        using var one = dev.Allocate(8);
        using var slotBuf = dev.Allocate(4L * B);
        try
        {
            for (int step = 0; step < 4; step++)
            {
                var logits = Ops.DeviceData.Normal(rng, (long)B * V, 3f);
                using var lb = Ops.DeviceData.Upload(dev, logits, DType.F32);
                var slots = Enumerable.Range(0, S).OrderBy(_ => rng.Next()).Take(B).ToArray();
                dev.Upload<int>(slots, slotBuf.Ptr);
                var lt = new Tensor(lb.Ptr, DType.F32, new Shape(B, V));
                Sample.RunSlots(dev, lt, pp.Ptr, cAll.Ptr, sAll.Ptr, new Tensor(slotBuf.Ptr, DType.I32, new Shape(B)),
                                new Tensor(io.Ptr, DType.I32, new Shape(B)), io.Ptr + 4L * B, update: true, S);
                var got = new int[2 * B];
                dev.Download<int>(io.Ptr, got);
                for (int b = 0; b < B; b++)
                {
                    var q = lone[slots[b]];
                    Sample.Run(dev, lt.Slice(b, 1), q.P.Ptr, q.C.Ptr, q.St.Ptr, new Tensor(one.Ptr, DType.I32, new Shape(1)), one.Ptr + 4, update: true);
                    var want = new int[2];
                    dev.Download<int>(one.Ptr, want);
                    Assert.That((got[b], got[B + b]), Is.EqualTo((want[0], want[1])), $"step {step}, row {b} (slot {slots[b]}): id and probability bits");
                }
            }
            var allSteps = new int[S]; dev.Download<int>(sAll.Ptr, allSteps);
            var allCounts = new int[S * V]; dev.Download<int>(cAll.Ptr, allCounts);
            for (int q = 0; q < S; q++)
            {
                var st = new int[1]; dev.Download<int>(lone[q].St.Ptr, st);
                var c = new int[V]; dev.Download<int>(lone[q].C.Ptr, c);
                Assert.That(allSteps[q], Is.EqualTo(st[0]), $"slot {q}: step counter");
                Assert.That(allCounts.AsSpan(q * V, V).ToArray(), Is.EqualTo(c), $"slot {q}: penalty counts");
            }
        }
        finally { foreach (var q in lone) { q.P.Dispose(); q.St.Dispose(); q.C.Dispose(); } }
    }

    /// <summary>Images in the batched engine: the tiny-Maverick image golden (38 prompt tokens, 16 &lt;|patch|&gt;, one tile)
    /// served among three text requests, with a prefill piece of 16 that cuts the patch run: the greedy reply is HF's
    /// and the sequential engine's, token for token, and the text replies are what they are alone.</summary>
    [Test]
    public async Task AnImageRequestInABatchEqualsTheSequentialEngine()
    {
        const int piece = 16;
        var gold = VisionParityTests.Read("tiny-maverick");
        var want = gold.FullIds[gold.Ids.Length..];
        var rng = new Random((int)CkptTestUtil.Seed("batched-engine-image"));
        using var model = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"),
                                           new Llama4ModelOptions(Device: "emu", Compute: ComputeMode.F32, MaxContext: Context, MaxPrefillPiece: piece));
        var image = new ServingRequest
        {
            Prompt = gold.Ids, Images = new ImageTiles(gold.Pixels, gold.Tiles),
            Options = new GenerationOptions { MaxNewTokens = want.Length, StopAtModelStops = false },
        };
        var texts = new[] { 5, 20, 40 }.Select((n, i) => new ServingRequest
        {
            Prompt = Enumerable.Range(0, n).Select(_ => rng.Next(0, 448)).ToArray(),
            Options = i == 1 ? new GenerationOptions { MaxNewTokens = 8, Temperature = 0.8f, TopK = 30, Seed = (ulong)rng.NextInt64() }
                             : new GenerationOptions { MaxNewTokens = 8 },
        }).ToArray();

        List<int> sequential;
        using (var seq = new ServingScheduler(new SequentialStepEngine(model.Weights, ComputeMode.F32, 2, Context, piece), null, new ServingOptions()))
            sequential = await Collect(seq.Submit(image));
        Assert.That(sequential, Is.EqualTo(want), "sequential engine vs the HF golden");

        var engine = new BatchedStepEngine(model.Weights, ComputeMode.F32, 4, Context, piece, pageSize: 16);
        using var scheduler = new ServingScheduler(engine, null, new ServingOptions { MaxQueue = 8, StepTokenBudget = 40 });
        var textAlone = new List<List<int>>();
        foreach (var r in texts) textAlone.Add(await Collect(scheduler.Submit(r)));
        var imageAlone = await Collect(scheduler.Submit(image));
        long before = engine.Forwards;
        var all = await Task.WhenAll(new[] { texts[0], image, texts[1], texts[2] }.Select(r => scheduler.Submit(r)).ToList().Select(Collect));
        long forwards = engine.Forwards - before;
        Assert.That(imageAlone, Is.EqualTo(sequential), "batched engine, the image request alone");
        Assert.That(all[1], Is.EqualTo(sequential), "batched engine, the image request among three text requests");
        Assert.That(new[] { all[0], all[2], all[3] }, Is.EqualTo(textAlone), "text requests: among the image request vs alone");
        int pieces = (gold.Ids.Length + piece - 1) / piece + want.Length - 1 + texts.Select((r, i) => (r.Prompt.Count + piece - 1) / piece + all[i == 0 ? 0 : i + 1].Count - 1).Sum();
        Assert.That(forwards, Is.LessThan(pieces / 2), $"{forwards} forwards for {pieces} pieces: the image sequence shared steps");
        for (int i = 0; i < 200 && scheduler.Snapshot().Running > 0; i++) await Task.Delay(25);
        Assert.That(engine.Cache.FreePages, Is.EqualTo(engine.Cache.NopePages), "every retired sequence returned its pages");

        // A prompt whose <|patch|> count the images do not give fails that sequence alone, naming both counts.
        var bad = new ServingRequest { Prompt = gold.Ids.Where((t, i) => i != 12).ToArray(), Images = image.Images, Options = image.Options };
        var failed = scheduler.Submit(bad);
        var ok = scheduler.Submit(texts[0]);
        await foreach (var _ in failed.Pieces.ReadAllAsync()) { }
        var result = await failed.Completion;
        Assert.That(result.Reason, Is.EqualTo(FinishReason.Error));
        Assert.That(result.Error, Is.TypeOf<ImageTokenMismatchException>());
        Assert.That(result.Detail, Does.Contain("15").And.Contain("16"), result.Detail);
        Assert.That(await Collect(ok), Is.EqualTo(textAlone[0]));
    }

    /// <summary>Captured decode steps (one graph per (rows, key bound), bound buckets of 16 keys) against the same engine
    /// uncaptured, step by step on the same pieces: every step's logits bit for bit and the same sampled tokens (greedy,
    /// seeded top-p, top-k with penalties), through prefill/decode mixes (not captured), sequences joining and leaving,
    /// a different set of slots on the same B replaying the same graph, and re-captures as the bound grows.</summary>
    [Test]
    public void CapturedDecodeStepsEqualUncapturedBitForBit()
    {
        var rng = new Random((int)CkptTestUtil.Seed("batched-capture"));
        using var model = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"),
                                           new Llama4ModelOptions(Device: "emu", Compute: ComputeMode.F32, MaxContext: Context, MaxPrefillPiece: 16));
        using var plain = new BatchedStepEngine(model.Weights, ComputeMode.F32, 4, Context, 16, pageSize: 16);
        using var captured = new BatchedStepEngine(model.Weights, ComputeMode.F32, 4, Context, 16, pageSize: 16, captureDecode: true, captureKvBucket: 16);
        GenerationOptions[] opts =
        [
            new(),
            new() { Temperature = 0.9f, TopP = 0.9f, Seed = (ulong)rng.NextInt64() },
            new() { Temperature = 0.7f, TopK = 20, RepetitionPenalty = 1.3f, PresencePenalty = 0.2f, Seed = (ulong)rng.NextInt64() },
        ];
        int[][] prompts = [[.. Enumerable.Range(0, 20).Select(_ => rng.Next(0, 448))], [.. Enumerable.Range(0, 7).Select(_ => rng.Next(0, 448))],
                           [.. Enumerable.Range(0, 33).Select(_ => rng.Next(0, 448))]];
        int[] fed = new int[3], lastToken = [-1, -1, -1];
        int v = plain.Vocab, steps = 0;
        void Step(params int[] seqs)
        {
            var pieces = seqs.Select(q =>
            {
                if (lastToken[q] >= 0) return new StepPiece(q, new[] { lastToken[q] }, Sample: true, Decode: true);
                int n = Math.Min(16, prompts[q].Length - fed[q]);
                var piece = new StepPiece(q, prompts[q].AsMemory(fed[q], n), Sample: fed[q] + n == prompts[q].Length, Decode: false);
                fed[q] += n;
                return piece;
            }).ToArray();
            var a = new StepResult[pieces.Length];
            var b = new StepResult[pieces.Length];
            plain.Step(pieces, a);
            captured.Step(pieces, b);
            for (int i = 0; i < pieces.Length; i++)
            {
                Assert.That((a[i].Error, b[i].Error), Is.EqualTo(((Exception?)null, (Exception?)null)), $"step {steps}");
                Assert.That(b[i].Token, Is.EqualTo(a[i].Token), $"step {steps}, slot {pieces[i].Slot}: sampled token");
                if (pieces[i].Sample) lastToken[pieces[i].Slot] = a[i].Token;
            }
            var la = DeviceData.Download(model.Device, plain.LastLogits.Ptr, (long)pieces.Length * v, DType.F32);
            var lb = DeviceData.Download(model.Device, captured.LastLogits.Ptr, (long)pieces.Length * v, DType.F32);
            int diff = Enumerable.Range(0, la.Length).Count(j => BitConverter.SingleToInt32Bits(la[j]) != BitConverter.SingleToInt32Bits(lb[j]));
            Assert.That(diff, Is.Zero, $"step {steps} ({string.Join(",", pieces.Select(p => p.Decode ? "d" : p.Tokens.Length.ToString()))}): logits bits differ");
            steps++;
        }
        foreach (var e in new[] { plain, captured }) { e.Begin(0, opts[0], null); e.Begin(1, opts[1], null); }
        Step(0, 1); Step(0, 1);
        for (int i = 0; i < 14; i++) Step(0, 1);          // B = 2, lengths 20 → 34: the bound moves past 32
        foreach (var e in new[] { plain, captured }) e.Begin(2, opts[2], null);
        Step(0, 2, 1); Step(2, 1, 0); Step(1, 0, 2);        // slot 2's prompt pieces among decode rows (not captured)
        for (int i = 0; i < 8; i++) Step(0, 1, 2);          // B = 3
        foreach (var e in new[] { plain, captured }) e.End(1);
        for (int i = 0; i < 6; i++) Step(2, 0);             // B = 2 again, other slots in another order: the same graphs
        Assert.That(captured.CapturedSteps, Is.GreaterThanOrEqualTo(3), "graphs per (B, bound)");
        Assert.That(captured.GraphReplays, Is.GreaterThanOrEqualTo(15), "replays");
        Assert.That(plain.CapturedSteps, Is.Zero);
        TestContext.Out.WriteLine($"{steps} steps: {captured.CapturedSteps} captured graphs, {captured.GraphReplays} replays; logits bit for bit");
    }
}
