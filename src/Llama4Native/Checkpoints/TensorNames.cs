using System.Text;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>What a tensor is, which decides the dtypes it may have.</summary>
internal enum TensorKind
{
    /// <summary>RMSNorm / LayerNorm weight: a float dtype.</summary>
    Norm,
    /// <summary>nn.Linear weight [out, in]: a float dtype, or F8_E4M3 + an F32 <c>weight_scale</c> [out, 1] when FP8-quantized.</summary>
    Linear,
    /// <summary>Fused routed experts [E, in, out]: a float dtype, or F8_E4M3 + an F32 <c>*_scale</c> (one per output channel).</summary>
    Experts,
    /// <summary>Embedding tables, biases, class/positional embeddings: a float dtype.</summary>
    Other,
}

/// <summary>How often a row of the table repeats.</summary>
internal enum TensorRepeat { Once, EveryTextLayer, MoeLayers, DenseLayers, EveryVisionLayer }

/// <summary>
/// One row of the name table. <see cref="Hf"/> and <see cref="Ours"/> are templates: <c>{lm}</c> is the text
/// model's prefix (<c>language_model.</c> in Llama4ForConditionalGeneration, empty in Llama4ForCausalLM) and
/// <c>{i}</c> the layer index. <see cref="ShapeDoc"/> is the shape formula in config letters.
/// </summary>
internal sealed record TensorRule(
    string Hf, string Ours, TensorRepeat Repeat, TensorKind Kind, string ShapeDoc,
    Func<Llama4Config, long[]> Shape,
    Func<Llama4Config, bool>? When = null,
    string? ScaleShapeDoc = null,
    Func<Llama4Config, long[]>? ScaleShape = null);

/// <summary>A tensor the config says the checkpoint must hold (or an FP8 scale companion it may hold).</summary>
internal sealed record ExpectedTensor(string Ours, string Hf, long[] Shape, TensorRule Rule, int Layer, bool IsScale = false)
{
    /// <summary>The module path transformers uses for <c>modules_to_not_convert</c> (the name without its parameter).</summary>
    public string Module => Hf[..Hf.LastIndexOf('.')];
}

/// <summary>
/// THE table mapping Hugging Face Llama 4 checkpoint names to ours. Nothing else in the runtime knows an
/// HF name. Our names are graph-style (<c>blk.{i}.attn_q</c>); shapes are kept exactly as stored (no
/// transposes at load): nn.Linear weights are [out, in] row-major, fused experts are input-major
/// [E, in, out]. FP8 companions are named <c>{ours}.scale</c>; biases <c>{ours}.bias</c>.
/// Letters: V vocab, D hidden, L layers, H heads, Hkv kv heads, d head_dim, E experts, I expert width,
/// Im dense MLP width; vision: Dv hidden, Iv MLP width, C channels, P patch, N patches per tile,
/// Pin/Pout projector dims, Vo vision_output_dim.
/// </summary>
internal static class TensorNames
{
    static long[] S(params long[] d) => d;
    static TextConfig T(Llama4Config c) => c.Text;
    static VisionConfig Vi(Llama4Config c) => c.Vision!;

