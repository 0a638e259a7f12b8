using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/quantize_int4.cu`: Meta's int4_mixed weight quantization on the device (load time), bit-exact to the
/// fp32 rule of SPEC-llama4.md § Quantization: per output row, groups of G consecutive input elements,
/// <c>s = max(max|w|, 1e-6) / 8</c>, <c>q = clamp(round_half_even(w / s), -8, 7)</c>, packed even-k-low.
/// </summary>
internal static class QuantizeInt4
{
    public const string File = "quantize_int4.cu";
    const int Threads = 256;         // QI4_THREADS
    const long MaxBlocks = 1 << 20;  // grid-stride beyond this

    /// <param name="w">bf16 or f32: output-major [.., N, K] (nn.Linear weights, e.g. the shared expert) when
    /// <paramref name="inputMajor"/> is false; input-major [.., K, N] (HF routed experts [E, K, N]) when true</param>
    /// <param name="dst">I4 [.., N, K] (<see cref="Tensor.Quantized"/>: packed data [.., N, K/2] bytes, f32 scales [.., N, K/G]);
    /// same leading dimensions as w. Must not overlap w.</param>
    public static unsafe void Run(Device dev, Tensor w, bool inputMajor, Tensor dst, DeviceStream? stream = null)
    {
        const string op = "quantize_int4";
        if (w.DType is not (DType.BF16 or DType.F32)) throw KernelCheck.Unsupported(op, $"w {KernelCheck.Name(w.DType)} (bf16 or f32 weights only)");
        if (dst.DType != DType.I4) throw new ArgumentException($"{op}: dst must be an I4 tensor (Tensor.Quantized(data, DType.I4, shape, scales, G)); got {dst}");
        if (w.Shape.Rank < 2 || w.Shape.Rank != dst.Shape.Rank)
            throw new ArgumentException($"{op}: w {w.Shape} and dst {dst.Shape} must be [.., N, K] matrices of the same rank");
        int r = w.Shape.Rank;
        long batch = 1;
        for (int i = 0; i < r - 2; i++)
        {
            if (w.Shape[i] != dst.Shape[i]) throw new ArgumentException($"{op}: w {w.Shape} and dst {dst.Shape} differ in leading dimension {i}");
            batch *= w.Shape[i];
        }
        long wn = inputMajor ? w.Shape[r - 1] : w.Shape[r - 2], wk = inputMajor ? w.Shape[r - 2] : w.Shape[r - 1];
        string layout = inputMajor ? "input-major [.., K, N]" : "output-major [.., N, K]";
        if (dst.Shape[r - 2] != wn || dst.Shape[r - 1] != wk)
            throw new ArgumentException($"{op}: w {w.Shape} read {layout} has N = {wn}, K = {wk}, but dst is {dst.Shape}; dst must be [.., {wn}, {wk}]");
        int n = KernelCheck.Int(op, "N", wn), k = KernelCheck.Int(op, "K", wk), g = dst.Group;
        if (k % 2 != 0) throw new ArgumentException($"{op}: K = {k} of w {w.Shape} ({layout}) is odd; int4 packs pairs along K");
        if (g < 2 || g % 2 != 0 || k % g != 0)
            throw new ArgumentException($"{op}: K = {k} of w {w.Shape} ({layout}) is not a multiple of the group size G = {g} (or G is odd); pick an even group size dividing K (Meta uses 128)");
        if (dst.Scale.Value == 0) throw new ArgumentException($"{op}: dst has no scale buffer; build it with Tensor.Quantized");
        if (batch * n == 0 || k == 0) return;
        long groups = batch * n * (k / g);
        long b = batch;
        int im = inputMajor ? 1 : 0;
        ulong wp = w.Ptr.Value, qp = dst.Ptr.Value, sp = dst.Scale.Value;
        void** args = stackalloc void*[] { &wp, &qp, &sp, &b, &n, &k, &g, &im };
        dev.Cost(w.Bytes + dst.Bytes + dst.ScaleBytes, 3.0 * w.Elements);
        dev.Launch(dev.Kernels.Get(File, "quantize_int4_" + KernelCheck.Name(w.DType)),
                   KernelCheck.Blocks(groups, Threads, MaxBlocks), Threads, 0, args, stream);
    }
}
