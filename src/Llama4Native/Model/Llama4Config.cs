using System.Text;
using System.Text.Json;

namespace Llama4Native.Model;

/// <summary>
/// The model blueprint, read from a Hugging Face <c>config.json</c> and nothing else.
///
/// Two layouts are understood: <c>Llama4ForConditionalGeneration</c> (a root with <c>text_config</c> and
/// <c>vision_config</c>) and the text-only <c>Llama4ForCausalLM</c> (the text fields flat at the root).
/// Fields that decide a tensor shape (hidden_size, layers, heads, experts, …) are required: a config
/// without them is an error, never silently a Scout. Fields for which transformers has a model-agnostic
/// default (num_key_value_heads = heads, head_dim = hidden/heads, moe_layers from the interleave step,
/// no_rope_layers from the NoPE interval, …) take that default, exactly as transformers would, and are
/// listed in <see cref="Defaulted"/> so <c>llama4 inspect</c> can show them.
///
/// Derived values (layer kinds, MoE layers, head_dim, RoPE inverse frequencies) are computed once here;
/// the model code reads them, it never re-derives them.
/// </summary>
internal sealed class Llama4Config
{
    public const string ConditionalGeneration = "Llama4ForConditionalGeneration";
    public const string CausalLM = "Llama4ForCausalLM";

    /// <summary>The file this came from (for messages).</summary>
    public string Source { get; }
    /// <summary><see cref="ConditionalGeneration"/> or <see cref="CausalLM"/>.</summary>
    public string Architecture { get; }
    public bool IsMultimodal => Vision is not null;
    public TextConfig Text { get; }
    /// <summary>Null for a text-only checkpoint.</summary>
    public VisionConfig? Vision { get; }
    /// <summary>The checkpoint's quantization (fbgemm_fp8), or null for a plain bf16 checkpoint.</summary>
    public QuantizationConfig? Quantization { get; }
    /// <summary>The <c>&lt;|patch|&gt;</c> token whose embeddings the projected image features replace.</summary>
    public int ImageTokenIndex { get; }
    public int BoiTokenIndex { get; }
    public int EoiTokenIndex { get; }
    /// <summary>Fields absent from config.json that took transformers' default, as "text_config.head_dim = 128".</summary>
    public IReadOnlyList<string> Defaulted { get; }

    Llama4Config(string source, string arch, TextConfig text, VisionConfig? vision, QuantizationConfig? quant,
                 int imageToken, int boi, int eoi, IReadOnlyList<string> defaulted)
    {
        Source = source; Architecture = arch; Text = text; Vision = vision; Quantization = quant;
        ImageTokenIndex = imageToken; BoiTokenIndex = boi; EoiTokenIndex = eoi; Defaulted = defaulted;
    }

