using Llama4Native.Devices;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Q = Llama4Native.Reference.QuantizeInt4;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// int4 (Meta int4_mixed) properties the op table cannot express: the quantization rule's edges on the reference
/// (error bound, the asymmetric range, ties to even, the 1e-6 clamp, the nibble order), the wrappers' errors, and the
/// end-to-end path the loader will take: HF's input-major bf16 experts → QuantizeInt4 on the device → the MoE layer
/// with I4 weights (through Moe's own entry points) = Reference.Moe with the dequantized weights.
/// </summary>
[TestFixture, Category("Emulator")]
internal sealed class Int4Tests
{
    Device? dev;
    [OneTimeSetUp] public void Open() => dev = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => dev?.Dispose();

    static (byte[] Packed, float[] Scales) Quantize(float[] w, int rows, int k, int g)
    {
        var p = new byte[rows * k / 2]; var s = new float[rows * k / g];
        Q.Quantize(w, 1, rows, k, g, false, p, s);
        return (p, s);
    }

    [TestCase(8), TestCase(16), TestCase(128)]
    public void DequantizedWeightIsWithinHalfAScale_AndOnlyThePositiveMaxSideClamps(int g)
    {
        var rng = new Random(TestSeed.For(nameof(DequantizedWeightIsWithinHalfAScale_AndOnlyThePositiveMaxSideClamps) + g));
        const int rows = 37, k = 256;
        var w = DeviceData.Normal(rng, rows * k, 0.02f, DType.BF16);
        var (p, s) = Quantize(w, rows, k, g);
        var back = new float[w.Length];
        Q.Dequantize(p, s, rows, k, g, back);
        for (int i = 0; i < w.Length; i++)
        {
            float sc = s[i / g];
            int q = Q.Nibble(p, i);
            Assert.That(q, Is.InRange(-8, 7));
            if (w[i] > 7.5f * sc) Assert.That(q, Is.EqualTo(7), $"w[{i}] = {w[i]} above 7.5·s must clamp to 7");
            else Assert.That(Math.Abs(w[i] - back[i]), Is.LessThanOrEqualTo(sc / 2 * (1 + 1e-6)), $"w[{i}] = {w[i]}, s = {sc}, q = {q}");
            Assert.That(back[i], Is.EqualTo(q * sc), "dequantization is q·s");
        }
    }

    [Test]
    public void GroupMaximumMapsToSevenOrMinusEight()
    {
        // the largest magnitude m of a group sets s = m/8: +m → 8 clamps to 7, −m → −8 exactly (w' = −m)
        var w = new float[] { 0.75f, 0.1f, -0.2f, 0.3f, 0f, 0f, 0f, 0f, -0.75f, 0.1f, -0.2f, 0.3f, 0f, 0f, 0f, 0f };
        var (p, s) = Quantize(w, 2, 8, 8);
        Assert.That(s, Is.EqualTo(new[] { 0.75f / 8, 0.75f / 8 }));
        Assert.That(Q.Nibble(p, 0), Is.EqualTo(7));
        Assert.That(Q.Nibble(p, 8), Is.EqualTo(-8));
        var back = new float[16];
        Q.Dequantize(p, s, 2, 8, 8, back);
        Assert.That(back[8], Is.EqualTo(-0.75f));
        Assert.That(back[0], Is.EqualTo(0.75f / 8 * 7));
    }

