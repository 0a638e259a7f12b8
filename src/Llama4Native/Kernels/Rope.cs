using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/rope.cu`: rotary embedding on interleaved pairs (+ optional weightless QK norm), and NoPE temperature tuning; in place.</summary>
internal static class Rope
{
    public const string File = "rope.cu";
    const int Threads = 256; // ROPE_THREADS default

    /// <param name="x">[T, heads, d] f32 or bf16, rotated in place</param>
    /// <param name="pos">[T] i32 absolute positions</param>
    /// <param name="invFreq">[d/2] f32 (llama3-scaled when the config says so)</param>
    /// <param name="qkNorm">apply x·rsqrt(mean(x²)+eps) over d after the rotation</param>
    public static unsafe void Apply(Device dev, Tensor x, Tensor pos, Tensor invFreq, bool qkNorm, float eps, DeviceStream? stream = null)
    {
        const string op = "rope";
        var (t, heads, d) = Check(op, x, pos);
        if (d > 512) throw new ArgumentException($"{op}: head_dim {d} exceeds the kernel's 512");
        KernelCheck.Dims(op, "inv_freq", invFreq, d / 2);
        if (invFreq.DType != DType.F32) throw new ArgumentException($"{op}: inv_freq must be f32, got {invFreq.DType}");
        if (t == 0 || heads == 0) return;
        var fn = dev.Kernels.Get(File, "rope_" + KernelCheck.Name(x.DType));
        ulong xp = x.Ptr.Value, pp = pos.Ptr.Value, fp = invFreq.Ptr.Value;
        int norm = qkNorm ? 1 : 0;
        void** args = stackalloc void*[] { &xp, &pp, &fp, &t, &heads, &d, &norm, &eps };
        dev.Cost(2 * x.Bytes + pos.Bytes + invFreq.Bytes, 8.0 * x.Elements);
        dev.Launch(fn, KernelCheck.Blocks((long)t * heads, Threads / 32), Threads, 0, args, stream);
    }

    /// <summary>RoPE (+ QK norm) of q and k in ONE launch: <paramref name="qk"/> holds q [T, hq, d] followed by k [T, hk, d]
    /// (the first two blocks of a fused q|k|v projection; at T = 1 simply [hq + hk, d]). Same maths as two <see cref="Apply"/> calls.</summary>
    public static unsafe void ApplyQk(Device dev, Tensor qk, int t, int hq, int hk, Tensor pos, Tensor invFreq, bool qkNorm, float eps, DeviceStream? stream = null)
    {
        const string op = "rope_qk";
        if (t < 0 || hq < 1 || hk < 0)
            throw new ArgumentException($"{op}: bad T = {t}, hq = {hq}, hk = {hk} for {qk.Shape}");
        long d = (long)(qk.Elements / Math.Max(1L, (long)t * (hq + hk)));
        if ((long)t * (hq + hk) * d != qk.Elements || d % 2 != 0 || d > 512)
            throw new ArgumentException($"{op}: {qk.Shape} ({qk.Elements} elements) is not T·(hq + hk) = {(long)t * (hq + hk)} rows of an even head_dim ≤ 512");
        var x = qk.Reshape((long)t * (hq + hk), 1, d);
        if (x.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, x.DType.ToString());
        KernelCheck.Dims(op, "pos", pos, t);
        if (pos.DType != DType.I32) throw new ArgumentException($"{op}: pos must be i32, got {pos.DType}");
        KernelCheck.Dims(op, "inv_freq", invFreq, d / 2);
        if (invFreq.DType != DType.F32) throw new ArgumentException($"{op}: inv_freq must be f32, got {invFreq.DType}");
        if (t == 0) return;
        var fn = dev.Kernels.Get(File, "rope_qk_" + KernelCheck.Name(x.DType));
        ulong xp = x.Ptr.Value, pp = pos.Ptr.Value, fp = invFreq.Ptr.Value;
        int norm = qkNorm ? 1 : 0, di = (int)d;
        void** args = stackalloc void*[] { &xp, &pp, &fp, &t, &hq, &hk, &di, &norm, &eps };
        dev.Cost(2 * x.Bytes + pos.Bytes + invFreq.Bytes, 8.0 * x.Elements);
        dev.Launch(fn, KernelCheck.Blocks((long)t * (hq + hk), Threads / 32), Threads, 0, args, stream);
    }

    /// <summary>q *= 1 + attnScale · log1p(floor((pos + 1) / floorScale)), per token (NoPE layers).</summary>
    /// <param name="x">[T, heads, d] f32 or bf16, scaled in place</param><param name="pos">[T] i32</param>
    public static unsafe void Temperature(Device dev, Tensor x, Tensor pos, float attnScale, float floorScale, DeviceStream? stream = null)
    {
        const string op = "temperature";
        var (t, heads, d) = Check(op, x, pos);
        if (!(floorScale > 0)) throw new ArgumentException($"{op}: floor_scale must be positive, got {floorScale}");
        if (x.Elements == 0) return;
        var fn = dev.Kernels.Get(File, "temperature_" + KernelCheck.Name(x.DType));
        ulong xp = x.Ptr.Value, pp = pos.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &pp, &t, &heads, &d, &attnScale, &floorScale };
        dev.Cost(2 * x.Bytes + pos.Bytes, x.Elements);
        dev.Launch(fn, KernelCheck.Blocks(x.Elements, Threads, 65535), Threads, 0, args, stream);
    }

    static (int T, int Heads, int D) Check(string op, Tensor x, Tensor pos)
    {
        if (x.Shape.Rank != 3) throw new ArgumentException($"{op}: x must be [T, heads, d], got {x.Shape}");
        if (x.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, x.DType.ToString());
        int t = KernelCheck.Int(op, "T", x.Shape[0]), heads = KernelCheck.Int(op, "heads", x.Shape[1]), d = KernelCheck.Int(op, "d", x.Shape[2]);
        if (d % 2 != 0) throw new ArgumentException($"{op}: head_dim {d} must be even");
        KernelCheck.Dims(op, "pos", pos, t);
        if (pos.DType != DType.I32) throw new ArgumentException($"{op}: pos must be i32, got {pos.DType}");
        return (t, heads, d);
    }
}
