using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;
using Q8 = Llama4Native.Reference.QuantizeFp8;
using TextModel = Llama4Native.Reference.TextModel;

namespace Llama4Native.Tests.Model;

/// <summary>
/// Where the FP8 KV cache's error comes from (issue #15): the host reference forward with its keys and values rewritten
/// as each storage scheme would store them, per layer, with the routing free and with the routing pinned to the float
/// run's. See <see cref="Measure"/> for the table and the argument behind the bounds.
/// </summary>
[Category("Emulator")]
internal class KvFp8ErrorTests
{
    /// <summary>A storage scheme: rewrites K or V [T, Hkv·d] in place to what attention would read back.</summary>
    public sealed record Scheme(string Name, Action<float[], int> Store);

    /// <summary>e4m3 codes with one f32 scale per block of <paramref name="block"/> consecutive elements (FBGEMM row rule, ub = +inf).</summary>
    public static void Fp8Blocks(float[] x, int block)
    {
        var codes = new byte[block];
        for (int r = 0; r < x.Length / block; r++)
        {
            var row = x.AsSpan(r * block, block);
            float s = Q8.Row(row, codes, float.PositiveInfinity);
            for (int i = 0; i < block; i++) row[i] = Q8.ToFloat(codes[i]) * s;
        }
    }

    public static Scheme[] Schemes(TextConfig c) =>
    [
        new("bf16", (x, _) => { for (int i = 0; i < x.Length; i++) x[i] = Reference.BF16.Round(x[i]); }),
        new("fp8 per token (all kv heads)", (x, _) => Fp8Blocks(x, c.NumKeyValueHeads * c.HeadDim)),
        new("fp8 per (token, kv head) [chosen]", (x, _) => Fp8Blocks(x, c.HeadDim)),
        new($"fp8 per (token, kv head, {c.HeadDim / 2} elems)", (x, _) => Fp8Blocks(x, c.HeadDim / 2)),
        new("fp8 per (token, kv head, 4 elems)", (x, _) => Fp8Blocks(x, 4)),
    ];

    public sealed record Row(string Scheme, bool Pinned, double MeanAbs, double MaxAbs, double Spread, int ArgmaxAgree, int Rows,
                             int Flips, int RoutedTokens, double[] LayerMaxRel, double MaxFlipMargin);

    /// <summary>
    /// The reference forward of <paramref name="ids"/> in f32 (the float KV cache), then with each scheme's K/V, routing
    /// free and routing pinned to the f32 run's: logits error, greedy agreement, routing flips, per-layer hidden-state error.
    /// </summary>
    public static List<Row> Measure(ModelWeights w, int[] ids, IEnumerable<Scheme> schemes)
    {
        var cache = new Dictionary<string, float[]>();
        float[] W(string n) => cache.TryGetValue(n, out var a) ? a : cache[n] = DeviceData.Download(w.Device, w[n].Tensor.Ptr, w[n].Tensor.Elements, w[n].Tensor.DType);
        var c = w.Config.Text;
        var baseProbe = new TextModel.Probe();
        var baseOut = new List<float[]>();
        var want = TextModel.Forward(c, W, ids, baseOut, probe: baseProbe);
        int v = c.VocabSize, t = ids.Length;
        double spread = want.Max() - want.Min();
        var rows = new List<Row>();
        foreach (var s in schemes)
            foreach (bool pinned in new[] { false, true })
            {
                var probe = new TextModel.Probe { StoreKv = (_, isV, x) => s.Store(x, isV ? 1 : 0), PinnedRouting = pinned ? baseProbe.Routing : null };
                var outs = new List<float[]>();
                var got = TextModel.Forward(c, W, ids, outs, probe: probe);
                double sum = 0, max = 0;
                int agree = 0;
                for (int r = 0; r < t; r++)
                {
                    int am = 0, bm = 0;
                    for (int j = 0; j < v; j++)
                    {
                        double e = Math.Abs(want[r * v + j] - got[r * v + j]);
                        sum += e; max = Math.Max(max, e);
                        if (want[r * v + j] > want[r * v + am]) am = j;
                        if (got[r * v + j] > got[r * v + bm]) bm = j;
                    }
                    if (am == bm) agree++;
                }
                int flips = 0, routed = 0;
                double flipMargin = 0;
                foreach (var (layer, idx) in baseProbe.Routing)
                {
                    int k = c.NumExpertsPerTok, e = c.NumLocalExperts;
                    for (int r = 0; r < t; r++)
                    {
                        routed++;
                        if (idx.AsSpan(r * k, k).ToArray().Order().SequenceEqual(probe.Routing[layer].AsSpan(r * k, k).ToArray().Order())) continue;
                        flips++;
                        // the float router's margin at this token: its k-th largest logit minus the (k+1)-th
                        var sorted = baseProbe.RouterLogits[layer].AsSpan(r * e, e).ToArray().OrderDescending().ToArray();
                        flipMargin = Math.Max(flipMargin, sorted[k - 1] - sorted[k]);
                    }
                }
                var layerRel = new double[c.NumHiddenLayers];
                for (int l = 0; l < c.NumHiddenLayers; l++)
                {
                    double m = 0, a = 0;
                    for (int i = 0; i < baseOut[l].Length; i++) { m = Math.Max(m, Math.Abs(baseOut[l][i] - outs[l][i])); a = Math.Max(a, Math.Abs(baseOut[l][i])); }
                    layerRel[l] = m / a;
                }
                rows.Add(new Row(s.Name, pinned, sum / want.Length, max, spread, agree, t, flips, routed, layerRel, flipMargin));
            }
        return rows;
    }

