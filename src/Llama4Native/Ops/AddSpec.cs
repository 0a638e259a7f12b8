using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Add;
using R = Llama4Native.Reference.Add;

namespace Llama4Native.Ops;

/// <summary>add cases. Dims: n. Variant "inplace" writes y over a (the residual stream).</summary>
internal sealed class AddSpec : OpSpec
{
    public override string Name => "add";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
            foreach (var v in new[] { "default", "inplace" })
                foreach (var n in new long[] { 1, 7, 8, 1000, 40_001 })
                    yield return new OpCase(Name, v, t, [n]);
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "inplace", "bf16", [5120], "decode.residual");
        yield return new OpCase(Name, "inplace", "bf16", [2048L * 5120], "prefill.residual");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly float[] a, b; readonly Tensor ta, tb, ty; readonly bool inplace;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            inplace = c.Variant == "inplace";
            a = DeviceData.Normal(rng, c[0], 2f, dt);
            b = DeviceData.Normal(rng, c[0], 2f, dt);
            ta = new Tensor(Track(DeviceData.Upload(dev, a, dt)).Ptr, dt, new Shape(c[0]));
            tb = new Tensor(Track(DeviceData.Upload(dev, b, dt)).Ptr, dt, new Shape(c[0]));
            ty = inplace ? ta : new Tensor(Track(DeviceData.Poisoned(dev, c[0], dt)).Ptr, dt, new Shape(c[0]));
        }
        public override double Bytes => ta.Bytes + tb.Bytes + ty.Bytes;
        // Checked after the first launch; later (timing) launches keep accumulating in place, which is fine.
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, ta, tb, ty, stream);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, a.Length, dt);
            float[] want;
            if (dt == DType.BF16) { var y = new ushort[a.Length]; R.Forward(Bits.ToBf16(a), Bits.ToBf16(b), y); want = Bits.FromBf16(y); }
            else { want = new float[a.Length]; R.Forward(a, b, want); }
            return OpCheck.Compare("y", got, want, Tolerances.For("add", dt));
        }
    }
}
