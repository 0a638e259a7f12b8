using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.RmsNorm;
using R = Llama4Native.Reference.RmsNorm;

namespace Llama4Native.Ops;

/// <summary>rmsnorm cases. Dims: rows, cols. Types: "x,w>y" or "x>y" with variant "noweight-…".</summary>
internal sealed class RmsNormSpec : OpSpec
{
    public override string Name => "rmsnorm";
    static readonly string[] Typed = ["f32,f32>f32", "f32,bf16>f32", "bf16,bf16>bf16"];
    static readonly string[] Unweighted = ["f32", "bf16"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[1, 1], [3, 7], [5, 64], [2, 100], [7, 1000], [2, 1025], [1, 5120], [9, 16]];
        foreach (var v in new[] { "block", "warp" })
        {
            foreach (var s in shapes) foreach (var t in Typed) yield return new OpCase(Name, v, t, s);
            foreach (var s in shapes) foreach (var t in Unweighted) yield return new OpCase(Name, "noweight-" + v, t, s);
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        foreach (var t in new[] { "f32,bf16>f32", "bf16,bf16>bf16" })
        {
            yield return new OpCase(Name, "block", t, [1, 5120], "decode.attn_norm");
            yield return new OpCase(Name, "block", t, [2048, 5120], "prefill.attn_norm");
        }
        yield return new OpCase(Name, "noweight-warp", "bf16", [2048 * 40, 128], "prefill.qk_norm");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int rows, cols; readonly bool weighted; readonly K.Variant variant;
        readonly float[] x, w; readonly Tensor tx, ty; readonly Tensor? tw; const float Eps = 1e-5f;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            rows = (int)c[0]; cols = (int)c[1];
            weighted = !c.Variant.StartsWith("noweight", StringComparison.Ordinal);
            variant = c.Variant.EndsWith("warp", StringComparison.Ordinal) ? K.Variant.Warp : K.Variant.Block;
            x = DeviceData.Normal(rng, (long)rows * cols, 1.5f, sig.In(0));
            tx = new Tensor(Track(DeviceData.Upload(dev, x, sig.In(0))).Ptr, sig.In(0), new Shape(rows, cols));
            w = weighted ? DeviceData.Normal(rng, cols, 0.2f, sig.In(1)).Select(v => sig.In(1) == DType.BF16 ? Reference.BF16.Round(1 + v) : 1 + v).ToArray() : [];
            if (weighted) tw = new Tensor(Track(DeviceData.Upload(dev, w, sig.In(1))).Ptr, sig.In(1), new Shape(cols));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)rows * cols, sig.Output)).Ptr, sig.Output, new Shape(rows, cols));
        }

        public override double Bytes => tx.Bytes + ty.Bytes + (tw?.Bytes ?? 0);
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, tw, ty, Eps, stream, variant);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            float[] want;
            if (sig.Output == DType.BF16)
            {
                var y = new ushort[x.Length];
                if (weighted) R.Forward(Bits.ToBf16(x), Bits.ToBf16(w), y, rows, cols, Eps); else R.NoWeight(Bits.ToBf16(x), y, rows, cols, Eps);
                want = Bits.FromBf16(y);
            }
            else
            {
                want = new float[x.Length];
                if (!weighted) R.NoWeight(x, want, rows, cols, Eps);
                else if (sig.In(1) == DType.BF16) R.Forward(x, Bits.ToBf16(w), want, rows, cols, Eps);
                else R.Forward(x, w, want, rows, cols, Eps);
            }
            return OpCheck.Compare("y", got, want, Tolerances.For("rmsnorm", sig.Output));
        }
    }
}
