using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 inspect --model DIR [--context N] [--device auto|cuda|cuda:N|emu|none] [--names]
/// Architecture, layer kinds, parameters, bytes per dtype, memory for weights and KV cache, and whether it fits.
/// </summary>
public static class InspectVerb
{
    public const string Help = "describe a checkpoint: layers, parameters, bytes per dtype, memory for weights + KV cache (--model DIR [--context N])";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "context", "device"], ["names"]);
        if (a.Has("names") && !a.Has("model"))
        {
            stdout.Write(TensorNames.Describe());
            return 0;
        }
        string dir = a.Require("model", "DIR");
        var config = Llama4Config.Load(dir);
        long context = a.Long("context", config.Text.MaxPositionEmbeddings > 0 ? Math.Min(config.Text.MaxPositionEmbeddings, 131072) : 8192);
        if (context <= 0) throw new UsageException("--context must be positive");

        // With shards present, validate them and count real bytes per dtype; a bare config.json is enough otherwise.
        bool hasWeights = File.Exists(Path.Combine(dir, Checkpoint.IndexFile)) || File.Exists(Path.Combine(dir, Checkpoint.SingleFile));
        using var ckpt = hasWeights ? Checkpoint.Open(dir) : null;
        var report = ModelReport.FromConfig(config, ckpt);

        using Device? device = OpenDevice(a.Get("device"), stderr);
        stdout.Write(report.Render(context, device?.TotalMemory, device?.FreeMemory, device?.Name));
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