    /// <summary>Reads <c>config.json</c> from a model directory (or the file itself) and validates it.</summary>
    public static Llama4Config Load(string pathOrDirectory)
    {
        string path = Directory.Exists(pathOrDirectory) ? Path.Combine(pathOrDirectory, "config.json") : pathOrDirectory;
        if (!File.Exists(path))
            throw new ConfigException(path, [$"file not found; a model directory must contain the Hugging Face config.json"]);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new ConfigException(path, [$"cannot read it: {e.Message}"]); }
        return Parse(bytes, path);
    }

    public static Llama4Config Parse(string json, string source = "config.json") => Parse(Encoding.UTF8.GetBytes(json), source);

    /// <summary>Parses and validates; throws <see cref="ConfigException"/> listing every problem found.</summary>
    public static Llama4Config Parse(ReadOnlySpan<byte> utf8Json, string source = "config.json")
    {
        if (utf8Json.Length > 16 << 20)
            throw new ConfigException(source, [$"is {utf8Json.Length} bytes; a config.json is a few KB (limit 16 MiB)"]);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8Json.ToArray(), new JsonDocumentOptions { MaxDepth = 32 });
        }
        catch (JsonException e)
        {
            throw new ConfigException(source, [$"is not valid JSON ({e.Message}); expected the Hugging Face config.json object"]);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ConfigException(source, [$"top level is a JSON {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}; expected an object"]);
            var problems = new List<string>();
            var defaulted = new List<string>();
            var root = new JsonFields(doc.RootElement, "", problems);

            string[]? archs = root.StringList("architectures");
            string? arch = archs is { Length: > 0 } ? archs[0] : null;
            bool hasTextConfig = root.Has("text_config");
            if (arch is null)
            {
                arch = hasTextConfig ? ConditionalGeneration : CausalLM;
                defaulted.Add($"architectures = [\"{arch}\"] (inferred from {(hasTextConfig ? "text_config being present" : "a flat config")})");
            }
            if (archs is { Length: > 1 })
                problems.Add($"architectures lists {archs.Length} classes ({string.Join(", ", archs)}); expected exactly one of {ConditionalGeneration}, {CausalLM}");

            TextConfig? text = null;
            VisionConfig? vision = null;
            QuantizationConfig? quant = null;
            int imageToken = 0, boi = 0, eoi = 0;
            bool tieRoot = root.BoolOr("tie_word_embeddings", false);
            switch (arch)
            {
                case ConditionalGeneration:
                {
                    var t = root.Sub("text_config");
                    var v = root.Sub("vision_config");
                    if (t is null && !root.Has("text_config"))
                        problems.Add($"text_config is missing; expected an object (architecture {arch} keeps the decoder's fields there)");
                    if (v is null && !root.Has("vision_config"))
                        problems.Add($"vision_config is missing; expected an object (architecture {arch} has a vision tower; use {CausalLM} for text only)");
                    if (t is not null) text = TextConfig.Read(t, tieRoot, defaulted);
                    if (v is not null) vision = VisionConfig.Read(v, defaulted);
                    imageToken = root.Int("image_token_index", "200092");
                    boi = root.IntOr("boi_token_index", 200080, "200080");
                    eoi = root.IntOr("eoi_token_index", 200081, "200081");
                    if (!root.Has("boi_token_index")) defaulted.Add("boi_token_index = 200080");
                    if (!root.Has("eoi_token_index")) defaulted.Add("eoi_token_index = 200081");
                    break;
                }
                case CausalLM:
                    if (hasTextConfig)
                        problems.Add($"text_config is present but architectures says {CausalLM}; expected the text fields flat at the top level (or architectures [\"{ConditionalGeneration}\"])");
                    else
                        text = TextConfig.Read(root, tieRoot, defaulted);
                    break;
                default:
                    problems.Add($"architectures is [\"{arch}\"]; expected \"{ConditionalGeneration}\" or \"{CausalLM}\"");
                    break;
            }
            string? modelType = root.StringOr("model_type", null);
            if (modelType is not null && modelType is not ("llama4" or "llama4_text"))
                problems.Add($"model_type is \"{modelType}\"; expected \"llama4\" or \"llama4_text\"");

            var q = root.Sub("quantization_config");
            if (q is not null) quant = QuantizationConfig.Read(q);

            if (problems.Count > 0) throw new ConfigException(source, problems);
            var cfg = new Llama4Config(source, arch, text!, vision, quant, imageToken, boi, eoi, defaulted);
            cfg.Validate();
            return cfg;
        }
    }

    /// <summary>Checks every cross-field rule; throws one <see cref="ConfigException"/> listing all violations.</summary>
    public void Validate()
    {
        var p = new List<string>();
        Text.Validate(p, Text.IsNestedIn(Architecture));
        Vision?.Validate(p);
        Quantization?.Validate(p);
        if (Vision is not null)
        {
            if (ImageTokenIndex < 0 || ImageTokenIndex >= Text.VocabSize)
                p.Add($"image_token_index ({ImageTokenIndex}) must be a token id below text_config.vocab_size ({Text.VocabSize})");
        }
        if (p.Count > 0) throw new ConfigException(Source, p);
    }

    public override string ToString() =>
        $"{Architecture}: {Text.NumHiddenLayers} layers, D={Text.HiddenSize}, H={Text.NumAttentionHeads}/{Text.NumKeyValueHeads}, " +
        $"E={Text.NumLocalExperts} top-{Text.NumExpertsPerTok}" + (Vision is null ? "" : $", vision {Vision.NumHiddenLayers}×{Vision.HiddenSize}");
}

/// <summary>llama3 RoPE scaling (<c>rope_scaling</c> / <c>rope_parameters</c>).</summary>
internal sealed record RopeScaling(string RopeType, double Factor, double LowFreqFactor, double HighFreqFactor,
                                 int OriginalMaxPositionEmbeddings);

