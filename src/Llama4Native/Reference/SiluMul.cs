namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/silu_mul.cu: <c>out = silu(gate) · up</c>, <c>silu(x) = x / (1 + e^-x)</c>, computed in
/// double; a bf16 output is rounded once. The fused form reads one gate/up row per token, gate first
/// (Llama 4's fused <c>gate_up_proj</c>): <c>gu [T, 2I]</c>, gate = <c>gu[:, :I]</c>, up = <c>gu[:, I:]</c>.
/// </summary>
internal static class SiluMul
{
    public static double Silu(double x) => x / (1.0 + Math.Exp(-x));

    /// <summary>Fused fp32 (kernel silu_mul_fused_f32).</summary>
    /// <param name="gu">[tokens, 2·inter]</param><param name="output">[tokens, inter]</param>
    public static void Fused(ReadOnlySpan<float> gu, Span<float> output, int tokens, int inter)
    {
        int n = Checks.Elements(tokens, inter, nameof(tokens), nameof(inter));
        Checks.Length(gu, 2L * n, nameof(gu));
        Checks.Length(output, n, nameof(output));
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<float> g = gu.Slice(2 * t * inter, inter), u = gu.Slice((2 * t + 1) * inter, inter);
            Span<float> o = output.Slice(t * inter, inter);
            for (int i = 0; i < inter; i++) o[i] = (float)(Silu(g[i]) * u[i]);
        }
    }

    /// <summary>Fused bf16 (kernel silu_mul_fused_bf16).</summary>
    /// <param name="gu">[tokens, 2·inter] bf16 bits</param><param name="output">[tokens, inter] bf16 bits</param>
    public static void Fused(ReadOnlySpan<ushort> gu, Span<ushort> output, int tokens, int inter)
    {
        int n = Checks.Elements(tokens, inter, nameof(tokens), nameof(inter));
        Checks.Length(gu, 2L * n, nameof(gu));
        Checks.Length(output, n, nameof(output));
        var o = new float[n];
        Fused(BF16.ToFloatArray(gu), o, tokens, inter);
        BF16.FromFloat(o, output);
    }

    /// <summary>Two inputs, fp32 (kernel silu_mul_f32).</summary>
    /// <param name="gate">[n]</param><param name="up">[n]</param><param name="output">[n]</param>
    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> output)
    {
        Checks.Positive(gate.Length, nameof(gate) + ".Length");
        Checks.Length(up, gate.Length, nameof(up));
        Checks.Length(output, gate.Length, nameof(output));
        for (int i = 0; i < gate.Length; i++) output[i] = (float)(Silu(gate[i]) * up[i]);
    }

    /// <summary>Two inputs, bf16 (kernel silu_mul_bf16).</summary>
    /// <param name="gate">[n] bf16 bits</param><param name="up">[n] bf16 bits</param><param name="output">[n] bf16 bits</param>
    public static void Forward(ReadOnlySpan<ushort> gate, ReadOnlySpan<ushort> up, Span<ushort> output)
    {
        Checks.Positive(gate.Length, nameof(gate) + ".Length");
        Checks.Length(up, gate.Length, nameof(up));
        Checks.Length(output, gate.Length, nameof(output));
        for (int i = 0; i < gate.Length; i++)
            output[i] = BF16.FromFloat((float)(Silu(BF16.ToFloat(gate[i])) * BF16.ToFloat(up[i])));
    }
}
