namespace Llama4Native.Checkpoints;

/// <summary>
/// config.json texts for <c>llama4 synth --preset</c>. tiny-scout / tiny-maverick mirror the test fixtures'
/// configs; scout / maverick are the published shapes of Llama-4-Scout-17B-16E and
/// Llama-4-Maverick-17B-128E (../shared/SPEC-llama4.md). They are data, read through the same parser as
/// any checkpoint's config.json.
/// </summary>
internal static class Presets
{
    public static readonly IReadOnlyList<string> Names = ["tiny-scout", "tiny-maverick", "tiny-maverick-fp8", "tiny-demo", "scout", "maverick", "maverick-fp8"];

    public static string ConfigJson(string name) => name switch
    {
        "tiny-scout" => Build(text: """
            "attention_chunk_size": 16, "attn_scale": 0.1, "attn_temperature_tuning": true, "floor_scale": 4,
            "head_dim": 16, "hidden_size": 64, "interleave_moe_layer_step": 1, "intermediate_size": 48,
            "intermediate_size_mlp": 128, "max_position_embeddings": 4096, "no_rope_layer_interval": 4,
            "num_attention_heads": 4, "num_experts_per_tok": 1, "num_hidden_layers": 8, "num_key_value_heads": 2,
            "num_local_experts": 4, "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 16.0, "high_freq_factor": 1.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 64, "rope_type": "llama3"},
            "rope_theta": 500000.0, "use_qk_norm": true, "vocab_size": 512
            """, vision: Tiny, tokens: "\"image_token_index\": 492, \"boi_token_index\": 480, \"eoi_token_index\": 481"),
        "tiny-maverick" or "tiny-maverick-fp8" => Build(text: """
            "attention_chunk_size": 8, "attn_scale": 0.1, "attn_temperature_tuning": true, "floor_scale": 5,
            "head_dim": 16, "hidden_size": 64, "interleave_moe_layer_step": 2, "intermediate_size": 40,
            "intermediate_size_mlp": 96, "max_position_embeddings": 4096, "no_rope_layers": [1, 1, 0, 1, 1, 0],
            "num_attention_heads": 4, "num_experts_per_tok": 1, "num_hidden_layers": 6, "num_key_value_heads": 1,
            "num_local_experts": 8, "rms_norm_eps": 1e-05, "rope_scaling": null,
            "rope_theta": 500000.0, "use_qk_norm": false, "vocab_size": 512
            """, vision: Tiny, tokens: "\"image_token_index\": 492, \"boi_token_index\": 480, \"eoi_token_index\": 481",
            quant: name.EndsWith("-fp8", StringComparison.Ordinal) ? Fp8Quant(6, [1, 3, 5], dense: [0, 2, 4], vision: 2) : null),
        // Scout's architecture at toy width with the REAL vocabulary and special-token ids, so the real tokenizer
        // and chat format run end to end on a fresh clone (`./build.sh run`): random weights, gibberish output.
        "tiny-demo" => Build(text: """
            "attention_chunk_size": 32, "attn_scale": 0.1, "attn_temperature_tuning": true, "floor_scale": 64,
            "head_dim": 16, "hidden_size": 64, "interleave_moe_layer_step": 1, "intermediate_size": 64,
            "intermediate_size_mlp": 128, "max_position_embeddings": 8192, "no_rope_layer_interval": 4,
            "num_attention_heads": 4, "num_experts_per_tok": 1, "num_hidden_layers": 4, "num_key_value_heads": 2,
            "num_local_experts": 4, "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 16.0, "high_freq_factor": 1.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 64, "rope_type": "llama3"},
            "rope_theta": 500000.0, "use_qk_norm": true, "vocab_size": 202048, "eos_token_id": [200001, 200007, 200008], "bos_token_id": 200000
            """, vision: Tiny, tokens: "\"image_token_index\": 200092, \"boi_token_index\": 200080, \"eoi_token_index\": 200081"),
        "scout" => Build(text: """
            "attention_chunk_size": 8192, "attn_scale": 0.1, "attn_temperature_tuning": true, "floor_scale": 8192,
            "head_dim": 128, "hidden_size": 5120, "interleave_moe_layer_step": 1, "intermediate_size": 8192,
            "intermediate_size_mlp": 16384, "max_position_embeddings": 10485760, "no_rope_layer_interval": 4,
            "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 48, "num_key_value_heads": 8,
            "num_local_experts": 16, "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 16.0, "high_freq_factor": 1.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "use_qk_norm": true, "vocab_size": 202048
            """, vision: Real, tokens: "\"image_token_index\": 200092, \"boi_token_index\": 200080, \"eoi_token_index\": 200081"),
        "maverick" or "maverick-fp8" => Build(text: """
            "attention_chunk_size": 8192, "attn_scale": 0.1, "attn_temperature_tuning": true, "floor_scale": 8192,
            "head_dim": 128, "hidden_size": 5120, "interleave_moe_layer_step": 2, "intermediate_size": 8192,
            "intermediate_size_mlp": 16384, "max_position_embeddings": 1048576, "no_rope_layer_interval": 4,
            "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 48, "num_key_value_heads": 8,
            "num_local_experts": 128, "rms_norm_eps": 1e-05, "rope_scaling": null,
            "rope_theta": 500000.0, "use_qk_norm": false, "vocab_size": 202048
            """, vision: Real, tokens: "\"image_token_index\": 200092, \"boi_token_index\": 200080, \"eoi_token_index\": 200081",
            quant: name == "maverick-fp8"
                ? Fp8Quant(48, Enumerable.Range(0, 24).Select(i => 2 * i + 1).ToArray(), Enumerable.Range(0, 24).Select(i => 2 * i).ToArray(), 34)
                : null),
        _ => throw new ArgumentException($"unknown preset '{name}'; expected one of {string.Join(", ", Names)}"),
    };