/// <summary>The decoder's fields (Llama4TextConfig). Letters in comments: D, L, H, Hkv, d, E, k, I, V.</summary>
internal sealed class TextConfig
{
    public int VocabSize { get; private init; }              // V
    public int HiddenSize { get; private init; }             // D
    public int IntermediateSize { get; private init; }       // I: routed experts and the shared expert
    public int IntermediateSizeMlp { get; private init; }    // dense layers' MLP width
    public int NumHiddenLayers { get; private init; }        // L
    public int NumAttentionHeads { get; private init; }      // H
    public int NumKeyValueHeads { get; private init; }       // Hkv
    public int HeadDim { get; private init; }                // d
    public int MaxPositionEmbeddings { get; private init; }
    public double RmsNormEps { get; private init; }
    public double RopeTheta { get; private init; }
    public RopeScaling? RopeScaling { get; private init; }
    public int NumLocalExperts { get; private init; }        // E
    public int NumExpertsPerTok { get; private init; }       // k
    public int InterleaveMoeLayerStep { get; private init; }
    public int NoRopeLayerInterval { get; private init; }
    /// <summary>0 = no chunking (HF's None); otherwise C, the chunk of RoPE layers' attention.</summary>
    public int AttentionChunkSize { get; private init; }
    public bool AttnTemperatureTuning { get; private init; }
    public double FloorScale { get; private init; }
    public double AttnScale { get; private init; }
    public bool UseQkNorm { get; private init; }
    public bool AttentionBias { get; private init; }
    public string HiddenAct { get; private init; } = "silu";
    public bool TieWordEmbeddings { get; private init; }
    public int? BosTokenId { get; private init; }
    public int[] EosTokenIds { get; private init; } = [];
    public int? PadTokenId { get; private init; }

    /// <summary>As written in (or defaulted for) config.json: 1 = RoPE layer, 0 = NoPE layer. At least L entries.</summary>
    public int[] NoRopeLayers { get; private init; } = [];
    /// <summary>"chunked_attention" / "full_attention" per layer (L entries).</summary>
    public string[] LayerTypes { get; private init; } = [];
    /// <summary>Indices of MoE layers, ascending.</summary>
    public int[] MoeLayers { get; private init; } = [];

    // ---- derived, computed once ----
    /// <summary>Per layer: true = RoPE + chunked attention (+ QK norm when enabled); false = NoPE, global attention.</summary>
    public bool[] UsesRope { get; private set; } = [];
    /// <summary>Per layer: true = MoE FFN (router, routed experts, shared expert); false = dense MLP.</summary>
    public bool[] IsMoeLayer { get; private set; } = [];
    /// <summary>H / Hkv: query heads per kv head.</summary>
    public int QueriesPerKvHead => NumKeyValueHeads == 0 ? 0 : NumAttentionHeads / NumKeyValueHeads;
    /// <summary>d/2 RoPE inverse frequencies f_j, float32 exactly as transformers computes them (llama3-scaled when configured).</summary>
    public float[] RopeInvFreq { get; private set; } = [];
    public int NumMoeLayers => MoeLayers.Length;
    public int NumDenseLayers => NumHiddenLayers - MoeLayers.Length;

    internal bool IsNestedIn(string arch) => arch == Llama4Config.ConditionalGeneration;
    string P(string key) => nested ? "text_config." + key : key;
    bool nested;