    [Test]
    public void TiesRoundHalfToEven_AndTheEvenKIsTheLowNibble()
    {
        // max 8 → s = 1: w / s is the value itself
        var w = new float[] { 8f, 0.5f, 1.5f, 2.5f, -2.5f, -0.5f, 6.5f, -7.5f, 7.5f, -3.5f, 3.5f, -1.5f, 5.5f, 4.5f, -6.5f, 0f };
        var want = new[] { 7, 0, 2, 2, -2, 0, 6, -8, 7, -4, 4, -2, 6, 4, -6, 0 };
        var (p, s) = Quantize(w, 1, 16, 16);
        Assert.That(s[0], Is.EqualTo(1f));
        Assert.That(Enumerable.Range(0, 16).Select(i => Q.Nibble(p, i)), Is.EqualTo(want));
        Assert.That(p[0], Is.EqualTo(0x07), "q[0] = 7 in the low nibble, q[1] = 0 in the high one");
        Assert.That(p[3], Is.EqualTo((byte)(((-8) & 0xF) << 4 | 6)), "q[6] = 6 low, q[7] = -8 high");
    }

    [Test]
    public void AnAllZeroOrTinyGroupUsesTheOneMillionthClamp()
    {
        var w = new float[] { 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 1e-8f, -2e-8f, 0f, 0f, 0f, 0f, 0f, 0f };
        var (p, s) = Quantize(w, 1, 16, 8);
        Assert.That(s, Is.EqualTo(new[] { 1e-6f / 8, 1e-6f / 8 }));
        Assert.That(p, Is.All.EqualTo((byte)0));
    }

    Tensor Up(List<DeviceBuffer> owned, float[] v, DType t, params long[] shape)
    {
        var b = DeviceData.Upload(dev!, v, t); owned.Add(b);
        return new Tensor(b.Ptr, t, new Shape(shape));
    }

    Tensor NewI4(List<DeviceBuffer> owned, int g, params long[] shape)
    {
        var sh = new Shape(shape);
        var p = dev!.Allocate(sh.Elements / 2); var s = dev!.Allocate(sh.Elements / g * 4);
        owned.Add(p); owned.Add(s);
        return Tensor.Quantized(p.Ptr, DType.I4, sh, s.Ptr, g);
    }

    [Test]
    public void QuantizeRefusesAGroupThatDoesNotDivideK_NamingTheFix()
    {
        var owned = new List<DeviceBuffer>();
        try
        {
            var w = Up(owned, new float[6 * 40], DType.BF16, 6, 40);            // output-major [N = 6, K = 40]
            var dst = NewI4(owned, 8, 6, 40);
            var wrongG = dst with { Group = 16 };
            var ex = Assert.Throws<ArgumentException>(() => Llama4Native.Kernels.QuantizeInt4.Run(dev!, w, false, wrongG));
            Assert.That(ex!.Message, Does.Contain("K = 40").And.Contain("group size G = 16").And.Contain("pick"));
            // read input-major the same buffer is [K = 6, N = 40]: dst must be [40, 6]
            ex = Assert.Throws<ArgumentException>(() => Llama4Native.Kernels.QuantizeInt4.Run(dev!, w, true, dst));
            Assert.That(ex!.Message, Does.Contain("N = 40, K = 6"));
            var odd = Up(owned, new float[2 * 9], DType.F32, 2, 9);
            var oddDst = new Tensor(dst.Ptr, DType.I4, new Shape(2, 9)) { Scale = dst.Scale, Group = 9 };
            ex = Assert.Throws<ArgumentException>(() => Llama4Native.Kernels.QuantizeInt4.Run(dev!, odd, false, oddDst));
            Assert.That(ex!.Message, Does.Contain("K = 9").And.Contain("odd"));
        }
        finally { foreach (var b in owned) b.Dispose(); }
    }

