using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.DTypeConvert;
using R = Llama4Native.Reference.DTypeConvert;

namespace Llama4Native.Ops;

/// <summary>convert cases. Dims: n. Types: "bf16>f32" or "f32>bf16".</summary>
internal sealed class ConvertSpec : OpSpec
{
    public override string Name => "convert";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var n in new long[] { 1, 7, 8, 9, 4097, 100_003 })
            foreach (var t in new[] { "bf16>f32", "f32>bf16" })
                yield return new OpCase(Name, "default", t, [n]);
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "default", "bf16>f32", [5120L * 8192], "expert_weight");
        yield return new OpCase(Name, "default", "f32>bf16", [2048L * 5120], "prefill.hidden");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly float[] x; readonly Tensor tx, ty;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            x = DeviceData.Normal(rng, c[0], 3f, sig.In(0));
            // Exercise the rounding edge cases too: exact ties, NaN, infinities, the largest finite values.
            if (sig.In(0) == DType.F32 && x.Length > 8)
            {
                x[0] = BitConverter.UInt32BitsToSingle(0x3F808000); x[1] = BitConverter.UInt32BitsToSingle(0x3F818000); // ties to even
                x[2] = float.NaN; x[3] = float.PositiveInfinity; x[4] = float.NegativeInfinity; x[5] = float.MaxValue; x[6] = -0f; x[7] = 1e-40f;
            }
            tx = new Tensor(Track(DeviceData.Upload(dev, x, sig.In(0))).Ptr, sig.In(0), new Shape(x.Length));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, x.Length, sig.Output)).Ptr, sig.Output, new Shape(x.Length));
        }
        public override double Bytes => tx.Bytes + ty.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, ty, stream);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            float[] want;
            if (sig.Output == DType.BF16) { var b = new ushort[x.Length]; R.F32ToBF16(x, b); want = Bits.FromBf16(b); }
            else { want = new float[x.Length]; R.BF16ToF32(Bits.ToBf16(x), want); }
            return OpCheck.Compare("y", got, want, Tolerances.For("convert", sig.Output));
        }
    }
}
