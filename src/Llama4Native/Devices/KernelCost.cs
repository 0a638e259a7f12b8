namespace Llama4Native.Devices;

/// <summary>What one launch must move through memory (bytes read + written, each operand once: the compulsory
/// traffic) and the floating-point operations it does (a multiply-add = 2), as its wrapper declares them from its
/// operands through <see cref="Device.Cost"/>.</summary>
internal readonly record struct KernelCost(long Bytes, double Flops)
{
    public static KernelCost operator +(KernelCost a, KernelCost b) => new(a.Bytes + b.Bytes, a.Flops + b.Flops);

    /// <summary>
    /// The routing model the MoE wrappers declare their weight traffic under: uniform, independent routing of each
    /// of T tokens to k of E experts. The expected number of distinct experts touched is E·(1 − (1 − k/E)^T):
    /// k for a batch-1 decode step, → E for long prefill pieces.
    /// </summary>
    public static double ExpectedExperts(long tokens, int k, int experts)
    {
        if (tokens <= 0 || experts <= 0) return 0;
        if (k >= experts) return experts;
        return experts * (1 - Math.Pow(1 - (double)k / experts, tokens));
    }
}
