using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.AddRmsNorm;
using R = Llama4Native.Reference.AddRmsNorm;

namespace Llama4Native.Ops;

/// <summary>add_rmsnorm cases. Dims: rows, cols. Types "x,w>h" (y is x's dtype). Variants block / warp. Both outputs are
/// checked: the updated residual x exactly (one rounded add), then h as rmsnorm.</summary>
internal sealed class AddRmsNormSpec : OpSpec
{
    public override string Name => "add_rmsnorm";
    static readonly string[] Typed = ["f32,f32>f32", "f32,bf16>f32", "bf16,bf16>bf16"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[1, 1], [3, 7], [5, 64], [2, 100], [7, 1000], [2, 1025], [1, 5120], [9, 16]];
        foreach (var v in new[] { "block", "warp" })
            foreach (var s in shapes) foreach (var t in Typed) yield return new OpCase(Name, v, t, s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        foreach (var t in new[] { "f32,bf16>f32", "bf16,bf16>bf16" })
        {
            yield return new OpCase(Name, "block", t, [1, 5120], "decode.ffn_norm");
            yield return new OpCase(Name, "block", t, [2048, 5120], "prefill.ffn_norm");
        }
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int rows, cols; readonly Kernels.RmsNorm.Variant variant;
        readonly float[] x, y, w; readonly Tensor tx, ty, tw, th; const float Eps = 1e-5f;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            rows = (int)c[0]; cols = (int)c[1];
            variant = c.Variant == "warp" ? Kernels.RmsNorm.Variant.Warp : Kernels.RmsNorm.Variant.Block;
            var dt = sig.In(0);
            x = DeviceData.Normal(rng, (long)rows * cols, 1.5f, dt);
            y = DeviceData.Normal(rng, (long)rows * cols, 0.5f, dt);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, dt)).Ptr, dt, new Shape(rows, cols));
            ty = new Tensor(Track(DeviceData.Upload(dev, y, dt)).Ptr, dt, new Shape(rows, cols));
            w = DeviceData.Normal(rng, cols, 0.2f, sig.In(1)).Select(v => sig.In(1) == DType.BF16 ? Reference.BF16.Round(1 + v) : 1 + v).ToArray();
            tw = new Tensor(Track(DeviceData.Upload(dev, w, sig.In(1))).Ptr, sig.In(1), new Shape(cols));
            th = new Tensor(Track(DeviceData.Poisoned(dev, (long)rows * cols, sig.Output)).Ptr, sig.Output, new Shape(rows, cols));
        }

        public override double Bytes => 2 * tx.Bytes + ty.Bytes + tw.Bytes + th.Bytes;
        // Checked after the first launch; later (timing) launches keep adding y into x, which is fine.
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, ty, tw, th, Eps, stream, variant);

        public override OpCheck Check()
        {
            var gotX = DeviceData.Download(Device, tx.Ptr, tx.Elements, sig.In(0));
            var gotH = DeviceData.Download(Device, th.Ptr, th.Elements, sig.Output);
            float[] wantX, wantH;
            if (sig.Output == DType.BF16)
            {
                var xb = Bits.ToBf16(x); var hb = new ushort[x.Length];
                R.Forward(xb, Bits.ToBf16(y), Bits.ToBf16(w), hb, rows, cols, Eps);
                (wantX, wantH) = (Bits.FromBf16(xb), Bits.FromBf16(hb));
            }
            else
            {
                wantX = (float[])x.Clone(); wantH = new float[x.Length];
                if (sig.In(1) == DType.BF16) R.Forward(wantX, y, Bits.ToBf16(w), wantH, rows, cols, Eps);
                else R.Forward(wantX, y, w, wantH, rows, cols, Eps);
            }
            var rx = OpCheck.Compare("x (x + y, in place)", gotX, wantX, Tolerances.Exact);
            return rx.Passed ? OpCheck.Compare("h", gotH, wantH, Tolerances.For("add_rmsnorm", sig.Output)) : rx;
        }
    }
}