    internal static TextConfig Read(JsonFields f, bool tieRoot, List<string> defaulted)
    {
        string pre = f.Path.Length == 0 ? "" : f.Path + ".";
        void Def(string key, object value) => defaulted.Add($"{pre}{key} = {value}");

        int heads = f.Int("num_attention_heads", "40");
        int hidden = f.Int("hidden_size", "5120");
        int layers = f.Int("num_hidden_layers", "48");
        int kv = f.IntOr("num_key_value_heads", heads, "8");
        if (!f.Has("num_key_value_heads")) Def("num_key_value_heads", $"{heads} (num_attention_heads)");
        int headDim = f.IntOr("head_dim", heads > 0 ? hidden / heads : 0, "128");
        if (!f.Has("head_dim")) Def("head_dim", $"{headDim} (hidden_size / num_attention_heads)");
        int step = f.IntOr("interleave_moe_layer_step", 1, "1");
        if (!f.Has("interleave_moe_layer_step") && !f.Has("moe_layers")) Def("interleave_moe_layer_step", 1);
        int interval = f.IntOr("no_rope_layer_interval", 4, "4");
        if (!f.Has("no_rope_layer_interval") && !f.Has("no_rope_layers") && !f.Has("layer_types")) Def("no_rope_layer_interval", 4);

        // RoPE: transformers ≤ 4.57 writes rope_theta + rope_scaling; newer ones rope_parameters {rope_theta, rope_type, …}.
        double theta;
        RopeScaling? scaling = null;
        var rp = f.Sub("rope_parameters");
        var rs = f.Sub("rope_scaling");
        if (rp is not null && !f.Has("rope_theta"))
        {
            theta = rp.Double("rope_theta", "500000.0");
            string? type = rp.StringOr("rope_type", rp.StringOr("type", "default"));
            if (type != "default") scaling = ReadScaling(rp, type);
        }
        else
        {
            theta = f.Double("rope_theta", "500000.0");
            if (rs is not null) scaling = ReadScaling(rs, rs.StringOr("rope_type", rs.StringOr("type", null)));
        }

        int moeStepDefault = step;
        int[]? moeLayers = f.IntList("moe_layers");
        if (moeLayers is null && step > 0)
            moeLayers = Enumerable.Range(0, Math.Max(0, layers)).Where(i => i >= step - 1 && (i - (step - 1)) % step == 0).ToArray();
        moeLayers ??= [];

        int[]? noRope = f.IntList("no_rope_layers");
        string[]? layerTypes = f.StringList("layer_types");
        // transformers: an absent or empty no_rope_layers falls back to the interval.
        if (noRope is null || noRope.Length == 0)
        {
            if (layerTypes is not null)
                noRope = layerTypes.Select(t => t == "full_attention" ? 0 : 1).ToArray();
            else if (interval > 0)
                noRope = Enumerable.Range(0, Math.Max(0, layers)).Select(i => (i + 1) % interval != 0 ? 1 : 0).ToArray();
            else noRope = [];
        }
        layerTypes ??= noRope.Take(Math.Max(0, layers)).Select(r => r != 0 ? "chunked_attention" : "full_attention").ToArray();

        int[] eos = [];
        if (f.TryGet("eos_token_id", out var eosEl))
            eos = eosEl.ValueKind == JsonValueKind.Array ? f.IntList("eos_token_id") ?? [] : [f.Int("eos_token_id", "200008")];

        int chunk = f.IntOr("attention_chunk_size", 0, "8192");
        bool hasMoe = moeLayers.Length > 0;
        var t = new TextConfig
        {
            nested = f.Path.Length != 0,
            VocabSize = f.Int("vocab_size", "202048"),
            HiddenSize = hidden,
            IntermediateSize = hasMoe ? f.Int("intermediate_size", "8192") : f.IntOr("intermediate_size", 0, "8192"),
            IntermediateSizeMlp = moeLayers.Length < layers ? f.Int("intermediate_size_mlp", "16384") : f.IntOr("intermediate_size_mlp", 0, "16384"),
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kv,
            HeadDim = headDim,
            MaxPositionEmbeddings = f.IntOr("max_position_embeddings", 0, "131072"),
            RmsNormEps = f.DoubleOr("rms_norm_eps", 1e-5, "1e-05"),
            RopeTheta = theta,
            RopeScaling = scaling,
            NumLocalExperts = hasMoe ? f.Int("num_local_experts", "16") : f.IntOr("num_local_experts", 0, "16"),
            NumExpertsPerTok = hasMoe ? f.Int("num_experts_per_tok", "1") : f.IntOr("num_experts_per_tok", 0, "1"),
            InterleaveMoeLayerStep = moeStepDefault,
            NoRopeLayerInterval = interval,
            AttentionChunkSize = chunk,
            AttnTemperatureTuning = f.BoolOr("attn_temperature_tuning", true),
            FloorScale = f.DoubleOr("floor_scale", 8192, "8192"),
            AttnScale = f.DoubleOr("attn_scale", 0.1, "0.1"),
            UseQkNorm = f.BoolOr("use_qk_norm", true),
            AttentionBias = f.BoolOr("attention_bias", false),
            HiddenAct = f.StringOr("hidden_act", "silu") ?? "silu",
            TieWordEmbeddings = f.Path.Length == 0 ? tieRoot : f.BoolOr("tie_word_embeddings", tieRoot),
            BosTokenId = f.Has("bos_token_id") ? f.Int("bos_token_id", "200000") : null,
            EosTokenIds = eos,
            PadTokenId = f.Has("pad_token_id") ? f.Int("pad_token_id", "200018") : null,
            NoRopeLayers = noRope,
            LayerTypes = layerTypes,
            MoeLayers = moeLayers,
        };
        if (!f.Has("rms_norm_eps")) Def("rms_norm_eps", "1e-05");
        if (!f.Has("attn_temperature_tuning")) Def("attn_temperature_tuning", "true");
        if (!f.Has("floor_scale")) Def("floor_scale", 8192);
        if (!f.Has("attn_scale")) Def("attn_scale", 0.1);
        if (!f.Has("use_qk_norm")) Def("use_qk_norm", "true");
        if (!f.Has("attention_chunk_size")) Def("attention_chunk_size", "none (RoPE layers attend to the whole causal context)");
        if (!f.Has("hidden_act")) Def("hidden_act", "silu");
        if (!f.Has("max_position_embeddings")) Def("max_position_embeddings", "unknown (0)");
        t.Derive();
        return t;
    }

    static RopeScaling? ReadScaling(JsonFields s, string? type)
    {
        if (type is null)
        {
            s.Problems.Add($"{s.Path}.rope_type is missing; expected \"llama3\" (the only RoPE scaling Llama 4 uses)");
            return null;
        }
        return new RopeScaling(type,
            s.Double("factor", "16.0"),
            s.DoubleOr("low_freq_factor", type == "llama3" ? null : 1.0, "1.0"),
            s.DoubleOr("high_freq_factor", type == "llama3" ? null : 1.0, "1.0"),
            s.IntOr("original_max_position_embeddings", type == "llama3" ? null : 0, "8192"));
    }

