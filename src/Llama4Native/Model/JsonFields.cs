using System.Text.Json;

namespace Llama4Native.Model;

/// <summary>
/// Reads typed fields out of one JSON object and collects every problem instead of stopping at the first,
/// so a broken config.json is reported in one go. <paramref name="path"/> is the object's dotted path
/// ("text_config") used to name fields in messages.
/// </summary>
internal sealed class JsonFields(JsonElement obj, string path, List<string> problems)
{
    public JsonElement Object { get; } = obj;
    public string Path { get; } = path;
    public List<string> Problems { get; } = problems;

    string Name(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    public bool Has(string key) =>
        Object.ValueKind == JsonValueKind.Object && Object.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public bool TryGet(string key, out JsonElement value)
    {
        value = default;
        return Object.ValueKind == JsonValueKind.Object && Object.TryGetProperty(key, out value) &&
               value.ValueKind != JsonValueKind.Null;
    }

    void Missing(string key, string expected) =>
        Problems.Add($"{Name(key)} is missing; expected {expected}");

    void Wrong(string key, JsonElement v, string expected) =>
        Problems.Add($"{Name(key)} is {Describe(v)}; expected {expected}");

    static string Describe(JsonElement v)
    {
        string raw = v.GetRawText();
        if (raw.Length > 40) raw = raw[..40] + "…";
        return $"{v.ValueKind.ToString().ToLowerInvariant()} {raw}";
    }

    /// <summary>A required integer; 0 (and a recorded problem) when missing or not an integer.</summary>
    public int Int(string key, string example) => IntOr(key, null, example);

    public int IntOr(string key, int? fallback, string example)
    {
        if (!TryGet(key, out var v))
        {
            if (fallback is { } f) return f;
            Missing(key, $"an integer (e.g. {example})");
            return 0;
        }
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        // HF writes some integers as floats ("floor_scale": 8192.0); accept those when exact.
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && d == Math.Floor(d) &&
            d is >= int.MinValue and <= int.MaxValue)
            return (int)d;
        Wrong(key, v, $"an integer (e.g. {example})");
        return 0;
    }

    public double Double(string key, string example) => DoubleOr(key, null, example);

    public double DoubleOr(string key, double? fallback, string example)
    {
        if (!TryGet(key, out var v))
        {
            if (fallback is { } f) return f;
            Missing(key, $"a number (e.g. {example})");
            return 0;
        }
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d)) return d;
        Wrong(key, v, $"a finite number (e.g. {example})");
        return 0;
    }

    public bool BoolOr(string key, bool fallback)
    {
        if (!TryGet(key, out var v)) return fallback;
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        Wrong(key, v, "true or false");
        return fallback;
    }

    public string? StringOr(string key, string? fallback)
    {
        if (!TryGet(key, out var v)) return fallback;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        Wrong(key, v, "a string");
        return fallback;
    }

    /// <summary>An optional list of integers; null when absent or null.</summary>
    public int[]? IntList(string key)
    {
        if (!TryGet(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Array)
        {
            Wrong(key, v, "a list of integers");
            return null;
        }
        var list = new List<int>();
        int idx = 0;
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int i)) list.Add(i);
            else Problems.Add($"{Name(key)}[{idx}] is {Describe(e)}; expected an integer");
            idx++;
        }
        return list.ToArray();
    }

    public string[]? StringList(string key)
    {
        if (!TryGet(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Array)
        {
            Wrong(key, v, "a list of strings");
            return null;
        }
        var list = new List<string>();
        int idx = 0;
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind == JsonValueKind.String) list.Add(e.GetString()!);
            else Problems.Add($"{Name(key)}[{idx}] is {Describe(e)}; expected a string");
            idx++;
        }
        return list.ToArray();
    }

    /// <summary>A nested object, or null when absent; a recorded problem when present but not an object.</summary>
    public JsonFields? Sub(string key)
    {
        if (!TryGet(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Object)
        {
            Wrong(key, v, "an object");
            return null;
        }
        return new JsonFields(v, Name(key), Problems);
    }
}
