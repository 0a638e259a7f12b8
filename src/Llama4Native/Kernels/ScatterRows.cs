using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/scatter_rows.cu`: dst[index[i], :] = src[i, :] for i &lt; n (early fusion: image features into the
/// &lt;|patch|&gt; rows), converting dtype; rows not listed are untouched, an index outside [0, T) is skipped.
/// </summary>
internal static class ScatterRows
{
    public const string File = "scatter_rows.cu";
    const int Threads = 128; // SCATTER_ROWS_THREADS default

    /// <param name="src">[n, D] f32 or bf16</param>
    /// <param name="index">[n] int32 on the device: the dst row of each src row</param>
    /// <param name="dst">[T, D] f32 or bf16; must not overlap src</param>
    public static unsafe void Run(Device dev, Tensor src, Tensor index, Tensor dst, DeviceStream? stream = null)
    {
        const string op = "scatter_rows";
        if (src.Shape.Rank != 2 || dst.Shape.Rank != 2)
            throw new ArgumentException($"{op}: src {src.Shape} and dst {dst.Shape} must be matrices");
        int n = KernelCheck.Int(op, "n", src.Shape[0]), d = KernelCheck.Int(op, "D", src.Shape[1]);
        int t = KernelCheck.Int(op, "T", dst.Shape[0]);
        if (dst.Shape[1] != d) throw new ArgumentException($"{op}: dst {dst.Shape} has D = {dst.Shape[1]} but src {src.Shape} has {d}");
        KernelCheck.Dims(op, "index", index, n);
        if (index.DType != DType.I32) throw new ArgumentException($"{op}: index is {index.DType}, expected I32");
        string name = $"{KernelCheck.Name(src.DType)}_{KernelCheck.Name(dst.DType)}";
        if (name is not ("f32_f32" or "bf16_bf16" or "f32_bf16" or "bf16_f32")) throw KernelCheck.Unsupported(op, name);
        if (n == 0 || d == 0) return;
        var fn = dev.Kernels.Get(File, "scatter_rows_" + name);
        ulong sp = src.Ptr.Value, ip = index.Ptr.Value, dp = dst.Ptr.Value;
        void** args = stackalloc void*[] { &sp, &ip, &dp, &n, &d, &t };
        dev.Cost(src.Bytes + index.Bytes + dst.DType.BytesOf((long)n * d), 0);
        dev.Launch(fn, (uint)n, Threads, 0, args, stream);
    }
}
