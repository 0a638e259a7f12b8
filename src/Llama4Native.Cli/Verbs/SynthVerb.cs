using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 synth --preset NAME | --config FILE --out DIR [--dtype bf16|f16|f32] [--seed N] [--max-shard-size 5GB] [--force] [--quiet]
/// Writes a deterministic random-weight checkpoint in the exact Hugging Face layout. Refuses a non-empty folder
/// without --force (which first removes the old shards and index, so none are left stale), and checks free space.
/// </summary>
internal static class SynthVerb
{
    public static readonly VerbSpec Spec = new("synth", "write a deterministic random-weight checkpoint in the Hugging Face layout",
        [
            new("preset", "NAME", $"a built-in config: {string.Join(", ", Presets.Names)}"),
            new("config", "FILE", "a config.json instead of a preset"),
            new("out", "DIR", "the folder to write (required; must be empty or new unless --force)"),
            new("dtype", "TYPE", "bf16 (default), f16 or f32"),
            new("seed", "S", "weights seed, 0 to 18446744073709551615 (default 0)"),
            new("max-shard-size", "SIZE", "largest shard, e.g. 5GB (default), 400MB, 2GiB"),
            new("force", null, "write into a non-empty folder, removing its old model*.safetensors and index first"),
            new("quiet", null, "no progress bar"),
        ]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        string? preset = a.Get("preset"), configPath = a.Get("config");
        if ((preset is null) == (configPath is null))
            throw new UsageException($"give exactly one of --preset ({string.Join(", ", Presets.Names)}) or --config FILE");
        string outDir = a.Require("out", "DIR");
        var dtype = (a.Get("dtype") ?? "bf16").ToLowerInvariant() switch
        {
            "bf16" => DType.BF16, "f16" or "fp16" => DType.F16, "f32" or "fp32" => DType.F32,
            var d => throw new UsageException($"--dtype {d}: expected bf16, f16 or f32"),
        };
        ulong seed = a.ULong("seed", 0);
        long maxShard = a.Size("max-shard-size") ?? 5_000_000_000;
        string json;
        if (preset is not null)
        {
            try { json = Presets.ConfigJson(preset); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
        }
        else
        {
            if (!File.Exists(configPath)) throw new UsageException(Directory.Exists(configPath) ? $"--config {configPath} is a folder; pass the config.json file" : $"--config {configPath}: no such file");
            json = File.ReadAllText(configPath!);
        }
        if (File.Exists(outDir)) throw new UsageException($"--out {outDir} is a file; pass a folder");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
        {
            if (!a.Has("force")) throw new UsageException($"--out {outDir} is not empty; pass an empty or new folder, or --force to replace the checkpoint in it");
            foreach (var f in Directory.EnumerateFiles(outDir, "model*.safetensors").Append(Path.Combine(outDir, Checkpoint.IndexFile)))
                if (File.Exists(f)) File.Delete(f);
        }
        long need = Synth.PlannedBytes(json, dtype);
        var probe = Path.GetFullPath(outDir);
        while (!Directory.Exists(probe) && Path.GetDirectoryName(probe) is { } up) probe = up;
        long free = new DriveInfo(probe).AvailableFreeSpace;
        if (need + (need >> 6) + (1 << 20) > free)
            throw new InvalidOperationException($"{outDir} needs {Format.Bytes(need)} but only {Format.Bytes(free)} is free on its disk; free some space, pick another --out, or a smaller --preset/--dtype");

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
