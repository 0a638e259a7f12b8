using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/vision_rope.cu`: HF's 2-D vision RoPE in place on q or k [tiles·(N+1), heads, d] — interleaved pairs; pair
/// j &lt; d/4 turns by (col+1)·f_j, the rest by (row+1)·f_(j−d/4), f_k = θ^(−4k/d); the class token (last of each tile)
/// is not rotated.
/// </summary>
internal static class VisionRope
{
    public const string File = "vision_rope.cu";
    const int Threads = 256; // VISION_ROPE_THREADS default

    /// <param name="x">[tiles·(N+1), heads, d] f32 or bf16, rotated in place; d % 4 == 0</param>
    /// <param name="tokensPerTile">N + 1 = gridSide² + 1</param>
    /// <param name="gridSide">G = image size / patch size</param>
    /// <param name="theta">rope_theta of the vision config</param>
    public static unsafe void Run(Device dev, Tensor x, int tokensPerTile, int gridSide, float theta, DeviceStream? stream = null)
    {
        const string op = "vision_rope";
        if (x.Shape.Rank != 3) throw new ArgumentException($"{op}: x has shape {x.Shape}, expected [tiles·(N+1), heads, d]");
        long rows = x.Shape[0];
        int heads = KernelCheck.Int(op, "heads", x.Shape[1]), d = KernelCheck.Int(op, "d", x.Shape[2]);
        if (gridSide < 1 || (long)gridSide * gridSide + 1 != tokensPerTile)
            throw new ArgumentException($"{op}: tokensPerTile = {tokensPerTile} must be gridSide² + 1 = {(long)gridSide * gridSide + 1} (gridSide = {gridSide})");
        if (rows % tokensPerTile != 0)
            throw new ArgumentException($"{op}: x has {rows} rows, not a multiple of tokensPerTile = {tokensPerTile}");
        if (d % 4 != 0) throw new ArgumentException($"{op}: head dim {d} must be a multiple of 4 (HF's vision RoPE needs d/2 even)");
        if (!(theta > 0) || float.IsInfinity(theta)) throw new ArgumentException($"{op}: theta = {theta} must be positive and finite");
        string name = "vision_rope_" + KernelCheck.Name(x.DType);
        if (x.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, KernelCheck.Name(x.DType));
        if (rows == 0 || heads == 0 || d == 0) return;
        var fn = dev.Kernels.Get(File, name);
        ulong xp = x.Ptr.Value;
        int tpt = tokensPerTile, g = gridSide;
        void** args = stackalloc void*[] { &xp, &rows, &heads, &d, &tpt, &g, &theta };
        dev.Cost(2 * x.Bytes, 8.0 * x.Elements);
        dev.Launch(fn, KernelCheck.Blocks(rows * (d / 2), Threads, 1 << 20), Threads, 0, args, stream);
    }
}
