namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/bias_act.cu: <c>y = act(x + bias)</c> elementwise over [rows, n], bias over the last dim
/// (or absent), act the identity or the exact-erf GELU 0.5·v·(1 + erf(v/√2)) (torch's nn.GELU() default). The
/// sum and the activation in double; a bf16 output is rounded once. In place is allowed.
/// </summary>
internal static class BiasAct
{
    public enum Activation { None = 0, GeluErf = 1 }

    /// <summary>fp32 x and bias (or none) → fp32 y.</summary>
    /// <param name="x">[rows, n]</param><param name="bias">[n], or empty for none</param><param name="y">[rows, n]</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> bias, Span<float> y, int rows, int n, Activation act)
    {
        int total = Checks.Elements(rows, n, nameof(rows), nameof(n));
        Checks.Length(x, total, nameof(x));
        if (!bias.IsEmpty) Checks.Length(bias, n, nameof(bias));
        Checks.Length(y, total, nameof(y));
        for (int i = 0; i < total; i++)
        {
            double v = (double)x[i] + (bias.IsEmpty ? 0.0 : bias[i % n]);
            y[i] = (float)Apply(v, act);
        }
    }

    /// <summary>fp32 x, bf16 bias (or none) → bf16 y, rounded once.</summary>
    /// <param name="x">[rows, n]</param><param name="bias">[n] bf16 bits, or empty</param><param name="y">[rows, n] bf16 bits</param>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<ushort> bias, Span<ushort> y, int rows, int n, Activation act)
    {
        int total = Checks.Elements(rows, n, nameof(rows), nameof(n));
        Checks.Length(y, total, nameof(y));
        var yf = new float[total];
        Forward(x, BF16.ToFloatArray(bias), yf, rows, n, act);
        BF16.FromFloat(yf, y);
    }

    public static double Apply(double v, Activation act) => act switch
    {
        Activation.None => v,
        Activation.GeluErf => 0.5 * v * (1 + Erf(v / Math.Sqrt(2))),
        _ => throw new ArgumentException($"unknown activation {act}", nameof(act)),
    };

    /// <summary>
    /// erf(x) to ~1e-15 relative: erf(x) = 2/√π · e^(−x²) · Σ_k 2^k x^(2k+1) / (1·3·…·(2k+1)) — every term positive,
    /// so no cancellation; ≤ ~150 terms for |x| &lt; 6, and |erf(x)| = 1 in double beyond.
    /// </summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double a = Math.Abs(x);
        if (a >= 6) return Math.Sign(x);
        double term = a, sum = a, x2 = a * a;
        for (int k = 1; k < 400; k++)
        {
            term *= 2 * x2 / (2 * k + 1);
            sum += term;
            if (term < sum * 1e-17) break;
        }
        double r = 2 / Math.Sqrt(Math.PI) * Math.Exp(-x2) * sum;
        return x < 0 ? -r : r;
    }
}
