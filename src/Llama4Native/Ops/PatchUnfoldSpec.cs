using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.PatchUnfold;
using R = Llama4Native.Reference.PatchUnfold;

namespace Llama4Native.Ops;

/// <summary>patch_unfold cases. Dims: tiles, C, H, W, P. Types "pixels>cols". A gather with one rounding: bit-exact.</summary>
internal sealed class PatchUnfoldSpec : OpSpec
{
    public override string Name => "patch_unfold";
    static readonly string[] Types = ["f32", "bf16", "bf16>f32", "f32>bf16"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes =
        [
            [1, 3, 64, 64, 8],    // the tiny fixture's tile
            [2, 3, 10, 10, 3],    // H, W not multiples of P: the last pixel row/column is dropped (nn.Unfold)
            [3, 1, 7, 5, 2],      // H ≠ W, one channel
            [1, 2, 1, 1, 1],      // 1×1 image, 1×1 patches
            [2, 3, 28, 28, 14],   // Llama 4's patch size
            [1, 3, 14, 14, 14],   // one patch per tile
            [5, 3, 9, 12, 4],
        ];
        foreach (var t in Types) foreach (var s in shapes) yield return new OpCase(Name, "default", t, s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "default", "bf16", [17, 3, 336, 336, 14], "vision.17tiles");
        yield return new OpCase(Name, "default", "bf16>f32", [17, 3, 336, 336, 14], "vision.17tiles");
        yield return new OpCase(Name, "default", "bf16", [1, 3, 336, 336, 14], "vision.1tile");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int tiles, ch, h, w, p; readonly float[] pix; readonly Tensor tp, tc;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (tiles, ch, h, w, p) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3], (int)c[4]);
            pix = DeviceData.Normal(rng, (long)tiles * ch * h * w, 0.6f, sig.In(0));
            tp = new Tensor(Track(DeviceData.Upload(dev, pix, sig.In(0))).Ptr, sig.In(0), new Shape(tiles, ch, h, w));
            long rows = (long)tiles * (h / p) * (w / p), k = (long)ch * p * p;
            tc = new Tensor(Track(DeviceData.Poisoned(dev, rows * k, sig.Output)).Ptr, sig.Output, new Shape(rows, k));
        }

        public override double Bytes => tp.Bytes + tc.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tp, tc, p, stream);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, tc.Ptr, tc.Elements, sig.Output);
            var want = new float[tc.Elements];
            R.Forward(pix, want, tiles, ch, h, w, p);
            if (sig.Output == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("cols", got, want, Tolerances.For("patch_unfold", sig.Output));
        }
    }
}
