using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Model;
using static Llama4Native.Tests.Checkpoints.CkptTestUtil;

namespace Llama4Native.Tests.Checkpoints;

public class ConfigTests
{
    static readonly string[] Fixtures = ["tiny-scout", "tiny-maverick", "tiny-maverick-fp8"];

    [TestCaseSource(nameof(Fixtures))]
    public void DerivedLayerKindsMatchFixtureJson(string name)
    {
        var cfg = Llama4Config.Load(FixtureModel(name));
        var fx = ReadJson(Path.Combine(Fixture(name), "fixture.json"));
        var t = cfg.Text;
        int[] noRope = fx["no_rope_layers"]!.AsArray().Select(x => (int)x!).ToArray();
        string[] types = fx["layer_types"]!.AsArray().Select(x => (string)x!).ToArray();
        int[] moe = fx["moe_layers"]!.AsArray().Select(x => (int)x!).ToArray();
        Assert.That(t.UsesRope.Select(r => r ? 1 : 0), Is.EqualTo(noRope));
        Assert.That(t.UsesRope.Select(r => r ? "chunked_attention" : "full_attention"), Is.EqualTo(types));
        Assert.That(Enumerable.Range(0, t.NumHiddenLayers).Where(i => t.IsMoeLayer[i]), Is.EqualTo(moe));
        Assert.That(t.HeadDim, Is.EqualTo(16));
        Assert.That(t.QueriesPerKvHead, Is.EqualTo(t.NumAttentionHeads / t.NumKeyValueHeads));
        Assert.That(cfg.Vision!.TokensPerTile, Is.EqualTo(16), "64px tiles, 8px patches, shuffle 0.5");
        Assert.That(cfg.ImageTokenIndex, Is.EqualTo((int)fx["special_token_ids"]!["<|patch|>"]!));
    }

    [Test]
    public void DefaultsFollowTransformersWhenFieldsAreAbsent()
    {
        // Remove the explicit lists: transformers derives them from the interval and the interleave step.
        var o = ReadJson(Path.Combine(FixtureModel("tiny-scout"), "config.json"));
        var tc = o["text_config"]!.AsObject();
        tc.Remove("no_rope_layers"); tc.Remove("layer_types"); tc.Remove("moe_layers"); tc.Remove("head_dim");
        tc["no_rope_layer_interval"] = 3; tc["interleave_moe_layer_step"] = 3;
        var cfg = Llama4Config.Parse(o.ToJsonString());
        Assert.That(cfg.Text.UsesRope, Is.EqualTo(new[] { true, true, false, true, true, false, true, true }));
        Assert.That(cfg.Text.MoeLayers, Is.EqualTo(new[] { 2, 5 }));
        Assert.That(cfg.Text.HeadDim, Is.EqualTo(64 / 4));
        Assert.That(cfg.Defaulted, Has.Some.Contains("head_dim"));
        // An empty no_rope_layers list falls back to the interval, as in transformers.
        tc["no_rope_layers"] = new JsonArray();
        Assert.That(Llama4Config.Parse(o.ToJsonString()).Text.UsesRope[2], Is.False);
    }

    [Test]
    public void TextOnlyCausalLmConfigIsFlat()
    {
        var o = ReadJson(Path.Combine(FixtureModel("tiny-maverick"), "config.json"));
        var flat = o["text_config"]!.DeepClone().AsObject();
        flat["architectures"] = new JsonArray("Llama4ForCausalLM");
        var cfg = Llama4Config.Parse(flat.ToJsonString());
        Assert.That(cfg.IsMultimodal, Is.False);
        Assert.That(cfg.Architecture, Is.EqualTo(Llama4Config.CausalLM));
        Assert.That(TensorNames.Expected(cfg).Select(e => e.Hf), Has.All.Not.StartWith("language_model."));
        Assert.That(TensorNames.Expected(cfg).Select(e => e.Hf), Does.Contain("lm_head.weight").And.Contain("model.embed_tokens.weight"));
    }

