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
public static class VisionModel
{
    /// <summary>image_features [tiles, n, Vo] for <paramref name="pixels"/> [tiles, C, S, S].</summary>
    public static float[] Forward(VisionConfig c, Func<string, float[]> w, ReadOnlySpan<float> pixels, int tiles, IDictionary<string, float[]>? trace = null)
    {
        Checks.Positive(tiles, nameof(tiles));
        int C = c.NumChannels, S = c.ImageSize, P = c.PatchSize, side = c.PatchesPerSide, N = c.NumPatches, dv = c.HiddenSize;
        int heads = c.NumAttentionHeads, hd = c.HeadDim, inter = c.IntermediateSize, rows = N + 1;
        Checks.Length(pixels, (long)tiles * C * S * S, nameof(pixels));
        float eps = (float)c.NormEps;

        // Patch embedding: unfold + linear without bias.                      [tiles·N, C·P·P] → [tiles·N, Dv]
        int cpp = C * P * P;
        var cols = Unfold(pixels, tiles, C, S, P);
        var patches = Linear(cols, w("v.patch_embd"), null, tiles * N, dv, cpp);
        trace?.Add("vision.patch_embeddings", patches);

        // Class token appended last, positional embedding over N+1 rows.     [tiles, N+1, Dv]
        var cls = w("v.cls_embd"); var pos = w("v.pos_embd");
        var x = new float[tiles * rows * dv];
        for (int t = 0; t < tiles; t++)
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < dv; i++)
                {
                    float v = r < N ? patches[(t * N + r) * dv + i] : cls[i];
                    x[(t * rows + r) * dv + i] = v + pos[r * dv + i];
                }
        x = LayerNorm(x, w("v.pre_norm"), w("v.pre_norm.bias"), dv, eps);
        trace?.Add("vision.after_layernorm_pre", (float[])x.Clone());

        var (cosT, sinT) = RopeTables(c);
        var seqs = new AttentionSeq[tiles];
        for (int t = 0; t < tiles; t++) seqs[t] = new AttentionSeq(t * rows, rows, rows, rows, 0, (long)t * rows * dv);
        for (int layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            string p = $"v.blk.{layer}.";
            var hn = LayerNorm(x, w(p + "attn_norm"), w(p + "attn_norm.bias"), dv, eps);
            var q = Linear(hn, w(p + "attn_q"), w(p + "attn_q.bias"), tiles * rows, dv, dv);
            var k = Linear(hn, w(p + "attn_k"), w(p + "attn_k.bias"), tiles * rows, dv, dv);
            var v = Linear(hn, w(p + "attn_v"), w(p + "attn_v.bias"), tiles * rows, dv, dv);
            Rope2d(q, cosT, sinT, tiles, rows, heads, hd);
            Rope2d(k, cosT, sinT, tiles, rows, heads, hd);
            // Bidirectional within a tile: every query sits at position N+1, past every key (0..N).
            var o = new float[q.Length];
            Attention.Forward(q, k, v, o, seqs, heads, heads, hd, dv, hd, 0, 1 / Math.Sqrt(hd));
            var ao = Linear(o, w(p + "attn_o"), w(p + "attn_o.bias"), tiles * rows, dv, dv);
            for (int i = 0; i < x.Length; i++) x[i] += ao[i];

            var fn = LayerNorm(x, w(p + "ffn_norm"), w(p + "ffn_norm.bias"), dv, eps);
            var up = Linear(fn, w(p + "ffn_up"), w(p + "ffn_up.bias"), tiles * rows, inter, dv);
            Gelu(up);
            var down = Linear(up, w(p + "ffn_down"), w(p + "ffn_down.bias"), tiles * rows, dv, inter);
            for (int i = 0; i < x.Length; i++) x[i] += down[i];
            trace?.Add($"vision.layer_out.{layer}", (float[])x.Clone());
        }
        trace?.Add("vision.encoder_out", (float[])x.Clone());
        x = LayerNorm(x, w("v.post_norm"), w("v.post_norm.bias"), dv, eps);
        trace?.Add("vision.after_layernorm_post", x);

        // Drop the class token (the last row of each tile).                   [tiles, N, Dv]
        var body = new float[tiles * N * dv];
        for (int t = 0; t < tiles; t++) x.AsSpan(t * rows * dv, N * dv).CopyTo(body.AsSpan(t * N * dv));

