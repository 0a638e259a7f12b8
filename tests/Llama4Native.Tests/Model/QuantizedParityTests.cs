using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Model;

/// <summary>
/// Quantized weights end to end on the emulated device against the quantized goldens:
/// <list type="bullet">
/// <item>FP8 (FBGEMM row-wise): the pre-quantized <c>tiny-maverick-fp8</c> checkpoint, and <c>tiny-maverick</c> quantized
/// at load with <c>--quantize fp8</c>, teacher-forced on <c>full_sequence_ids</c> against the FP8 goldens with the
/// fixture README's tolerances (fp32 "exact emulation": logits mean ≤ 0.01, max ≤ 0.25, argmax ≥ 95 %, router
/// top-k ≥ 95 %; bf16 compute: mean ≤ 0.05, max ≤ 0.6, argmax ≥ 90 % where the experts match).</item>
/// <item>int4 (Meta int4_mixed): <c>tiny-scout</c> (G = 16) and <c>tiny-maverick</c> (G = 8) quantized at load, fp32
/// compute, every <c>layer_out.i</c> and the logits within 1e-3 of the int4 goldens with identical argmax and routing;
/// bf16 compute within the bf16 tolerances.</item>
/// </list>
/// </summary>
[Category("Emulator")]
internal class QuantizedParityTests
{
    sealed record Golden(int[] Ids, int Prompt, float[] Logits, float[] StepLogits, Dictionary<string, float[]> Tensors, int Vocab);

