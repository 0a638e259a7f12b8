using Llama4Native.Devices;
using Llama4Native.Tensors;
using BF16 = Llama4Native.Reference.BF16;

namespace Llama4Native.Ops;

/// <summary>Moving test data to and from a device in any dtype, as floats on the host side.</summary>
internal static class DeviceData
{
    /// <summary>N(0, std²) samples (Box–Muller), rounded to <paramref name="dtype"/> so host and device see the same values.</summary>
    public static float[] Normal(Random rng, long n, float std = 1f, DType dtype = DType.F32)
    {
        var a = new float[n];
        for (long i = 0; i < n; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble(), r = Math.Sqrt(-2 * Math.Log(u1)) * std;
            a[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < n) a[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
        if (dtype == DType.BF16) RoundToBf16(a);
        return a;
    }

    public static void RoundToBf16(Span<float> a) { for (int i = 0; i < a.Length; i++) a[i] = BF16.ToFloat(BF16.FromFloat(a[i])); }

    /// <summary>A device buffer holding <paramref name="values"/> converted to <paramref name="dtype"/>.</summary>
    public static DeviceBuffer Upload(Device dev, ReadOnlySpan<float> values, DType dtype)
    {
        var buf = dev.Allocate(Math.Max(1, values.Length * (long)dtype.Size()));
        switch (dtype)
        {
            case DType.F32: dev.Upload(values, buf.Ptr); break;
            case DType.BF16:
                var b = new ushort[values.Length];
                for (int i = 0; i < b.Length; i++) b[i] = BF16.FromFloat(values[i]);
                dev.Upload<ushort>(b, buf.Ptr); break;
            default: buf.Dispose(); throw new NotSupportedException($"upload of {dtype} test data");
        }
        return buf;
    }

    public static DeviceBuffer Upload<T>(Device dev, ReadOnlySpan<T> values) where T : unmanaged
    {
        unsafe
        {
            var buf = dev.Allocate(Math.Max(1, values.Length * (long)sizeof(T)));
            dev.Upload(values, buf.Ptr);
            return buf;
        }
    }

    /// <summary>An output buffer filled with 0xFF bytes: NaN in f32 and bf16, so an unwritten element never passes.</summary>
    public static DeviceBuffer Poisoned(Device dev, long elements, DType dtype)
    {
        var buf = dev.Allocate(Math.Max(1, elements * dtype.Size()));
        dev.Memset(buf.Ptr, 0xFF, buf.Bytes);
        return buf;
    }

    public static float[] Download(Device dev, DevicePtr src, long elements, DType dtype)
    {
        var r = new float[elements];
        switch (dtype)
        {
            case DType.F32: dev.Download(src, r.AsSpan()); break;
            case DType.BF16:
                var b = new ushort[elements];
                dev.Download(src, b.AsSpan());
                for (long i = 0; i < elements; i++) r[i] = BF16.ToFloat(b[i]);
                break;
            default: throw new NotSupportedException($"download of {dtype} test data");
        }
        return r;
    }
}
