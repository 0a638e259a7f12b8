namespace Llama4Native.Kernels;

/// <summary>
/// Compile-time parameters of a kernel file (tile sizes, variants): `-D NAME=VALUE` for NVRTC and g++ alike.
/// They are part of the JIT cache key; sizes are run-time arguments and never belong here.
/// </summary>
internal readonly struct KernelDefines : IEquatable<KernelDefines>
{
    readonly KeyValuePair<string, string>[]? items;
    public static readonly KernelDefines None = default;

    public KernelDefines(params IEnumerable<KeyValuePair<string, string>> defs)
    {
        items = defs.OrderBy(d => d.Key, StringComparer.Ordinal).ToArray();
        foreach (var (k, v) in items)
            if (k.Length == 0 || !k.All(c => char.IsAsciiLetterOrDigit(c) || c == '_') || v.Any(c => char.IsWhiteSpace(c) || c == '"'))
                throw new ArgumentException($"bad kernel define '{k}={v}': names are identifiers, values have no spaces or quotes");
    }

    public static KernelDefines Of(params (string Name, object Value)[] defs) =>
        new(defs.Select(d => KeyValuePair.Create(d.Name, Convert.ToString(d.Value, System.Globalization.CultureInfo.InvariantCulture)!)));

    public IReadOnlyList<KeyValuePair<string, string>> Items => items ?? [];
    public IEnumerable<string> AsOptions() => Items.Select(d => $"-D{d.Key}={d.Value}");
    /// <summary>Canonical text ("GEMM_BM=128;GEMM_BN=64"); empty when none.</summary>
    public string Key => string.Join(";", Items.Select(d => $"{d.Key}={d.Value}"));
    public bool Equals(KernelDefines o) => Key == o.Key;
    public override bool Equals(object? obj) => obj is KernelDefines d && Equals(d);
    public override int GetHashCode() => Key.GetHashCode(StringComparison.Ordinal);
    public override string ToString() => Key.Length == 0 ? "(defaults)" : Key;
}
