using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/quantize_fp8.cu`: FBGEMM row-wise FP8 (e4m3fn) quantization, bit-exact to <see cref="Reference.QuantizeFp8"/>.
/// <see cref="Rows"/>: dynamic per-row activations (s = max(min(max|x|, ub)/448, 1/(448·512)), q = e4m3(x / s));
/// <see cref="Weights"/>: bf16/f32 weights per output row (no bound) into an output-major F8E4M3 tensor, from either
/// layout (HF's routed experts are input-major [E, K, N]); <see cref="Relayout"/>: an FP8 checkpoint's input-major
/// e4m3 experts [E, K, N] → [E, N, K] on the device (the per-output-channel scales [E, N] are already in place).
/// </summary>
internal static class QuantizeFp8
{
    public const string File = "quantize_fp8.cu";
    const int Threads = 128;   // QF8_THREADS
    /// <summary>Meta's activation_scale_ub of the Llama 4 FP8 releases.</summary>
    public const float DefaultActivationUb = 1200f;

    /// <summary>x [M, K] f32/bf16 (any rank: rows × last dim) → xq [M, K] F8E4M3 (a plain tensor) and xs [M] f32.</summary>
    public static unsafe void Rows(Device dev, Tensor x, Tensor xq, Tensor xs, float ub, DeviceStream? stream = null)
    {
        const string op = "quantize_fp8.rows";
        if (x.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, $"x {x.DType} (f32 or bf16)");
        if (xq.DType != DType.F8E4M3 || xs.DType != DType.F32) throw KernelCheck.Unsupported(op, $"xq {xq.DType} (F8E4M3), xs {xs.DType} (f32)");
        if (xq.Shape != x.Shape) throw new ArgumentException($"{op}: xq {xq.Shape} must have x's shape {x.Shape}");
        int rows = KernelCheck.Int(op, "rows", x.Shape.Rows), k = KernelCheck.Int(op, "K", x.Shape.Inner);
        if (xs.Elements != rows) throw new ArgumentException($"{op}: xs {xs.Shape} must hold one scale per row of x {x.Shape} ({rows})");
        if (!(ub > 0)) throw new ArgumentException($"{op}: the upper bound ub = {ub} must be > 0 (+inf for none)");
        if (rows == 0 || k == 0) return;
        Launch(dev, x, xq.Ptr, xs.Ptr, rows, k, ub, stream);
    }

    static unsafe void Launch(Device dev, Tensor x, DevicePtr q, DevicePtr s, int rows, int k, float ub, DeviceStream? stream)
    {
        ulong xp = x.Ptr.Value, qp = q.Value, sp = s.Value;
        void** args = stackalloc void*[] { &xp, &qp, &sp, &rows, &k, &ub };
        dev.Cost(x.DType.BytesOf((long)rows * k) + (long)rows * k + 4L * rows, 3.0 * rows * k);
        dev.Launch(dev.Kernels.Get(File, "quantize_fp8_rows_" + KernelCheck.Name(x.DType)), (uint)rows, Threads, 0, args, stream);
    }

    /// <summary>
    /// Weight quantization per output row: w bf16/f32 [.., N, K] (output-major) or [.., K, N] (<paramref name="inputMajor"/>,
    /// HF's routed experts) → dst, an F8E4M3 tensor [.., N, K] built with <see cref="Tensor.Quantized"/> (its scales [.., N]
    /// are written). Rank 2 or 3 (E experts).
    /// </summary>
    public static unsafe void Weights(Device dev, Tensor w, bool inputMajor, Tensor dst, DeviceStream? stream = null)
    {
        const string op = "quantize_fp8.weights";
        if (w.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, $"w {w.DType} (f32 or bf16)");
        if (dst.DType != DType.F8E4M3 || dst.Scale.IsNull || dst.Group != dst.Shape.Inner)
            throw new ArgumentException($"{op}: dst {dst} must be an F8E4M3 weight with scales (Tensor.Quantized(data, DType.F8E4M3, shape, scale, K))");
        var (e, n, k) = Dims3(op, "dst", dst.Shape);
        var (e2, a, b) = Dims3(op, "w", w.Shape);
        if (e2 != e || (inputMajor ? (a, b) != (k, n) : (a, b) != (n, k)))
            throw new ArgumentException($"{op}: w {w.Shape} must be {(inputMajor ? "[.., K, N]" : "[.., N, K]")} for dst {dst.Shape} ([.., N, K])");
        if (e == 0 || n == 0 || k == 0) return;
        if (!inputMajor) { Launch(dev, w, dst.Ptr, dst.Scale, KernelCheck.Int(op, "rows", (long)e * n), k, float.PositiveInfinity, stream); return; }
        string t = KernelCheck.Name(w.DType);
        ulong wp = w.Ptr.Value, sp = dst.Scale.Value, qp = dst.Ptr.Value;
        void** a1 = stackalloc void*[] { &wp, &sp, &k, &n };
        dev.Cost(w.Bytes + 4L * e * n, (double)w.Elements);
        dev.Launch(dev.Kernels.Get(File, "quantize_fp8_colscale_" + t), new Dim3(KernelCheck.Blocks(n, 32), 1, (uint)e), new Dim3(32, 8), 0, a1, stream);
        void** a2 = stackalloc void*[] { &wp, &sp, &qp, &k, &n };
        dev.Cost(w.Bytes + 4L * e * n + dst.Bytes, 2.0 * w.Elements);
        dev.Launch(dev.Kernels.Get(File, "quantize_fp8_transpose_" + t), new Dim3(KernelCheck.Blocks(n, 32), Tiles(op, k), (uint)e), new Dim3(32, 8), 0, a2, stream);
    }

    /// <summary>
    /// src F8E4M3 [.., K, N] (an FP8 checkpoint's input-major experts; a plain tensor) → dst F8E4M3 [.., N, K] (plain or
    /// quantized: only the bytes are written; the scales, one per output channel, need no relayout).
    /// </summary>
    public static unsafe void Relayout(Device dev, Tensor src, Tensor dst, DeviceStream? stream = null)
    {
        const string op = "quantize_fp8.relayout";
        if (src.DType != DType.F8E4M3 || dst.DType != DType.F8E4M3) throw KernelCheck.Unsupported(op, $"src {src.DType}, dst {dst.DType} (F8E4M3)");
        var (e, k, n) = Dims3(op, "src", src.Shape);
        var (e2, n2, k2) = Dims3(op, "dst", dst.Shape);
        if ((e2, n2, k2) != (e, n, k)) throw new ArgumentException($"{op}: dst {dst.Shape} must be src {src.Shape} with the last two dimensions swapped");
        if (src.Ptr == dst.Ptr) throw new ArgumentException($"{op}: src and dst must not overlap (the transpose is not in place)");
        if (e == 0 || n == 0 || k == 0) return;
        ulong sp = src.Ptr.Value, dp = dst.Ptr.Value;
        void** args = stackalloc void*[] { &sp, &dp, &k, &n };
        dev.Cost(src.Bytes + dst.Bytes, 0);
        dev.Launch(dev.Kernels.Get(File, "quantize_fp8_relayout"), new Dim3(KernelCheck.Blocks(n, 32), Tiles(op, k), (uint)e), new Dim3(32, 8), 0, args, stream);
    }

    static uint Tiles(string op, int k)
    {
        long t = (k + 31) / 32;
        if (t > 65535) throw new ArgumentException($"{op}: K = {k} needs {t} row tiles; at most 65535");
        return (uint)t;
    }

    static (int E, int A, int B) Dims3(string op, string name, Shape s)
    {
        if (s.Rank is not (2 or 3)) throw new ArgumentException($"{op}: {name} {s} must be a matrix or [E, rows, cols]");
        int e = s.Rank == 3 ? KernelCheck.Int(op, "E", s[0]) : 1;
        if (e > 65535) throw new ArgumentException($"{op}: E = {e} exceeds 65535");
        return (e, KernelCheck.Int(op, name + " rows", s[s.Rank - 2]), KernelCheck.Int(op, name + " cols", s[s.Rank - 1]));
    }
}
