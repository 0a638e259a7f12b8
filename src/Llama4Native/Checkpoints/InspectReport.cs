using Llama4Native.Model;

namespace Llama4Native.Checkpoints;

/// <summary>What `llama4 inspect` is asked: the context to size the KV cache for, the device memory to fit
/// (from an opened device or --device-memory), and the quantization to report for.</summary>
internal sealed record InspectRequest(long Context, long? DeviceTotal, long? DeviceFree, string? DeviceName, QuantizeOptions Quantize,
                                    KvCacheFormat KvCache = KvCacheFormat.Default);

/// <summary>The `llama4 inspect` report in one call: the CLI only parses options and prints this string.</summary>
internal static class InspectReport
{
    /// <summary>The report for <paramref name="config"/> (with real bytes per dtype when <paramref name="ckpt"/> is given).</summary>
    public static string Build(Llama4Config config, Checkpoint? ckpt, InspectRequest request) =>
        ModelReport.FromConfig(config, ckpt, request.Quantize).Render(request.Context, request.DeviceTotal, request.DeviceFree, request.DeviceName, request.KvCache);
}
