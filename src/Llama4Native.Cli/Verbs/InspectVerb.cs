using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 inspect --model DIR | --preset NAME | --config FILE [--context N] [--device SPEC|none] [--device-memory SIZE] [--quantize MODE] [--names]
/// Architecture, layer kinds, parameters, bytes per dtype, memory for weights and KV cache, and whether it fits.
/// </summary>
internal static class InspectVerb
{
    public static readonly VerbSpec Spec = new("inspect", "describe a checkpoint: layers, parameters, bytes per dtype, memory for weights + KV cache, and whether it fits",
        [
            Common.Model,
            new("preset", "NAME", $"a built-in config instead of a checkpoint: {string.Join(", ", Presets.Names)}"),
            new("config", "FILE", "a config.json instead of a checkpoint"),
            new("context", "N", "tokens to size the KV cache for, 1 to 2^40 (default: the model's max position embeddings, at most 131072)"),
            new("device", "SPEC", "the device to fit: auto (default), cuda, cuda:N, emu, or none"),
            new("device-memory", "SIZE", "fit against this much memory instead of a device, e.g. 80GiB, 141GiB, 80GB, 512MiB"),
            Common.Quantize, Common.Int4Group, Common.ComputeOpt, Common.KvCache, Common.DevicesCount,
            new("names", null, "also print the HF → ours tensor name table (alone: only the table)"),
        ]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int sources = (a.Has("model") ? 1 : 0) + (a.Has("preset") ? 1 : 0) + (a.Has("config") ? 1 : 0);
        if (a.Has("names") && sources == 0)
        {
            stdout.Write(TensorNames.Describe());
            return 0;
        }
        if (sources != 1) throw new UsageException($"give exactly one of --model DIR, --preset NAME ({string.Join(", ", Presets.Names)}) or --config FILE");
        long? contextArg = a.Has("context") ? a.Long("context", 0, 1, 1L << 40) : null;
        long? deviceMemory = a.Size("device-memory");
        var quantize = Common.Quantization(a);
        var kvCache = Common.KvFormat(a);
        Common.Compute(a);
        string? deviceSpec = a.Get("device") is "none" ? "none" : a.Has("device") ? Common.DeviceSpec(a) : null;
        if (deviceMemory is not null && deviceSpec is not null && deviceSpec != "none")
            throw new UsageException("give --device or --device-memory, not both");

        Llama4Config config;
        string? dir = null;
        if (a.Get("preset") is { } preset)
        {
            if (!Presets.Names.Contains(preset)) throw new UsageException($"--preset '{preset}' is not one of {string.Join(", ", Presets.Names)}");
            config = Llama4Config.Parse(Presets.ConfigJson(preset), $"preset {preset}");
        }
        else if (a.Get("config") is { } cfgPath)
        {
            if (Directory.Exists(cfgPath)) throw new UsageException($"--config {cfgPath} is a folder; pass the config.json file (or use --model {cfgPath})");
            if (!File.Exists(cfgPath)) throw new UsageException($"--config {cfgPath}: no such file");
            config = Llama4Config.Load(cfgPath);
        }
        else
        {
            dir = Common.ModelDir(a);
            config = Llama4Config.Load(dir);
        }
        long context = contextArg ?? (config.Text.MaxPositionEmbeddings > 0 ? Math.Min(config.Text.MaxPositionEmbeddings, 131072) : 8192);

        // With shards present, validate them and count real bytes per dtype; a bare config.json is enough otherwise.
        bool hasWeights = dir is not null && (File.Exists(Path.Combine(dir, Checkpoint.IndexFile)) || File.Exists(Path.Combine(dir, Checkpoint.SingleFile)));
        using var ckpt = hasWeights ? Checkpoint.Open(dir!) : null;
        using Device? device = deviceMemory is null ? OpenDevice(deviceSpec, stderr) : null;
        var request = deviceMemory is { } m
            ? new InspectRequest(context, m, m, $"--device-memory {Format.Bytes(m)}", quantize, kvCache)
            : new InspectRequest(context, device?.TotalMemory, device?.FreeMemory, device?.Name, quantize, kvCache);
        stdout.Write(InspectReport.Build(config, ckpt, request));
        int devices = Common.DeviceCount(a);
        if (devices > 1)
            stdout.Write(Distributed.ShardingReport.Render(Common.Sharding(config, devices), new LoadOptions(Quantize: quantize.Mode == QuantizeMode.None ? null : quantize),
                                                           context, request.DeviceTotal ?? 80L << 30, request.DeviceName ?? "an 80 GB device"));
        if (a.Has("names")) stdout.Write(TensorNames.Describe());
        return 0;
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