    [Test]
    public void ValidateListsEveryProblem()
    {
        var o = ReadJson(Path.Combine(FixtureModel("tiny-scout"), "config.json"));
        o["text_config"]!["num_key_value_heads"] = 3;
        o["text_config"]!["head_dim"] = 15;
        o["text_config"]!["num_experts_per_tok"] = 9;
        o["vision_config"]!["image_size"] = 60;
        var e = Assert.Throws<ConfigException>(() => Llama4Config.Parse(o.ToJsonString(), "bad/config.json"))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Problems, Has.Count.GreaterThanOrEqualTo(4));
        Assert.That(e.Message, Does.Contain("bad/config.json")
            .And.Contain("num_attention_heads (4) must be divisible by text_config.num_key_value_heads (3)")
            .And.Contain("head_dim (15) must be even")
            .And.Contain("num_experts_per_tok (9) must be in [1, num_local_experts (4)]")
            .And.Contain("image_size (60) must be divisible by vision_config.patch_size (8)"));
    }

    [Test]
    public void QuantizationConfigIsKept()
    {
        var cfg = Llama4Config.Load(FixtureModel("tiny-maverick-fp8"));
        var q = cfg.Quantization!;
        Assert.That(q.QuantMethod, Is.EqualTo("fbgemm_fp8"));
        Assert.That(q.ActivationScaleUb, Is.EqualTo(1200.0));
        Assert.That(q.ModulesToNotConvert, Has.Length.EqualTo(63));
        Assert.That(q.IsExcluded("language_model.model.layers.5.feed_forward.experts"), Is.True);
        Assert.That(q.IsExcluded("language_model.model.layers.1.feed_forward.experts"), Is.False);
        Assert.That(q.IsExcluded("language_model.lm_head"), Is.True);
    }

    /// <summary>The llama3 formula recomputed independently in double precision; our float32 values must agree to float rounding.</summary>
    [TestCase(16, 500000.0, 16.0, 1.0, 1.0, 64)]
    [TestCase(128, 500000.0, 16.0, 1.0, 1.0, 8192)]
    [TestCase(128, 500000.0, 8.0, 1.0, 4.0, 8192)]
    [TestCase(64, 10000.0, 32.0, 1.0, 4.0, 2048)]
    public void Llama3RopeFrequencies(int d, double theta, double factor, double low, double high, int orig)
    {
        var f = TextConfig.ComputeInvFreq(d, theta, new RopeScaling("llama3", factor, low, high, orig));
        Assert.That(f, Has.Length.EqualTo(d / 2));
        for (int j = 0; j < d / 2; j++)
        {
            double inv = 1 / Math.Pow(theta, 2.0 * j / d);
            double wl = 2 * Math.PI / inv, lowWl = orig / low, highWl = orig / high;
            double want = wl < highWl ? inv : wl > lowWl ? inv / factor
                : (1 - (orig / wl - low) / (high - low)) * inv / factor + (orig / wl - low) / (high - low) * inv;
            Assert.That(f[j], Is.EqualTo(want).Within(Math.Abs(want) * 2e-6 + 1e-30), $"j={j}");
        }
        var plain = TextConfig.ComputeInvFreq(d, theta, null);
        Assert.That(plain[0], Is.EqualTo(1f));
        Assert.That(plain[d / 2 - 1], Is.EqualTo(1 / Math.Pow(theta, (d - 2.0) / d)).Within(1e-6 * plain[d / 2 - 1]));
    }

    [Test]
    public void FixtureRopeFrequenciesAreScaledOnlyForScout()
    {
        var scout = Llama4Config.Load(FixtureModel("tiny-scout")).Text;
        var mav = Llama4Config.Load(FixtureModel("tiny-maverick")).Text;
        Assert.That(mav.RopeInvFreq, Is.EqualTo(TextConfig.ComputeInvFreq(16, 500000, null)));
        // tiny-scout: original 64 with low = high = 1: wavelengths above 64 are divided by 16, the rest kept.
        var plain = TextConfig.ComputeInvFreq(16, 500000, null);
        for (int j = 0; j < 8; j++)
        {
            double wl = 2 * Math.PI / plain[j];
            Assert.That(scout.RopeInvFreq[j], Is.EqualTo(wl > 64 ? plain[j] / 16 : plain[j]).Within(1e-7 * plain[j]));
        }
    }

    [Test]
    public void RealModelPresetsHaveThePublishedSizes()
    {
        var scout = ModelReport.FromConfig(Llama4Config.Parse(Presets.ConfigJson("scout")));
        var mav = ModelReport.FromConfig(Llama4Config.Parse(Presets.ConfigJson("maverick")));
        TestContext.Out.WriteLine($"scout: {scout.TotalParams:N0} total, {scout.ActiveParamsPerToken:N0} active; maverick: {mav.TotalParams:N0} total, {mav.ActiveParamsPerToken:N0} active");
        Assert.That(scout.TotalParams / 1e9, Is.InRange(107, 110), "Scout is 109B total");
        Assert.That(mav.TotalParams / 1e9, Is.InRange(398, 404), "Maverick is ~400B total");
        Assert.That(scout.ActiveParamsPerToken / 1e9, Is.InRange(16, 18), "17B active");
        Assert.That(mav.ActiveParamsPerToken / 1e9, Is.InRange(16, 18), "17B active");
        // SPEC § Quantization: int4_mixed Scout ≈ 51 GB int4 + 3.2 GB scales + 11 GB bf16 ≈ 66 GB; fp8_mixed Maverick ≈ 400 GB.
        Assert.That(scout.WeightBytesInt4 / 1e9, Is.InRange(63, 69), "int4_mixed Scout ≈ 66 GB");
        Assert.That(scout.WeightBytesBf16 / 1e9, Is.InRange(214, 220), "bf16 Scout ≈ 217 GB");
        Assert.That(mav.WeightBytesFp8 / 1e9, Is.InRange(420, 440), "fp8_mixed Maverick ≈ 400 GB class (433 GB incl. the bf16 layers 0/47)");
        // KV: RoPE layers keep one chunk, NoPE layers everything.
        var t = Llama4Config.Parse(Presets.ConfigJson("scout")).Text;
        long perTok = 2L * 8 * 128 * 2;
        Assert.That(ModelReport.KvCacheBytes(t, 1_000_000), Is.EqualTo(12 * 1_000_000L * perTok + 36 * 8192L * perTok));
    }
}
