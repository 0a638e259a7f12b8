using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.VisionEmbed;
using R = Llama4Native.Reference.VisionEmbed;

namespace Llama4Native.Ops;

/// <summary>vision_embed cases. Dims: tiles, N, Dv. Types "patches,cls>y" (pos has cls's dtype). One rounded add: bit-exact.</summary>
internal sealed class VisionEmbedSpec : OpSpec
{
    public override string Name => "vision_embed";
    static readonly string[] Types = ["f32,f32>f32", "f32,bf16>f32", "bf16,bf16>bf16"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[1, 1, 1], [3, 64, 32], [2, 9, 7], [1, 4, 1408], [5, 16, 40], [2, 25, 13], [1, 1, 8]];
        foreach (var t in Types) foreach (var s in shapes) yield return new OpCase(Name, "default", t, s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "default", "bf16,bf16>bf16", [17, 576, 1408], "vision.17tiles");
        yield return new OpCase(Name, "default", "f32,f32>f32", [17, 576, 1408], "vision.17tiles");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int tiles, n, dv; readonly float[] p, cls, pos; readonly Tensor tp, tc, tq, ty;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (tiles, n, dv) = ((int)c[0], (int)c[1], (int)c[2]);
            p = DeviceData.Normal(rng, (long)tiles * n * dv, 1f, sig.In(0));
            cls = DeviceData.Normal(rng, dv, 1f, sig.In(1));
            pos = DeviceData.Normal(rng, (long)(n + 1) * dv, 1f, sig.In(1));
            tp = new Tensor(Track(DeviceData.Upload(dev, p, sig.In(0))).Ptr, sig.In(0), new Shape(tiles, n, dv));
            tc = new Tensor(Track(DeviceData.Upload(dev, cls, sig.In(1))).Ptr, sig.In(1), new Shape(dv));
            tq = new Tensor(Track(DeviceData.Upload(dev, pos, sig.In(1))).Ptr, sig.In(1), new Shape(n + 1, dv));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)tiles * (n + 1) * dv, sig.Output)).Ptr, sig.Output, new Shape(tiles, n + 1, dv));
        }

        public override double Bytes => tp.Bytes + tc.Bytes + tq.Bytes + ty.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tp, tc, tq, ty, stream);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            var want = new float[ty.Elements];
            R.Forward(p, cls, pos, want, tiles, n, dv);
            if (sig.Output == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("y", got, want, Tolerances.For("vision_embed", sig.Output));
        }
    }
}
