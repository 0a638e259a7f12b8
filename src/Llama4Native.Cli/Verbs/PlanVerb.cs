using System.Globalization;
using Llama4Native.Checkpoints;
using Llama4Native.Devices.Recording;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 plan (--preset NAME | --config FILE | --model DIR) [--quantize none|int4|fp8] [--int4-group-size G]
///   [--context N] [--batch B] [--device-memory 80GiB] [--bandwidth TB/s] [--tflops N] [--steps N] [--capture] [--json]
/// Builds the real graphs on the recording device and prints the memory plan, one decode step and one prefill, modelled.
/// </summary>
internal static class PlanVerb
{
    public static readonly VerbSpec Spec = new("plan",
        "dry-run a model on the recording device: memory plan, launches/bytes/syncs per decode step and prefill, modelled speed",
        [
            new("preset", "NAME", $"a built-in config: {string.Join(", ", Presets.Names)}"),
            new("config", "FILE", "a config.json"),
            Common.Model,
            Common.Quantize, Common.Int4Group, Common.KvCache,
            new("context", "N", "the position of the modelled decode step and the prefill length, ≥ 2 (default 8192; with --devices: the KV cache's context, default 131072)"),
            Common.DevicesCount,
            new("batch", "B", "also plan the server's batched decode step: B sequences (1 to 4096) decoded together at context N over the paged KV cache — " +
                              "aggregate tokens/s, and the KV capacity: sequences of context N that fit, the largest context at B sequences"),
            new("device-memory", "SIZE", "memory to fit, e.g. 80GiB, 141GiB (default 80GiB)"),
            new("bandwidth", "TB/s", "memory bandwidth of the roofline (default 3.35, H100 SXM; H200: 4.8)"),
            new("tflops", "N", "dense bf16 TFLOP/s of the roofline (default 989)"),
            new("steps", "N", "decode steps timed on the recording device for the host time (default 100)"),
            new("max-piece", "N|auto", "the prefill piece size, or auto: the largest of 2048/1024/512/256 that fits (default auto)"),
            new("capture", null, "model the decode step replayed as one captured graph"),
            new("json", null, "print JSON instead of text"),
        ]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int sources = (a.Has("preset") ? 1 : 0) + (a.Has("config") ? 1 : 0) + (a.Has("model") ? 1 : 0);
        if (sources != 1) throw new UsageException("give exactly one of --preset NAME, --config FILE or --model DIR");
        string name;
        Llama4Config config;
        if (a.Get("preset") is { } preset)
        {
            if (!Presets.Names.Contains(preset)) throw new UsageException($"--preset '{preset}' is not one of {string.Join(", ", Presets.Names)}");
            config = Llama4Config.Parse(Presets.ConfigJson(preset), $"preset {preset}");
            name = preset;
        }
        else if (a.Get("config") is { } cfg)
        {
            if (!File.Exists(cfg)) throw new UsageException($"--config {cfg}: no such file");
            config = Llama4Config.Load(cfg);
            name = cfg;
        }
        else
        {
            string dir = Common.ModelDir(a);
            config = Llama4Config.Load(dir);
            name = dir;
        }
        var q = Common.Quantization(a);
        var kvCache = Common.KvFormat(a);
        int batch = a.Has("batch") ? a.GetInt("batch", 1, 1, 4096) : 0;
        int context = a.GetInt("context", 8192, 2, int.MaxValue);
        long memory = a.Size("device-memory") ?? 80L << 30;
        double bw = a.GetDouble("bandwidth", 3.35), tflops = a.GetDouble("tflops", 989);
        if (bw <= 0 || tflops <= 0) throw new UsageException("--bandwidth and --tflops must be positive");
        int devices = Common.DeviceCount(a);
        if (devices > 1 && batch > 0) throw new UsageException("--batch plans the batched step on one device; with --devices the plan is the sharding (drop one of them)");
        if (devices > 1)
        {
            // Several devices: the sharding plan, memory per device (the loader's placement with each rank's slices) and
            // the collectives of a decode step. The single-device launch model below is per rank the same graph.
            var sharding = Common.Sharding(config, devices);
            long kvContext = a.Has("context") ? context : 131072;
            stdout.Write($"model         {name}{(q.Mode == QuantizeMode.None ? "" : $" (--quantize {q.Mode.ToString().ToLowerInvariant()})")} on {devices} devices\n");
            stdout.Write(Distributed.ShardingReport.Render(sharding, new LoadOptions(Quantize: q.Mode == QuantizeMode.None ? null : q), kvContext, memory, a.Has("device-memory") ? "--device-memory" : "the default 80 GiB card"));
            return 0;
        }
        var options = new PlanOptions(context, memory, bw * 1e12, tflops * 1e12, a.GetInt("steps", 100, 1, 100_000), MaxPiece(a),
                                      new LoadOptions(Quantize: q.Mode == QuantizeMode.None ? null : q), a.Flag("capture"), kvCache, batch);
        Plan plan;
        try { plan = Planner.Run(config, options, name + (q.Mode == QuantizeMode.None ? "" : $" ({q.Mode.ToString().ToLowerInvariant()})")); }
        catch (ArgumentException e) when (e.Message.Contains("int4 group size", StringComparison.Ordinal) || e.Message.Contains("FP8 in this checkpoint", StringComparison.Ordinal))
        { throw new UsageException(e.Message); }
        stdout.Write(a.Flag("json") ? plan.RenderJson() + "\n" : plan.RenderText());
        return 0;
    }

    static int MaxPiece(Args a) => Common.MaxPieceValue(a);

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
