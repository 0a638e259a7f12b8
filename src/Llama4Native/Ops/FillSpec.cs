using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Fill;
using R = Llama4Native.Reference.Fill;

namespace Llama4Native.Ops;

/// <summary>fill cases (synthetic weights on the device). Dims: n, seed. Compared with the double reference: fp32
/// logf/cosf/sqrtf differ from double by a few ulp, which a bf16 rounding can turn into one bf16 ulp.</summary>
internal sealed class FillSpec : OpSpec
{
    public override string Name => "fill";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
            foreach (var n in new long[] { 1, 7, 1000, 300_001 })
                yield return new OpCase(Name, "normal", t, [n, 17 + n]);
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "normal", "bf16", [16L * 5120 * 16384, 1], "synth.experts_gate_up");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly Tensor y; readonly float mean, std;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            mean = (float)(rng.NextDouble() - 0.5); std = (float)(0.01 + rng.NextDouble());
            y = new Tensor(Track(DeviceData.Poisoned(dev, c[0], dt)).Ptr, dt, new Shape(c[0]));
        }
        public override double Bytes => y.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Normal(Device, y, (ulong)Case[1], mean, std, stream);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, y.Ptr, y.Elements, dt);
            var want = new float[y.Elements];
            R.Forward(want, (ulong)Case[1], mean, std);
            if (dt == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("y", got, want, Tolerances.For("fill", dt));
        }
    }
}
