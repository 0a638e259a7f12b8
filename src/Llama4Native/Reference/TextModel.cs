using Llama4Native.Model;

namespace Llama4Native.Reference;

/// <summary>
/// The Llama 4 text decoder on the host, composed only of the per-op references (plain loops): the oracle for
/// the device graph on configs that have no Hugging Face golden (other head_dim, top-k, eps, RoPE scaling
/// band…). It reads like SPEC-llama4.md: h = x + Attn(RMSNorm(x)); out = h + FFN(RMSNorm(h)).
/// Weights are given as float arrays by our tensor name (bf16 weights upcast exactly).
/// </summary>
internal static class TextModel
{
    /// <summary>
    /// Logits [T, V] for <paramref name="ids"/> at positions 0..T-1; <paramref name="layerOut"/>[i] receives layer i's output [T, D].
    /// Early fusion: with <paramref name="imageRows"/> [n, D] (the projected image features), the embeddings of the n
    /// tokens equal to <paramref name="imageToken"/> (&lt;|patch|&gt;) are replaced by those rows, in order.
    /// </summary>
    public static float[] Forward(TextConfig c, Func<string, float[]> w, ReadOnlySpan<int> ids, List<float[]>? layerOut = null,
                                  float[]? imageRows = null, int imageToken = -1)
    {
        int t = ids.Length, d = c.HiddenSize, h = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, hd = c.HeadDim;
        float eps = (float)c.RmsNormEps;
        var x = new float[t * d];
        Embedding.Forward(ids, w("tok_embd"), x, c.VocabSize, d);
        if (imageRows is not null)
        {
            int slots = 0;
            foreach (int id in ids) if (id == imageToken) slots++;
            if (imageRows.Length != (long)slots * d)
                throw new ArgumentException($"the prompt has {slots} image tokens ({imageToken}) but {imageRows.Length / (double)d} image rows of {d} were given");
            for (int p = 0, k = 0; p < t; p++)
                if (ids[p] == imageToken) imageRows.AsSpan(k++ * d, d).CopyTo(x.AsSpan(p * d, d));
        }
        var pos = new int[t];
        for (int i = 0; i < t; i++) pos[i] = i;
        AttentionSeq[] seq = [new(0, t, t, 0, 0, 0)];

        float[] Linear(float[] input, string name, int outF, int inF)
        {
            var y = new float[input.Length / inF * outF];
            Gemm.Forward(input, w(name), y, input.Length / inF, outF, inF, GemmBLayout.NK);
            return y;
        }
        float[] Norm(float[] input, string name)
        {
            var y = new float[input.Length];
            RmsNorm.Forward(input, w(name), y, input.Length / d, d, eps);
            return y;
        }

        for (int layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            string p = $"blk.{layer}.";
            var hn = Norm(x, p + "attn_norm");
            var q = Linear(hn, p + "attn_q", h * hd, d);
            var k = Linear(hn, p + "attn_k", hkv * hd, d);
            var v = Linear(hn, p + "attn_v", hkv * hd, d);
            if (c.UsesRope[layer])
            {
                Rope.Apply(q, pos, c.RopeInvFreq, h, hd, c.UseQkNorm, eps);
                Rope.Apply(k, pos, c.RopeInvFreq, hkv, hd, c.UseQkNorm, eps);
            }
            else if (c.AttnTemperatureTuning)
                Rope.Temperature(q, pos, (float)c.AttnScale, (float)c.FloorScale);
            var o = new float[t * h * hd];
            Attention.Forward(q, k, v, o, seq, h, hkv, hd, hkv * hd, hd, c.UsesRope[layer] ? c.AttentionChunkSize : 0, 1 / Math.Sqrt(hd));
            var ao = Linear(o, p + "attn_o", d, h * hd);
            Add.Forward(x, ao, x);

            var fn = Norm(x, p + "ffn_norm");
            float[] ffn;
            if (c.IsMoeLayer[layer])
            {
                int inter = c.IntermediateSize, e = c.NumLocalExperts, kk = c.NumExpertsPerTok;
                var g = Linear(fn, p + "moe.shexp_gate", inter, d);
                var u = Linear(fn, p + "moe.shexp_up", inter, d);
                var a = new float[g.Length];
                SiluMul.Forward(g, u, a);
                ffn = Linear(a, p + "moe.shexp_down", d, inter);
                Moe.Layer(fn, w(p + "moe.router"), w(p + "moe.gate_up_exps"), w(p + "moe.down_exps"), ffn,
                          new float[t * e], new int[t * kk], new float[t * kk], t, d, inter, e, kk, accumulate: true, bf16: false);
            }
            else
            {
                int inter = c.IntermediateSizeMlp;
                var g = Linear(fn, p + "ffn_gate", inter, d);
                var u = Linear(fn, p + "ffn_up", inter, d);
                var a = new float[g.Length];
                SiluMul.Forward(g, u, a);
                ffn = Linear(a, p + "ffn_down", d, inter);
            }
            Add.Forward(x, ffn, x);
            layerOut?.Add((float[])x.Clone());
        }
        var xn = Norm(x, "output_norm");
        return Linear(xn, c.TieWordEmbeddings ? "tok_embd" : "output", c.VocabSize, d);
    }
}
