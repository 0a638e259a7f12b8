using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 inspect (--model DIR | --preset NAME | --config FILE) [--quantize none|int4|fp8] [--int4-group-size G]
///     [--context N] [--device auto|cuda|cuda:N|emu|none] [--device-memory SIZE] [--names]
/// Architecture, layer kinds, parameters, bytes per dtype, memory for weights (by format, for the chosen
/// quantization and every recipe) and KV cache, and whether it fits.
/// </summary>
public static class InspectVerb
{
    public const string Help = "describe a model: layers, parameters, bytes per dtype, memory for weights (bf16/fp8/int4) + KV cache " +
                               "((--model DIR | --preset NAME | --config FILE) [--quantize none|int4|fp8] [--int4-group-size G] [--context N] [--device-memory 80GiB])";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "preset", "config", "context", "device", "quantize", "int4-group-size", "device-memory"], ["names"]);
        int sources = (a.Has("model") ? 1 : 0) + (a.Has("preset") ? 1 : 0) + (a.Has("config") ? 1 : 0);
        if (a.Has("names") && sources == 0)
        {
            stdout.Write(TensorNames.Describe());
            return 0;
        }
        if (sources != 1) throw new UsageException("give exactly one of --model DIR, --preset NAME (" + string.Join(", ", Presets.Names) + ") or --config FILE");
        var quantize = ParseQuantize(a);
        string? dir = a.Get("model");
        var config = dir is not null ? Llama4Config.Load(dir)
            : a.Get("preset") is { } preset ? (Presets.Names.Contains(preset) ? Llama4Config.Parse(Presets.ConfigJson(preset), $"preset {preset}")
                                                : throw new UsageException($"--preset '{preset}' is unknown; presets: {string.Join(", ", Presets.Names)}"))
            : Llama4Config.Load(a.Get("config")!);
        long context = a.Long("context", config.Text.MaxPositionEmbeddings > 0 ? Math.Min(config.Text.MaxPositionEmbeddings, 131072) : 8192);
        if (context <= 0) throw new UsageException("--context must be positive");

        // With shards present, validate them and count real bytes per dtype; a bare config.json is enough otherwise.
        bool hasWeights = dir is not null && (File.Exists(Path.Combine(dir, Checkpoint.IndexFile)) || File.Exists(Path.Combine(dir, Checkpoint.SingleFile)));
        using var ckpt = hasWeights ? Checkpoint.Open(dir!) : null;
        ModelReport report;
        try { report = ModelReport.FromConfig(config, ckpt, quantize); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }

        if (a.Get("device-memory") is { } size)
        {
            long bytes = ParseSize(size);
            stdout.Write(report.Render(context, bytes, bytes, $"a {Format.Bytes(bytes)} device (--device-memory)"));
        }
        else
        {
            using Device? device = OpenDevice(a.Get("device"), stderr);
            stdout.Write(report.Render(context, device?.TotalMemory, device?.FreeMemory, device?.Name));
        }
        if (a.Has("names")) stdout.Write(TensorNames.Describe());
        return 0;
    }

    /// <summary>--quantize none|int4|fp8 and --int4-group-size G (positive, even; default 128).</summary>
    internal static QuantizeOptions ParseQuantize(Args a)
    {
        var mode = QuantizeMode.None;
        if (a.Get("quantize") is { } q && !QuantizeOptions.TryParseMode(q, out mode))
            throw new UsageException($"--quantize '{q}': expected none, int4 or fp8");
        int g = a.GetInt("int4-group-size", 128);
        if (g < 2 || g % 2 != 0) throw new UsageException($"--int4-group-size {g}: expected a positive even number (128 for the real models)");
        return new QuantizeOptions(mode, g);
    }

    /// <summary>"80GiB", "141 GiB", "80GB", "500MiB", "1.5TiB", or plain bytes.</summary>
    internal static long ParseSize(string s)
    {
        var m = System.Text.RegularExpressions.Regex.Match(s.Trim(), @"^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?$", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        if (!m.Success || !double.TryParse(m.Groups[1].Value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v))
            throw new UsageException($"--device-memory '{s}': expected a size such as 80GiB, 141GiB or 80GB");
        string unit = m.Groups[2].Success ? m.Groups[2].Value.ToUpperInvariant() : "B";
        double mult = unit switch
        {
            "B" => 1, "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1L << 10, "MIB" => 1L << 20, "GIB" => 1L << 30, "TIB" => 1L << 40, _ => 0,
        };
        double bytes = v * mult;
        if (!(bytes >= 1 && bytes < 1e18)) throw new UsageException($"--device-memory '{s}' is out of range");
        return (long)bytes;
    }

    /// <summary>
    /// The device to size against: "auto" (default) = the first GPU, else the emulated device; "none" = do not
    /// ask; otherwise a <see cref="DeviceFactory"/> spec (cuda, cuda:N, emu). A device that cannot be opened is
    /// reported and treated as unknown.
    /// </summary>
    internal static Device? OpenDevice(string? spec, TextWriter stderr)
    {
        if (spec is "none") return null;
        try { return DeviceFactory.Create(spec ?? "auto"); }
        catch (ArgumentException e) { throw new UsageException($"--device: {e.Message}"); }
        catch (Exception e)
        {
            stderr.WriteLine($"llama4: no device ({e.Message}); memory fit unknown");
            return null;
        }
    }
}