    /// <summary>
    /// HF layout bf16 experts → QuantizeInt4 (input-major) → Moe.Forward with the I4 tensors; the quantized bytes must
    /// equal the reference quantization, and y must equal Reference.Moe.Experts with the dequantized weights (for the
    /// device's own routing). T = 5 f32 (simple), T = 3 bf16 (decode GEMV), T = 40 bf16 (tensor cores, weights as bf16(q·s)).
    /// </summary>
    [TestCase(DType.F32, 5), TestCase(DType.BF16, 3), TestCase(DType.BF16, 40)]
    public void QuantizedExpertsThroughTheMoeLayerMatchTheReferenceWithDequantizedWeights(DType act, int t)
    {
        const int d = 64, i = 48, e = 4, k = 2, g = 16;
        var rng = new Random(TestSeed.For(nameof(QuantizedExpertsThroughTheMoeLayerMatchTheReferenceWithDequantizedWeights) + act + t));
        var owned = new List<DeviceBuffer>();
        try
        {
            var wr = DeviceData.Normal(rng, e * d, (float)(1 / Math.Sqrt(d)), DType.BF16);
            var wguHf = DeviceData.Normal(rng, (long)e * d * 2 * i, (float)(1 / Math.Sqrt(d)), DType.BF16);  // [E, D, 2I]
            var wdHf = DeviceData.Normal(rng, (long)e * i * d, (float)(1 / Math.Sqrt(i)), DType.BF16);       // [E, I, D]
            var x = DeviceData.Normal(rng, (long)t * d, 1f, act);
            var twgu = NewI4(owned, g, e, 2 * i, d);
            var twd = NewI4(owned, g, e, d, i);
            Llama4Native.Kernels.QuantizeInt4.Run(dev!, Up(owned, wguHf, DType.BF16, e, d, 2 * i), true, twgu);
            Llama4Native.Kernels.QuantizeInt4.Run(dev!, Up(owned, wdHf, DType.BF16, e, i, d), true, twd);

            (byte[], float[]) Down(Tensor q) { var p = new byte[q.Bytes]; var s = new float[q.ScaleElements]; dev!.Download(q.Ptr, p.AsSpan()); dev!.Download(q.Scale, s.AsSpan()); return (p, s); }
            var (pgu, sgu) = Down(twgu); var (pd, sd) = Down(twd);
            var (rgu, rsgu) = (new byte[pgu.Length], new float[sgu.Length]);
            Q.Quantize(wguHf, e, 2 * i, d, g, true, rgu, rsgu);
            Assert.That(pgu, Is.EqualTo(rgu), "device quantization of gate_up differs from the reference");
            Assert.That(sgu, Is.EqualTo(rsgu));
            var (rd, rsd) = (new byte[pd.Length], new float[sd.Length]);
            Q.Quantize(wdHf, e, d, i, g, true, rd, rsd);
            Assert.That(pd, Is.EqualTo(rd), "device quantization of down differs from the reference");
            Assert.That(sd, Is.EqualTo(rsd));

            using var ws = new Llama4Native.Kernels.Moe.Workspace(dev!, t, k, e, d, i, act);
            var ty = Up(owned, new float[t * d], act, t, d);
            Llama4Native.Kernels.Moe.Forward(dev!, Up(owned, x, act, t, d), Up(owned, wr, DType.BF16, e, d), twgu, twd, ty, ws, accumulate: false);
            var y = DeviceData.Download(dev!, ty.Ptr, (long)t * d, act);

            var idx = new int[t * k]; dev!.Download(ws.TopkIdx.Ptr, idx.AsSpan());
            var score = DeviceData.Download(dev!, ws.TopkScore.Ptr, t * k, DType.F32);
            bool mma = act == DType.BF16 && t * k > Llama4Native.Kernels.Moe.DecodeMaxRows;
            var wguIm = Reference.MoeInt4.GateUpWeights(pgu, sgu, e, i, d, g, bf16Weights: mma);
            var wdIm = Reference.MoeInt4.DownWeights(pd, sd, e, i, d, g, bf16Weights: mma);
            var want = new float[t * d];
            Reference.Moe.Experts(x, idx, score, wguIm, wdIm, want, t, d, i, e, k, accumulate: false, act == DType.BF16);
            var c = OpCheck.Compare("y", y, want, Tolerances.For("moe.layer", act, Math.Max(d, i)));
            Assert.That(c.Passed, c.ToString());
        }
        finally { foreach (var b in owned) b.Dispose(); }
    }
}
