using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/bias_act.cu`: y = act(x + bias) elementwise (bias over the last dim, optional), fp32 math.</summary>
internal static class BiasAct
{
    public const string File = "bias_act.cu";
    /// <summary>None: identity. GeluErf: 0.5·v·(1 + erf(v/√2)), torch's nn.GELU() default.</summary>
    public enum Activation { None = 0, GeluErf = 1 }
    const int Threads = 256; // BIAS_ACT_THREADS default

    /// <param name="x">[rows, n] f32 or bf16</param>
    /// <param name="bias">[n] (f32 with f32 x and y; bf16 with any), or null for act(x)</param>
    /// <param name="y">x's shape; x's dtype, or bf16 with an f32 x; may alias x when the dtypes match</param>
    public static unsafe void Run(Device dev, Tensor x, Tensor? bias, Tensor y, Activation act, DeviceStream? stream = null)
    {
        const string op = "bias_act";
        KernelCheck.Same(op, "x", x, "y", y);
        int n = KernelCheck.Int(op, "n", x.Shape.Inner);
        long rows = x.Shape.Rows;
        if (bias is { } bt) KernelCheck.Dims(op, "bias", bt, n);
        if (x.Ptr == y.Ptr && x.DType != y.DType)
            throw new ArgumentException($"{op}: y aliases x but is {y.DType} while x is {x.DType}; in place needs one dtype");
        if (act is not (Activation.None or Activation.GeluErf)) throw new ArgumentException($"{op}: unknown activation {act}");
        string xs = KernelCheck.Name(x.DType), ys = KernelCheck.Name(y.DType);
        string name = bias is { } b ? $"{xs}_{KernelCheck.Name(b.DType)}_{ys}" : $"nobias_{xs}_{ys}";
        if (name is not ("f32_f32_f32" or "f32_bf16_f32" or "bf16_bf16_bf16" or "f32_bf16_bf16"
                         or "nobias_f32_f32" or "nobias_bf16_bf16" or "nobias_f32_bf16"))
            throw KernelCheck.Unsupported(op, name);
        if (rows == 0 || n == 0) return;
        var fn = dev.Kernels.Get(File, "bias_act_" + name);
        ulong xp = x.Ptr.Value, bp = bias?.Ptr.Value ?? 0, yp = y.Ptr.Value;
        int a = (int)act;
        dev.Cost(x.Bytes + y.Bytes + (bias?.Bytes ?? 0), (act == Activation.None ? 1.0 : 20.0) * x.Elements);
        uint grid = KernelCheck.Blocks(rows * n, 8L * Threads, 1 << 20);
        if (bias is not null)
        {
            void** args = stackalloc void*[] { &xp, &bp, &yp, &rows, &n, &a };
            dev.Launch(fn, grid, Threads, 0, args, stream);
        }
        else
        {
            void** args = stackalloc void*[] { &xp, &yp, &rows, &n, &a };
            dev.Launch(fn, grid, Threads, 0, args, stream);
        }
    }
}