    void Derive()
    {
        int L = Math.Max(0, NumHiddenLayers);
        UsesRope = new bool[L];
        for (int i = 0; i < L && i < NoRopeLayers.Length; i++) UsesRope[i] = NoRopeLayers[i] != 0;
        IsMoeLayer = new bool[L];
        foreach (int m in MoeLayers) if (m >= 0 && m < L) IsMoeLayer[m] = true;
        RopeInvFreq = HeadDim > 0 && HeadDim % 2 == 0 && RopeTheta > 0 ? ComputeInvFreq(HeadDim, RopeTheta, RopeScaling) : [];
    }

    /// <summary>
    /// RoPE inverse frequencies as transformers computes them, in float32 arithmetic:
    /// f_j = 1 / θ^(2j/d); with llama3 scaling, wavelengths 2π/f longer than original/low_freq_factor are
    /// divided by factor, those shorter than original/high_freq_factor kept, and the band between blended with
    /// s = (original/wavelen − low)/(high − low): f = (1 − s)·f/factor + s·f.
    /// </summary>
    public static float[] ComputeInvFreq(int headDim, double theta, RopeScaling? scaling)
    {
        int n = headDim / 2;
        var f = new float[n];
        float baseF = (float)theta;
        for (int j = 0; j < n; j++)
        {
            float exponent = (float)(2 * j) / headDim;
            f[j] = 1.0f / MathF.Pow(baseF, exponent);
        }
        // Llama 4 applies the llama3 formula whenever rope_scaling is present; its rope_type is not consulted (as in HF).
        if (scaling is null) return f;
        float factor = (float)scaling.Factor, low = (float)scaling.LowFreqFactor, high = (float)scaling.HighFreqFactor;
        float old = scaling.OriginalMaxPositionEmbeddings;
        float lowWavelen = old / low, highWavelen = old / high;
        for (int j = 0; j < n; j++)
        {
            float inv = f[j];
            float wavelen = (float)(2 * Math.PI) / inv;
            float scaled = wavelen > lowWavelen ? inv / factor : inv;
            bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            if (medium && high != low)
            {
                float smooth = (old / wavelen - low) / (high - low);
                scaled = (1 - smooth) * scaled / factor + smooth * scaled;
            }
            f[j] = scaled;
        }
        return f;
    }

