using System.Text.Json;
using Llama4Native.Checkpoints;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;
using R = Llama4Native.Reference;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// The vision ops' references, composed into HF's vision tower on the host (linears and the bidirectional attention
/// as plain loops here), against the fixtures' HF goldens stage by stage: patch embeddings, after layernorm_pre,
/// every encoder layer, after layernorm_post, the adapter output and the projected features. This pins the HF
/// details the kernels encode — unfold feature order, class token LAST, the 2-D RoPE pair mapping, the
/// pixel-shuffle permutation, GELU after both adapter linears — to HF itself, not to our reading of it.
/// </summary>
[TestFixture]
public sealed class VisionOpsGoldenTests
{
    sealed class Weights(string modelDir) : IDisposable
    {
        readonly Dictionary<string, string> map = JsonDocument.Parse(File.ReadAllText(Path.Combine(modelDir, "model.safetensors.index.json")))
            .RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        readonly Dictionary<string, SafetensorsFile> files = [];

        public float[] this[string name]
        {
            get
            {
                var shard = map[name];
                if (!files.TryGetValue(shard, out var f)) files[shard] = f = SafetensorsFile.Open(Path.Combine(modelDir, shard));
                var t = f.Get(name);
                return t.DType switch
                {
                    DType.BF16 => f.Span<ushort>(t).ToArray().Select(R.BF16.ToFloat).ToArray(),
                    DType.F32 => f.Span<float>(t).ToArray(),
                    _ => throw new NotSupportedException($"{name}: {t.DType}"),
                };
            }
        }
        public void Dispose() { foreach (var f in files.Values) f.Dispose(); }
    }

