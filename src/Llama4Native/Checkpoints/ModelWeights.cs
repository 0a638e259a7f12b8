using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>One uploaded weight: a view into the model's arena plus where it came from.</summary>
/// <param name="Name">Our name (<see cref="TensorNames"/>), e.g. <c>blk.3.attn_q</c>.</param>
/// <param name="Tensor">Pointer, dtype (after any load-time conversion) and shape, exactly as stored in the checkpoint.</param>
/// <param name="Offset">Byte offset in the arena (a multiple of <see cref="WeightLoader.Alignment"/>, or — a member of a
/// <see cref="WeightLoader.Concatenations"/> entry — right after its predecessor).</param>
/// <param name="SourceDType">The dtype in the checkpoint file.</param>
/// <param name="HfName">The checkpoint name it was read from.</param>
internal sealed record DeviceWeight(string Name, Tensor Tensor, long Offset, DType SourceDType, string HfName)
{
    public DevicePtr Ptr => Tensor.Ptr;
    public DType DType => Tensor.DType;
    public Shape Shape => Tensor.Shape;
    public long Bytes => Tensor.Bytes;
}

/// <summary>
/// A loaded model's weights on one device: the config, ONE device allocation (the arena) and, for each of
/// our tensor names, a view into it. Dispose frees the arena; the views die with it.
/// </summary>
internal sealed class ModelWeights : IDisposable
{
    public Llama4Config Config { get; }
    public Device Device { get; }
    public DeviceBuffer Arena { get; }
    public IReadOnlyDictionary<string, DeviceWeight> Tensors { get; }
    /// <summary>Bytes read from the checkpoint, and bytes placed on the device (larger after an upcast).</summary>
    public long SourceBytes { get; }
    public TimeSpan LoadTime { get; }
    /// <summary>FP8's activation scale upper bound: the checkpoint's <c>activation_scale_ub</c>, else the load options' (1200).</summary>
    public float ActivationScaleUb { get; init; } = 1200f;
    /// <summary>Bytes of the arena by stored format: "bf16", "f32", "fp8", "int4", "scales".</summary>
    public IReadOnlyDictionary<string, long> BytesByFormat
    {
        get
        {
            var d = new SortedDictionary<string, long>(StringComparer.Ordinal);
            foreach (var w in Tensors.Values)
            {
                bool scale = w.Name.EndsWith(".scale", StringComparison.Ordinal);
                string key = scale ? "scales" : Format(w.DType);
                d[key] = d.GetValueOrDefault(key) + w.Bytes;
                if (!scale && w.DType.IsQuantized() && !Tensors.ContainsKey(w.Name + ".scale"))
                    d["scales"] = d.GetValueOrDefault("scales") + w.Tensor.ScaleBytes; // scales made at load, beside their weight
            }
            return d;
        }
    }

    /// <summary>The format name of a stored dtype, as reports print it.</summary>
    public static string Format(DType t) => t switch
    {
        DType.BF16 => "bf16", DType.F32 => "f32", DType.F16 => "f16", DType.F8E4M3 => "fp8", DType.I4 => "int4", _ => t.ToString().ToLowerInvariant(),
    };

    internal ModelWeights(Llama4Config config, Device device, DeviceBuffer arena, Dictionary<string, DeviceWeight> tensors,
                          long sourceBytes, TimeSpan loadTime)
    {
        Config = config; Device = device; Arena = arena; Tensors = tensors; SourceBytes = sourceBytes; LoadTime = loadTime;
    }

    public DeviceWeight this[string name] => Tensors.TryGetValue(name, out var w) ? w
        : throw new KeyNotFoundException($"no weight named '{name}'; names follow TensorNames (e.g. 'blk.0.attn_q', 'tok_embd')");
    public bool TryGet(string name, out DeviceWeight w) => Tensors.TryGetValue(name, out w!);
    /// <summary>
    /// The weights <paramref name="names"/> (output-major [N_i, K]) as ONE tensor [ΣN_i, K] when the loader placed them back
    /// to back (<see cref="WeightLoader.Concatenations"/>): same dtype, K and group, data contiguous and — quantized — scales
    /// contiguous. Null when any is missing or they are not adjacent (a projection then runs them one by one).
    /// </summary>
    public Tensor? Concat(params string[] names)
    {
        var ts = new Tensor[names.Length];
        for (int i = 0; i < names.Length; i++)
            if (Tensors.TryGetValue(names[i], out var w) && w.Shape.Rank == 2) ts[i] = w.Tensor; else return null;
        long n = ts[0].Shape[0], k = ts[0].Shape[1];
        for (int i = 1; i < ts.Length; i++)
        {
            var (a, b) = (ts[i - 1], ts[i]);
            if (b.DType != a.DType || b.Shape[1] != k || b.Group != a.Group || b.Ptr != a.Ptr + a.Bytes) return null;
            if (a.Group != 0 && b.Scale != a.Scale + a.ScaleBytes) return null;
            n += b.Shape[0];
        }
        var t0 = ts[0];
        return t0.Group == 0 ? new Tensor(t0.Ptr, t0.DType, new Shape(n, k)) : Tensor.Quantized(t0.Ptr, t0.DType, new Shape(n, k), t0.Scale, t0.Group);
    }

    /// <summary>Layer-scoped lookup: <c>Layer(3, "attn_q")</c> is <c>blk.3.attn_q</c>.</summary>
    public DeviceWeight Layer(int i, string suffix) => this[$"blk.{i}.{suffix}"];

    public void Dispose() => Arena.Dispose();
}