    internal void Validate(List<string> p, bool isNested)
    {
        nested = isNested;
        void Positive(string key, long v, string why)
        {
            if (v <= 0) p.Add($"{P(key)} ({v}) must be positive; {why}");
        }
        Positive("vocab_size", VocabSize, "it is the embedding table's row count");
        Positive("hidden_size", HiddenSize, "it is the model width D");
        Positive("num_hidden_layers", NumHiddenLayers, "a decoder needs at least one layer");
        Positive("num_attention_heads", NumAttentionHeads, "it is H");
        Positive("num_key_value_heads", NumKeyValueHeads, "it is Hkv");
        Positive("head_dim", HeadDim, "it is d");
        if (NumAttentionHeads > 0 && NumKeyValueHeads > 0 && NumAttentionHeads % NumKeyValueHeads != 0)
            p.Add($"{P("num_attention_heads")} ({NumAttentionHeads}) must be divisible by {P("num_key_value_heads")} ({NumKeyValueHeads})");
        if (HeadDim > 0 && HeadDim % 2 != 0)
            p.Add($"{P("head_dim")} ({HeadDim}) must be even: RoPE rotates pairs (2j, 2j+1)");
        if (RmsNormEps <= 0) p.Add($"{P("rms_norm_eps")} ({RmsNormEps}) must be positive, e.g. 1e-05");
        if (RopeTheta <= 0) p.Add($"{P("rope_theta")} ({RopeTheta}) must be positive, e.g. 500000.0");
        if (HiddenAct != "silu") p.Add($"{P("hidden_act")} is \"{HiddenAct}\"; expected \"silu\" (Llama 4's FFN is SwiGLU)");
        if (NumHiddenLayers > 100_000) p.Add($"{P("num_hidden_layers")} ({NumHiddenLayers}) is implausible; expected at most 100000");
        long maxDim = 1L << 24;
        foreach (var (k, v) in new[] { ("vocab_size", VocabSize), ("hidden_size", HiddenSize), ("intermediate_size", IntermediateSize),
                                      ("intermediate_size_mlp", IntermediateSizeMlp), ("num_local_experts", NumLocalExperts),
                                      ("head_dim", HeadDim), ("num_attention_heads", NumAttentionHeads) })
            if (v > maxDim) p.Add($"{P(k)} ({v}) is implausible; expected at most {maxDim}");

        int L = NumHiddenLayers;
        // MoE layers
        var seen = new HashSet<int>();
        foreach (int m in MoeLayers)
        {
            if (m < 0 || m >= L) p.Add($"{P("moe_layers")} contains {m}; expected layer indices in [0, {L})");
            else if (!seen.Add(m)) p.Add($"{P("moe_layers")} lists layer {m} twice");
        }
        if (InterleaveMoeLayerStep <= 0)
            p.Add($"{P("interleave_moe_layer_step")} ({InterleaveMoeLayerStep}) must be positive (1 = MoE in every layer)");
        if (MoeLayers.Length > 0)
        {
            Positive("num_local_experts", NumLocalExperts, "MoE layers need experts");
            Positive("intermediate_size", IntermediateSize, "it is the experts' width I");
            if (NumExpertsPerTok <= 0 || NumExpertsPerTok > NumLocalExperts)
                p.Add($"{P("num_experts_per_tok")} ({NumExpertsPerTok}) must be in [1, num_local_experts ({NumLocalExperts})]");
        }
        if (MoeLayers.Length < L)
            Positive("intermediate_size_mlp", IntermediateSizeMlp, "dense (non-MoE) layers use it as their MLP width");

        // Layer kinds
        if (NoRopeLayers.Length < L)
            p.Add($"{P("no_rope_layers")} has {NoRopeLayers.Length} entries; expected at least num_hidden_layers ({L}), 1 = RoPE layer, 0 = NoPE layer");
        for (int i = 0; i < NoRopeLayers.Length; i++)
            if (NoRopeLayers[i] is not (0 or 1)) { p.Add($"{P("no_rope_layers")}[{i}] is {NoRopeLayers[i]}; expected 0 (NoPE) or 1 (RoPE)"); break; }
        if (LayerTypes.Length != L)
            p.Add($"{P("layer_types")} has {LayerTypes.Length} entries; expected num_hidden_layers ({L})");
        for (int i = 0; i < Math.Min(L, LayerTypes.Length); i++)
        {
            string t = LayerTypes[i];
            if (t is not ("chunked_attention" or "full_attention"))
            {
                p.Add($"{P("layer_types")}[{i}] is \"{t}\"; expected \"chunked_attention\" or \"full_attention\"");
                continue;
            }
            if (i < NoRopeLayers.Length && (t == "chunked_attention") != (NoRopeLayers[i] == 1))
                p.Add($"{P("layer_types")}[{i}] is \"{t}\" but {P("no_rope_layers")}[{i}] is {NoRopeLayers[i]}; expected " +
                      $"\"{(NoRopeLayers[i] == 1 ? "chunked_attention" : "full_attention")}\" (RoPE layers use chunked attention, NoPE layers full attention)");
        }
        if (NoRopeLayerInterval <= 0 && NoRopeLayers.Length == 0)
            p.Add($"{P("no_rope_layer_interval")} ({NoRopeLayerInterval}) must be positive (4 = every 4th layer is NoPE)");
        if (AttentionChunkSize < 0)
            p.Add($"{P("attention_chunk_size")} ({AttentionChunkSize}) must be positive (or absent for no chunking)");
        if (AttnTemperatureTuning && FloorScale <= 0)
            p.Add($"{P("floor_scale")} ({FloorScale}) must be positive when attn_temperature_tuning is on");

        if (RopeScaling is { } s)
        {
            string rp = P("rope_scaling");
            if (s.RopeType != "llama3")
                p.Add($"{rp}.rope_type is \"{s.RopeType}\"; expected \"llama3\" (the only RoPE scaling Llama 4 uses) or no rope_scaling");
            if (s.Factor <= 0) p.Add($"{rp}.factor ({s.Factor}) must be positive, e.g. 16.0");
            if (s.LowFreqFactor <= 0) p.Add($"{rp}.low_freq_factor ({s.LowFreqFactor}) must be positive, e.g. 1.0");
            if (s.HighFreqFactor <= 0) p.Add($"{rp}.high_freq_factor ({s.HighFreqFactor}) must be positive, e.g. 1.0");
            if (s.HighFreqFactor < s.LowFreqFactor)
                p.Add($"{rp}.high_freq_factor ({s.HighFreqFactor}) must be ≥ low_freq_factor ({s.LowFreqFactor})");
            if (s.OriginalMaxPositionEmbeddings <= 0)
                p.Add($"{rp}.original_max_position_embeddings ({s.OriginalMaxPositionEmbeddings}) must be positive, e.g. 8192");
        }
    }
}

