using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>
/// Random weights made on the device (kernels/fill.cu) for described weights (<see cref="WeightLoader.Describe"/>): a
/// full-size model benchmarked with no checkpoint on disk. Each tensor gets <see cref="Synth"/>'s initialisation
/// (linear ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.1²), embeddings ~ N(0, 1)) from its own seed.
/// </summary>
internal static class DeviceSynth
{
    public static void Fill(ModelWeights w, ulong seed = 0)
    {
        var byName = TensorNames.Expected(w.Config).ToDictionary(e => e.Ours, StringComparer.Ordinal);
        ulong i = 0;
        foreach (var t in w.Tensors.Values.OrderBy(t => t.Offset))
        {
            i++;
            if (t.DType is not (DType.BF16 or DType.F32))
                throw new NotSupportedException($"synthetic weights on the device: {t.Name} is {t.DType}; only bf16/f32 tensors are generated " +
                                                "(quantized weights come from quantizing generated bf16 ones at load)");
            var (mean, std) = byName.TryGetValue(t.Name, out var e) ? Synth.Init(e) : (1.0, 0.0); // scales: 1
            Llama4Native.Kernels.Fill.Normal(w.Device, t.Tensor, seed * 0x9E3779B97F4A7C15UL + i, (float)mean, (float)std);
        }
        w.Device.Synchronize();
    }
}
