using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/silu_mul.cu`: the SwiGLU gate, out = silu(gate) · up, fp32 math.</summary>
internal static class SiluMul
{
    public const string File = "silu_mul.cu";
    const int Threads = 256; // SILU_MUL_THREADS default

    /// <summary>Fused gate/up rows (gate first): <paramref name="gu"/> [T, 2I] → <paramref name="output"/> [T, I].</summary>
    public static unsafe void Fused(Device dev, Tensor gu, Tensor output, DeviceStream? stream = null)
    {
        const string op = "silu_mul";
        int t = KernelCheck.Int(op, "T", output.Shape.Rows), i = KernelCheck.Int(op, "I", output.Shape.Inner);
        if (gu.Shape.Rows != t || gu.Shape.Inner != 2L * i)
            throw new ArgumentException($"{op}: gate_up has shape {gu.Shape}, expected [{t}, {2L * i}] for output {output.Shape}");
        if (gu.DType != output.DType || gu.DType is not (DType.F32 or DType.BF16))
            throw KernelCheck.Unsupported(op, $"{gu.DType}>{output.DType}");
        if (t == 0 || i == 0) return;
        var fn = dev.Kernels.Get(File, "silu_mul_fused_" + KernelCheck.Name(gu.DType));
        ulong gp = gu.Ptr.Value, op_ = output.Ptr.Value;
        void** args = stackalloc void*[] { &gp, &op_, &t, &i };
        dev.Cost(gu.Bytes + output.Bytes, 6.0 * output.Elements);
        dev.Launch(fn, new Dim3(KernelCheck.Blocks(i, 8L * Threads), (uint)Math.Min(t, 65535)), Threads, 0, args, stream);
    }

    /// <summary>Separate inputs: out = silu(g) · u elementwise, all the same shape and dtype.</summary>
    public static unsafe void Run(Device dev, Tensor g, Tensor u, Tensor output, DeviceStream? stream = null)
    {
        const string op = "silu_mul";
        KernelCheck.Same(op, "gate", g, "up", u);
        KernelCheck.Same(op, "gate", g, "out", output);
        if (g.DType != u.DType || g.DType != output.DType || g.DType is not (DType.F32 or DType.BF16))
            throw KernelCheck.Unsupported(op, $"{g.DType},{u.DType}>{output.DType}");
        long n = g.Elements;
        if (n == 0) return;
        var fn = dev.Kernels.Get(File, "silu_mul_" + KernelCheck.Name(g.DType));
        ulong gp = g.Ptr.Value, up = u.Ptr.Value, op_ = output.Ptr.Value;
        void** args = stackalloc void*[] { &gp, &up, &op_, &n };
        dev.Cost(g.Bytes + u.Bytes + output.Bytes, 6.0 * n);
        dev.Launch(fn, KernelCheck.Blocks(n, 8L * Threads, 65535), Threads, 0, args, stream);
    }
}
