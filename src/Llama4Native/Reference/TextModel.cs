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
    /// Hooks into <see cref="Forward"/> for measuring what a storage format or a routing choice does (the FP8 KV cache's
    /// error per layer, routing flips): <see cref="StoreKv"/> rewrites the keys and values as the cache would store them
    /// (after RoPE / qk-norm, before attention); <see cref="PinnedRouting"/> forces each MoE layer's top-k (the scores still
    /// follow that layer's router logits); <see cref="Routing"/> and <see cref="RouterLogits"/> receive what each MoE layer chose.
    /// </summary>
    public sealed class Probe
    {
        /// <summary>(layer, isValue, [T, Hkv·d]) — rewrite in place to the values attention will read.</summary>
        public Action<int, bool, float[]>? StoreKv { get; init; }
        /// <summary>layer → top-k experts [T·k] to use instead of the router's.</summary>
        public IReadOnlyDictionary<int, int[]>? PinnedRouting { get; init; }
        public Dictionary<int, int[]> Routing { get; } = [];
        public Dictionary<int, float[]> RouterLogits { get; } = [];
    }

    /// <summary>
    /// Logits [T, V] for <paramref name="ids"/> at positions 0..T-1; <paramref name="layerOut"/>[i] receives layer i's output [T, D].
    /// Early fusion: with <paramref name="imageRows"/> [n, D] (the projected image features), the embeddings of the n
    /// tokens equal to <paramref name="imageToken"/> (&lt;|patch|&gt;) are replaced by those rows, in order.
    /// </summary>
    public static float[] Forward(TextConfig c, Func<string, float[]> w, ReadOnlySpan<int> ids, List<float[]>? layerOut = null,
                                  float[]? imageRows = null, int imageToken = -1, Probe? probe = null)
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
            if (probe?.StoreKv is { } store) { store(layer, false, k); store(layer, true, v); }
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
                var logits = new float[t * e]; var idx = new int[t * kk]; var score = new float[t * kk];
                Moe.Router(fn, w(p + "moe.router"), logits, idx, score, t, d, e, kk, bf16: false);
                if (probe?.PinnedRouting is { } pin && pin.TryGetValue(layer, out var forced))
                {
                    forced.CopyTo(idx, 0);
                    for (int q2 = 0; q2 < t * kk; q2++) score[q2] = (float)(1.0 / (1.0 + Math.Exp(-(double)logits[q2 / kk * e + idx[q2]])));
                }
                if (probe is not null) { probe.Routing[layer] = (int[])idx.Clone(); probe.RouterLogits[layer] = logits; }
                Moe.Experts(fn, idx, score, w(p + "moe.gate_up_exps"), w(p + "moe.down_exps"), ffn, t, d, inter, e, kk, accumulate: true, bf16: false);
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
