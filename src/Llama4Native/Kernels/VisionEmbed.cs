using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/vision_embed.cu`: y[t, j] = patches[t, j] + pos[j] (j &lt; N), y[t, N] = cls + pos[N] — HF appends the
/// class embedding LAST, then adds the positional embedding.
/// </summary>
internal static class VisionEmbed
{
    public const string File = "vision_embed.cu";
    const int Threads = 128; // VISION_EMBED_THREADS default

    /// <param name="patches">[tiles, N, Dv] f32 or bf16</param>
    /// <param name="cls">[Dv] class embedding (f32 with f32 patches; bf16 with either)</param>
    /// <param name="pos">[N+1, Dv] positional embedding, cls's dtype</param>
    /// <param name="y">[tiles, N+1, Dv], patches' dtype; must not overlap patches</param>
    public static unsafe void Run(Device dev, Tensor patches, Tensor cls, Tensor pos, Tensor y, DeviceStream? stream = null)
    {
        const string op = "vision_embed";
        if (patches.Shape.Rank != 3) throw new ArgumentException($"{op}: patches has shape {patches.Shape}, expected [tiles, N, Dv]");
        int tiles = KernelCheck.Int(op, "tiles", patches.Shape[0]), n = KernelCheck.Int(op, "N", patches.Shape[1]);
        int dv = KernelCheck.Int(op, "Dv", patches.Shape[2]);
        KernelCheck.Dims(op, "cls", cls, dv);
        KernelCheck.Dims(op, "pos", pos, n + 1L, dv);
        KernelCheck.Dims(op, "y", y, tiles, n + 1L, dv);
        KernelCheck.Int(op, "tiles·(N+1)", (long)tiles * (n + 1));
        if (cls.DType != pos.DType) throw new ArgumentException($"{op}: cls is {cls.DType} but pos is {pos.DType}; they must match");
        string name = $"{KernelCheck.Name(patches.DType)}_{KernelCheck.Name(cls.DType)}_{KernelCheck.Name(y.DType)}";
        if (name is not ("f32_f32_f32" or "f32_bf16_f32" or "bf16_bf16_bf16")) throw KernelCheck.Unsupported(op, name);
        if (tiles == 0 || dv == 0) return;
        var fn = dev.Kernels.Get(File, "vision_embed_" + name);
        ulong pp = patches.Ptr.Value, cp = cls.Ptr.Value, qp = pos.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &pp, &cp, &qp, &yp, &tiles, &n, &dv };
        dev.Cost(patches.Bytes + cls.Bytes + pos.Bytes + y.Bytes, y.Elements);
        dev.Launch(fn, (uint)((long)tiles * (n + 1)), Threads, 0, args, stream);
    }
}
