using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/patch_unfold.cu`: pixel tiles [tiles, C, H, W] → patch rows [tiles·(H/P)·(W/P), C·P·P], features ordered
/// (channel, ky, kx), patches row-major — HF's Llama4UnfoldConvolution before its linear (nn.Unfold, stride P).
/// </summary>
internal static class PatchUnfold
{
    public const string File = "patch_unfold.cu";
    const int Threads = 128; // PATCH_UNFOLD_THREADS default

    /// <param name="pixels">[tiles, C, H, W] f32 or bf16 (H = W = S for Llama 4 tiles)</param>
    /// <param name="cols">[tiles·(H/P)·(W/P), C·P·P] f32 or bf16 (the activation dtype; converted on the way)</param>
    /// <param name="patch">P ≥ 1, ≤ H and ≤ W</param>
    public static unsafe void Run(Device dev, Tensor pixels, Tensor cols, int patch, DeviceStream? stream = null)
    {
        const string op = "patch_unfold";
        if (pixels.Shape.Rank != 4) throw new ArgumentException($"{op}: pixels has shape {pixels.Shape}, expected [tiles, C, H, W]");
        int tiles = KernelCheck.Int(op, "tiles", pixels.Shape[0]), c = KernelCheck.Int(op, "C", pixels.Shape[1]);
        int h = KernelCheck.Int(op, "H", pixels.Shape[2]), w = KernelCheck.Int(op, "W", pixels.Shape[3]);
        if (patch < 1 || patch > h || patch > w)
            throw new ArgumentException($"{op}: patch {patch} must be in [1, min(H, W)] for pixels {pixels.Shape}");
        long rows = (long)tiles * (h / patch) * (w / patch), k = (long)c * patch * patch;
        KernelCheck.Dims(op, "cols", cols, rows, k);
        KernelCheck.Int(op, "C·P·P", k);
        KernelCheck.Int(op, "tiles·Gh·Gw", rows);
        string name = $"{KernelCheck.Name(pixels.DType)}_{KernelCheck.Name(cols.DType)}";
        if (name is not ("f32_f32" or "bf16_bf16" or "bf16_f32" or "f32_bf16")) throw KernelCheck.Unsupported(op, name);
        if (rows == 0 || k == 0) return;
        var fn = dev.Kernels.Get(File, "patch_unfold_" + name);
        ulong pp = pixels.Ptr.Value, cp = cols.Ptr.Value;
        void** args = stackalloc void*[] { &pp, &cp, &tiles, &c, &h, &w, &patch };
        dev.Cost(pixels.Bytes + cols.Bytes, 0);
        dev.Launch(fn, (uint)rows, Threads, 0, args, stream);
    }
}