    /// <summary>The table. Order is the checkpoint-writing order used by <c>llama4 synth</c>.</summary>
    public static readonly IReadOnlyList<TensorRule> Rules =
    [
        // ---- text decoder ----
        new("{lm}model.embed_tokens.weight", "tok_embd", TensorRepeat.Once, TensorKind.Other, "[V, D]", c => S(T(c).VocabSize, T(c).HiddenSize)),
        new("{lm}model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm", TensorRepeat.EveryTextLayer, TensorKind.Norm, "[D]", c => S(T(c).HiddenSize)),
        new("{lm}model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q", TensorRepeat.EveryTextLayer, TensorKind.Linear, "[H·d, D]",
            c => S((long)T(c).NumAttentionHeads * T(c).HeadDim, T(c).HiddenSize), null, "[H·d, 1]", c => S((long)T(c).NumAttentionHeads * T(c).HeadDim, 1)),
        new("{lm}model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k", TensorRepeat.EveryTextLayer, TensorKind.Linear, "[Hkv·d, D]",
            c => S((long)T(c).NumKeyValueHeads * T(c).HeadDim, T(c).HiddenSize), null, "[Hkv·d, 1]", c => S((long)T(c).NumKeyValueHeads * T(c).HeadDim, 1)),
        new("{lm}model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v", TensorRepeat.EveryTextLayer, TensorKind.Linear, "[Hkv·d, D]",
            c => S((long)T(c).NumKeyValueHeads * T(c).HeadDim, T(c).HiddenSize), null, "[Hkv·d, 1]", c => S((long)T(c).NumKeyValueHeads * T(c).HeadDim, 1)),
        new("{lm}model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_o", TensorRepeat.EveryTextLayer, TensorKind.Linear, "[D, H·d]",
            c => S(T(c).HiddenSize, (long)T(c).NumAttentionHeads * T(c).HeadDim), null, "[D, 1]", c => S(T(c).HiddenSize, 1)),
        new("{lm}model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias", TensorRepeat.EveryTextLayer, TensorKind.Other, "[H·d] (attention_bias)",
            c => S((long)T(c).NumAttentionHeads * T(c).HeadDim), c => T(c).AttentionBias),
        new("{lm}model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias", TensorRepeat.EveryTextLayer, TensorKind.Other, "[Hkv·d] (attention_bias)",
            c => S((long)T(c).NumKeyValueHeads * T(c).HeadDim), c => T(c).AttentionBias),
        new("{lm}model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias", TensorRepeat.EveryTextLayer, TensorKind.Other, "[Hkv·d] (attention_bias)",
            c => S((long)T(c).NumKeyValueHeads * T(c).HeadDim), c => T(c).AttentionBias),
        new("{lm}model.layers.{i}.self_attn.o_proj.bias", "blk.{i}.attn_o.bias", TensorRepeat.EveryTextLayer, TensorKind.Other, "[D] (attention_bias)",
            c => S(T(c).HiddenSize), c => T(c).AttentionBias),
        new("{lm}model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm", TensorRepeat.EveryTextLayer, TensorKind.Norm, "[D]", c => S(T(c).HiddenSize)),
        // MoE layers: router, fused routed experts (gate first: gate = [..., :I], up = [..., I:]), shared expert.
        new("{lm}model.layers.{i}.feed_forward.router.weight", "blk.{i}.moe.router", TensorRepeat.MoeLayers, TensorKind.Linear, "[E, D]",
            c => S(T(c).NumLocalExperts, T(c).HiddenSize), null, "[E, 1]", c => S(T(c).NumLocalExperts, 1)),
        new("{lm}model.layers.{i}.feed_forward.experts.gate_up_proj", "blk.{i}.moe.gate_up_exps", TensorRepeat.MoeLayers, TensorKind.Experts, "[E, D, 2I]",
            c => S(T(c).NumLocalExperts, T(c).HiddenSize, 2L * T(c).IntermediateSize), null, "[E, 1, 2I]", c => S(T(c).NumLocalExperts, 1, 2L * T(c).IntermediateSize)),
        new("{lm}model.layers.{i}.feed_forward.experts.down_proj", "blk.{i}.moe.down_exps", TensorRepeat.MoeLayers, TensorKind.Experts, "[E, I, D]",
            c => S(T(c).NumLocalExperts, T(c).IntermediateSize, T(c).HiddenSize), null, "[E, D, 1]", c => S(T(c).NumLocalExperts, T(c).HiddenSize, 1)),
        new("{lm}model.layers.{i}.feed_forward.shared_expert.gate_proj.weight", "blk.{i}.moe.shexp_gate", TensorRepeat.MoeLayers, TensorKind.Linear, "[I, D]",
            c => S(T(c).IntermediateSize, T(c).HiddenSize), null, "[I, 1]", c => S(T(c).IntermediateSize, 1)),
        new("{lm}model.layers.{i}.feed_forward.shared_expert.up_proj.weight", "blk.{i}.moe.shexp_up", TensorRepeat.MoeLayers, TensorKind.Linear, "[I, D]",
            c => S(T(c).IntermediateSize, T(c).HiddenSize), null, "[I, 1]", c => S(T(c).IntermediateSize, 1)),
        new("{lm}model.layers.{i}.feed_forward.shared_expert.down_proj.weight", "blk.{i}.moe.shexp_down", TensorRepeat.MoeLayers, TensorKind.Linear, "[D, I]",
            c => S(T(c).HiddenSize, T(c).IntermediateSize), null, "[D, 1]", c => S(T(c).HiddenSize, 1)),
        // Dense layers: SwiGLU MLP of width Im = intermediate_size_mlp.
        new("{lm}model.layers.{i}.feed_forward.gate_proj.weight", "blk.{i}.ffn_gate", TensorRepeat.DenseLayers, TensorKind.Linear, "[Im, D]",
            c => S(T(c).IntermediateSizeMlp, T(c).HiddenSize), null, "[Im, 1]", c => S(T(c).IntermediateSizeMlp, 1)),
        new("{lm}model.layers.{i}.feed_forward.up_proj.weight", "blk.{i}.ffn_up", TensorRepeat.DenseLayers, TensorKind.Linear, "[Im, D]",
            c => S(T(c).IntermediateSizeMlp, T(c).HiddenSize), null, "[Im, 1]", c => S(T(c).IntermediateSizeMlp, 1)),
        new("{lm}model.layers.{i}.feed_forward.down_proj.weight", "blk.{i}.ffn_down", TensorRepeat.DenseLayers, TensorKind.Linear, "[D, Im]",
            c => S(T(c).HiddenSize, T(c).IntermediateSizeMlp), null, "[D, 1]", c => S(T(c).HiddenSize, 1)),
        new("{lm}model.norm.weight", "output_norm", TensorRepeat.Once, TensorKind.Norm, "[D]", c => S(T(c).HiddenSize)),
        new("{lm}lm_head.weight", "output", TensorRepeat.Once, TensorKind.Linear, "[V, D] (absent when tie_word_embeddings)",
            c => S(T(c).VocabSize, T(c).HiddenSize), c => !T(c).TieWordEmbeddings, "[V, 1]", c => S(T(c).VocabSize, 1)),

        // ---- vision tower (Llama4ForConditionalGeneration only) ----
        new("vision_model.patch_embedding.linear.weight", "v.patch_embd", TensorRepeat.Once, TensorKind.Linear, "[Dv, C·P·P]",
            c => S(Vi(c).HiddenSize, (long)Vi(c).NumChannels * Vi(c).PatchSize * Vi(c).PatchSize)),
        new("vision_model.class_embedding", "v.cls_embd", TensorRepeat.Once, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.positional_embedding_vlm", "v.pos_embd", TensorRepeat.Once, TensorKind.Other, "[N+1, Dv]",
            c => S(Vi(c).NumPatches + 1L, Vi(c).HiddenSize)),
        new("vision_model.layernorm_pre.weight", "v.pre_norm", TensorRepeat.Once, TensorKind.Norm, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.layernorm_pre.bias", "v.pre_norm.bias", TensorRepeat.Once, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.input_layernorm.weight", "v.blk.{i}.attn_norm", TensorRepeat.EveryVisionLayer, TensorKind.Norm, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.input_layernorm.bias", "v.blk.{i}.attn_norm.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.q_proj.weight", "v.blk.{i}.attn_q", TensorRepeat.EveryVisionLayer, TensorKind.Linear, "[Dv, Dv]", c => S(Vi(c).HiddenSize, Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.q_proj.bias", "v.blk.{i}.attn_q.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.k_proj.weight", "v.blk.{i}.attn_k", TensorRepeat.EveryVisionLayer, TensorKind.Linear, "[Dv, Dv]", c => S(Vi(c).HiddenSize, Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.k_proj.bias", "v.blk.{i}.attn_k.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.v_proj.weight", "v.blk.{i}.attn_v", TensorRepeat.EveryVisionLayer, TensorKind.Linear, "[Dv, Dv]", c => S(Vi(c).HiddenSize, Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.v_proj.bias", "v.blk.{i}.attn_v.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.o_proj.weight", "v.blk.{i}.attn_o", TensorRepeat.EveryVisionLayer, TensorKind.Linear, "[Dv, Dv]", c => S(Vi(c).HiddenSize, Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.self_attn.o_proj.bias", "v.blk.{i}.attn_o.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.post_attention_layernorm.weight", "v.blk.{i}.ffn_norm", TensorRepeat.EveryVisionLayer, TensorKind.Norm, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.post_attention_layernorm.bias", "v.blk.{i}.ffn_norm.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.mlp.fc1.weight", "v.blk.{i}.ffn_up", TensorRepeat.EveryVisionLayer, TensorKind.Linear, "[Iv, Dv]", c => S(Vi(c).IntermediateSize, Vi(c).HiddenSize)),
        new("vision_model.model.layers.{i}.mlp.fc1.bias", "v.blk.{i}.ffn_up.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Iv]", c => S(Vi(c).IntermediateSize)),
        new("vision_model.model.layers.{i}.mlp.fc2.weight", "v.blk.{i}.ffn_down", TensorRepeat.EveryVisionLayer, TensorKind.Linear, "[Dv, Iv]", c => S(Vi(c).HiddenSize, Vi(c).IntermediateSize)),
        new("vision_model.model.layers.{i}.mlp.fc2.bias", "v.blk.{i}.ffn_down.bias", TensorRepeat.EveryVisionLayer, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.layernorm_post.weight", "v.post_norm", TensorRepeat.Once, TensorKind.Norm, "[Dv]", c => S(Vi(c).HiddenSize)),
        new("vision_model.layernorm_post.bias", "v.post_norm.bias", TensorRepeat.Once, TensorKind.Other, "[Dv]", c => S(Vi(c).HiddenSize)),
        // Pixel-shuffle adapter: fc1 reads the shuffled features (Iv = Dv/r²), both without bias.
        new("vision_model.vision_adapter.mlp.fc1.weight", "v.adapter_fc1", TensorRepeat.Once, TensorKind.Linear, "[Pin, Iv]", c => S(Vi(c).ProjectorInputDim, Vi(c).IntermediateSize)),
        new("vision_model.vision_adapter.mlp.fc2.weight", "v.adapter_fc2", TensorRepeat.Once, TensorKind.Linear, "[Pout, Pout]", c => S(Vi(c).ProjectorOutputDim, Vi(c).ProjectorOutputDim)),

        // ---- projector ----
        new("multi_modal_projector.linear_1.weight", "mm.proj", TensorRepeat.Once, TensorKind.Linear, "[D, Vo]", c => S(T(c).HiddenSize, Vi(c).VisionOutputDim)),
        new("multi_modal_projector.linear_1.bias", "mm.proj.bias", TensorRepeat.Once, TensorKind.Other, "[D] (multi_modal_projector_bias)",
            c => S(T(c).HiddenSize), c => Vi(c).MultiModalProjectorBias),
    ];

    static bool IsVision(TensorRule r) => r.Hf.StartsWith("vision_model.", StringComparison.Ordinal) || r.Hf.StartsWith("multi_modal_projector.", StringComparison.Ordinal);

    /// <summary>The text prefix of HF names for this architecture.</summary>
    public static string TextPrefix(Llama4Config c) => c.Architecture == Llama4Config.ConditionalGeneration ? "language_model." : "";

    /// <summary>
    /// Every tensor the config requires, in writing order (layer by layer), without FP8 scale companions
    /// (those depend on the dtypes actually stored; see <see cref="ScaleFor"/>).
    /// </summary>
    public static List<ExpectedTensor> Expected(Llama4Config c)
    {
        var list = new List<ExpectedTensor>();
        string lm = TextPrefix(c);
        var t = c.Text;
        void Add(TensorRule r, int layer) => list.Add(new ExpectedTensor(
            Fill(r.Ours, "", layer), Fill(r.Hf, lm, layer), r.Shape(c), r, layer));
        bool Applies(TensorRule r) => (!IsVision(r) || c.Vision is not null) && (r.When?.Invoke(c) ?? true);

        // Global text tensors before the layers (embeddings), the rest after, like transformers' order.
        foreach (var r in Rules.Where(r => r.Repeat == TensorRepeat.Once && !IsVision(r) && r.Ours == "tok_embd" && Applies(r))) Add(r, -1);
        for (int i = 0; i < t.NumHiddenLayers; i++)
            foreach (var r in Rules)
            {
                if (!Applies(r)) continue;
                bool take = r.Repeat switch
                {
                    TensorRepeat.EveryTextLayer => true,
                    TensorRepeat.MoeLayers => t.IsMoeLayer[i],
                    TensorRepeat.DenseLayers => !t.IsMoeLayer[i],
                    _ => false,
                };
                if (take) Add(r, i);
            }
        foreach (var r in Rules.Where(r => r.Repeat == TensorRepeat.Once && !IsVision(r) && r.Ours != "tok_embd" && Applies(r))) Add(r, -1);
        if (c.Vision is { } v)
        {
            foreach (var r in Rules.Where(r => IsVision(r) && r.Repeat == TensorRepeat.Once && r.Hf.StartsWith("vision_model.", StringComparison.Ordinal) &&
                                               !r.Hf.Contains("layernorm_post") && !r.Hf.Contains("adapter") && Applies(r))) Add(r, -1);
            for (int i = 0; i < v.NumHiddenLayers; i++)
                foreach (var r in Rules.Where(r => r.Repeat == TensorRepeat.EveryVisionLayer && Applies(r))) Add(r, i);
            foreach (var r in Rules.Where(r => IsVision(r) && r.Repeat == TensorRepeat.Once &&
                                               (r.Hf.Contains("layernorm_post") || r.Hf.Contains("adapter") || r.Hf.StartsWith("multi_modal_projector.", StringComparison.Ordinal)) && Applies(r))) Add(r, -1);
        }
        return list;
    }

    /// <summary>
    /// The FP8 scale companion of <paramref name="e"/> when it is stored as F8_E4M3: fused experts
    /// <c>{hf}_scale</c>, linears <c>{module}.weight_scale</c>; ours <c>{ours}.scale</c>. Null for kinds that cannot be FP8.
    /// </summary>
    public static ExpectedTensor? ScaleFor(Llama4Config c, ExpectedTensor e)
    {
        if (e.IsScale || e.Rule.ScaleShape is null) return null;
        string hf = e.Rule.Kind == TensorKind.Experts ? e.Hf + "_scale" : e.Module + ".weight_scale";
        return new ExpectedTensor(e.Ours + ".scale", hf, e.Rule.ScaleShape(c), e.Rule, e.Layer, IsScale: true);
    }

    static string Fill(string template, string lm, int layer) =>
        template.Replace("{lm}", lm, StringComparison.Ordinal).Replace("{i}", layer.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);

    public static bool IsFloat(DType t) => t is DType.BF16 or DType.F16 or DType.F32;

    /// <summary>The name table as a Markdown table (for docs and <c>llama4 inspect --names</c>).</summary>
    public static string Describe()
    {
        var sb = new StringBuilder();
        sb.AppendLine("| HF name | ours | shape | dtype rule |");
        sb.AppendLine("| --- | --- | --- | --- |");
        foreach (var r in Rules)
        {
            string when = r.Repeat switch
            {
                TensorRepeat.MoeLayers => " (MoE layers)",
                TensorRepeat.DenseLayers => " (dense layers)",
                _ => "",
            };
            string dtype = r.Kind switch
            {
                TensorKind.Experts => $"BF16/F16/F32, or F8_E4M3 with `{r.Hf}_scale` → `{r.Ours}.scale` F32 {r.ScaleShapeDoc}",
                TensorKind.Linear when r.ScaleShape is not null =>
                    $"BF16/F16/F32, or F8_E4M3 with `{r.Hf[..r.Hf.LastIndexOf('.')]}.weight_scale` → `{r.Ours}.scale` F32 {r.ScaleShapeDoc}",
                _ => "BF16/F16/F32",
            };
            sb.AppendLine($"| `{r.Hf}` | `{r.Ours}`{when} | {r.ShapeDoc} | {dtype} |");
        }
        return sb.ToString();
    }
}