    const string Tiny = """
        "hidden_size": 32, "image_size": 64, "intermediate_size": 128, "norm_eps": 1e-05, "num_attention_heads": 2,
        "num_channels": 3, "num_hidden_layers": 2, "patch_size": 8, "pixel_shuffle_ratio": 0.5,
        "projector_input_dim": 80, "projector_output_dim": 80, "rope_theta": 10000, "vision_output_dim": 80,
        "multi_modal_projector_bias": false, "hidden_act": "gelu"
        """;

    const string Real = """
        "hidden_size": 1408, "image_size": 336, "intermediate_size": 5632, "norm_eps": 1e-05, "num_attention_heads": 16,
        "num_channels": 3, "num_hidden_layers": 34, "patch_size": 14, "pixel_shuffle_ratio": 0.5,
        "projector_input_dim": 4096, "projector_output_dim": 4096, "rope_theta": 10000, "vision_output_dim": 4096,
        "multi_modal_projector_bias": false, "hidden_act": "gelu"
        """;

    static string Build(string text, string vision, string tokens, string? quant = null) =>
        $$"""
        {
          "architectures": ["Llama4ForConditionalGeneration"],
          "model_type": "llama4",
          {{tokens}},
          "tie_word_embeddings": false,
          {{(quant is null ? "" : $"\"quantization_config\": {quant},")}}
          "text_config": { "model_type": "llama4_text", "hidden_act": "silu", "attention_bias": false, {{text}} },
          "vision_config": { "model_type": "llama4_vision_model", {{vision}} }
        }
        """;

    /// <summary>Meta's fp8_mixed recipe: only routed experts are FP8, not those of the first or the last layer.</summary>
    static string Fp8Quant(int layers, int[] moe, int[] dense, int vision)
    {
        var names = new List<string> { "language_model.lm_head" };
        for (int i = 0; i < layers; i++)
        {
            string p = $"language_model.model.layers.{i}.";
            foreach (var s in new[] { "q_proj", "k_proj", "v_proj", "o_proj" }) names.Add(p + "self_attn." + s);
            if (dense.Contains(i)) foreach (var s in new[] { "gate_proj", "up_proj", "down_proj" }) names.Add(p + "feed_forward." + s);
            if (moe.Contains(i))
            {
                names.Add(p + "feed_forward.router");
                foreach (var s in new[] { "gate_proj", "up_proj", "down_proj" }) names.Add(p + "feed_forward.shared_expert." + s);
                if (i == 0 || i == layers - 1) names.Add(p + "feed_forward.experts");
            }
        }
        names.Add("multi_modal_projector.linear_1");
        for (int i = 0; i < vision; i++)
            foreach (var s in new[] { "mlp.fc1", "mlp.fc2", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj" })
                names.Add($"vision_model.model.layers.{i}.{s}");
        names.AddRange(["vision_model.patch_embedding.linear", "vision_model.vision_adapter.mlp.fc1", "vision_model.vision_adapter.mlp.fc2"]);
        return "{\"activation_scale_ub\": 1200.0, \"quant_method\": \"fbgemm_fp8\", \"modules_to_not_convert\": [" +
               string.Join(", ", names.Select(n => $"\"{n}\"")) + "]}";
    }
}
