using System.Security.Cryptography;
using System.Text.Json;
using Llama4Native.Generation;

namespace Llama4Native.Server;

/// <summary>What a chat or completion request asks for, checked field by field (a bad field is a 400 naming it).</summary>
internal sealed class ParsedRequest
{
    public string? Model;
    public List<Message>? Messages;            // chat
    public string? PromptText;                 // completion: text
    public int[]? PromptIds;                   // completion: token ids
    public int? MaxTokens;
    /// <summary>The request's tools (each as given), when it has some and tool_choice is not "none".</summary>
    public List<JsonElement>? Tools;
    public bool Stream, IncludeUsage;
    public GenerationOptions Options = new();
}

/// <summary>
/// Parsing of the OpenAI request bodies (<c>/v1/chat/completions</c>, <c>/v1/completions</c>). Unknown fields are
/// ignored (clients send many); fields we cannot honour are refused clearly rather than ignored: <c>n</c> ≠ 1,
/// a forced tool_choice, logprobs, non-text response formats, <c>echo</c>, <c>suffix</c>, <c>best_of</c> ≠ 1, image URLs that are
/// not <c>data:</c> URLs.
/// </summary>
internal static class OpenAiRequests
{
    public static ParsedRequest Chat(JsonElement root, Llama4ServerOptions limits)
    {
        var r = Common(root, limits);
        r.Tools = Tools(root, limits);
        if (root.TryGetProperty("response_format", out var rf) && rf.ValueKind is not JsonValueKind.Null &&
            !(rf.ValueKind == JsonValueKind.Object && rf.TryGetProperty("type", out var rft) && rft.ValueKind == JsonValueKind.String && rft.GetString() == "text"))
            throw ApiError.BadRequest("only response_format {\"type\": \"text\"} is supported (no JSON mode or schemas)", "response_format");
        if (Bool(root, "logprobs") == true || root.TryGetProperty("top_logprobs", out var tl) && tl.ValueKind is not JsonValueKind.Null)
            throw ApiError.BadRequest("logprobs are not supported by this server", "logprobs");
        r.MaxTokens = Int(root, "max_completion_tokens", 1, int.MaxValue) ?? Int(root, "max_tokens", 1, int.MaxValue);

        if (!root.TryGetProperty("messages", out var msgs) || msgs.ValueKind != JsonValueKind.Array)
            throw ApiError.BadRequest("'messages' is required: an array of {role, content}", "messages");
        int count = msgs.GetArrayLength();
        if (count == 0) throw ApiError.BadRequest("'messages' is empty", "messages");
        if (count > limits.MaxMessages) throw ApiError.BadRequest($"'messages' has {count} entries; at most {limits.MaxMessages} are accepted", "messages");
        r.Messages = [];
        int images = 0, i = 0;
        foreach (var m in msgs.EnumerateArray())
        {
            string at = $"messages[{i++}]";
            if (m.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest($"{at} must be an object {{role, content}}", at);
            var roleName = Str(m, "role", at + ".role") ?? throw ApiError.BadRequest($"{at}.role is required", at + ".role");
            var role = roleName switch
            {
                "system" or "developer" => MessageRole.System,
                "user" => MessageRole.User,
                "assistant" => MessageRole.Assistant,
                "tool" => MessageRole.Tool,
                _ => throw ApiError.BadRequest($"{at}.role '{roleName}' is not one of system, developer, user, assistant, tool", at + ".role"),
            };
            var text = new System.Text.StringBuilder();
            bool hasCalls = false;
            if (m.TryGetProperty("tool_calls", out var calls) && calls.ValueKind is not JsonValueKind.Null)
            {
                if (role != MessageRole.Assistant || calls.ValueKind != JsonValueKind.Array)
                    throw ApiError.BadRequest($"{at}.tool_calls must be an array, in an assistant message", at + ".tool_calls");
                int k = 0;
                foreach (var call in calls.EnumerateArray())
                {
                    string cat = $"{at}.tool_calls[{k++}]";
                    if (call.ValueKind != JsonValueKind.Object || !call.TryGetProperty("function", out var fn) || fn.ValueKind != JsonValueKind.Object)
                        throw ApiError.BadRequest($"{cat} must be {{\"type\": \"function\", \"function\": {{name, arguments}}}}", cat);
                    var name = Str(fn, "name", cat + ".function.name") ?? throw ApiError.BadRequest($"{cat}.function.name is required", cat + ".function.name");
                    text.Append(ToolCalls.CallText(name, Str(fn, "arguments", cat + ".function.arguments") ?? "{}"));
                    hasCalls = true;
                }
            }
            var pics = new List<ImageInput>();
            if (!m.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null)
            {
                if (role != MessageRole.Assistant || !hasCalls && !m.TryGetProperty("content", out _))
                    throw ApiError.BadRequest($"{at}.content is required", at + ".content");
            }
            else if (content.ValueKind == JsonValueKind.String) text.Append(content.GetString());
            else if (content.ValueKind == JsonValueKind.Array)
            {
                int j = 0;
                foreach (var part in content.EnumerateArray())
                {
                    string pat = $"{at}.content[{j++}]";
                    if (part.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest($"{pat} must be an object with a 'type'", pat);
                    var type = Str(part, "type", pat + ".type");
                    switch (type)
                    {
                        case "text":
                            text.Append(Str(part, "text", pat + ".text") ?? throw ApiError.BadRequest($"{pat}.text is required", pat + ".text"));
                            break;
                        case "image_url":
                            if (role != MessageRole.User) throw ApiError.BadRequest($"{pat}: images are accepted in user messages only", pat);
                            if (++images > limits.MaxImages) throw ApiError.BadRequest($"the request has more than {limits.MaxImages} images", pat);
                            string? url = part.TryGetProperty("image_url", out var iu) switch
                            {
                                true when iu.ValueKind == JsonValueKind.Object => Str(iu, "url", pat + ".image_url.url"),
                                true when iu.ValueKind == JsonValueKind.String => iu.GetString(),
                                _ => null,
                            };
                            if (url is null) throw ApiError.BadRequest($"{pat}.image_url.url is required", pat + ".image_url.url");
                            pics.Add(DataUrl(url, pat + ".image_url.url", $"image #{images}"));
                            break;
                        default:
                            throw ApiError.BadRequest($"{pat}.type '{type}' is not supported (text and image_url are)", pat + ".type");
                    }
                }
            }
            else throw ApiError.BadRequest($"{at}.content must be a string or an array of parts", at + ".content");
            if (text.Length > limits.MaxPromptChars) throw ApiError.BadRequest($"{at}.content has {text.Length} characters; at most {limits.MaxPromptChars} are accepted", at + ".content");
            r.Messages.Add(new Message(role, text.ToString(), pics.Count > 0 ? pics : null));
        }
        return r;
    }

    public static ParsedRequest Completion(JsonElement root, Llama4ServerOptions limits)
    {
        var r = Common(root, limits);
        if (Bool(root, "echo") == true) throw ApiError.BadRequest("'echo' is not supported", "echo");
        if (root.TryGetProperty("suffix", out var sx) && sx.ValueKind is not JsonValueKind.Null) throw ApiError.BadRequest("'suffix' is not supported", "suffix");
        if (root.TryGetProperty("logprobs", out var lp) && lp.ValueKind is not JsonValueKind.Null) throw ApiError.BadRequest("logprobs are not supported by this server", "logprobs");
        if (Int(root, "best_of", 1, int.MaxValue) is { } bo && bo != 1) throw ApiError.BadRequest("'best_of' must be 1", "best_of");
        r.MaxTokens = Int(root, "max_tokens", 1, int.MaxValue) ?? limits.DefaultCompletionMaxTokens;
        if (!root.TryGetProperty("prompt", out var p)) throw ApiError.BadRequest("'prompt' is required", "prompt");
        var one = p;
        if (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() > 0 && p[0].ValueKind is JsonValueKind.String or JsonValueKind.Array)
        {
            if (p.GetArrayLength() != 1) throw ApiError.BadRequest("one prompt per request is supported (the array holds several)", "prompt");
            one = p[0];
        }
        if (one.ValueKind == JsonValueKind.String)
        {
            r.PromptText = one.GetString()!;
            if (r.PromptText.Length > limits.MaxPromptChars) throw ApiError.BadRequest($"'prompt' has {r.PromptText.Length} characters; at most {limits.MaxPromptChars} are accepted", "prompt");
        }
        else if (one.ValueKind == JsonValueKind.Array)
        {
            var ids = new List<int>();
            foreach (var t in one.EnumerateArray())
            {
                if (t.ValueKind != JsonValueKind.Number || !t.TryGetInt32(out var id)) throw ApiError.BadRequest("'prompt' token ids must be integers", "prompt");
                ids.Add(id);
            }
            r.PromptIds = [.. ids];
        }
        else throw ApiError.BadRequest("'prompt' must be a string, an array of token ids, or an array of one of those", "prompt");
        return r;
    }

    /// <summary>OpenAI function tools (the only kind); tool_choice "auto" (default) or "none" (the tools are then not rendered).</summary>
    static List<JsonElement>? Tools(JsonElement root, Llama4ServerOptions limits)
    {
        if (root.TryGetProperty("functions", out var fns) && fns.ValueKind is not JsonValueKind.Null)
            throw ApiError.BadRequest("'functions' (deprecated) is not supported; send 'tools'", "functions");
        bool off = false;
        if (root.TryGetProperty("tool_choice", out var tc) && tc.ValueKind is not JsonValueKind.Null)
        {
            var choice = tc.ValueKind == JsonValueKind.String ? tc.GetString() : null;
            if (choice == "none") off = true;
            else if (choice != "auto")
                throw ApiError.BadRequest("'tool_choice' must be \"auto\" or \"none\" (forcing a call — \"required\" or a named function — is not supported)", "tool_choice");
        }
        if (!root.TryGetProperty("tools", out var tools) || tools.ValueKind is JsonValueKind.Null) return null;
        if (tools.ValueKind != JsonValueKind.Array) throw ApiError.BadRequest("'tools' must be an array", "tools");
        if (tools.GetArrayLength() > limits.MaxTools) throw ApiError.BadRequest($"'tools' has {tools.GetArrayLength()} entries; at most {limits.MaxTools}", "tools");
        var list = new List<JsonElement>();
        int i = 0;
        foreach (var t in tools.EnumerateArray())
        {
            string at = $"tools[{i++}]";
            if (t.ValueKind != JsonValueKind.Object || Str(t, "type", at + ".type") != "function")
                throw ApiError.BadRequest($"{at} must be {{\"type\": \"function\", \"function\": {{name, description, parameters}}}}", at);
            if (!t.TryGetProperty("function", out var fn) || fn.ValueKind != JsonValueKind.Object)
                throw ApiError.BadRequest($"{at}.function is required", at + ".function");
            var name = Str(fn, "name", at + ".function.name");
            if (name is null || name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                throw ApiError.BadRequest($"{at}.function.name must be 1 to 64 of a-z, A-Z, 0-9, _ and -", at + ".function.name");
            if (fn.TryGetProperty("parameters", out var ps) && ps.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
                throw ApiError.BadRequest($"{at}.function.parameters must be a JSON schema object", at + ".function.parameters");
            list.Add(t.Clone());
        }
        return off || list.Count == 0 ? null : list;
    }

    /// <summary>The fields both endpoints share: model, n, stream, sampling, seed, stop.</summary>
    static ParsedRequest Common(JsonElement root, Llama4ServerOptions limits)
    {
        if (root.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest("the body must be a JSON object");
        var r = new ParsedRequest { Model = Str(root, "model", "model") };
        if (Int(root, "n", int.MinValue, int.MaxValue) is { } n && n != 1)
            throw ApiError.BadRequest($"'n' must be 1 (this server returns one choice per request; send {n} requests instead)", "n");
        r.Stream = Bool(root, "stream") ?? false;
        if (root.TryGetProperty("stream_options", out var so) && so.ValueKind is not JsonValueKind.Null)
        {
            if (so.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest("'stream_options' must be an object", "stream_options");
            if (!r.Stream) throw ApiError.BadRequest("'stream_options' is only allowed with \"stream\": true", "stream_options");
            r.IncludeUsage = Bool(so, "include_usage", "stream_options.include_usage") ?? false;
        }
        var temperature = Num(root, "temperature", 0, 2) ?? 1;
        var stops = new List<string>();
        if (root.TryGetProperty("stop", out var st) && st.ValueKind is not JsonValueKind.Null)
        {
            if (st.ValueKind == JsonValueKind.String) stops.Add(st.GetString()!);
            else if (st.ValueKind == JsonValueKind.Array)
                foreach (var s in st.EnumerateArray())
                    stops.Add(s.ValueKind == JsonValueKind.String ? s.GetString()! : throw ApiError.BadRequest("'stop' entries must be strings", "stop"));
            else throw ApiError.BadRequest("'stop' must be a string or an array of strings", "stop");
            if (stops.Count > limits.MaxStops) throw ApiError.BadRequest($"'stop' has {stops.Count} entries; at most {limits.MaxStops}", "stop");
            if (stops.Any(s => s.Length == 0 || s.Length > limits.MaxStopChars))
                throw ApiError.BadRequest($"'stop' entries must have 1 to {limits.MaxStopChars} characters", "stop");
        }
        long? seed = null;
        if (root.TryGetProperty("seed", out var sd) && sd.ValueKind is not JsonValueKind.Null)
            seed = sd.ValueKind == JsonValueKind.Number && sd.TryGetInt64(out var v) ? v : throw ApiError.BadRequest("'seed' must be an integer", "seed");
        r.Options = new GenerationOptions
        {
            Temperature = (float)temperature,
            TopP = (float)(Num(root, "top_p", 0, 1) ?? 1),
            TopK = Int(root, "top_k", 0, int.MaxValue) ?? 0,
            MinP = (float)(Num(root, "min_p", 0, 1) ?? 0),
            FrequencyPenalty = (float)(Num(root, "frequency_penalty", -2, 2) ?? 0),
            PresencePenalty = (float)(Num(root, "presence_penalty", -2, 2) ?? 0),
            RepetitionPenalty = (float)(Num(root, "repetition_penalty", 0, 10) ?? 1),
            // No seed: a fresh one per request, as OpenAI's own sampling is not reproducible without one.
            Seed = seed is { } s64 ? unchecked((ulong)s64) : BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)),
            StopStrings = stops,
        };
        if (r.Options.TopP <= 0) throw ApiError.BadRequest("'top_p' must be in (0, 1]", "top_p");
        if (r.Options.MinP >= 1) throw ApiError.BadRequest("'min_p' must be in [0, 1)", "min_p");
        if (r.Options.RepetitionPenalty <= 0) throw ApiError.BadRequest("'repetition_penalty' must be > 0", "repetition_penalty");
        return r;
    }

    /// <summary>An image given as a <c>data:image/…;base64,…</c> URL (the only kind: the server fetches nothing).</summary>
    static ImageInput DataUrl(string url, string param, string name)
    {
        if (!url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
            throw ApiError.BadRequest("image URLs must be data: URLs (data:image/png;base64,...); this server fetches nothing from the network", param);
        int comma = url.IndexOf(',');
        if (comma < 0 || !url.AsSpan(5, comma - 5).EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
            throw ApiError.BadRequest("the image data: URL must be base64 (data:image/png;base64,...)", param);
        var mediaType = url[5..(comma - 7)];
        if (!mediaType.StartsWith("image/", StringComparison.OrdinalIgnoreCase))
            throw ApiError.BadRequest($"the data: URL holds '{mediaType}', not an image", param);
        var b64 = url.AsSpan(comma + 1);
        var bytes = new byte[b64.Length / 4 * 3 + 3];
        if (!Convert.TryFromBase64Chars(b64, bytes, out int written))
            throw ApiError.BadRequest("the image data: URL is not valid base64", param);
        return ImageInput.FromBytes(bytes.AsMemory(0, written), name);
    }

    static string? Str(JsonElement o, string name, string param)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw ApiError.BadRequest($"'{param}' must be a string", param);
    }

    static bool? Bool(JsonElement o, string name, string? param = null)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw ApiError.BadRequest($"'{param ?? name}' must be true or false", param ?? name),
        };
    }

    static double? Num(JsonElement o, string name, double min, double max)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || !(d >= min && d <= max))
            throw ApiError.BadRequest($"'{name}' must be a number in [{min}, {max}]", name);
        return d;
    }

    static int? Int(JsonElement o, string name, int min, int max)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i) || i < min || i > max)
            throw ApiError.BadRequest(min == int.MinValue ? $"'{name}' must be an integer" : $"'{name}' must be an integer ≥ {min}", name);
        return i;
    }
}
