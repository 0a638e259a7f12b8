using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Model;

/// <summary>
/// The paged KV cache (issue #13 part 1): page accounting; the batched graph over it equals the contiguous
/// single-sequence cache; and batch invariance — a sequence's logits and greedy tokens are the same alone and in a
/// batch with other sequences of different lengths, prefill pieces and decode rows mixed (fp32, emulator).
/// </summary>
[Category("Emulator")]
internal class PagedKvCacheTests
{
    static (int[] Ids, int[] Generated) Golden(string fixture)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.safetensors"));
        return (f.Span<long>(f.Get("input_ids")).ToArray().Select(v => (int)v).ToArray(),
                f.Span<long>(f.Get("generated_ids")).ToArray().Select(v => (int)v).ToArray());
    }

    [Test]
    public void PagesAreCountedTakenAllOrNothingAndFreedAtOnce()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        using var kv = new PagedKvCache(dev, w.Config.Text, DType.F32, slots: 3, maxContext: 40, maxStepTokens: 32, pages: 10, pageSize: 8);
        Assert.That((kv.FreePages, kv.UsedPages, kv.NopeStride), Is.EqualTo((10, 0, 5)));
        // chunk 16 + 32 step rows → ceil(48 / 8) + 1 = 7 ring pages, capped by the 5 pages a 40-token context needs
        Assert.That(kv.RingPages, Is.EqualTo(5));
        kv.Begin(0); kv.Begin(1);
        kv.BeginStep([(0, 9), (1, 1)]);             // 9 tokens → 2 pages, 1 token → 1 page
        Assert.That(kv.FreePages, Is.EqualTo(7));
        kv.EndStep();
        kv.BeginStep([(0, 7)]);                     // 16 tokens: still 2 pages
        kv.EndStep();
        Assert.That((kv.FreePages, kv.Length(0), kv.Length(1)), Is.EqualTo((7, 16, 1)));
        kv.Begin(2);
        kv.BeginStep([(2, 32)]);                    // 4 pages
        kv.EndStep();
        Assert.That(kv.FreePages, Is.EqualTo(3));
        // 1 more page for slot 0 and 2 for slot 1 fit (3); adding slot 2's 8 more tokens (1 page) does not: nothing is taken
        var e = Assert.Throws<KvCacheFullException>(() => kv.BeginStep([(0, 1), (1, 16), (2, 8)]));
        Assert.That(e!.Message, Does.Contain("4 more KV pages").And.Contain("3 of 10 are free"));
        Assert.That((kv.FreePages, kv.Length(0), kv.Length(2)), Is.EqualTo((3, 16, 32)));
        Assert.Throws<ContextLengthException>(() => kv.BeginStep([(2, 9)]));   // 41 > 40
        Assert.Throws<ArgumentException>(() => kv.BeginStep([(0, 1), (0, 1)]));
        kv.End(2);                                   // its 4 pages come back at once
        Assert.That((kv.FreePages, kv.UsedPages, kv.IsActive(2)), Is.EqualTo((7, 3, false)));
        Assert.Throws<InvalidOperationException>(() => kv.BeginStep([(2, 1)]));
        kv.BeginStep([(0, 1), (1, 16)]);           // now it fits
        kv.EndStep();
        Assert.That(kv.FreePages, Is.EqualTo(4));
        kv.End(0); kv.End(1);
        Assert.That(kv.FreePages, Is.EqualTo(10));
    }

    /// <summary>B = 1 through the paged graph (pages of 4 tokens: many pages, rings across chunk boundaries) gives the logits
    /// of the contiguous cache's graph, piece by piece and for every decode step.</summary>
    [TestCase(DType.F32)]
    [TestCase(DType.F8E4M3)]
    public void PagedEqualsContiguous(DType kvType)
    {
        var (ids, _) = Golden("tiny-scout");
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        int v = w.Config.Text.VocabSize, piece = 11, total = ids.Length + 6;
        using var cache = new KvCache(dev, w.Config.Text, DType.F32, maxContext: total, maxPiece: piece, kvDType: kvType);
        using var kv = new PagedKvCache(dev, w.Config.Text, DType.F32, slots: 2, maxContext: total, maxStepTokens: piece, kvDType: kvType == DType.F32 ? null : kvType, pageSize: 4);
        var graphs = new Dictionary<int, (Llama4TextGraph C, Llama4TextGraph P)>();
        try
        {
            (Llama4TextGraph C, Llama4TextGraph P) For(int t) => graphs.TryGetValue(t, out var g) ? g
                : graphs[t] = (new Llama4TextGraph(w, t, ComputeMode.F32, cache), new Llama4TextGraph(w, t, 1, ComputeMode.F32, kv));
            kv.Begin(1);
            var seq = ids.ToList();
            int pos = 0, next = -1;
            double worst = 0;
            while (pos < total)
            {
                int n = pos < ids.Length ? Math.Min(piece, ids.Length - pos) : 1;
                if (pos >= ids.Length) seq.Add(next);
                var tokens = seq.GetRange(pos, n).ToArray();
                var (gc, gp) = For(n);
                var want = gc.Forward(tokens).AsSpan((n - 1) * v, v).ToArray();
                var t = gp.RunBatch([(1, tokens)]);
                var got = DeviceData.Download(dev, t.Ptr, t.Elements, DType.F32);
                var r = OpCheck.Compare($"logits after position {pos + n - 1}", got, want, new Tolerance(2e-5, 1e-4));
                Assert.That(r.Passed, r.ToString());
                worst = Math.Max(worst, r.MaxAbs);
                next = Array.IndexOf(got, got.Max());
                pos += n;
            }
            Assert.That((kv.Length(1), cache.Position), Is.EqualTo((total, total)));
            TestContext.Out.WriteLine($"paged vs contiguous ({kvType}): max |Δlogit| {worst:g3} over {total} positions");
        }
        finally { foreach (var (c, p) in graphs.Values) { c.Dispose(); p.Dispose(); } }
    }

    /// <summary>
    /// Three requests with different prompts: each alone (B = 1), then all together — staggered, so one decodes while another
    /// is still prefilling — with the same pieces per request. fp32: identical greedy tokens, logits bit for bit.
    /// </summary>
    [Test]
    public void ARequestsTokensDoNotDependOnTheBatch()
    {
        var (ids, _) = Golden("tiny-scout");
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        int v = w.Config.Text.VocabSize, newTokens = 6, piece = 9;
        int[][] prompts = [ids[..25], ids[5..12], ids[3..40]];
        int[] startStep = [0, 2, 1];                  // request r joins at this step
        int maxContext = 48;
        using var kv = new PagedKvCache(dev, w.Config.Text, DType.F32, slots: 4, maxContext: maxContext, maxStepTokens: 3 * piece, pageSize: 4);
        var graphs = new Dictionary<(int, int), Llama4TextGraph>();
        try
        {
            Llama4TextGraph For(int t, int b) => graphs.TryGetValue((t, b), out var g) ? g : graphs[(t, b)] = new Llama4TextGraph(w, t, b, ComputeMode.F32, kv);
            // per request: its pieces (prompt cut by `piece`), then decode rows
            var alone = new List<float[]>[3];
            var aloneTokens = new List<int>[3];
            for (int r = 0; r < 3; r++)
            {
                (alone[r], aloneTokens[r]) = (new(), new());
                kv.Begin(3);
                int pos = 0, next = -1;
                while (aloneTokens[r].Count < newTokens)
                {
                    int[] tokens = pos < prompts[r].Length ? prompts[r][pos..Math.Min(prompts[r].Length, pos + piece)] : [next];
                    var t = For(tokens.Length, 1).RunBatch([(3, tokens)]);
                    var logits = DeviceData.Download(dev, t.Ptr, v, DType.F32);
                    pos += tokens.Length;
                    if (pos < prompts[r].Length) continue;
                    alone[r].Add(logits);
                    next = Array.IndexOf(logits, logits.Max());
                    aloneTokens[r].Add(next);
                }
                kv.End(3);
            }
            Assert.That(kv.FreePages, Is.EqualTo(kv.NopePages), "End returned every page");

            // together: slot r + 0..2 in a shuffled order; each step holds every started, unfinished request's next piece
            var together = new List<float[]>[3] { new(), new(), new() };
            var tokensT = new List<int>[3] { new(), new(), new() };
            var position = new int[3]; var nextT = new int[3];
            int[] slotOf = [2, 0, 1];
            bool mixed = false;
            for (int stepNo = 0; tokensT.Any(l => l.Count < newTokens); stepNo++)
            {
                var batch = new List<(int Slot, ReadOnlyMemory<int> Ids)>();
                var who = new List<int>();
                foreach (int r in new[] { 2, 0, 1 })
                {
                    if (stepNo < startStep[r] || tokensT[r].Count >= newTokens) continue;
                    if (stepNo == startStep[r]) kv.Begin(slotOf[r]);
                    int pos = position[r];
                    int[] tokens = pos < prompts[r].Length ? prompts[r][pos..Math.Min(prompts[r].Length, pos + piece)] : [nextT[r]];
                    batch.Add((slotOf[r], tokens)); who.Add(r);
                }
                mixed |= batch.Any(b => b.Ids.Length == 1) && batch.Any(b => b.Ids.Length > 1);
                var t = For(batch.Sum(b => b.Ids.Length), batch.Count).RunBatch(batch.ToArray());
                var all = DeviceData.Download(dev, t.Ptr, t.Elements, DType.F32);
                for (int b = 0; b < who.Count; b++)
                {
                    int r = who[b];
                    position[r] += batch[b].Ids.Length;
                    if (position[r] < prompts[r].Length) continue;
                    var logits = all.AsSpan(b * v, v).ToArray();
                    together[r].Add(logits);
                    nextT[r] = Array.IndexOf(logits, logits.Max());
                    tokensT[r].Add(nextT[r]);
                    if (tokensT[r].Count == newTokens) kv.End(slotOf[r]);
                }
            }
            Assert.That(mixed, "some step mixed decode rows with prefill pieces");
            double worst = 0;
            for (int r = 0; r < 3; r++)
            {
                Assert.That(tokensT[r], Is.EqualTo(aloneTokens[r]), $"request {r}: greedy tokens alone vs in the batch");
                for (int s = 0; s < newTokens; s++)
                {
                    var c = OpCheck.Compare($"request {r}, token {s}: logits in the batch vs alone", together[r][s], alone[r][s], new Tolerance(0, 0));
                    Assert.That(c.Passed, c.ToString());
                    worst = Math.Max(worst, c.MaxAbs);
                }
            }
            // The paged attention is batch-invariant by construction (fixed keys per split; a row's tiles depend on its own
            // sequence only), the MoE's per-row sums do not depend on the grouping, and a batched fp32 graph runs its linear
            // layers as GEMVs of ≤ Gemv.MaxRows rows whatever the step's row count (Llama4TextGraph.Project): bit for bit.
            TestContext.Out.WriteLine($"batch vs alone: identical tokens; max |Δlogit| {worst:g3}");
            Assert.That(kv.FreePages, Is.EqualTo(kv.NopePages));
        }
        finally { foreach (var g in graphs.Values) g.Dispose(); }
    }
}
