using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Model;

/// <summary>The decoder graph beyond the goldens: other configs against the host reference, the chunked mask end to end, `llama4 eval`.</summary>
[Category("Emulator")]
public class TextModelTests
{
    static Func<string, float[]> HostWeights(ModelWeights w) =>
        name => { var t = w[name].Tensor; return DeviceData.Download(w.Device, t.Ptr, t.Elements, t.DType); };

    [Test]
    public void HostReferenceReproducesTheGolden()
    {
        // The reference itself is checked once against HF, so it can stand in for HF on configs without goldens.
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture("tiny-scout"), "golden_text.safetensors"));
        var ids = f.Span<long>(f.Get("input_ids")).ToArray().Select(v => (int)v).ToArray();
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        var logits = Reference.TextModel.Forward(w.Config.Text, HostWeights(w), ids);
        var r = OpCheck.Compare("logits", logits, f.Span<float>(f.Get("logits")).ToArray(), new Tolerance(1e-4, 1e-4));
        Assert.That(r.Passed, r.ToString());
    }

    /// <summary>head_dim 32, GQA 4:1, top-2 routing, eps 1e-6, a llama3 band with low ≠ high, chunk 8, MoE every 2nd layer, NoPE every 3rd.</summary>
    [Test]
    public void AnotherConfigMatchesTheHostReference()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(CkptTestUtil.FixtureModel("tiny-scout"), "config.json")))!;
        var tc = json["text_config"]!.AsObject();
        foreach (var derived in new[] { "layer_types", "no_rope_layers", "moe_layers" }) tc.Remove(derived);
        tc["num_hidden_layers"] = 5; tc["head_dim"] = 32; tc["num_attention_heads"] = 4; tc["num_key_value_heads"] = 1;
        tc["num_experts_per_tok"] = 2; tc["num_local_experts"] = 5; tc["rms_norm_eps"] = 1e-6; tc["attention_chunk_size"] = 8;
        tc["interleave_moe_layer_step"] = 2; tc["no_rope_layer_interval"] = 3; tc["intermediate_size"] = 40; tc["intermediate_size_mlp"] = 72;
        tc["rope_scaling"] = new JsonObject { ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 32, ["rope_type"] = "llama3" };
        var seed = TestSeed.For(nameof(AnotherConfigMatchesTheHostReference));
        var dir = Path.Combine(Path.GetTempPath(), "l4-cfg-" + Guid.NewGuid().ToString("N"));
        try
        {
            Synth.Write(json.ToJsonString(), dir, new SynthOptions(Seed: (ulong)(uint)seed));
            using var dev = TestDevices.Emulated();
            using var w = WeightLoader.Load(dir, dev);
            var c = w.Config.Text;
            Assert.That(c.UsesRope, Is.EqualTo(new[] { true, true, false, true, true }));
            Assert.That(c.MoeLayers, Is.EqualTo(new[] { 1, 3 }));
            var rng = new Random(seed);
            var ids = Enumerable.Range(0, 21).Select(_ => rng.Next(c.VocabSize)).ToArray();
            using var g = new Llama4TextGraph(w, ids.Length, ComputeMode.F32);
            var outs = new List<float[]>();
            var got = g.Forward(ids, n => n.EndsWith(".out", StringComparison.Ordinal), (_, _, data) => outs.Add(data));
            var refOuts = new List<float[]>();
            var want = Reference.TextModel.Forward(c, HostWeights(w), ids, refOuts);
            var tol = new Tolerance(1e-4, 1e-4);
            for (int i = 0; i < c.NumHiddenLayers; i++)
                Assert.That(OpCheck.Compare($"layer_out.{i}", outs[i], refOuts[i], tol).Passed, $"layer {i}: {OpCheck.Compare($"layer_out.{i}", outs[i], refOuts[i], tol)}");
            var r = OpCheck.Compare("logits", got, want, tol);
            Assert.That(r.Passed, r.ToString());
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    /// <summary>
    /// Change the first token: in a RoPE (chunked) layer before any NoPE layer, rows of later chunks do not move at
    /// all; the first NoPE (global) layer then carries the change into them.
    /// </summary>
    [Test]
    public void AnEarlierChunkIsInvisibleToRopeLayersAndVisibleToNopeLayers()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        var c = w.Config.Text;
        int chunk = c.AttentionChunkSize, t = chunk * 2 + 5, firstNope = Array.IndexOf(c.UsesRope, false);
        Assert.That(firstNope, Is.GreaterThan(0), "the fixture has RoPE layers before its first NoPE layer");
        var rng = new Random(TestSeed.For(nameof(AnEarlierChunkIsInvisibleToRopeLayersAndVisibleToNopeLayers)));
        var a = Enumerable.Range(0, t).Select(_ => rng.Next(c.VocabSize)).ToArray();
        var b = (int[])a.Clone();
        b[0] = (a[0] + 1 + rng.Next(c.VocabSize - 1)) % c.VocabSize;
        using var g = new Llama4TextGraph(w, t, ComputeMode.F32);
        List<float[]> Run(int[] ids) { var o = new List<float[]>(); g.Forward(ids, n => n.EndsWith(".out", StringComparison.Ordinal), (_, _, d) => o.Add(d)); return o; }
        var oa = Run(a); var ob = Run(b);
        int dim = c.HiddenSize;
        for (int layer = 0; layer < firstNope; layer++)
        {
            Assert.That(oa[layer].AsSpan(chunk * dim).SequenceEqual(ob[layer].AsSpan(chunk * dim)), $"RoPE layer {layer}: later chunks must not see token 0");
            Assert.That(oa[layer].AsSpan(0, dim).SequenceEqual(ob[layer].AsSpan(0, dim)), Is.False, $"layer {layer}: token 0 itself changed");
        }
        Assert.That(oa[firstNope].AsSpan(chunk * dim).SequenceEqual(ob[firstNope].AsSpan(chunk * dim)), Is.False,
                    $"NoPE layer {firstNope} attends globally: later chunks must see token 0");
    }

    [Test]
    public void EvalVerbWritesLogitsAndLayerOutputs()
    {
        var fixture = CkptTestUtil.Fixture("tiny-maverick");
        var outPath = Path.Combine(Path.GetTempPath(), $"l4-eval-{Guid.NewGuid():N}.safetensors");
        try
        {
            var (rc, _, err) = Cli(["eval", "--model", CkptTestUtil.FixtureModel("tiny-maverick"), "--inputs", Path.Combine(fixture, "golden_text.safetensors"),
                                    "--out", outPath, "--device", "emu", "--dump", "blk.1.attn", "--generate", "16"]);
            Assert.That(rc, Is.EqualTo(0), err);
            using var got = SafetensorsFile.Open(outPath);
            using var gold = SafetensorsFile.Open(Path.Combine(fixture, "golden_text.safetensors"));
            foreach (var name in new[] { "logits", "layer_out.0", "layer_out.5" })
            {
                var r = OpCheck.Compare(name, got.Span<float>(got.Get(name)).ToArray(), gold.Span<float>(gold.Get(name)).ToArray(), new Tolerance(1e-3, 1e-3));
                Assert.That(r.Passed, r.ToString());
            }
            Assert.That(got.Contains("dump.blk.1.attn") && got.Contains("router_topk.1"));
            Assert.That(got.Span<long>(got.Get("generated_ids")).ToArray(), Is.EqualTo(gold.Span<long>(gold.Get("generated_ids")).ToArray()));
            var sr = OpCheck.Compare("generated_step_logits", got.Span<float>(got.Get("generated_step_logits")).ToArray(),
                                     gold.Span<float>(gold.Get("generated_step_logits")).ToArray(), new Tolerance(1e-3, 1e-3));
            Assert.That(sr.Passed, sr.ToString());
            var topk = got.Span<float>(got.Get("router_topk.3")).ToArray();
            Assert.That(topk, Is.EqualTo(gold.Span<long>(gold.Get("router_topk_indices.3")).ToArray().Select(v => (float)v).ToArray()));

        }
        finally { File.Delete(outPath); }
    }

    internal static (int Rc, string Out, string Err) Cli(string[] args)
    {
        var o = new StringWriter(); var e = new StringWriter();
        int rc = Commands.Run(args, o, e);
        return (rc, o.ToString(), e.ToString());
    }
}