        // Pixel shuffle, then the adapter MLP (GELU after both linears).      [tiles·n, Dv/r²] → [tiles·n, Vo]
        var shuffled = PixelShuffle(body, tiles, N, dv, c.PixelShuffleRatio);
        int n = c.TokensPerTile, shufDim = shuffled.Length / (tiles * n);
        var a = Linear(shuffled, w("v.adapter_fc1"), null, tiles * n, c.ProjectorInputDim, shufDim);
        Gelu(a);
        var feats = Linear(a, w("v.adapter_fc2"), null, tiles * n, c.ProjectorOutputDim, c.ProjectorInputDim);
        Gelu(feats);
        trace?.Add("vision.adapter_out", feats);
        return feats;
    }

    /// <summary>The multimodal projector: image_features [rows, Vo] → [rows, D] (with its bias when the config has one).</summary>
    public static float[] Project(VisionConfig c, int textHidden, Func<string, float[]> w, ReadOnlySpan<float> features)
    {
        int vo = c.VisionOutputDim;
        if (features.Length % vo != 0) throw new ArgumentException($"features hold {features.Length} values, not a multiple of vision_output_dim {vo}", nameof(features));
        return Linear(features, w("mm.proj"), c.MultiModalProjectorBias ? w("mm.proj.bias") : null, features.Length / vo, textHidden, vo);
    }

    /// <summary>torch.nn.Unfold(P, stride P) then permute: [tiles, C, S, S] → [tiles·N, C·P·P], features (c, ky, kx), patches row-major.</summary>
    public static float[] Unfold(ReadOnlySpan<float> pixels, int tiles, int channels, int size, int patch)
    {
        if (size % patch != 0) throw new ArgumentException($"unfold: image side {size} is not a multiple of the patch {patch}");
        Checks.Length(pixels, (long)tiles * channels * size * size, nameof(pixels));
        int side = size / patch, n = side * side, cpp = channels * patch * patch;
        var cols = new float[(long)tiles * n * cpp];
        for (int t = 0; t < tiles; t++)
            for (int py = 0; py < side; py++)
                for (int px = 0; px < side; px++)
                {
                    long row = ((long)t * n + py * side + px) * cpp;
                    for (int ch = 0; ch < channels; ch++)
                        for (int ky = 0; ky < patch; ky++)
                            for (int kx = 0; kx < patch; kx++)
                                cols[row + (ch * patch + ky) * patch + kx] =
                                    pixels[(int)((((long)t * channels + ch) * size + py * patch + ky) * size + px * patch + kx)];
                }
        return cols;
    }

    /// <summary>
    /// HF's <c>pixel_shuffle</c> step by step, each view and permute written out as index arithmetic:
    /// [B, N, C] → view [B, h, w·r, C/r] → permute(0,2,1,3) → view [B, h·r, w·r, C/r²] → permute(0,2,1,3) → [B, N·r², C/r²].
    /// </summary>
    public static float[] PixelShuffle(ReadOnlySpan<float> x, int batch, int patches, int channels, double ratio)
    {
        int h = (int)Math.Round(Math.Sqrt(patches)), wd = h;
        if (h * h != patches) throw new ArgumentException($"pixel shuffle: {patches} patches is not a square");
        Checks.Length(x, (long)batch * patches * channels, nameof(x));
        int w1 = (int)(wd * ratio), c1 = (int)(channels / ratio);           // after the first view: [h, w1, c1]
        int h2 = (int)(h * ratio), w2 = (int)(wd * ratio), c2 = (int)(channels / (ratio * ratio)); // second view: [h2, w2, c2]
        int per = patches * channels;
        if ((long)h * w1 * c1 != per || (long)h2 * w2 * c2 != per)
            throw new ArgumentException($"pixel shuffle: ratio {ratio} does not divide a {h}×{wd}×{channels} grid");
        var outp = new float[x.Length];
        var pbuf = new float[per];
        for (int b = 0; b < batch; b++)
        {
            var a = x.Slice(b * per, per);
            // P[x1, y, c] = A[y, x1, c] with A viewed [h, w1, c1]: P is [w1, h, c1].
            for (int y = 0; y < h; y++)
                for (int x1 = 0; x1 < w1; x1++)
                    for (int c = 0; c < c1; c++)
                        pbuf[(x1 * h + y) * c1 + c] = a[(y * w1 + x1) * c1 + c];
            // Q[x2, y2, c] = P'[y2, x2, c] with P viewed [h2, w2, c2]: Q is [w2, h2, c2], flattened to [w2·h2, c2].
            var q = outp.AsSpan(b * per, per);
            for (int y2 = 0; y2 < h2; y2++)
                for (int x2 = 0; x2 < w2; x2++)
                    for (int c = 0; c < c2; c++)
                        q[(x2 * h2 + y2) * c2 + c] = pbuf[(y2 * w2 + x2) * c2 + c];
        }
        return outp;
    }

    /// <summary>
    /// The 2-D RoPE tables [N+1, d/2] (HF's Llama4VisionRotaryEmbedding): pair j &lt; d/4 turns by (col+1)·f_j, pair
    /// d/4 + j by (row+1)·f_j with f_j = θ^(-4j/d) (fp32, as torch computes it); the class token (last row) not at all.
    /// </summary>
    public static (double[] Cos, double[] Sin) RopeTables(VisionConfig c)
    {
        int side = c.PatchesPerSide, n = c.NumPatches, hd = c.HeadDim, quarter = hd / 4, freqDim = hd / 2;
        var f = new float[quarter];
        for (int j = 0; j < quarter; j++) f[j] = 1f / MathF.Pow((float)c.RopeTheta, 2f * j / freqDim);
        var cos = new double[(n + 1) * freqDim]; var sin = new double[(n + 1) * freqDim];
        for (int r = 0; r <= n; r++)
            for (int j = 0; j < freqDim; j++)
            {
                double angle = 0;
                if (r < n)
                {
                    int coord = j < quarter ? r % side : r / side;
                    angle = (float)((coord + 1) * f[j % quarter]); // fp32 product, as in torch
                }
                cos[r * freqDim + j] = Math.Cos(angle);
                sin[r * freqDim + j] = Math.Sin(angle);
            }
        return (cos, sin);
    }

    /// <summary>Rotates interleaved pairs (x[2j], x[2j+1]) of every head of x [tiles·rows, heads, d] by the tables, in place.</summary>
    static void Rope2d(float[] x, double[] cos, double[] sin, int tiles, int rows, int heads, int hd)
    {
        int half = hd / 2;
        for (int t = 0; t < tiles; t++)
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < heads; h++)
                {
                    int o = ((t * rows + r) * heads + h) * hd;
                    for (int j = 0; j < half; j++)
                    {
                        double cs = cos[r * half + j], sn = sin[r * half + j], a = x[o + 2 * j], b = x[o + 2 * j + 1];
                        x[o + 2 * j] = (float)(a * cs - b * sn);
                        x[o + 2 * j + 1] = (float)(a * sn + b * cs);
                    }
                }
    }

    /// <summary>y [rows, out] = x [rows, in] · Wᵀ (+ b), double sums.</summary>
    static float[] Linear(ReadOnlySpan<float> x, float[] weight, float[]? bias, int rows, int outF, int inF)
    {
        Checks.Length(x, (long)rows * inF, nameof(x));
        Checks.Length((ReadOnlySpan<float>)weight, (long)outF * inF, nameof(weight));
        if (bias is not null) Checks.Length((ReadOnlySpan<float>)bias, outF, nameof(bias));
        var y = new float[rows * outF];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = bias?[o] ?? 0;
                for (int i = 0; i < inF; i++) s += (double)x[r * inF + i] * weight[o * inF + i];
                y[r * outF + o] = (float)s;
            }
        return y;
    }

    /// <summary>nn.LayerNorm per row of n: (x − mean) / sqrt(var + eps) · w + b, biased variance, double maths.</summary>
    public static float[] LayerNorm(ReadOnlySpan<float> x, float[] w, float[] b, int n, float eps)
    {
        if (x.Length % n != 0) throw new ArgumentException($"layernorm: {x.Length} values are not rows of {n}");
        Checks.Length((ReadOnlySpan<float>)w, n, nameof(w));
        Checks.Length((ReadOnlySpan<float>)b, n, nameof(b));
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / n; r++)
        {
            var row = x.Slice(r * n, n);
            double mean = 0, var = 0;
            for (int i = 0; i < n; i++) mean += row[i];
            mean /= n;
            for (int i = 0; i < n; i++) var += (row[i] - mean) * (row[i] - mean);
            double inv = 1 / Math.Sqrt(var / n + eps);
            for (int i = 0; i < n; i++) y[r * n + i] = (float)((row[i] - mean) * inv * w[i] + b[i]);
        }
        return y;
    }

    /// <summary>Exact GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)), in place.</summary>
    public static void Gelu(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = (float)(0.5 * x[i] * (1 + Erf(x[i] / Math.Sqrt(2))));
    }

    /// <summary>erf in double to ~1e-15: the Maclaurin series below |x| = 3, the continued fraction of erfc above.</summary>
    public static double Erf(double x)
    {
        double ax = Math.Abs(x);
        if (ax < 3)
        {
            double term = ax, sum = ax, x2 = ax * ax;
            for (int n = 1; n < 200 && Math.Abs(term) > 1e-17 * Math.Abs(sum); n++)
            {
                term *= -x2 / n;
                sum += term / (2 * n + 1);
            }
            return Math.Sign(x) * sum * 2 / Math.Sqrt(Math.PI);
        }
        if (ax > 27) return Math.Sign(x);
        // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))), evaluated from the tail.
        double cf = ax;
        for (int k = 80; k >= 1; k--) cf = ax + k / 2.0 / cf;
        double erfc = Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / cf;
        return Math.Sign(x) * (1 - erfc);
    }
}
