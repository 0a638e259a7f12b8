using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/embedding.cu`: out[t, :] = table[ids[t], :]; a bad id writes zeros and raises a device flag.</summary>
internal static class Embedding
{
    public const string File = "embedding.cu";
    const int Threads = 128; // EMBEDDING_THREADS default

    /// <param name="ids">[T] i32</param>
    /// <param name="table">[V, D] bf16 or f32</param>
    /// <param name="output">[T, D] f32 (or bf16 with a bf16 table)</param>
    /// <param name="errorFlag">a device int set to 1 when an id is outside [0, V); may be null</param>
    public static unsafe void Run(Device dev, Tensor ids, Tensor table, Tensor output, DevicePtr errorFlag, DeviceStream? stream = null)
    {
        const string op = "embedding";
        if (ids.DType != DType.I32) throw new ArgumentException($"{op}: ids must be i32, got {ids.DType}");
        int t = KernelCheck.Int(op, "T", ids.Elements);
        int v = KernelCheck.Int(op, "V", table.Shape.Rows), d = KernelCheck.Int(op, "D", table.Shape.Inner);
        KernelCheck.Dims(op, "output", output, t, d);
        string combo = $"{KernelCheck.Name(table.DType)}_{KernelCheck.Name(output.DType)}";
        if (combo is not ("bf16_f32" or "bf16_bf16" or "f32_f32")) throw KernelCheck.Unsupported(op, combo);
        if (t == 0 || d == 0) return;
        var fn = dev.Kernels.Get(File, "embedding_" + combo);
        ulong ip = ids.Ptr.Value, tp = table.Ptr.Value, op_ = output.Ptr.Value, ep = errorFlag.Value;
        void** args = stackalloc void*[] { &ip, &tp, &op_, &t, &v, &d, &ep };
        dev.Cost(ids.Bytes + table.DType.BytesOf((long)t * d) + output.Bytes, 0);
        dev.Launch(fn, (uint)t, Threads, 0, args, stream);
    }
}