    /// <summary>Reads a golden file: the teacher-forced sequence (prompt + greedy tokens) and the logits the golden has
    /// for it — <c>logits</c> for the prompt's positions, then <c>generated_step_logits</c> for the positions that
    /// produced each generated token (all but the last of them is in the sequence).</summary>
    static Golden Read(string fixture, string file)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), file));
        var tensors = new Dictionary<string, float[]>();
        foreach (var e in f.Tensors)
            tensors[e.Name] = e.DType == DType.F32 ? f.Span<float>(e).ToArray()
                : e.DType == DType.I64 ? f.Span<long>(e).ToArray().Select(v => (float)v).ToArray() : [];
        int prompt = (int)f.Get("input_ids").Shape[0];
        var ids = tensors["full_sequence_ids"].Select(v => (int)v).ToArray();
        var logits = tensors["logits"];
        return new Golden(ids, prompt, logits, tensors["generated_step_logits"], tensors, logits.Length / prompt);
    }

    /// <summary>The golden logits at positions 0 .. ids.Length−2 of the teacher-forced sequence, [P, V].</summary>
    static float[] TeacherForced(Golden g)
    {
        int positions = g.Ids.Length - 1, v = g.Vocab;
        var all = new float[positions * v];
        g.Logits.AsSpan().CopyTo(all);
        // position prompt-1 is both the prompt's last logits and step 0; the golden step logits are the later rows.
        g.StepLogits.AsSpan(v, (positions - g.Prompt) * v).CopyTo(all.AsSpan(g.Prompt * v));
        return all;
    }

    sealed record Run(float[] Logits, Dictionary<int, float[]> LayerOut, Dictionary<int, float[]> TopK);

    static Run Forward(ModelWeights w, int[] ids, ComputeMode mode)
    {
        using var graph = new Llama4TextGraph(w, ids.Length, mode);
        var layerOut = new Dictionary<int, float[]>();
        var topk = new Dictionary<int, float[]>();
        var logits = graph.Forward(ids, n => n.EndsWith(".out", StringComparison.Ordinal) || n.EndsWith(".moe.router", StringComparison.Ordinal),
            (name, t, data) =>
            {
                int layer = int.Parse(name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (name.EndsWith(".out", StringComparison.Ordinal)) layerOut[layer] = data;
                else topk[layer] = graph.Plan.Download(graph.RouterTopK);
            });
        return new Run(logits, layerOut, topk);
    }

    static int[] Argmax(ReadOnlySpan<float> logits, int v)
    {
        var r = new int[logits.Length / v];
        for (int p = 0; p < r.Length; p++)
        {
            int best = 0;
            for (int j = 1; j < v; j++) if (logits[p * v + j] > logits[p * v + best]) best = j;
            r[p] = best;
        }
        return r;
    }

    /// <summary>Mean and max abs difference over positions [0, P) (optionally only <paramref name="only"/>), and argmax agreement.</summary>
    static (double Mean, double Max, double Agree) Diff(float[] got, float[] want, int v, int positions, IEnumerable<int>? only = null)
    {
        var pos = (only ?? Enumerable.Range(0, positions)).ToList();
        double sum = 0, max = 0; long n = 0;
        foreach (int p in pos)
            for (int j = 0; j < v; j++)
            {
                double d = Math.Abs(got[p * v + j] - want[p * v + j]);
                sum += d; n++; max = Math.Max(max, d);
            }
        var ag = Argmax(got.AsSpan(0, positions * v), v); var aw = Argmax(want.AsSpan(0, positions * v), v);
        return (sum / n, max, pos.Count(p => ag[p] == aw[p]) / (double)pos.Count);
    }

    /// <summary>Fraction of (position, MoE layer) pairs whose top-k equals the golden's, over the golden's positions.</summary>
    static double RouterAgreement(Run r, Golden g, int k, int positions)
    {
        int same = 0, total = 0;
        foreach (var (layer, got) in r.TopK)
        {
            var want = g.Tensors[$"router_topk_indices.{layer}"];
            int n = Math.Min(positions, want.Length / k);
            for (int p = 0; p < n; p++, total++)
                if (got.AsSpan(p * k, k).SequenceEqual(want.AsSpan(p * k, k))) same++;
        }
        return same / (double)total;
    }

    Llama4Native.Devices.Device device = null!;
    [OneTimeSetUp] public void Open() => device = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => device.Dispose();

    ModelWeights Load(string fixture, QuantizeOptions? q = null) =>
        WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), device, new LoadOptions(Quantize: q));

    public static IEnumerable<TestCaseData> Fp8Sources()
    {
        yield return new TestCaseData("tiny-maverick-fp8", null).SetArgDisplayNames("tiny-maverick-fp8 checkpoint");
        yield return new TestCaseData("tiny-maverick", new QuantizeOptions(QuantizeMode.Fp8)).SetArgDisplayNames("tiny-maverick --quantize fp8");
    }

    [TestCaseSource(nameof(Fp8Sources))]
    public void Fp8Fp32PathMatchesTheGoldens(string model, QuantizeOptions? q)
    {
        var g = Read("tiny-maverick-fp8", "golden_text.safetensors");
        using var w = Load(model, q);
        Assert.That(w["blk.1.moe.gate_up_exps"].DType, Is.EqualTo(DType.F8E4M3), "layer 1's routed experts are FP8");
        Assert.That(w["blk.3.moe.down_exps"].DType, Is.EqualTo(DType.F8E4M3), "layer 3's routed experts are FP8");
        Assert.That(w["blk.5.moe.gate_up_exps"].DType, Is.EqualTo(DType.BF16), "the last layer's experts stay bf16");
        Assert.That(w["blk.1.moe.shexp_gate"].DType, Is.EqualTo(DType.BF16), "shared experts stay bf16");
        var ids = g.Ids[..^1];
        var run = Forward(w, ids, ComputeMode.F32);
        var want = TeacherForced(g);
        var (mean, max, agree) = Diff(run.Logits, want, g.Vocab, ids.Length);
        double router = RouterAgreement(run, g, w.Config.Text.NumExpertsPerTok, g.Prompt);
        var (bfMean, _, _) = Diff(run.Logits, g.Tensors["reference_bf16_weights.logits"], g.Vocab, g.Prompt);
        var (fpMean, _, _) = Diff(run.Logits, want, g.Vocab, g.Prompt);
        TestContext.Out.WriteLine($"{model} fp32: logits mean abs {mean:0.000000}, max {max:0.000000}, argmax {agree:P1} over {ids.Length} positions; " +
                                  $"router top-k {router:P1}; mean abs vs the bf16-weight golden {bfMean:0.0000} (vs FP8 {fpMean:0.000000})");
        Assert.That(mean, Is.LessThanOrEqualTo(0.01));
        Assert.That(max, Is.LessThanOrEqualTo(0.25));
        Assert.That(agree, Is.GreaterThanOrEqualTo(0.95));
        Assert.That(router, Is.GreaterThanOrEqualTo(0.95));
        Assert.That(fpMean, Is.LessThan(bfMean), "closer to the FP8 golden than to the unquantized one");
    }

    [TestCaseSource(nameof(Fp8Sources))]
    public void Fp8Bf16PathIsWithinTheRealKernelTolerances(string model, QuantizeOptions? q)
    {
        var g = Read("tiny-maverick-fp8", "golden_text.safetensors");
        using var w = Load(model, q);
        var ids = g.Ids[..^1];
        var run = Forward(w, ids, ComputeMode.BF16);
        var want = TeacherForced(g);
        int k = w.Config.Text.NumExpertsPerTok;
        // Positions (of the prompt, where the golden has routing) at which every MoE layer chose the golden's experts.
        var same = Enumerable.Range(0, g.Prompt).Where(p => run.TopK.All(l =>
            l.Value.AsSpan(p * k, k).SequenceEqual(g.Tensors[$"router_topk_indices.{l.Key}"].AsSpan(p * k, k)))).ToList();
        var (mean, max, agree) = Diff(run.Logits, want, g.Vocab, ids.Length, same);
        var (_, _, agreeAll) = Diff(run.Logits, want, g.Vocab, ids.Length);
        TestContext.Out.WriteLine($"{model} bf16: same experts at {same.Count}/{g.Prompt}; there mean abs {mean:0.0000}, max {max:0.0000}, argmax {agree:P1}; argmax everywhere {agreeAll:P1}");
        Assert.That(same.Count, Is.GreaterThan(g.Prompt / 2));
        Assert.That(mean, Is.LessThanOrEqualTo(0.05));
        Assert.That(max, Is.LessThanOrEqualTo(0.6));
        Assert.That(agree, Is.GreaterThanOrEqualTo(0.90));
    }

    public static IEnumerable<TestCaseData> Int4Sources()
    {
        yield return new TestCaseData("tiny-scout", 16).SetArgDisplayNames("tiny-scout --quantize int4 G16");
        yield return new TestCaseData("tiny-maverick", 8).SetArgDisplayNames("tiny-maverick --quantize int4 G8");
    }

    [TestCaseSource(nameof(Int4Sources))]
    public void Int4Fp32PathMatchesTheGoldens(string model, int group)
    {
        var g = Read(model + "-int4", "golden_text.safetensors");
        using var w = Load(model, new QuantizeOptions(QuantizeMode.Int4, group));
        foreach (int layer in w.Config.Text.MoeLayers)
            foreach (var name in new[] { "moe.gate_up_exps", "moe.down_exps", "moe.shexp_gate", "moe.shexp_up", "moe.shexp_down" })
            {
                var t = w.Layer(layer, name).Tensor;
                Assert.That(t.DType, Is.EqualTo(DType.I4), $"blk.{layer}.{name}");
                Assert.That(t.Group, Is.EqualTo(group), $"blk.{layer}.{name}");
            }
        Assert.That(w["blk.0.attn_q"].DType, Is.EqualTo(DType.BF16), "attention stays bf16");
        var ids = g.Ids[..g.Prompt];
        var run = Forward(w, ids, ComputeMode.F32);
        var tol = new Ops.Tolerance(1e-3, 1e-3);
        for (int i = 0; i < w.Config.Text.NumHiddenLayers; i++)
        {
            var r = Ops.OpCheck.Compare($"layer_out.{i}", run.LayerOut[i], g.Tensors[$"layer_out.{i}"], tol);
            Assert.That(r.Passed, $"{model}: {r}");
        }
        foreach (var (layer, got) in run.TopK)
            Assert.That(got, Is.EqualTo(g.Tensors[$"router_topk_indices.{layer}"]), $"{model}: router top-k of layer {layer}");
        var lr = Ops.OpCheck.Compare("logits", run.Logits, g.Logits, tol);
        TestContext.Out.WriteLine($"{model} int4 G={group} fp32: {lr}");
        Assert.That(lr.Passed, $"{model}: {lr}");
        Assert.That(Argmax(run.Logits, g.Vocab), Is.EqualTo(Argmax(g.Logits, g.Vocab)), $"{model}: argmax per position");
    }

    [TestCaseSource(nameof(Int4Sources))]
    public void Int4Bf16PathIsWithinTheBf16Tolerances(string model, int group)
    {
        var g = Read(model + "-int4", "golden_text.safetensors");
        using var w = Load(model, new QuantizeOptions(QuantizeMode.Int4, group));
        var ids = g.Ids[..^1];
        var want = TeacherForced(g);
        var run = Forward(w, ids, ComputeMode.BF16);
        int k = w.Config.Text.NumExpertsPerTok;
        var same = Enumerable.Range(0, g.Prompt).Where(p => run.TopK.All(l =>
            l.Value.AsSpan(p * k, k).SequenceEqual(g.Tensors[$"router_topk_indices.{l.Key}"].AsSpan(p * k, k)))).ToList();
        var (mean, max, agree) = Diff(run.Logits, want, g.Vocab, ids.Length, same);
        var (_, _, agreeAll) = Diff(run.Logits, want, g.Vocab, ids.Length);
        TestContext.Out.WriteLine($"{model} int4 G={group} bf16: same experts at {same.Count}/{g.Prompt}; there mean abs {mean:0.0000}, max {max:0.0000}, argmax {agree:P1}; everywhere {agreeAll:P1}");
        Assert.That(same.Count, Is.GreaterThan(g.Prompt / 2));
        Assert.That(mean, Is.LessThanOrEqualTo(0.05));
        Assert.That(agree, Is.GreaterThanOrEqualTo(0.90));
    }

    public static IEnumerable<TestCaseData> ImageSources()
    {
        yield return new TestCaseData("tiny-maverick-fp8", "tiny-maverick-fp8", null).SetArgDisplayNames("tiny-maverick-fp8 checkpoint");
        yield return new TestCaseData("tiny-scout-int4", "tiny-scout", new QuantizeOptions(QuantizeMode.Int4, 16)).SetArgDisplayNames("tiny-scout --quantize int4 G16");
        yield return new TestCaseData("tiny-maverick-int4", "tiny-maverick", new QuantizeOptions(QuantizeMode.Int4, 8)).SetArgDisplayNames("tiny-maverick --quantize int4 G8");
    }

    /// <summary>The image prompt (vision tower bf16, early fusion) through quantized experts, fp32 compute: int4 within
    /// 1e-3 of its goldens (every layer, logits, argmax); FP8 within the "exact emulation" tolerances.</summary>
    [TestCaseSource(nameof(ImageSources))]
    public void ImagePromptMatchesTheQuantizedGoldens(string goldens, string model, QuantizeOptions? q)
    {
        var gold = VisionParityTests.Read(goldens);
        using var w = Load(model, q);
        using var vision = new Llama4VisionGraph(w, gold.Tiles, ComputeMode.F32);
        using var text = new Llama4TextGraph(w, gold.Ids.Length, ComputeMode.F32);
        var rows = vision.Forward(gold.Pixels, gold.Tiles);
        var layerOut = new Dictionary<int, float[]>();
        var logits = text.Forward(gold.Ids, n => n.StartsWith("blk.", StringComparison.Ordinal) && n.EndsWith(".out", StringComparison.Ordinal),
            (name, _, data) => layerOut[int.Parse(name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture)] = data, rows);
        var want = gold.Tensors["logits"];
        var (mean, max, agree) = Diff(logits, want, gold.Vocab, gold.Ids.Length);
        TestContext.Out.WriteLine($"{goldens} image fp32: logits mean abs {mean:0.000000}, max {max:0.000000}, argmax {agree:P1} over {gold.Ids.Length} positions");
        if (q?.Mode == QuantizeMode.Int4)
        {
            var tol = new Ops.Tolerance(1e-3, 1e-3);
            for (int i = 0; i < w.Config.Text.NumHiddenLayers; i++)
            {
                var r = Ops.OpCheck.Compare($"layer_out.{i}", layerOut[i], gold.Tensors[$"layer_out.{i}"], tol);
                Assert.That(r.Passed, $"{goldens}: {r}");
            }
            var lr = Ops.OpCheck.Compare("logits", logits, want, tol);
            Assert.That(lr.Passed, $"{goldens}: {lr}");
            Assert.That(agree, Is.EqualTo(1.0), "argmax identical at every position");
        }
        else
        {
            Assert.That(mean, Is.LessThanOrEqualTo(0.01));
            Assert.That(max, Is.LessThanOrEqualTo(0.25));
            Assert.That(agree, Is.GreaterThanOrEqualTo(0.95));
        }
    }

    /// <summary>
    /// FBGEMM's dense layout (<c>FbgemmFp8Linear</c>: <c>weight</c> F8_E4M3 [out, in] + <c>weight_scale</c> F32 [out, 1]):
    /// layer 0's q_proj and the shared expert's down_proj of tiny-maverick-fp8 rewritten that way (quantized by the
    /// reference rule, removed from modules_to_not_convert) load as FP8 tensors with their scales, and the graph's
    /// nodes compute exactly f8f8bf16_rowwise(quantize_fp8_per_row(input, ub), W) — checked against the reference
    /// on the dumped inputs, in fp32 and bf16 compute — with the rest of the model unchanged.
    /// </summary>
    [Test]
    public void DenseFbgemmFp8LinearsLoadAndComputeAsFbgemm()
    {
        string dir = CkptTestUtil.NewTempDir("fp8-dense");
        CkptTestUtil.CopyDir(CkptTestUtil.FixtureModel("tiny-maverick-fp8"), dir);
        var targets = new[] { "language_model.model.layers.0.self_attn.q_proj", "language_model.model.layers.1.feed_forward.shared_expert.down_proj" };
        foreach (var module in targets)
        {
            string shard = Path.Combine(dir, CkptTestUtil.ShardOf(dir, module + ".weight"));
            CkptTestUtil.EditTensors(shard, list => list.SelectMany(t =>
            {
                if (t.Name != module + ".weight") return new[] { t };
                Assert.That(t.DType, Is.EqualTo("BF16"));
                int n = (int)t.Shape[0], k = (int)t.Shape[1];
                var w = new float[n * k];
                for (int i = 0; i < w.Length; i++) w[i] = BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(t.Data, 2 * i) << 16);
                var q = new byte[n * k]; var sc = new float[n];
                Reference.QuantizeFp8.Weights(w, false, q, sc, 1, n, k);
                var sb = new byte[4 * n]; Buffer.BlockCopy(sc, 0, sb, 0, sb.Length);
                return new[] { t with { DType = "F8_E4M3", Data = q }, new CkptTestUtil.RawTensor(module + ".weight_scale", "F32", [n, 1], sb) };
            }));
            CkptTestUtil.EditJson(Path.Combine(dir, Checkpoint.IndexFile), o => o["weight_map"]![module + ".weight_scale"] = CkptTestUtil.ShardOf(dir, module + ".weight"));
            CkptTestUtil.EditJson(Path.Combine(dir, "config.json"), o =>
            {
                var list = o["quantization_config"]!["modules_to_not_convert"]!.AsArray();
                var keep = list.Where(x => (string)x! != module).Select(x => (System.Text.Json.Nodes.JsonNode?)System.Text.Json.Nodes.JsonValue.Create((string)x!)).ToArray();
                Assert.That(keep.Length, Is.EqualTo(list.Count - 1), $"{module} was listed");
                o["quantization_config"]!["modules_to_not_convert"] = new System.Text.Json.Nodes.JsonArray(keep);
            });
        }
        using var w = WeightLoader.Load(dir, device);
        var g = Read("tiny-maverick-fp8", "golden_text.safetensors");
        var ids = g.Ids[..g.Prompt];
        float ub = w.ActivationScaleUb;
        foreach (var (weight, input, node) in new[] { ("blk.0.attn_q", "blk.0.attn_norm", "blk.0.attn_q"), ("blk.1.moe.shexp_down", "blk.1.moe.shexp_act", "blk.1.moe.shexp_down") })
        {
            var t = w[weight].Tensor;
            Assert.That(t.DType, Is.EqualTo(DType.F8E4M3), weight);
            Assert.That(t.Scale, Is.EqualTo(w[weight + ".scale"].Ptr), weight);
            int n = (int)t.Shape[0], k = (int)t.Shape[1];
            var wq = new byte[n * k]; w.Device.Download(t.Ptr, wq.AsSpan());
            var ws = new float[n]; w.Device.Download(t.Scale, ws.AsSpan());
            foreach (var mode in new[] { ComputeMode.F32, ComputeMode.BF16 })
            {
                using var graph = new Llama4TextGraph(w, ids.Length, mode);
                var dumps = new Dictionary<string, float[]>();
                graph.Forward(ids, name => name == input || name == node, (name, _, data) => dumps[name] = data);
                int m = ids.Length;
                var xq = new byte[m * k]; var xs = new float[m];
                Reference.QuantizeFp8.Rows(dumps[input], xq, xs, m, k, ub);
                var want = new float[m * n];
                Reference.GemmFp8.Forward(xq, xs, wq, ws, want, m, n, k);
                var r = Ops.OpCheck.Compare($"{node} ({mode})", dumps[node], want, new Ops.Tolerance(1e-6, 8e-3));
                TestContext.Out.WriteLine(r);
                Assert.That(r.Passed, r.ToString());
            }
        }
        // And the whole model still tracks the FP8 goldens (two more layers quantized: FP8-sized differences only).
        var run = Forward(w, ids, ComputeMode.F32);
        var (mean, _, agree) = Diff(run.Logits, g.Logits, g.Vocab, ids.Length);
        TestContext.Out.WriteLine($"dense FP8 linears: logits mean abs {mean:0.0000} vs the FP8 golden, argmax {agree:P1}");
        Assert.That(mean, Is.LessThan(0.1));
        Assert.That(agree, Is.GreaterThanOrEqualTo(0.8));
    }

    [Test]
    public void Int4GroupThatDoesNotDivideKIsAClearErrorBeforeLoading()
    {
        // tiny-maverick's expert width is 40: G = 16 does not divide the down projection's K.
        var e = Assert.Throws<ArgumentException>(() => Load("tiny-maverick", new QuantizeOptions(QuantizeMode.Int4, 16)))!;
        Assert.That(e.Message, Does.Contain("K = 40").And.Contain("--int4-group-size 8"));
    }

    [Test]
    public void Int4OfAnFp8CheckpointIsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => Load("tiny-maverick-fp8", new QuantizeOptions(QuantizeMode.Int4, 8)))!;
        Assert.That(e.Message, Does.Contain("FP8").And.Contain("bf16 checkpoint"));
    }
}