/// <summary>The vision tower's fields (Llama4VisionConfig). Letters: Dv, Lv, Hv, Iv, P (patch), S (image), C (channels).</summary>
internal sealed class VisionConfig
{
    public int HiddenSize { get; private init; }          // Dv
    public int NumHiddenLayers { get; private init; }     // Lv
    public int NumAttentionHeads { get; private init; }   // Hv
    public int IntermediateSize { get; private init; }    // Iv: encoder MLP width, and the pixel-shuffled width Dv/r²
    public int ImageSize { get; private init; }           // S: tile side in pixels
    public int PatchSize { get; private init; }           // P
    public int NumChannels { get; private init; }         // C
    public int VisionOutputDim { get; private init; }     // projector input
    public int ProjectorInputDim { get; private init; }
    public int ProjectorOutputDim { get; private init; }
    public double PixelShuffleRatio { get; private init; } // r
    public double NormEps { get; private init; }
    public double RopeTheta { get; private init; }
    public bool MultiModalProjectorBias { get; private init; }
    public string HiddenAct { get; private init; } = "gelu";

    // derived
    public int HeadDim => NumAttentionHeads > 0 ? HiddenSize / NumAttentionHeads : 0;
    /// <summary>Patches per tile side, S/P.</summary>
    public int PatchesPerSide => PatchSize > 0 ? ImageSize / PatchSize : 0;
    /// <summary>Patches per tile, (S/P)²; the positional embedding has one more row (the class token).</summary>
    public int NumPatches => PatchesPerSide * PatchesPerSide;
    /// <summary>Image tokens per tile after pixel shuffle, (S/P)²·r².</summary>
    public int TokensPerTile => (int)Math.Round(NumPatches * PixelShuffleRatio * PixelShuffleRatio);

    internal static VisionConfig Read(JsonFields f, List<string> defaulted)
    {
        void Def(string key, object value) => defaulted.Add($"vision_config.{key} = {value}");
        var v = new VisionConfig
        {
            HiddenSize = f.Int("hidden_size", "1408"),
            NumHiddenLayers = f.Int("num_hidden_layers", "34"),
            NumAttentionHeads = f.Int("num_attention_heads", "16"),
            IntermediateSize = f.Int("intermediate_size", "5632"),
            ImageSize = f.Int("image_size", "336"),
            PatchSize = f.Int("patch_size", "14"),
            NumChannels = f.IntOr("num_channels", 3, "3"),
            VisionOutputDim = f.Int("vision_output_dim", "4096"),
            ProjectorInputDim = f.Int("projector_input_dim", "4096"),
            ProjectorOutputDim = f.Int("projector_output_dim", "4096"),
            PixelShuffleRatio = f.Double("pixel_shuffle_ratio", "0.5"),
            NormEps = f.DoubleOr("norm_eps", 1e-5, "1e-05"),
            RopeTheta = f.DoubleOr("rope_theta", 10000, "10000"),
            MultiModalProjectorBias = f.BoolOr("multi_modal_projector_bias", false),
            HiddenAct = f.StringOr("hidden_act", "gelu") ?? "gelu",
        };
        if (!f.Has("num_channels")) Def("num_channels", 3);
        if (!f.Has("norm_eps")) Def("norm_eps", "1e-05");
        if (!f.Has("rope_theta")) Def("rope_theta", 10000);
        return v;
    }

