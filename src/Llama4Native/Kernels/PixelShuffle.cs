using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/pixel_shuffle.cu`: HF's pixel_shuffle(x, ratio) per tile, [tiles, N, C] (N = G²) → [tiles, (G·r)², C/r²];
/// ratio 0.5: [tiles, N/4, 4C]. Refuses what HF's views would refuse.
/// </summary>
internal static class PixelShuffle
{
    public const string File = "pixel_shuffle.cu";
    const int Threads = 256; // PIXEL_SHUFFLE_THREADS default

    /// <summary>HF's sizes for N tokens of C channels at <paramref name="ratio"/>: (G, Wr = int(G·r), C1 = int(C/r),
    /// C2 = int(C/r²)), computed in double as Python does; ArgumentException where HF's views would fail.</summary>
    public static (int G, int Wr, int C1, int C2) Sizes(long n, long c, double ratio)
    {
        const string op = "pixel_shuffle";
        if (!(ratio > 0) || double.IsInfinity(ratio)) throw new ArgumentException($"{op}: ratio {ratio} must be positive and finite");
        long g = (long)Math.Sqrt(n);
        while (g * g > n) g--;
        while ((g + 1) * (g + 1) <= n) g++;
        if (n < 1 || g * g != n) throw new ArgumentException($"{op}: N = {n} tokens per tile is not a perfect square");
        double wrD = g * ratio, c1D = c / ratio, c2D = c / (ratio * ratio);
        if (wrD >= int.MaxValue || c1D >= int.MaxValue || c2D >= int.MaxValue)
            throw new ArgumentException($"{op}: sizes G·r = {wrD}, C/r = {c1D}, C/r² = {c2D} are too large");
        long wr = (long)wrD, c1 = (long)c1D, c2 = (long)c2D;
        if (wr < 1 || c1 < 1 || c2 < 1 || g * wr * c1 != g * g * c || wr * wr * c2 != wr * g * c1)
            throw new ArgumentException($"{op}: N = {n} (G = {g}), C = {c} and ratio {ratio} give G·r = {wrD}, C/r = {c1D}, C/r² = {c2D}: " +
                                        $"not whole numbers that keep the {g}×{g}×{c} elements (HF's views would fail)");
        return ((int)g, (int)wr, (int)c1, (int)c2);
    }

    /// <param name="x">[tiles, N, C] f32 or bf16, N = G²; with <paramref name="dropClassToken"/> [tiles, N+1, C] and the last row of each tile is ignored</param>
    /// <param name="y">[tiles, (G·r)², C/r²], x's dtype; must not overlap x</param>
    /// <param name="ratio">pixel_shuffle_ratio (0.5 for Llama 4)</param>
    /// <param name="dropClassToken">x still holds the class token as the last row of each tile (HF drops it first)</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor y, double ratio, DeviceStream? stream = null, bool dropClassToken = false)
    {
        const string op = "pixel_shuffle";
        if (x.Shape.Rank != 3) throw new ArgumentException($"{op}: x has shape {x.Shape}, expected [tiles, N, C]");
        int tiles = KernelCheck.Int(op, "tiles", x.Shape[0]), tokensIn = KernelCheck.Int(op, "tokens", x.Shape[1]);
        int c = KernelCheck.Int(op, "C", x.Shape[2]);
        long n = tokensIn - (dropClassToken ? 1 : 0);
        var (g, wr, c1, c2) = Sizes(n, c, ratio);
        KernelCheck.Dims(op, "y", y, tiles, (long)wr * wr, c2);
        KernelCheck.Int(op, "N·C", n * c);
        if (x.DType != y.DType || x.DType is not (DType.F32 or DType.BF16))
            throw KernelCheck.Unsupported(op, $"{KernelCheck.Name(x.DType)}>{KernelCheck.Name(y.DType)}");
        if (tiles == 0 || c == 0) return;
        var fn = dev.Kernels.Get(File, "pixel_shuffle_" + KernelCheck.Name(x.DType));
        ulong xp = x.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &yp, &tiles, &tokensIn, &g, &wr, &c, &c1, &c2 };
        dev.Cost(x.Bytes + y.Bytes, 0);
        dev.Launch(fn, KernelCheck.Blocks(y.Elements, 8L * Threads, 1 << 20), Threads, 0, args, stream);
    }
}
