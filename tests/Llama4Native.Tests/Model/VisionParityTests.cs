using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Model;

/// <summary>
/// The vision path against the Hugging Face image goldens: first the host reference (our reading of HF), then the
/// device graph (fp32 within 1e-3 everywhere with identical argmax; bf16 image features ≤ 0.05 and teacher-forced
/// logits within the fixtures README's bf16 tolerances), early fusion through the KV cache, and `llama4 eval`.
/// </summary>
[Category("Emulator")]
public class VisionParityTests
{
    public static IEnumerable<string> Fixtures() => ["tiny-scout", "tiny-maverick"];

    internal sealed record Golden(int[] Ids, int[] FullIds, float[] Pixels, int Tiles, Dictionary<string, float[]> Tensors, Dictionary<string, long[]> Shapes, int Vocab);

    internal static Golden Read(string fixture)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), "golden_image.safetensors"));
        int[] Ints(string name) => f.Span<long>(f.Get(name)).ToArray().Select(v => (int)v).ToArray();
        var tensors = new Dictionary<string, float[]>();
        var shapes = new Dictionary<string, long[]>();
        foreach (var e in f.Tensors)
        {
            shapes[e.Name] = e.Shape.ToArray();
            if (e.DType == Tensors.DType.F32) tensors[e.Name] = f.Span<float>(e).ToArray();
        }
        var ids = Ints("input_ids");
        return new Golden(ids, Ints("full_sequence_ids"), tensors["pixel_values"], (int)shapes["pixel_values"][0], tensors, shapes,
                          (int)(tensors["logits"].Length / ids.Length));
    }

    internal static Func<string, float[]> HostWeights(ModelWeights w) =>
        name => { var t = w[name].Tensor; return DeviceData.Download(w.Device, t.Ptr, t.Elements, t.DType); };

    internal static int[] Argmax(float[] logits, int v) =>
        Enumerable.Range(0, logits.Length / v).Select(p => { int best = 0; for (int j = 1; j < v; j++) if (logits[p * v + j] > logits[p * v + best]) best = j; return best; }).ToArray();

    static readonly string[] VisionTraceNames =
        ["vision.patch_embeddings", "vision.after_layernorm_pre", "vision.layer_out.0", "vision.layer_out.1", "vision.encoder_out",
         "vision.after_layernorm_post", "vision.adapter_out"];

    [TestCaseSource(nameof(Fixtures))]
    public void HostReferenceReproducesTheImageGoldens(string fixture)
    {
        var gold = Read(fixture);
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        var vc = w.Config.Vision!;
        var hw = HostWeights(w);
        var trace = new Dictionary<string, float[]>();
        var feats = Reference.VisionModel.Forward(vc, hw, gold.Pixels, gold.Tiles, trace);
        var tol = new Tolerance(1e-4, 1e-4);
        foreach (var name in VisionTraceNames.Where(gold.Tensors.ContainsKey))
        {
            var r = OpCheck.Compare(name, trace[name], gold.Tensors[name], tol);
            TestContext.Out.WriteLine($"{fixture}: {r}");
            Assert.That(r.Passed, $"{fixture}: {r}");
        }
        var fr = OpCheck.Compare("image_features", feats, gold.Tensors["image_features"], tol);
        var proj = Reference.VisionModel.Project(vc, w.Config.Text.HiddenSize, hw, feats);
        var pr = OpCheck.Compare("image_features_projected", proj, gold.Tensors["image_features_projected"], tol);
        TestContext.Out.WriteLine($"{fixture}: {fr}\n{fixture}: {pr}");
        Assert.That(fr.Passed, $"{fixture}: {fr}");
        Assert.That(pr.Passed, $"{fixture}: {pr}");

        // Early fusion in the reference text forward reproduces the image prompt's logits.
        var layerOut = new List<float[]>();
        var logits = Reference.TextModel.Forward(w.Config.Text, hw, gold.Ids, layerOut, proj, w.Config.ImageTokenIndex);
        for (int i = 0; i < layerOut.Count; i++)
        {
            var r = OpCheck.Compare($"layer_out.{i}", layerOut[i], gold.Tensors[$"layer_out.{i}"], tol);
            Assert.That(r.Passed, $"{fixture}: {r}");
        }
        var lr = OpCheck.Compare("logits", logits, gold.Tensors["logits"], tol);
        TestContext.Out.WriteLine($"{fixture}: {lr}");
        Assert.That(lr.Passed, $"{fixture}: {lr}");
        Assert.That(Argmax(logits, gold.Vocab), Is.EqualTo(Argmax(gold.Tensors["logits"], gold.Vocab)), $"{fixture}: argmax per position");
    }

    /// <summary>Golden vision tensor ↔ the graph node that computes it.</summary>
    static IEnumerable<(string Golden, string Node)> NodeOf(VisionConfig vc)
    {
        yield return ("vision.patch_embeddings", "v.patch_embd");
        yield return ("vision.after_layernorm_pre", "v.pre_norm");
        for (int i = 0; i < vc.NumHiddenLayers; i++) yield return ($"vision.layer_out.{i}", $"v.blk.{i}.out");
        yield return ("vision.encoder_out", $"v.blk.{vc.NumHiddenLayers - 1}.out");
        yield return ("vision.after_layernorm_post", "v.post_norm");
        yield return ("vision.adapter_out", "v.adapter");
        yield return ("image_features", "v.adapter");
        yield return ("image_features_projected", "mm.proj");
    }

    [TestCaseSource(nameof(Fixtures))]
    public void Fp32PathMatchesTheImageGoldens(string fixture)
    {
        var gold = Read(fixture);
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        var vc = w.Config.Vision!;
        // Planned for more tiles than the image has: the run-time tile count must be honoured everywhere.
        using var vision = new Llama4VisionGraph(w, gold.Tiles + 2, ComputeMode.F32);
        using var text = new Llama4TextGraph(w, gold.Ids.Length, ComputeMode.F32);
        var dumps = new Dictionary<string, float[]>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var rows = vision.Forward(gold.Pixels, gold.Tiles, _ => true, (name, t, data) => dumps[name] = data);
        var visionTime = sw.Elapsed;
        Assert.That(rows.Shape[0], Is.EqualTo(gold.Tiles * vc.TokensPerTile));
        var tol = new Tolerance(1e-3, 1e-3);
        foreach (var (g, node) in NodeOf(vc))
        {
            var r = OpCheck.Compare($"{g} ({node})", dumps[node], gold.Tensors[g], tol);
            TestContext.Out.WriteLine($"{fixture}: {r}");
            Assert.That(r.Passed, $"{fixture}: {r}");
        }
        Assert.That(vision.DownloadFeatures(), Is.EqualTo(dumps["v.adapter"]));
        Assert.That(vision.DownloadProjected(), Is.EqualTo(dumps["mm.proj"]));

        sw.Restart();
        var layerOut = new Dictionary<int, float[]>();
        var logits = text.Forward(gold.Ids, n => n.StartsWith("blk.", StringComparison.Ordinal) && n.EndsWith(".out", StringComparison.Ordinal),
            (name, _, data) => layerOut[int.Parse(name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture)] = data, rows);
        var textTime = sw.Elapsed;
        for (int i = 0; i < w.Config.Text.NumHiddenLayers; i++)
        {
            var r = OpCheck.Compare($"layer_out.{i}", layerOut[i], gold.Tensors[$"layer_out.{i}"], tol);
            TestContext.Out.WriteLine($"{fixture}: {r}");
            Assert.That(r.Passed, $"{fixture}: {r}");
        }
        var lr = OpCheck.Compare("logits", logits, gold.Tensors["logits"], tol);
        TestContext.Out.WriteLine($"{fixture}: {lr}");
        // Again without dumps, kernels loaded: the image forward's emulator time.
        sw.Restart();
        rows = vision.Forward(gold.Pixels, gold.Tiles);
        var visionWarm = sw.Elapsed;
        sw.Restart();
        text.Forward(gold.Ids, imageRows: rows);
        var textWarm = sw.Elapsed;
        TestContext.Out.WriteLine($"{fixture}: emulator time: vision {visionTime.TotalSeconds:0.00} s ({gold.Tiles} tiles), text {textTime.TotalSeconds:0.00} s " +
                                  $"({gold.Ids.Length} tokens) with dumps; again: vision {visionWarm.TotalSeconds:0.000} s, text {textWarm.TotalSeconds:0.000} s");
        Assert.That(lr.Passed, $"{fixture}: {lr}");
        Assert.That(Argmax(logits, gold.Vocab), Is.EqualTo(Argmax(gold.Tensors["logits"], gold.Vocab)), $"{fixture}: argmax per position");
    }

    [TestCaseSource(nameof(Fixtures))]
    public void Bf16PathIsWithinTheFixtureTolerances(string fixture)
    {
        var gold = Read(fixture);
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        using var v16 = new Llama4VisionGraph(w, gold.Tiles, ComputeMode.BF16);
        var rows16 = v16.Forward(gold.Pixels, gold.Tiles);
        var feats = v16.DownloadFeatures();
        double featMax = MaxAbs(feats, gold.Tensors["image_features"]);
        TestContext.Out.WriteLine($"{fixture}: bf16 image_features max abs {featMax:0.0000}, projected max abs {MaxAbs(v16.DownloadProjected(), gold.Tensors["image_features_projected"]):0.0000}");
        Assert.That(featMax, Is.LessThanOrEqualTo(0.05), fixture);

        // Teacher-forced over prompt + the golden's greedy tokens, against the fp32 path (itself checked against HF above).
        var ids = gold.FullIds;
        using var v32 = new Llama4VisionGraph(w, gold.Tiles, ComputeMode.F32);
        var rows32 = v32.Forward(gold.Pixels, gold.Tiles);
        using var f32 = new Llama4TextGraph(w, ids.Length, ComputeMode.F32);
        using var b16 = new Llama4TextGraph(w, ids.Length, ComputeMode.BF16);
        var refTopk = new List<float[]>(); var gotTopk = new List<float[]>();
        var want = f32.Forward(ids, n => n.EndsWith(".moe.router", StringComparison.Ordinal), (_, _, _) => refTopk.Add(f32.Plan.Download(f32.RouterTopK)), rows32);
        var got = b16.Forward(ids, n => n.EndsWith(".moe.router", StringComparison.Ordinal), (_, _, _) => gotTopk.Add(b16.Plan.Download(b16.RouterTopK)), rows16);
        int v = gold.Vocab, k = w.Config.Text.NumExpertsPerTok;
        // The prompt part of the fp32 teacher-forced logits is the golden's.
        var pr = OpCheck.Compare("logits (prompt)", want.AsSpan(0, gold.Ids.Length * v), gold.Tensors["logits"], new Tolerance(1e-3, 1e-3));
        Assert.That(pr.Passed, $"{fixture}: {pr}");
        var same = Enumerable.Range(0, ids.Length).Where(p => refTopk.Zip(gotTopk).All(l => l.First.AsSpan(p * k, k).SequenceEqual(l.Second.AsSpan(p * k, k)))).ToList();
        Assert.That(same.Count, Is.GreaterThan(ids.Length / 2), $"{fixture}: bf16 routing differs at most positions");
        // Mean over every position whose experts match; max over the clean prefix (before the first flipped expert:
        // a flip changes that token by O(1), and later tokens of its chunk see it through attention).
        int clean = Enumerable.Range(0, ids.Length).TakeWhile(same.Contains).Count();
        double sum = 0, max = 0, maxClean = 0; long cnt = 0;
        foreach (int p in same)
            for (int j = 0; j < v; j++)
            {
                double d = Math.Abs(got[p * v + j] - want[p * v + j]);
                sum += d; cnt++; max = Math.Max(max, d);
                if (p < clean) maxClean = Math.Max(maxClean, d);
            }
        double meanAbs = sum / cnt;
        var am = Argmax(got, v); var aw = Argmax(want, v);
        double agree = am.Zip(aw).Count(x => x.First == x.Second) / (double)am.Length;
        TestContext.Out.WriteLine($"{fixture}: bf16 vs fp32 logits mean abs {meanAbs:0.0000} (max {max:0.000}) over {same.Count}/{ids.Length} positions with the same experts; " +
                                  $"max abs {maxClean:0.000} over the {clean} positions before the first flipped expert; argmax agreement {agree:P1}");
        Assert.That(meanAbs, Is.LessThanOrEqualTo(0.05), fixture);
        Assert.That(maxClean, Is.LessThanOrEqualTo(0.5), fixture);
        Assert.That(agree, Is.GreaterThanOrEqualTo(0.90), fixture);
    }

    static double MaxAbs(float[] a, float[] b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length));
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }

    /// <summary>
    /// Prefill through the KV cache in pieces equals the full forward: once with the whole image inside the first
    /// piece, once with cuts falling inside the &lt;|patch|&gt; runs (each piece gets the rows of its own patch tokens).
    /// </summary>
    [TestCase("tiny-scout", new[] { 64, 7 })]
    [TestCase("tiny-scout", new[] { 13, 20, 17, 21 })]
    [TestCase("tiny-maverick", new[] { 30, 8 })]
    [TestCase("tiny-maverick", new[] { 12, 9, 17 })]
    public void SplitPrefillEqualsTheFullForward(string fixture, int[] pieces)
    {
        var gold = Read(fixture);
        Assert.That(pieces.Sum(), Is.EqualTo(gold.Ids.Length));
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        int imageToken = w.Config.ImageTokenIndex;
        using var vision = new Llama4VisionGraph(w, gold.Tiles, ComputeMode.F32);
        var rows = vision.Forward(gold.Pixels, gold.Tiles);
        using var cache = new KvCache(dev, w.Config.Text, Tensors.DType.F32, gold.Ids.Length, pieces.Max());
        var got = new List<float>();
        int at = 0, used = 0;
        bool cutInsideRun = false;
        foreach (int n in pieces)
        {
            var piece = gold.Ids.AsSpan(at, n);
            int k = EarlyFusion.CountPatches(piece, imageToken);
            if (at > 0 && gold.Ids[at - 1] == imageToken && gold.Ids[at] == imageToken) cutInsideRun = true;
            using var g = new Llama4TextGraph(w, n, ComputeMode.F32, cache);
            got.AddRange(g.Forward(piece, imageRows: k > 0 ? rows.Slice(used, k) : null));
            used += k; at += n;
        }
        Assert.That(used, Is.EqualTo(rows.Shape[0]));
        TestContext.Out.WriteLine($"{fixture} pieces [{string.Join(", ", pieces)}]: a cut inside a <|patch|> run: {cutInsideRun}");
        using var full = new Llama4TextGraph(w, gold.Ids.Length, ComputeMode.F32);
        var want = full.Forward(gold.Ids, imageRows: rows);
        var r = OpCheck.Compare("logits", got.ToArray(), want, new Tolerance(1e-4, 1e-4));
        TestContext.Out.WriteLine($"{fixture}: split vs full {r}");
        Assert.That(r.Passed, $"{fixture}: {r}");
        var g2 = OpCheck.Compare("logits vs golden", got.ToArray(), gold.Tensors["logits"], new Tolerance(1e-3, 1e-3));
        Assert.That(g2.Passed, $"{fixture}: {g2}");
    }

    /// <summary>The generator's prefill slices the rows per piece itself: greedy tokens equal HF's, with a piece size that cuts the patch run and one that holds the image whole.</summary>
    [TestCase("tiny-maverick", 8)]
    [TestCase("tiny-maverick", 32)]
    [TestCase("tiny-scout", 16)]
    public void GeneratorWithImagesReproducesTheGreedyTokens(string fixture, int maxPiece)
    {
        var gold = Read(fixture);
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        var want = gold.FullIds[gold.Ids.Length..];
        using var gen = new TokenGenerator(w, ComputeMode.F32, gold.FullIds.Length, maxPiece);
        var images = new ImageTiles(gold.Pixels, gold.Tiles);
        var got = new List<int>();
        var step0 = Array.Empty<float>();
        foreach (var t in gen.Generate(gold.Ids, new GenerationOptions { MaxNewTokens = want.Length, StopAtModelStops = false }, images))
        {
            if (got.Count == 0) step0 = gen.LastLogits;
            got.Add(t);
        }
        Assert.That(got, Is.EqualTo(want), $"{fixture}: greedy tokens with max piece {maxPiece}");
        var r = OpCheck.Compare("step 0 logits", step0, gold.Tensors["generated_step_logits"].AsSpan(0, gold.Vocab), new Tolerance(1e-3, 1e-3));
        Assert.That(r.Passed, $"{fixture}: {r}");
    }

    [Test]
    public void APatchCountMismatchIsAClearError()
    {
        var gold = Read("tiny-scout");
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        int per = w.Config.Vision!.TokensPerTile; // 16; the prompt has 3 tiles' worth = 48
        using var gen = new TokenGenerator(w, ComputeMode.F32, 128, 64);
        var two = new ImageTiles(gold.Pixels[..(gold.Pixels.Length / 3 * 2)], 2);
        var e = Assert.Throws<ImageTokenMismatchException>(() => gen.Generate(gold.Ids, new GenerationOptions { MaxNewTokens = 1 }, two).ToList())!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Message, Does.Contain("48").And.Contain("2 tiles").And.Contain($"{per} tokens per tile").And.Contain("32"));
        Assert.That((e.PatchTokens, e.ImageRows), Is.EqualTo((48, 32)));
        var none = Assert.Throws<ImageTokenMismatchException>(() => gen.Generate(gold.Ids, new GenerationOptions { MaxNewTokens = 1 }).ToList())!;
        Assert.That(none.Message, Does.Contain("48").And.Contain("no image"));
        Assert.That(gen.Cache.Position, Is.EqualTo(0), "nothing was fed");

        // The graph itself checks the rows it is given for a piece.
        using var vision = new Llama4VisionGraph(w, 3, ComputeMode.F32);
        var rows = vision.Forward(gold.Pixels, 3);
        using var text = new Llama4TextGraph(w, gold.Ids.Length, ComputeMode.F32);
        var pe = Assert.Throws<ImageTokenMismatchException>(() => text.Forward(gold.Ids, imageRows: rows.Slice(0, 47)))!;
        Assert.That(pe.Message, Does.Contain("48").And.Contain("47"));
    }

    /// <summary>`llama4 eval` with pixel_values: image features, projected rows, logits, greedy tokens, vision dumps; and its errors.</summary>
    [Test]
    public void EvalVerbRunsImagePrompts()
    {
        const string fixture = "tiny-maverick";
        var dir = CkptTestUtil.Fixture(fixture);
        var model = CkptTestUtil.FixtureModel(fixture);
        var goldPath = Path.Combine(dir, "golden_image.safetensors");
        var tmp = CkptTestUtil.NewTempDir("l4-eval-img");
        var outPath = Path.Combine(tmp, "out.safetensors");
        try
        {
            var (rc, _, err) = TextModelTests.Cli(["eval", "--model", model, "--inputs", goldPath, "--out", outPath, "--device", "emu",
                                                   "--dump", "v.blk.0.*", "--generate", "16"]);
            Assert.That(rc, Is.EqualTo(0), err);
            TestContext.Out.WriteLine(err);
            using var got = SafetensorsFile.Open(outPath);
            using var gold = SafetensorsFile.Open(goldPath);
            foreach (var name in new[] { "image_features", "image_features_projected", "logits", "layer_out.0", "layer_out.5" })
            {
                Assert.That(got.Get(name).Shape, Is.EqualTo(gold.Get(name).Shape), name);
                var r = OpCheck.Compare(name, got.Span<float>(got.Get(name)).ToArray(), gold.Span<float>(gold.Get(name)).ToArray(), new Tolerance(1e-3, 1e-3));
                Assert.That(r.Passed, r.ToString());
            }
            Assert.That(got.Get("dump.v.blk.0.attn").Shape, Is.EqualTo(new long[] { 65, 32 }));
            Assert.That(got.Contains("dump.v.blk.0.attn_q.rope") && !got.Contains("dump.v.blk.1.attn"));
            Assert.That(got.Span<long>(got.Get("generated_ids")).ToArray(), Is.EqualTo(gold.Span<long>(gold.Get("generated_ids")).ToArray()));

            // Image tokens without pixel_values, and pixel_values whose tiles do not match the <|patch|> count.
            var ids = gold.Span<long>(gold.Get("input_ids")).ToArray();
            var pixels = gold.Span<float>(gold.Get("pixel_values")).ToArray();
            var noPixels = Path.Combine(tmp, "ids-only.safetensors");
            SafetensorsWriter.Write(noPixels, [("input_ids", Tensors.DType.I64, [ids.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()).ToArray())]);
            var (rc2, _, err2) = TextModelTests.Cli(["eval", "--model", model, "--inputs", noPixels, "--out", outPath, "--device", "emu"]);
            Assert.That(rc2, Is.EqualTo(1));
            Assert.That(err2, Does.Contain("16 image tokens").And.Contain("pixel values"));
            var twoTiles = Path.Combine(tmp, "two-tiles.safetensors");
            SafetensorsWriter.Write(twoTiles, [("input_ids", Tensors.DType.I64, [ids.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()).ToArray()),
                                               ("pixel_values", Tensors.DType.F32, [2, 3, 64, 64], System.Runtime.InteropServices.MemoryMarshal.AsBytes(pixels.Concat(pixels).ToArray().AsSpan()).ToArray())]);
            var (rc3, _, err3) = TextModelTests.Cli(["eval", "--model", model, "--inputs", twoTiles, "--out", outPath, "--device", "emu"]);
            Assert.That(rc3, Is.EqualTo(1));
            Assert.That(err3, Does.Contain("16 <|patch|> tokens").And.Contain("2 tiles × 16 tokens per tile = 32"));
            var badShape = Path.Combine(tmp, "bad-shape.safetensors");
            SafetensorsWriter.Write(badShape, [("input_ids", Tensors.DType.I64, [ids.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()).ToArray()),
                                               ("pixel_values", Tensors.DType.F32, [1, 3, 32, 128], System.Runtime.InteropServices.MemoryMarshal.AsBytes(pixels.AsSpan()).ToArray())]);
            var (rc4, _, err4) = TextModelTests.Cli(["eval", "--model", model, "--inputs", badShape, "--out", outPath, "--device", "emu"]);
            Assert.That(rc4, Is.EqualTo(1));
            Assert.That(err4, Does.Contain("pixel_values").And.Contain("[tiles, 3, 64, 64]"));
        }
        finally { Directory.Delete(tmp, true); }
    }

    /// <summary>
    /// Vision configs unlike the fixtures' — patch 4 on 24-pixel tiles (a 6×6 grid), head_dim 32; and real Scout's
    /// patch 14 (C·P·P = 588) and head_dim 88 on a 4×4 grid — with 3 layers, an adapter to 48 and a projector bias:
    /// 5 tiles in a graph planned for 7, against the host reference; then early fusion of those rows into a prompt,
    /// against the reference text forward.
    /// </summary>
    [TestCase(24, 4, 64, 2)]
    [TestCase(56, 14, 176, 2)]
    public void AnotherVisionConfigMatchesTheHostReference(int image, int patchSize, int hiddenSize, int heads)
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(CkptTestUtil.FixtureModel("tiny-scout"), "config.json")))!;
        var vcj = json["vision_config"]!.AsObject();
        vcj["image_size"] = image; vcj["patch_size"] = patchSize; vcj["hidden_size"] = hiddenSize; vcj["num_attention_heads"] = heads;
        vcj["intermediate_size"] = hiddenSize * 4;
        vcj["num_hidden_layers"] = 3; vcj["projector_input_dim"] = 48; vcj["projector_output_dim"] = 48; vcj["vision_output_dim"] = 48;
        vcj["multi_modal_projector_bias"] = true; vcj["rope_theta"] = 500.0;
        var seed = TestSeed.For(nameof(AnotherVisionConfigMatchesTheHostReference));
        var dir = Path.Combine(Path.GetTempPath(), "l4-vcfg-" + Guid.NewGuid().ToString("N"));
        try
        {
            Synth.Write(json.ToJsonString(), dir, new SynthOptions(Seed: (ulong)(uint)seed));
            using var dev = TestDevices.Emulated();
            using var w = WeightLoader.Load(dir, dev);
            var vc = w.Config.Vision!;
            int side = image / patchSize;
            Assert.That((vc.NumPatches, vc.TokensPerTile, vc.HeadDim), Is.EqualTo((side * side, side * side / 4, hiddenSize / heads)));
            var rng = new Random(seed);
            const int tiles = 5;
            var pixels = DeviceData.Normal(rng, tiles * 3L * image * image, 0.5f, Tensors.DType.BF16);
            var hw = HostWeights(w);
            var trace = new Dictionary<string, float[]>();
            var wantFeats = Reference.VisionModel.Forward(vc, hw, pixels, tiles, trace);
            var wantProj = Reference.VisionModel.Project(vc, w.Config.Text.HiddenSize, hw, wantFeats);
            using var vision = new Llama4VisionGraph(w, 7, ComputeMode.F32);
            var dumps = new Dictionary<string, float[]>();
            var rows = vision.Forward(pixels, tiles, _ => true, (name, _, data) => dumps[name] = data);
            var tol = new Tolerance(1e-4, 1e-4);
            foreach (var (g, node) in NodeOf(vc).Where(x => trace.ContainsKey(x.Golden)))
            {
                var r = OpCheck.Compare($"{g} ({node})", dumps[node], trace[g], tol);
                Assert.That(r.Passed, r.ToString());
            }
            Assert.That(OpCheck.Compare("image_features", vision.DownloadFeatures(), wantFeats, tol).Passed);
            var pr = OpCheck.Compare("image_features_projected", vision.DownloadProjected(), wantProj, tol);
            TestContext.Out.WriteLine(pr);
            Assert.That(pr.Passed, pr.ToString());
            // bf16 mode on the same tiles (at d = 88 the attention runs its padded CUDA-core variant).
            using var v16 = new Llama4VisionGraph(w, 7, ComputeMode.BF16);
            v16.Forward(pixels, tiles);
            double m16 = MaxAbs(v16.DownloadFeatures(), wantFeats), scale = wantFeats.Max(Math.Abs);
            TestContext.Out.WriteLine($"bf16 image_features max abs {m16:0.0000} (|max| {scale:0.00})");
            Assert.That(m16, Is.LessThanOrEqualTo(0.05 * Math.Max(1, scale / 3)), "bf16 image features");

            // A prompt whose 45 <|patch|> tokens come in runs of 9 between text tokens.
            int patch = w.Config.ImageTokenIndex;
            var ids = new List<int>();
            for (int t = 0; t < tiles; t++)
            {
                ids.AddRange(Enumerable.Range(0, 1 + rng.Next(3)).Select(_ => rng.Next(400)));
                ids.AddRange(Enumerable.Repeat(patch, vc.TokensPerTile));
            }
            ids.AddRange(Enumerable.Range(0, 4).Select(_ => rng.Next(400)));
            using var text = new Llama4TextGraph(w, ids.Count, ComputeMode.F32);
            var got = text.Forward(ids.ToArray(), imageRows: rows);
            var want = Reference.TextModel.Forward(w.Config.Text, hw, ids.ToArray(), null, wantProj, patch);
            var lr = OpCheck.Compare("logits", got, want, tol);
            TestContext.Out.WriteLine(lr);
            Assert.That(lr.Passed, lr.ToString());
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