    static string Table(string what, List<Row> rows)
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"{what}: logits spread {rows[0].Spread:F2}");
        sb.AppendLine("| KV storage | routing | mean abs dlogit | max abs dlogit | greedy agree | routing flips (largest float margin flipped) | per-layer max abs dh / max abs h |");
        sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in rows)
            sb.AppendLine($"| {r.Scheme} | {(r.Pinned ? "pinned" : "free")} | {r.MeanAbs:G3} | {r.MaxAbs:G3} | {r.ArgmaxAgree}/{r.Rows} | {r.Flips}/{r.RoutedTokens}{(r.Flips > 0 ? $" ({r.MaxFlipMargin:G2})" : "")} | " +
                          string.Join(" ", r.LayerMaxRel.Select(x => x.ToString("0.0e0", System.Globalization.CultureInfo.InvariantCulture))) + " |");
        return sb.ToString();
    }

    static int[] GoldenIds(string fixture)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_text.safetensors"));
        return f.Span<long>(f.Get("input_ids")).ToArray().Select(x => (int)x).ToArray();
    }

    /// <summary>
    /// The FP8 KV cache's error, measured per scheme and per layer, and bounded. Findings (tables in docs/long-context.md):
    /// (1) the device's FP8 cache equals the host reference with the same e4m3 storage (no kernel bug: the error is the
    /// format's); (2) with the routing pinned to the float run's, the error is smooth — every layer's hidden state within
    /// 2–6 % of its magnitude, logits ≈ 14× those of a bf16 KV cache, as e4m3's relative step (2^-3) is 16× bf16's (2^-7);
    /// (3) the large max |Δlogit| (4–6 on these fixtures) are MoE routing flips: a token whose router margin is below the
    /// perturbation picks another expert in that layer and its row jumps (the fixtures' top-1 margins go down to 0.004; the
    /// fixture's own bf16-compute run flips the same way). Bounds, from the measured ranges with margin: pinned mean |Δ|
    /// ≤ 24× bf16 KV's (measured 10–16×, the step ratio being 16); pinned per-layer max |Δh| ≤ 2^-3 of max |h| (measured ≤ 0.06);
    /// flips ≤ 8 % of routed tokens (measured ≤ 3.4 %); free mean |Δ| ≤ 2^-6 of the logit spread (measured ≤ 1/110).
    /// </summary>
    [TestCase("tiny-scout")]
    [TestCase("tiny-maverick")]
    public void Fp8KvErrorIsTheE4m3StepPlusRoutingFlips(string fixture)
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        var c = w.Config.Text;
        var rng = new Random(TestSeed.For(nameof(Fp8KvErrorIsTheE4m3StepPlusRoutingFlips) + fixture));
        var golden = GoldenIds(fixture);
        var random = Enumerable.Range(0, 160).Select(_ => rng.Next(c.VocabSize)).ToArray();
        const string chosen = "fp8 per (token, kv head) [chosen]";
        foreach (var (name, ids) in new[] { ("golden prompt", golden), ("160 random tokens", random) })
        {
            var rows = Measure(w, ids, Schemes(c));
            TestContext.Out.WriteLine(Table($"{fixture}, {name} ({ids.Length} tokens, chunk {c.AttentionChunkSize})", rows));
            Row R(string s, bool pinned) => rows.Single(r => r.Scheme == s && r.Pinned == pinned);
            var (bfPinned, f8Pinned, f8Free) = (R("bf16", true), R(chosen, true), R(chosen, false));
            Assert.That(f8Pinned.Flips, Is.Zero);
            Assert.That(f8Pinned.MeanAbs, Is.LessThanOrEqualTo(24 * bfPinned.MeanAbs), $"{name}: pinned FP8 mean |Δ| vs 24× bf16 KV's");
            Assert.That(f8Pinned.LayerMaxRel.Max(), Is.LessThanOrEqualTo(1.0 / 8), $"{name}: pinned FP8, worst layer's max |Δh| / max |h|");
            Assert.That(f8Free.Flips, Is.LessThanOrEqualTo(f8Free.RoutedTokens * 8 / 100), $"{name}: routing flips");
            Assert.That(f8Free.MeanAbs, Is.LessThanOrEqualTo(f8Free.Spread / 64), $"{name}: mean |Δlogit| within 2^-6 of the spread");
        }

        // The device: a prefill piece then one-token steps through the FP8 KvCache, vs the reference with the same storage.
        var cache = new Dictionary<string, float[]>();
        float[] W(string n) => cache.TryGetValue(n, out var a) ? a : cache[n] = DeviceData.Download(w.Device, w[n].Tensor.Ptr, w[n].Tensor.Elements, w[n].Tensor.DType);
        var want = TextModel.Forward(c, W, golden, probe: new TextModel.Probe { StoreKv = (_, _, x) => Fp8Blocks(x, c.HeadDim) });
        int split = golden.Length / 2;
        using var kv = new KvCache(dev, c, DType.F32, golden.Length, split, DType.F8E4M3);
        using var prefill = new Llama4TextGraph(w, split, ComputeMode.F32, kv);
        using var step = new Llama4TextGraph(w, 1, ComputeMode.F32, kv);
        var got = new List<float>(prefill.Forward(golden.AsSpan(0, split)));
        for (int p = split; p < golden.Length; p++) got.AddRange(step.Forward(golden.AsSpan(p, 1)));
        var r = OpCheck.Compare("FP8 KV: device vs reference with e4m3 storage", got.ToArray(), want, new Tolerance(1e-3, 1e-3));
        TestContext.Out.WriteLine(r.ToString());
        Assert.That(r.Passed, r.ToString());
    }
}
