using Llama4Native.Devices;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.QuantizeFp8;
using R = Llama4Native.Reference.QuantizeFp8;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// The e4m3 conversion the FP8 kernels use (common.cuh's twin on the emulator, cvt on sm_89+) against the C#
/// reference's independent rounding, over every code, every midpoint between neighbouring codes (ties to even),
/// the floats either side of each, saturation, NaN, infinities and signed zeros — through the real activation
/// quantizer: a row whose max|x| is 448 has scale exactly 1, so its codes are e4m3(x) itself. Also the reference's own
/// invariants (a code round-trips; the scale rule's limits) and the FP8 wrappers' argument checks.
/// </summary>
[TestFixture, Category("Emulator")]
internal sealed class Fp8Tests
{
    Device? dev;
    [OneTimeSetUp] public void Open() => dev = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => dev?.Dispose();

    static List<float> Probes()
    {
        var v = new List<float> { 448f };  // first: the row's max|x| is 448, so s = 1
        for (int c = 0; c < 0x7e; c++)
        {
            double lo = R.ToFloat((byte)c), hi = R.ToFloat((byte)(c + 1)), mid = (lo + hi) / 2;
            foreach (var x in new[] { (float)lo, (float)mid })
                foreach (var y in new[] { x, MathF.BitDecrement(x), MathF.BitIncrement(x) })
                    if (Math.Abs(y) <= 448f) { v.Add(y); v.Add(-y); }
        }
        v.AddRange([float.NaN, -float.NaN, -0f, 0f, 1e-30f, -1e-40f, 1f / 1024, 3f / 2048]);
        return v;
    }

    [Test]
    public void ReferenceRoundTripsEveryCodeAndRoundsTiesToEven()
    {
        for (int c = 0; c < 256; c++)
        {
            if ((c & 0x7f) == 0x7f) { Assert.That(float.IsNaN(R.ToFloat((byte)c)), $"code 0x{c:x2} is NaN"); continue; }
            Assert.That(R.FromFloat(R.ToFloat((byte)c)), Is.EqualTo((byte)c), $"code 0x{c:x2} round-trips");
        }
        Assert.That(R.FromFloat(1.0625f), Is.EqualTo(R.FromFloat(1f)), "1 + 1/16 is the tie between 1 and 1.125: to the even code");
        Assert.That(R.FromFloat(1.1875f), Is.EqualTo(R.FromFloat(1.25f)), "1.1875 is the tie between 1.125 and 1.25: to the even code");
        Assert.That(R.FromFloat(1e6f), Is.EqualTo((byte)0x7e)); Assert.That(R.FromFloat(float.NegativeInfinity), Is.EqualTo((byte)0xfe));
        Assert.That(R.FromFloat(float.NaN), Is.EqualTo((byte)0x7f)); Assert.That(R.FromFloat(-0f), Is.EqualTo((byte)0x80));
        Assert.That(R.RowScale(0, 1200), Is.EqualTo(R.MinScale));
        Assert.That(R.RowScale(4000, 1200), Is.EqualTo(1200f / 448f));
    }

    [TestCase(DType.F32)]
    public void DeviceConversionMatchesReferenceOnEveryCodeAndTie(DType dt)
    {
        var probes = Probes().ToArray();
        using var x = DeviceData.Upload(dev!, probes, dt);
        using var q = dev!.Allocate(probes.Length);
        using var s = dev.Allocate(4);
        K.Rows(dev, new Tensor(x.Ptr, dt, new Shape(1, probes.Length)), new Tensor(q.Ptr, DType.F8E4M3, new Shape(1, probes.Length)),
               new Tensor(s.Ptr, DType.F32, new Shape(1)), 1200f);
        var got = new byte[probes.Length]; dev.Download(q.Ptr, got.AsSpan());
        var scale = new float[1]; dev.Download(s.Ptr, scale.AsSpan());
        Assert.That(scale[0], Is.EqualTo(1f), "max|x| = 448 gives the scale 1");
        for (int i = 0; i < probes.Length; i++)
            Assert.That(got[i], Is.EqualTo(R.FromFloat(probes[i])), $"e4m3({probes[i]:R}) (bits 0x{BitConverter.SingleToUInt32Bits(probes[i]):x8})");
    }

    [Test]
    public void WrappersRefuseWrongArguments()
    {
        using var b = dev!.Allocate(1 << 12);
        var x = new Tensor(b.Ptr, DType.F32, new Shape(4, 16));
        var q = new Tensor(b.Ptr, DType.F8E4M3, new Shape(4, 16));
        var s = new Tensor(b.Ptr, DType.F32, new Shape(3));
        Assert.That(() => K.Rows(dev, x, q, s, 1200f), Throws.ArgumentException.With.Message.Contains("one scale per row"));
        var plain = new Tensor(b.Ptr, DType.F8E4M3, new Shape(16, 4));
        Assert.That(() => K.Weights(dev, x, false, plain, null), Throws.ArgumentException.With.Message.Contains("Tensor.Quantized"));
        Assert.That(() => Llama4Native.Kernels.GemmFp8.Run(dev, q, new Tensor(b.Ptr, DType.F32, new Shape(4)), plain, x),
                    Throws.ArgumentException.With.Message.Contains("row scales"));
        Assert.That(() => K.Relayout(dev, q, new Tensor(b.Ptr + 2048, DType.F8E4M3, new Shape(4, 16))),
                    Throws.ArgumentException.With.Message.Contains("swapped"));
    }
}
