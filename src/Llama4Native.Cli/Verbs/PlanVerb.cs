using System.Globalization;
using Llama4Native.Checkpoints;
using Llama4Native.Devices.Recording;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 plan (--preset NAME | --config FILE | --model DIR) [--quantize none|int4|fp8] [--int4-group-size G]
///   [--context N] [--batch 1] [--device-memory 80GiB] [--bandwidth TB/s] [--tflops N] [--steps N] [--capture] [--json]
/// Builds the real graphs on the recording device and prints the memory plan, one decode step and one prefill, modelled.
/// </summary>
public static class PlanVerb
{
    public const string Help = "dry-run a model on the recording device: memory plan, launches/bytes/syncs per decode step and prefill, modelled speed (--preset NAME|--config FILE|--model DIR [--context N] [--capture] [--json])";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["preset", "config", "model", "quantize", "int4-group-size", "context", "batch", "device-memory", "bandwidth", "tflops", "steps", "max-piece"], ["json", "capture"]);
        int sources = (a.Has("preset") ? 1 : 0) + (a.Has("config") ? 1 : 0) + (a.Has("model") ? 1 : 0);
        if (sources != 1) throw new UsageException("give exactly one of --preset NAME, --config FILE or --model DIR");
        string name;
        Llama4Config config;
        if (a.Get("preset") is { } preset)
        {
            try { config = Llama4Config.Parse(Presets.ConfigJson(preset), $"preset {preset}"); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            name = preset;
        }
        else
        {
            string path = a.Get("config") ?? a.Get("model")!;
            config = Llama4Config.Load(path);
            name = path;
        }
        if (!QuantizeOptions.TryParseMode(a.Get("quantize", "none"), out var mode))
            throw new UsageException($"--quantize must be none, int4 or fp8, not '{a.Get("quantize")}'");
        int group = a.GetInt("int4-group-size", 128);
        if (a.GetInt("batch", 1) != 1) throw new UsageException("--batch: only batch 1 exists so far (batches of sequences are not implemented)");
        int context = checked((int)a.Long("context", 8192));
        long memory = ParseBytes(a.Get("device-memory", "80GiB"));
        double bw = a.GetDouble("bandwidth", 3.35), tflops = a.GetDouble("tflops", 989);
        if (context < 2 || bw <= 0 || tflops <= 0) throw new UsageException("--context must be ≥ 2, --bandwidth and --tflops positive");
        var options = new PlanOptions(context, memory, bw * 1e12, tflops * 1e12, a.GetInt("steps", 100), a.GetInt("max-piece", 256),
                                      new LoadOptions(Quantize: mode == QuantizeMode.None ? null : new QuantizeOptions(mode, group)), a.Flag("capture"));
        var plan = Planner.Run(config, options, name + (mode == QuantizeMode.None ? "" : $" ({mode.ToString().ToLowerInvariant()})"));
        stdout.Write(a.Flag("json") ? plan.RenderJson() + "\n" : plan.RenderText());
        return 0;
    }

    /// <summary>"80GiB", "141 GiB", "80GB", "512MiB" or a plain byte count.</summary>
    internal static long ParseBytes(string s)
    {
        var t = s.Replace(" ", "", StringComparison.Ordinal);
        (string Suffix, double Mul)[] units = [("TiB", 1L << 40), ("GiB", 1L << 30), ("MiB", 1L << 20), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("B", 1)];
        foreach (var (suf, mul) in units)
            if (t.EndsWith(suf, StringComparison.OrdinalIgnoreCase) &&
                double.TryParse(t[..^suf.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0)
                return (long)(v * mul);
        if (long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var b) && b > 0) return b;
        throw new UsageException($"--device-memory: '{s}' is not a size (e.g. 80GiB, 141GiB)");
    }
}
