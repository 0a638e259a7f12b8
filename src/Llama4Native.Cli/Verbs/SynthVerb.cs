using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 synth --preset NAME | --config FILE --out DIR [--dtype bf16|f16|f32] [--seed N] [--max-shard-size 5GB]
/// Writes a deterministic random-weight checkpoint in the exact Hugging Face layout.
/// </summary>
public static class SynthVerb
{
    public const string Help = "write a random-weight checkpoint in the HF layout (--preset tiny-scout|tiny-maverick|scout|maverick|… or --config FILE) --out DIR";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["preset", "config", "out", "dtype", "seed", "max-shard-size"], ["quiet"]);
        string? preset = a.Get("preset"), configPath = a.Get("config");
        if ((preset is null) == (configPath is null))
            throw new UsageException($"give exactly one of --preset ({string.Join(", ", Presets.Names)}) or --config FILE");
        string outDir = a.Require("out", "DIR");
        string json;
        if (preset is not null)
        {
            try { json = Presets.ConfigJson(preset); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
        }
        else json = File.ReadAllText(configPath!);
        var dtype = (a.Get("dtype") ?? "bf16").ToLowerInvariant() switch
        {
            "bf16" => DType.BF16, "f16" or "fp16" => DType.F16, "f32" or "fp32" => DType.F32,
            var d => throw new UsageException($"--dtype {d}: expected bf16, f16 or f32"),
        };
        ulong seed = (ulong)a.Long("seed", 0);
        long maxShard;
        try { maxShard = Synth.ParseSize(a.Get("max-shard-size") ?? "5GB"); }
        catch (FormatException e) { throw new UsageException($"--max-shard-size: {e.Message}"); }

        var bar = a.Has("quiet") ? null : new ProgressBar(stderr, "synth");
        var sw = Stopwatch.StartNew();
        var shards = Synth.Write(json, outDir, new SynthOptions(dtype, seed, maxShard, (d, t) => bar?.Update(d, t, sw.Elapsed)));
        bar?.Done();
        long bytes = shards.Sum(p => new FileInfo(p).Length);
        stdout.WriteLine($"wrote {shards.Count} shard{(shards.Count == 1 ? "" : "s")}, {Format.Bytes(bytes)} to {outDir} in {sw.Elapsed.TotalSeconds:0.0} s " +
                         $"({bytes / 1e9 / Math.Max(1e-9, sw.Elapsed.TotalSeconds):0.00} GB/s), seed {seed}");
        return 0;
    }
}