    internal void Validate(List<string> p)
    {
        const string V = "vision_config.";
        void Positive(string key, long v)
        {
            if (v <= 0) p.Add($"{V}{key} ({v}) must be positive");
        }
        Positive("hidden_size", HiddenSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("intermediate_size", IntermediateSize);
        Positive("image_size", ImageSize);
        Positive("patch_size", PatchSize);
        Positive("num_channels", NumChannels);
        Positive("vision_output_dim", VisionOutputDim);
        Positive("projector_input_dim", ProjectorInputDim);
        Positive("projector_output_dim", ProjectorOutputDim);
        foreach (var (k, val) in new[] { ("hidden_size", HiddenSize), ("intermediate_size", IntermediateSize), ("image_size", ImageSize),
                                        ("vision_output_dim", VisionOutputDim), ("num_hidden_layers", NumHiddenLayers) })
            if (val > 1 << 20) p.Add($"{V}{k} ({val}) is implausible; expected at most {1 << 20}");
        if (HiddenSize > 0 && NumAttentionHeads > 0 && HiddenSize % NumAttentionHeads != 0)
            p.Add($"{V}hidden_size ({HiddenSize}) must be divisible by {V}num_attention_heads ({NumAttentionHeads})");
        else if (HeadDim > 0 && HeadDim % 4 != 0)
            p.Add($"{V}hidden_size / num_attention_heads ({HeadDim}) must be a multiple of 4: the 2-D RoPE splits head_dim/2 pairs between rows and columns");
        if (ImageSize > 0 && PatchSize > 0 && ImageSize % PatchSize != 0)
            p.Add($"{V}image_size ({ImageSize}) must be divisible by {V}patch_size ({PatchSize})");
        if (PixelShuffleRatio is <= 0 or > 1)
            p.Add($"{V}pixel_shuffle_ratio ({PixelShuffleRatio}) must be in (0, 1], e.g. 0.5");
        else if (PatchesPerSide > 0)
        {
            double side = PatchesPerSide * PixelShuffleRatio;
            if (side != Math.Floor(side))
                p.Add($"{V}pixel_shuffle_ratio ({PixelShuffleRatio}) × patches per side ({PatchesPerSide}) must be an integer");
            double shuffled = HiddenSize / (PixelShuffleRatio * PixelShuffleRatio);
            if (HiddenSize > 0 && IntermediateSize > 0 && shuffled != IntermediateSize)
                p.Add($"{V}intermediate_size ({IntermediateSize}) must equal hidden_size / pixel_shuffle_ratio² ({shuffled}): the vision adapter's fc1 reads the pixel-shuffled features");
        }
        if (ProjectorInputDim > 0 && ProjectorOutputDim > 0 && ProjectorInputDim != ProjectorOutputDim)
            p.Add($"{V}projector_input_dim ({ProjectorInputDim}) must equal {V}projector_output_dim ({ProjectorOutputDim}): the adapter's fc2 is square");
        if (VisionOutputDim > 0 && ProjectorOutputDim > 0 && VisionOutputDim != ProjectorOutputDim)
            p.Add($"{V}vision_output_dim ({VisionOutputDim}) must equal {V}projector_output_dim ({ProjectorOutputDim}): the projector reads the adapter's output");
        if (NormEps <= 0) p.Add($"{V}norm_eps ({NormEps}) must be positive, e.g. 1e-05");
        if (HiddenAct != "gelu") p.Add($"{V}hidden_act is \"{HiddenAct}\"; expected \"gelu\"");
    }
}

/// <summary>
/// <c>quantization_config</c>, kept for the FP8 path. Only <c>fbgemm_fp8</c> (the Maverick FP8 release) is
/// understood. A tensor is FP8 exactly when its dtype in the checkpoint is F8_E4M3; this list says which
/// modules must NOT be, and the loader enforces it.
/// </summary>
internal sealed class QuantizationConfig
{
    public string QuantMethod { get; private init; } = "";
    public string[] ModulesToNotConvert { get; private init; } = [];
    /// <summary>Upper bound of the dynamic per-token activation scale (FBGEMM's <c>activation_scale_ub</c>).</summary>
    public double? ActivationScaleUb { get; private init; }

    internal static QuantizationConfig Read(JsonFields f) => new()
    {
        QuantMethod = f.StringOr("quant_method", null) ?? Missing(f),
        ModulesToNotConvert = f.StringList("modules_to_not_convert") ?? [],
        ActivationScaleUb = f.Has("activation_scale_ub") ? f.Double("activation_scale_ub", "1200.0") : null,
    };

    static string Missing(JsonFields f)
    {
        f.Problems.Add("quantization_config.quant_method is missing; expected \"fbgemm_fp8\"");
        return "";
    }

    /// <summary>transformers' rule: a module is excluded when a listed name equals its path or name + "." is a substring of it.</summary>
    public bool IsExcluded(string modulePath)
    {
        foreach (string m in ModulesToNotConvert)
            if (m == modulePath || modulePath.Contains(m + ".", StringComparison.Ordinal)) return true;
        return false;
    }

    internal void Validate(List<string> p)
    {
        if (QuantMethod.Length > 0 && QuantMethod != "fbgemm_fp8")
            p.Add($"quantization_config.quant_method is \"{QuantMethod}\"; expected \"fbgemm_fp8\" (the only quantized format supported)");
        if (ActivationScaleUb is { } ub && ub <= 0)
            p.Add($"quantization_config.activation_scale_ub ({ub}) must be positive, e.g. 1200.0");
    }
}

/// <summary>A config.json that cannot be used. The message names the file and lists every problem.</summary>
public sealed class ConfigException : Exception
{
    internal ConfigException(string file, IReadOnlyList<string> problems)
        : base($"{file}: {problems.Count} problem{(problems.Count == 1 ? "" : "s")}:\n  - " + string.Join("\n  - ", problems))
    {
        File = file; Problems = problems;
    }
    /// <summary>The file at fault (config.json or generation_config.json), as given.</summary>
    public string File { get; }
    /// <summary>Every problem found, one sentence each.</summary>
    public IReadOnlyList<string> Problems { get; }
}