    // y [rows, out] = x [rows, in] · wᵀ (+ b), double sums
    static float[] Linear(float[] x, float[] w, float[]? b, int rows, int inF, int outF)
    {
        var y = new float[rows * outF];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = b?[o] ?? 0;
                for (int i = 0; i < inF; i++) s += (double)x[r * inF + i] * w[o * inF + i];
                y[r * outF + o] = (float)s;
            }
        return y;
    }

    // bidirectional attention per tile and head: q, k, v, o [tiles·T, H, d]
    static float[] Attend(float[] q, float[] k, float[] v, int tiles, int t, int h, int d)
    {
        var o = new float[q.Length];
        var s = new double[t];
        double scale = 1 / Math.Sqrt(d);
        for (int b = 0; b < tiles; b++)
            for (int hh = 0; hh < h; hh++)
                for (int i = 0; i < t; i++)
                {
                    int qi = ((b * t + i) * h + hh) * d;
                    double m = double.NegativeInfinity, l = 0;
                    for (int j = 0; j < t; j++)
                    {
                        int kj = ((b * t + j) * h + hh) * d;
                        double dot = 0;
                        for (int e = 0; e < d; e++) dot += (double)q[qi + e] * k[kj + e];
                        s[j] = dot * scale; m = Math.Max(m, s[j]);
                    }
                    for (int j = 0; j < t; j++) { s[j] = Math.Exp(s[j] - m); l += s[j]; }
                    for (int e = 0; e < d; e++)
                    {
                        double acc = 0;
                        for (int j = 0; j < t; j++) acc += s[j] * v[((b * t + j) * h + hh) * d + e];
                        o[qi + e] = (float)(acc / l);
                    }
                }
        return o;
    }

    static void Check(string what, float[] got, ReadOnlySpan<float> want)
    {
        var r = OpCheck.Compare(what, got, want, new Tolerance(1e-4, 1e-4));
        Assert.That(r.Passed, Is.True, r.ToString());
    }

    [TestCase("tiny-scout")]
    [TestCase("tiny-maverick")]
    public void ReferencesComposeToHfsVisionTower(string fixture)
    {
        var dir = CkptTestUtil.Fixture(fixture);
        var vc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "model", "config.json"))).RootElement.GetProperty("vision_config");
        int dv = vc.GetProperty("hidden_size").GetInt32(), heads = vc.GetProperty("num_attention_heads").GetInt32();
        int img = vc.GetProperty("image_size").GetInt32(), patch = vc.GetProperty("patch_size").GetInt32();
        int layers = vc.GetProperty("num_hidden_layers").GetInt32(), inter = vc.GetProperty("intermediate_size").GetInt32();
        int projIn = vc.GetProperty("projector_input_dim").GetInt32(), projOut = vc.GetProperty("projector_output_dim").GetInt32();
        float theta = (float)vc.GetProperty("rope_theta").GetDouble(), eps = (float)vc.GetProperty("norm_eps").GetDouble();
        double ratio = vc.GetProperty("pixel_shuffle_ratio").GetDouble();
        int hd = dv / heads, g = img / patch, n = g * g, tpt = n + 1;

        using var gf = SafetensorsFile.Open(Path.Combine(dir, "golden_image.safetensors"));
        ReadOnlySpan<float> G(string name) => gf.Span<float>(gf.Get(name));
        using var w = new Weights(Path.Combine(dir, "model"));
        var pixEntry = gf.Get("pixel_values");
        int tiles = (int)pixEntry.Shape[0], ch = (int)pixEntry.Shape[1];
        const string V = "vision_model.";

        // patch embedding: unfold + bias-free linear
        var cols = new float[tiles * n * ch * patch * patch];
        R.PatchUnfold.Forward(G("pixel_values"), cols, tiles, ch, img, img, patch);
        var patches = Linear(cols, w[V + "patch_embedding.linear.weight"], null, tiles * n, ch * patch * patch, dv);
        Check("vision.patch_embeddings", patches, G("vision.patch_embeddings"));

        // class token last + positional embedding, layernorm_pre
        var x = new float[tiles * tpt * dv];
        R.VisionEmbed.Forward(patches, w[V + "class_embedding"], w[V + "positional_embedding_vlm"], x, tiles, n, dv);
        int rows = tiles * tpt;
        R.LayerNorm.Forward(x, w[V + "layernorm_pre.weight"], w[V + "layernorm_pre.bias"], x, rows, dv, eps);
        Check("vision.after_layernorm_pre", x, G("vision.after_layernorm_pre"));

        for (int l = 0; l < layers; l++)
        {
            string p = $"{V}model.layers.{l}.";
            var h = new float[x.Length];
            R.LayerNorm.Forward(x, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], h, rows, dv, eps);
            var q = Linear(h, w[p + "self_attn.q_proj.weight"], w[p + "self_attn.q_proj.bias"], rows, dv, dv);
            var k = Linear(h, w[p + "self_attn.k_proj.weight"], w[p + "self_attn.k_proj.bias"], rows, dv, dv);
            var v = Linear(h, w[p + "self_attn.v_proj.weight"], w[p + "self_attn.v_proj.bias"], rows, dv, dv);
            R.VisionRope.Forward(q, rows, heads, hd, tpt, g, theta);
            R.VisionRope.Forward(k, rows, heads, hd, tpt, g, theta);
            var att = Attend(q, k, v, tiles, tpt, heads, hd);
            var o = Linear(att, w[p + "self_attn.o_proj.weight"], w[p + "self_attn.o_proj.bias"], rows, dv, dv);
            for (int i = 0; i < x.Length; i++) x[i] += o[i];
            R.LayerNorm.Forward(x, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], h, rows, dv, eps);
            var f1 = Linear(h, w[p + "mlp.fc1.weight"], null, rows, dv, inter);
            R.BiasAct.Forward(f1, w[p + "mlp.fc1.bias"], f1, rows, inter, R.BiasAct.Activation.GeluErf);
            var f2 = Linear(f1, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"], rows, inter, dv);
            for (int i = 0; i < x.Length; i++) x[i] += f2[i];
            Check($"vision.layer_out.{l}", x, G($"vision.layer_out.{l}"));
        }
        R.LayerNorm.Forward(x, w[V + "layernorm_post.weight"], w[V + "layernorm_post.bias"], x, rows, dv, eps);
        Check("vision.after_layernorm_post", x, G("vision.after_layernorm_post"));

        // drop the class token (read in place), pixel shuffle, adapter GELU(fc2(GELU(fc1(x)))), projector
        var (_, wr, _, c2) = Llama4Native.Kernels.PixelShuffle.Sizes(n, dv, ratio);
        var shuffled = new float[tiles * wr * wr * c2];
        R.PixelShuffle.Forward(x, shuffled, tiles, tpt, n, dv, ratio);
        int srows = tiles * wr * wr;
        var a1 = Linear(shuffled, w[V + "vision_adapter.mlp.fc1.weight"], null, srows, c2, projIn);
        R.BiasAct.Forward(a1, [], a1, srows, projIn, R.BiasAct.Activation.GeluErf);
        var a2 = Linear(a1, w[V + "vision_adapter.mlp.fc2.weight"], null, srows, projIn, projOut);
        R.BiasAct.Forward(a2, [], a2, srows, projOut, R.BiasAct.Activation.GeluErf);
        Check("vision.adapter_out", a2, G("vision.adapter_out"));
        Check("image_features", a2, G("image_features"));
        var proj = w["multi_modal_projector.linear_1.weight"];
        var projected = Linear(a2, proj, null, srows, projOut, proj.Length / projOut);
        Check("image_features_projected", projected, G("image_features_projected"));
    }
}
