using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.SiluMul;
using R = Llama4Native.Reference.SiluMul;

namespace Llama4Native.Ops;

/// <summary>silu_mul cases. Variant "fused": dims T, I over gu [T, 2I]; variant "pair": dims n over g, u [n].</summary>
internal sealed class SiluMulSpec : OpSpec
{
    public override string Name => "silu_mul";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
        {
            foreach (var s in new long[][] { [1, 1], [3, 5], [2, 8], [4, 48], [3, 1000], [1, 4099] }) yield return new OpCase(Name, "fused", t, s);
            foreach (var n in new long[] { 1, 9, 4096, 10_001 }) yield return new OpCase(Name, "pair", t, [n]);
        }
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "fused", "bf16", [1, 8192], "decode.expert");
        yield return new OpCase(Name, "fused", "bf16", [2048, 8192], "prefill.expert");
        yield return new OpCase(Name, "pair", "bf16", [2048L * 8192], "prefill.shared_expert");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly bool fused; readonly int t, i; readonly long n;
        readonly float[] a, b; readonly Tensor ta, tb, ty;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            fused = c.Variant == "fused";
            if (fused) { t = (int)c[0]; i = (int)c[1]; n = (long)t * i; } else n = c[0];
            a = DeviceData.Normal(rng, fused ? 2 * n : n, 3f, dt);
            b = fused ? [] : DeviceData.Normal(rng, n, 1f, dt);
            ta = new Tensor(Track(DeviceData.Upload(dev, a, dt)).Ptr, dt, fused ? new Shape(t, 2L * i) : new Shape(n));
            tb = fused ? default : new Tensor(Track(DeviceData.Upload(dev, b, dt)).Ptr, dt, new Shape(n));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, n, dt)).Ptr, dt, fused ? new Shape(t, i) : new Shape(n));
        }
        public override double Bytes => ta.Bytes + (fused ? 0 : tb.Bytes) + ty.Bytes;
        public override void Launch(DeviceStream? stream = null)
        {
            if (fused) K.Fused(Device, ta, ty, stream); else K.Run(Device, ta, tb, ty, stream);
        }
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, n, dt);
            float[] want;
            if (dt == DType.BF16)
            {
                var y = new ushort[n];
                if (fused) R.Fused(Bits.ToBf16(a), y, t, i); else R.Forward(Bits.ToBf16(a), Bits.ToBf16(b), y);
                want = Bits.FromBf16(y);
            }
            else
            {
                want = new float[n];
                if (fused) R.Fused(a, want, t, i); else R.Forward(a, b, want);
            }
            return OpCheck.Compare("out", got, want, Tolerances.For("silu_mul", dt));
        }
    }
}
