using System.Runtime.InteropServices;
using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>Per-row sampling settings; the exact layout of `l4_sample_params` in kernels/sample.cu (36 bytes).
/// <see cref="Seed"/> and <see cref="SeedHi"/> are the low and high halves of the 64-bit seed (the Philox key).</summary>
[StructLayout(LayoutKind.Sequential)]
internal record struct SampleParams(float Temperature, int TopK, float TopP, float MinP, float Repetition, float Frequency, float Presence, uint Seed, uint SeedHi = 0)
{
    /// <summary>Bytes per row on the device.</summary>
    public const int Size = 36;
    public static SampleParams Greedy => new(0, 0, 1, 0, 1, 0, 0, 0);
    /// <summary>The whole 64-bit seed.</summary>
    public readonly ulong Seed64 => Seed | (ulong)SeedHi << 32;
    /// <summary>These settings with the 64-bit <paramref name="seed"/> (both halves).</summary>
    public readonly SampleParams WithSeed(ulong seed) => this with { Seed = (uint)seed, SeedHi = (uint)(seed >> 32) };
}

/// <summary>`kernels/sample.cu`: next token ids from logits on the device (penalties, temperature, top-k, top-p, min-p, Philox race).</summary>
internal static class Sample
{
    public const string File = "sample.cu";
    const int Threads = 512; // SAMPLE_THREADS default

    /// <param name="logits">[B, V] f32</param>
    /// <param name="parameters">[B] × <see cref="SampleParams"/> (36 bytes each) on the device</param>
    /// <param name="counts">[B, V] int32 token-history counts, or 0 (no penalties)</param>
    /// <param name="step">[B] int32 per-row step (RNG counter)</param>
    /// <param name="ids">[B] int32 output</param>
    /// <param name="prob">[B] f32 output (chosen token's probability), or 0</param>
    /// <param name="update">after choosing: counts[row, id] += 1 and step[row] += 1</param>
    public static unsafe void Run(Device dev, Tensor logits, DevicePtr parameters, DevicePtr counts, DevicePtr step, Tensor ids,
                                  DevicePtr prob, bool update, DeviceStream? stream = null)
    {
        const string op = "sample";
        if (logits.DType != DType.F32) throw KernelCheck.Unsupported(op, KernelCheck.Name(logits.DType));
        if (ids.DType != DType.I32) throw KernelCheck.Unsupported(op, "ids " + KernelCheck.Name(ids.DType));
        int v = KernelCheck.Int(op, "V", logits.Shape.Inner), b = KernelCheck.Int(op, "B", logits.Shape.Rows);
        KernelCheck.Dims(op, "ids", ids, b);
        if (b == 0) return;
        if (v == 0) throw new ArgumentException("sample: V must be >= 1");
        if (parameters.Value == 0 || step.Value == 0) throw new ArgumentException("sample: params and step are required");
        var fn = dev.Kernels.Get(File, "sample_f32");
        ulong lp = logits.Ptr.Value, pp = parameters.Value, cp = counts.Value, sp = step.Value, ip = ids.Ptr.Value, pr = prob.Value;
        int upd = update ? 1 : 0;
        void** args = stackalloc void*[] { &lp, &pp, &cp, &sp, &ip, &pr, &b, &v, &upd };
        // one pass over the logits (greedy; top-k/top-p take more passes, in shared memory when they fit) + the counts
        dev.Cost(logits.Bytes + (counts.IsNull ? 0 : 4L * b * v) + 40L * b, 4.0 * b * v);
        dev.Launch(fn, (uint)b, Threads, 0, args, stream);
    }

    /// <summary>`sample_slots_f32`: B rows in one launch, each with the sampler state of its SEQUENCE (a slot):
    /// params [S], counts [S, V] (or 0: no penalties), step [S] are indexed by <paramref name="slots"/>[b]; ids and
    /// prob are per row. Each row draws with Philox row word 0, so row b picks exactly what <see cref="Run"/> picks
    /// for that state as row 0 of a one-row launch. The slots must be distinct (each row updates its own state).</summary>
    /// <param name="logits">[B, V] f32</param>
    /// <param name="slots">[B] int32 on the device: the state row of each logits row, distinct, in [0, <paramref name="states"/>)</param>
    /// <param name="states">S, the state rows the buffers hold (for the cost only; the kernel trusts the slots)</param>
    public static unsafe void RunSlots(Device dev, Tensor logits, DevicePtr parameters, DevicePtr counts, DevicePtr step, Tensor slots,
                                       Tensor ids, DevicePtr prob, bool update, int states, DeviceStream? stream = null)
    {
        const string op = "sample_slots";
        if (logits.DType != DType.F32) throw KernelCheck.Unsupported(op, KernelCheck.Name(logits.DType));
        if (ids.DType != DType.I32) throw KernelCheck.Unsupported(op, "ids " + KernelCheck.Name(ids.DType));
        if (slots.DType != DType.I32) throw KernelCheck.Unsupported(op, "slots " + KernelCheck.Name(slots.DType));
        int v = KernelCheck.Int(op, "V", logits.Shape.Inner), b = KernelCheck.Int(op, "B", logits.Shape.Rows);
        KernelCheck.Dims(op, "ids", ids, b);
        KernelCheck.Dims(op, "slots", slots, b);
        if (b == 0) return;
        if (v == 0) throw new ArgumentException("sample_slots: V must be >= 1");
        if (b > states) throw new ArgumentException($"sample_slots: {b} rows need {b} distinct slots but the state holds {states}");
        if (parameters.Value == 0 || step.Value == 0) throw new ArgumentException("sample_slots: params and step are required");
        var fn = dev.Kernels.Get(File, "sample_slots_f32");
        ulong lp = logits.Ptr.Value, pp = parameters.Value, cp = counts.Value, sp = step.Value, sl = slots.Ptr.Value, ip = ids.Ptr.Value, pr = prob.Value;
        int upd = update ? 1 : 0;
        void** args = stackalloc void*[] { &lp, &pp, &cp, &sp, &sl, &ip, &pr, &b, &v, &upd };
        dev.Cost(logits.Bytes + (counts.IsNull ? 0 : 4L * b * v) + 44L * b, 4.0 * b * v);
        dev.Launch(fn, (uint)b, Threads, 0, args, stream);
    }
}
