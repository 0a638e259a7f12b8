using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>Argument checks shared by the kernel wrappers: messages name the op, the tensor and both shapes.</summary>
internal static class KernelCheck
{
    public static void Same(string op, string a, Tensor ta, string b, Tensor tb)
    {
        if (ta.Shape != tb.Shape)
            throw new ArgumentException($"{op}: {b} has shape {tb.Shape} but {a} has {ta.Shape}; they must match");
    }

    public static void Dims(string op, string name, Tensor t, params ReadOnlySpan<long> want)
    {
        var s = new Shape(want);
        if (t.Shape != s) throw new ArgumentException($"{op}: {name} has shape {t.Shape}, expected {s}");
    }

    public static int Int(string op, string what, long v)
    {
        if (v < 0 || v > int.MaxValue) throw new ArgumentException($"{op}: {what} = {v} is outside [0, 2^31)");
        return (int)v;
    }

    public static Exception Unsupported(string op, string combo) =>
        new NotSupportedException($"{op}: no kernel for dtypes {combo}");

    public static string Name(DType t) => t switch { DType.F32 => "f32", DType.BF16 => "bf16", DType.I32 => "i32", _ => t.ToString().ToLowerInvariant() };

    public static uint Blocks(long work, long perBlock, long cap = int.MaxValue) =>
        (uint)Math.Clamp((work + perBlock - 1) / perBlock, 1, cap);
}
