using System.Text.Json;

namespace Llama4Native.Generation;

/// <summary>
/// A checkpoint's <c>generation_config.json</c> as Hugging Face's <c>generate()</c> reads it: the default sampling
/// settings and stop ids. <c>do_sample</c> false (HF's default) means greedy whatever the temperature; when true,
/// <c>temperature</c> (1.0), <c>top_p</c> (1.0), <c>top_k</c> (50), <c>min_p</c> apply with HF's defaults in brackets.
/// <c>eos_token_id</c> (an int or a list) become stop tokens; <c>max_new_tokens</c> and <c>repetition_penalty</c> are
/// read too. Other keys are ignored. Explicit options win over every value here.
/// </summary>
internal static class GenerationConfig
{
    public const string FileName = "generation_config.json";

    /// <summary>The defaults of <paramref name="checkpointDir"/>'s generation_config.json, or null when it has none.
    /// An unreadable or malformed file is an <see cref="InvalidDataException"/> naming it and the key.</summary>
    public static GenerationOptions? Load(string checkpointDir)
    {
        var path = Path.Combine(checkpointDir, FileName);
        if (!File.Exists(path)) return null;
        try { return Parse(File.ReadAllText(path), path); }
        catch (IOException e) { throw new InvalidDataException($"{path}: cannot read ({e.Message})", e); }
    }

    public static GenerationOptions Parse(string json, string source = FileName)
    {
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            root = doc.RootElement.Clone();
        }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON ({e.Message}); fix or delete the file", e); }
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: expected a JSON object, got {root.ValueKind}");

        double? Num(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || !double.IsFinite(d))
                throw new InvalidDataException($"{source}: \"{key}\" must be a finite number, got {v.GetRawText()}");
            return d;
        }
        int? Int(string key, int min)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i) || i < min)
                throw new InvalidDataException($"{source}: \"{key}\" must be an integer ≥ {min}, got {v.GetRawText()}");
            return i;
        }
        bool sample = false;
        if (root.TryGetProperty("do_sample", out var ds) && ds.ValueKind != JsonValueKind.Null)
            sample = ds.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new InvalidDataException($"{source}: \"do_sample\" must be true or false, got {ds.GetRawText()}"),
            };
        var stops = new List<int>();
        if (root.TryGetProperty("eos_token_id", out var eos) && eos.ValueKind != JsonValueKind.Null)
        {
            var items = eos.ValueKind == JsonValueKind.Array ? eos.EnumerateArray().ToList() : [eos];
            foreach (var e in items)
                stops.Add(e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var id) && id >= 0 ? id
                    : throw new InvalidDataException($"{source}: \"eos_token_id\" must be a token id ≥ 0 or a list of them, got {eos.GetRawText()}"));
        }
        var o = new GenerationOptions
        {
            MaxNewTokens = Int("max_new_tokens", 0) ?? new GenerationOptions().MaxNewTokens,
            Temperature = sample ? (float)(Num("temperature") ?? 1.0) : 0,
            TopP = sample ? (float)(Num("top_p") ?? 1.0) : 1,
            TopK = sample ? Int("top_k", 0) ?? 50 : 0,
            MinP = sample ? (float)(Num("min_p") ?? 0) : 0,
            RepetitionPenalty = (float)(Num("repetition_penalty") ?? 1),
            StopTokens = stops,
        };
        if (!sample) { Num("temperature"); Num("top_p"); Int("top_k", 0); Num("min_p"); }   // still checked
        try { o.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{source}: {e.Message}", e); }
        return o;
    }
}
