using Llama4Native.Model;

namespace Llama4Native.Reference;

/// <summary>
/// The Llama 4 vision tower, pixel-shuffle adapter and multimodal projector on the host, in plain loops with
/// double accumulation: the oracle for the device vision graph, and a check on our reading of Hugging Face's
/// <c>Llama4VisionModel</c> (SPEC-llama4.md, "Vision path"). Per tile (tiles never see each other):
/// <code>
///   cols  = unfold(pixels, P)                [N, C·P·P]   features ordered (channel, ky, kx), patches row-major
///   x     = cols · W_patchᵀ                  [N, Dv]      no bias
///   x     = [x; cls] + pos                   [N+1, Dv]    class token LAST
///   x     = LayerNorm_pre(x)
///   layer: x += o(Attn(RoPE2d(q), RoPE2d(k), v))  on LayerNorm(x)   (biases everywhere, no mask, scale d^-0.5)
///          x += fc2(GELU(fc1(LayerNorm(x))))
///   x     = LayerNorm_post(x)[:N]             [N, Dv]      class token dropped
///   x     = pixel_shuffle(x, r)               [N·r², Dv/r²]
///   feats = GELU(fc2(GELU(fc1(x))))           [n, Vo]      "image_features"
///   proj  = feats · W_projᵀ (+ b)             [n, D]       what replaces the &lt;|patch|&gt; embeddings
/// </code>
/// Weights are given as float arrays by our tensor name (bf16 weights upcast exactly). The intermediates can be
/// collected under the fixtures' golden names (<c>vision.patch_embeddings</c>, <c>vision.after_layernorm_pre</c>,
/// <c>vision.layer_out.{i}</c>, <c>vision.encoder_out</c>, <c>vision.after_layernorm_post</c>, <c>vision.adapter_out</c>).
/// </summary>
internal static class VisionModel
{
    /// <summary>image_features [tiles, n, Vo] for <paramref name="pixels"/> [tiles, C, S, S]. Each step is the
    /// reference of its kernel (PatchUnfold, VisionEmbed, LayerNorm, Gemm + BiasAct, VisionRope, Attention,
    /// PixelShuffle): one oracle per op, chained here exactly as the device graph chains the kernels.</summary>
    public static float[] Forward(VisionConfig c, Func<string, float[]> w, ReadOnlySpan<float> pixels, int tiles, IDictionary<string, float[]>? trace = null)
    {
        Checks.Positive(tiles, nameof(tiles));
        int C = c.NumChannels, S = c.ImageSize, P = c.PatchSize, side = c.PatchesPerSide, N = c.NumPatches, dv = c.HiddenSize;
        int heads = c.NumAttentionHeads, hd = c.HeadDim, inter = c.IntermediateSize, rows = N + 1;
        Checks.Length(pixels, (long)tiles * C * S * S, nameof(pixels));
        float eps = (float)c.NormEps;

        // Patch embedding: unfold + linear without bias.                      [tiles·N, C·P·P] → [tiles·N, Dv]
        int cpp = C * P * P;
        var cols = new float[(long)tiles * N * cpp];
        PatchUnfold.Forward(pixels, cols, tiles, C, S, S, P);
        var patches = Linear(cols, w("v.patch_embd"), null, tiles * N, dv, cpp);
        trace?.Add("vision.patch_embeddings", patches);

        // Class token appended last, positional embedding over N+1 rows.     [tiles, N+1, Dv]
        var x = new float[tiles * rows * dv];
        VisionEmbed.Forward(patches, w("v.cls_embd"), w("v.pos_embd"), x, tiles, N, dv);
        x = Norm(x, "v.pre_norm");
        trace?.Add("vision.after_layernorm_pre", (float[])x.Clone());

        var seqs = new AttentionSeq[tiles];
        for (int t = 0; t < tiles; t++) seqs[t] = new AttentionSeq(t * rows, rows, rows, rows, 0, (long)t * rows * dv);
        for (int layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            string p = $"v.blk.{layer}.";
            var hn = Norm(x, p + "attn_norm");
            var q = Linear(hn, w(p + "attn_q"), w(p + "attn_q.bias"), tiles * rows, dv, dv);
            var k = Linear(hn, w(p + "attn_k"), w(p + "attn_k.bias"), tiles * rows, dv, dv);
            var v = Linear(hn, w(p + "attn_v"), w(p + "attn_v.bias"), tiles * rows, dv, dv);
            VisionRope.Forward(q, tiles * rows, heads, hd, rows, side, (float)c.RopeTheta);
            VisionRope.Forward(k, tiles * rows, heads, hd, rows, side, (float)c.RopeTheta);
            // Bidirectional within a tile: every query sits at position N+1, past every key (0..N).
            var o = new float[q.Length];
            Attention.Forward(q, k, v, o, seqs, heads, heads, hd, dv, hd, 0, 1 / Math.Sqrt(hd));
            var ao = Linear(o, w(p + "attn_o"), w(p + "attn_o.bias"), tiles * rows, dv, dv);
            for (int i = 0; i < x.Length; i++) x[i] += ao[i];

            var fn = Norm(x, p + "ffn_norm");
            var up = Linear(fn, w(p + "ffn_up"), w(p + "ffn_up.bias"), tiles * rows, inter, dv, BiasAct.Activation.GeluErf);
            var down = Linear(up, w(p + "ffn_down"), w(p + "ffn_down.bias"), tiles * rows, dv, inter);
            for (int i = 0; i < x.Length; i++) x[i] += down[i];
            trace?.Add($"vision.layer_out.{layer}", (float[])x.Clone());
        }
        trace?.Add("vision.encoder_out", (float[])x.Clone());
        x = Norm(x, "v.post_norm");
        trace?.Add("vision.after_layernorm_post", x);

        // Pixel shuffle of each tile's N patch rows (the class row is dropped), then the adapter MLP with GELU
        // after both linears.                                                  [tiles·n, Dv/r²] → [tiles·n, Vo]
        int n = c.TokensPerTile, shufDim = N * dv / n;
        var shuffled = new float[tiles * N * dv];
        PixelShuffle.Forward(x, shuffled, tiles, rows, N, dv, c.PixelShuffleRatio);
        var a = Linear(shuffled, w("v.adapter_fc1"), null, tiles * n, c.ProjectorInputDim, shufDim, BiasAct.Activation.GeluErf);
        var feats = Linear(a, w("v.adapter_fc2"), null, tiles * n, c.ProjectorOutputDim, c.ProjectorInputDim, BiasAct.Activation.GeluErf);
        trace?.Add("vision.adapter_out", feats);
        return feats;

        float[] Norm(float[] h, string name)
        {
            var y = new float[h.Length];
            LayerNorm.Forward(h, w(name), w(name + ".bias"), y, h.Length / dv, dv, eps);
            return y;
        }
    }

    /// <summary>The multimodal projector: image_features [rows, Vo] → [rows, D] (with its bias when the config has one).</summary>
    public static float[] Project(VisionConfig c, int textHidden, Func<string, float[]> w, ReadOnlySpan<float> features)
    {
        int vo = c.VisionOutputDim;
        if (features.Length % vo != 0) throw new ArgumentException($"features hold {features.Length} values, not a multiple of vision_output_dim {vo}", nameof(features));
        return Linear(features, w("mm.proj"), c.MultiModalProjectorBias ? w("mm.proj.bias") : null, features.Length / vo, textHidden, vo);
    }

    /// <summary>y [rows, out] = act(x [rows, in] · Wᵀ + b): the Gemm reference, then the BiasAct reference.</summary>
    static float[] Linear(ReadOnlySpan<float> x, float[] weight, float[]? bias, int rows, int outF, int inF,
                          BiasAct.Activation act = BiasAct.Activation.None)
    {
        var y = new float[rows * outF];
        Gemm.Forward(x, weight, y, rows, outF, inF, GemmBLayout.NK);
        if (bias is not null || act != BiasAct.Activation.None) BiasAct.Forward(y, bias, y, rows, outF, act);
        return y;
    }
}
