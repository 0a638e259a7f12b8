using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Llama4Native.Generation;

namespace Llama4Native.Server;

/// <summary>
/// Tool calling the way Hugging Face's Llama 4 chat template renders it (tools in the first user message, its
/// default <c>tools_in_user_message = true</c>): a system message gets "Environment: ipython\n" in front; the first
/// user message becomes the template's instruction, every tool as indented JSON, then the user's text; the model
/// answers a call as <c>{"name": …, "parameters": {…}}</c>, which <see cref="Parse"/> turns into OpenAI
/// <c>tool_calls</c>. An assistant turn with tool calls is rendered as the template writes them
/// (<c>{"name": "f", "parameters": ARGS}</c>) — without the &lt;|python_start|&gt;&lt;|python_end|&gt; pair the
/// template puts around its (usually empty) text, as message text cannot carry special tokens here; tool results
/// are ipython turns.
/// </summary>
internal static class ToolCalls
{
    public const string Instruction =
        "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" +
        "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n";

    static readonly JsonWriterOptions Indented = new() { Indented = true, IndentSize = 4, NewLine = "\n", Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A tool as the template's <c>t | tojson(indent=4)</c> prints it (keys in the order given).</summary>
    public static string ToolJson(JsonElement tool)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, Indented)) tool.WriteTo(w);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>The messages with the tools rendered in (see the class remarks). The first message after an optional
    /// system message must be the user's.</summary>
    public static List<Message> Render(IReadOnlyList<Message> messages, IReadOnlyList<JsonElement> tools)
    {
        var list = messages.ToList();
        int at = 0;
        if (list.Count > 0 && list[0].Role == MessageRole.System)
        {
            list[0] = list[0] with { Text = "Environment: ipython\n" + list[0].Text.Trim() };
            at = 1;
        }
        if (at >= list.Count || list[at].Role != MessageRole.User)
            throw ApiError.BadRequest("with tools, the first message after the system message must be the user's (the Llama 4 chat template puts the tools there)", "messages");
        var sb = new StringBuilder(Instruction);
        foreach (var t in tools) sb.Append(ToolJson(t)).Append("\n\n");
        sb.Append(list[at].Text.Trim());
        list[at] = list[at] with { Text = sb.ToString() };
        return list;
    }

    /// <summary>An assistant tool call as the template writes it: <c>{"name": "NAME", "parameters": ARGS}</c>, ARGS
    /// being the call's arguments JSON (or, when they are not JSON, that text as a JSON string).</summary>
    public static string CallText(string name, string arguments)
    {
        string args;
        try
        {
            using var doc = JsonDocument.Parse(arguments);
            args = JsonSerializer.Serialize(doc.RootElement, new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        }
        catch (JsonException) { args = JsonSerializer.Serialize(arguments); }
        return "{\"name\": " + JsonSerializer.Serialize(name, new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + ", \"parameters\": " + args + "}";
    }

    /// <summary>The calls in a reply that is nothing but a call (<c>{"name", "parameters"}</c>) or an array of them;
    /// null for any other reply (it is plain content).</summary>
    public static List<(string Name, string Arguments)>? Parse(string reply)
    {
        var s = reply.Trim();
        if (s.Length < 2 || s[0] is not ('{' or '[')) return null;
        try
        {
            using var doc = JsonDocument.Parse(s);
            var items = doc.RootElement.ValueKind == JsonValueKind.Array ? doc.RootElement.EnumerateArray().ToList() : [doc.RootElement];
            var calls = new List<(string, string)>();
            foreach (var e in items)
            {
                if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String) return null;
                if (!e.TryGetProperty("parameters", out var p) && !e.TryGetProperty("arguments", out p)) return null;
                if (p.ValueKind != JsonValueKind.Object) return null;
                calls.Add((n.GetString()!, p.GetRawText()));
            }
            return calls.Count > 0 ? calls : null;
        }
        catch (JsonException) { return null; }
    }
}
