namespace Llama4Native.Reference;

/// <summary>kernels/fill.cu's generator in plain code: splitmix64 of the index, Box–Muller, in double.</summary>
internal static class Fill
{
    static ulong SplitMix64(ulong x)
    {
        unchecked
        {
            x += 0x9E3779B97F4A7C15UL;
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
            x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
            return x ^ (x >> 31);
        }
    }

    public static double Normal(ulong seed, long i)
    {
        ulong h = SplitMix64(seed ^ unchecked((ulong)i * 0xD1B54A32D192ED03UL));
        double u1 = ((h >> 40) + 1.0) / 16777216.0, u2 = (h & 0xFFFFFF) / 16777216.0;
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    public static void Forward(Span<float> y, ulong seed, float mean, float std)
    {
        for (int i = 0; i < y.Length; i++) y[i] = (float)(mean + std * Normal(seed, i));
    }
}
