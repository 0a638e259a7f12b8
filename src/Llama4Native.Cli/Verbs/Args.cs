namespace Llama4Native.Cli.Verbs;

/// <summary>A small, strict option parser: `--name value`, `--flag`; unknown options are usage errors.</summary>
public sealed class Args
{
    readonly Dictionary<string, List<string>> values = new(StringComparer.Ordinal);
    readonly HashSet<string> flags = new(StringComparer.Ordinal);
    public List<string> Positional { get; } = [];

    public Args(string[] argv, IEnumerable<string> valueOptions, IEnumerable<string>? flagOptions = null)
    {
        var vals = valueOptions.ToHashSet(StringComparer.Ordinal);
        var fl = (flagOptions ?? []).ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < argv.Length; i++)
        {
            var a = argv[i];
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                var eq = a.IndexOf('=');
                var name = eq > 0 ? a[2..eq] : a[2..];
                if (fl.Contains(name) && eq < 0) { flags.Add(name); continue; }
                if (!vals.Contains(name)) throw new UsageException($"unknown option '{a}'");
                string v = eq > 0 ? a[(eq + 1)..] : i + 1 < argv.Length ? argv[++i] : throw new UsageException($"option --{name} needs a value");
                if (!values.TryGetValue(name, out var list)) values[name] = list = [];
                list.Add(v);
            }
            else Positional.Add(a);
        }
    }

    public bool Flag(string name) => flags.Contains(name);
    /// <summary>A flag that was given, or a value option that was given.</summary>
    public bool Has(string name) => flags.Contains(name) || values.ContainsKey(name);
    public string Require(string name, string what) => Get(name) ?? throw new UsageException($"--{name} {what} is required");
    public long Long(string name, long fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        return long.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : throw new UsageException($"--{name} expects an integer, got '{s}'");
    }
    public string? Get(string name) => values.TryGetValue(name, out var l) ? l[^1] : null;
    public IReadOnlyList<string> All(string name) => values.TryGetValue(name, out var l) ? l : [];
    public string Get(string name, string fallback) => Get(name) ?? fallback;
    public int GetInt(string name, int fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        return int.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : throw new UsageException($"--{name} expects an integer, got '{s}'");
    }
    public double GetDouble(string name, double fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        return double.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : throw new UsageException($"--{name} expects a number, got '{s}'");
    }
}
