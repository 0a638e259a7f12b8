using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Model;

/// <summary>The cache path against the goldens: split prefill + one-token decode equals the full forward; greedy decoding reproduces HF's 16 tokens.</summary>
[Category("Emulator")]
public class KvCacheTests
{
    public static IEnumerable<string> Fixtures() => ["tiny-scout", "tiny-maverick"];

    static (int[] Ids, SafetensorsFile F) Golden(string fixture)
    {
        var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.safetensors"));
        return (f.Span<long>(f.Get("input_ids")).ToArray().Select(v => (int)v).ToArray(), f);
    }

    static int SplitAt(string fixture) =>
        System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.json"))).RootElement.GetProperty("split_prefill_at").GetInt32();

    [TestCaseSource(nameof(Fixtures))]
    public void SplitPrefillThenDecodeMatchesTheGolden(string fixture)
    {
        var (ids, f) = Golden(fixture);
        using var file = f;
        int split = SplitAt(fixture);
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        // A small max piece, so RoPE layers' bounded caches are exercised across chunk boundaries.
        using var cache = new KvCache(dev, w.Config.Text, DType.F32, maxContext: ids.Length + 4, maxPiece: split);
        using var prefill = new Llama4TextGraph(w, split, ComputeMode.F32, cache);
        using var step = new Llama4TextGraph(w, 1, ComputeMode.F32, cache);
        var got = new List<float>(prefill.Forward(ids.AsSpan(0, split)));
        for (int p = split; p < ids.Length; p++) got.AddRange(step.Forward(ids.AsSpan(p, 1)));
        Assert.That(cache.Position, Is.EqualTo(ids.Length));
        var r = OpCheck.Compare("split_prefill_logits", got.ToArray(), f.Span<float>(f.Get("split_prefill_logits")).ToArray(), new Tolerance(1e-3, 1e-3));
        Assert.That(r.Passed, $"{fixture}: {r}");
        Assert.That(cache.Bytes, Is.LessThan(2L * w.Config.Text.NumHiddenLayers * cache.MaxContext * w.Config.Text.NumKeyValueHeads * w.Config.Text.HeadDim * 4),
                    "RoPE layers keep a bounded window, not the whole context");
    }

    [TestCaseSource(nameof(Fixtures))]
    public void GreedyDecodingReproducesTheGoldenTokens(string fixture)
    {
        var (ids, f) = Golden(fixture);
        using var file = f;
        var want = f.Span<long>(f.Get("generated_ids")).ToArray().Select(x => (int)x).ToArray();
        var wantLogits = f.Span<float>(f.Get("generated_step_logits")).ToArray();
        int v = (int)f.Get("logits").Shape[1];
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        using var cache = new KvCache(dev, w.Config.Text, DType.F32, maxContext: ids.Length + want.Length, maxPiece: ids.Length);
        using var prefill = new Llama4TextGraph(w, ids.Length, ComputeMode.F32, cache);
        using var step = new Llama4TextGraph(w, 1, ComputeMode.F32, cache);
        var logits = prefill.Forward(ids).AsSpan(^v..).ToArray();
        var got = new List<int>();
        for (int n = 0; n < want.Length; n++)
        {
            var r = OpCheck.Compare($"generated_step_logits[{n}]", logits, wantLogits.AsSpan(n * v, v), new Tolerance(1e-3, 1e-3));
            Assert.That(r.Passed, $"{fixture}: {r}");
            int next = 0;
            for (int j = 1; j < v; j++) if (logits[j] > logits[next]) next = j;
            got.Add(next);
            if (n + 1 < want.Length) logits = step.Forward([next]);
        }
        Assert.That(got, Is.EqualTo(want), fixture);
        // The last generated token still fits the context; one more is refused, and the position does not move.
        step.Forward([got[^1]]);
        Assert.That(cache.Position, Is.EqualTo(cache.MaxContext));
        var e = Assert.Throws<ContextLengthException>(() => step.Forward([got[^1]]));
        Assert.That(cache.Position, Is.EqualTo(cache.MaxContext));
        Assert.That(e!.Message, Does.Contain("context"));
    }

    /// <summary>
    /// Over more than 1,000 cached keys (a decode step takes the split-KV attention, several splits), RoPE layers have re-based their
    /// windows dozens of times: the step's logits must still equal the cache-less forward of the whole sequence.
    /// </summary>
    [Test]
    public void LongHistoryDecodeEqualsTheFullForward()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-maverick"), dev);
        var rng = new Random(TestSeed.For(nameof(LongHistoryDecodeEqualsTheFullForward)));
        int t = 1100 + rng.Next(20), v = w.Config.Text.VocabSize;
        var ids = Enumerable.Range(0, t).Select(_ => rng.Next(v)).ToArray();
        using var cache = new KvCache(dev, w.Config.Text, DType.F32, maxContext: t, maxPiece: 256);
        foreach (var chunk in ids[..^1].Chunk(256))
        {
            using var g = new Llama4TextGraph(w, chunk.Length, ComputeMode.F32, cache);
            g.Forward(chunk);
        }
        using var step = new Llama4TextGraph(w, 1, ComputeMode.F32, cache);
        var got = step.Forward(ids[^1..]);
        using var full = new Llama4TextGraph(w, t, ComputeMode.F32);
        var want = full.Forward(ids).AsSpan(^v..).ToArray();
        var r = OpCheck.Compare("last logits", got, want, new Tolerance(1e-3, 1e-3));
        Assert.That(r.Passed, r.ToString());
    }
}
