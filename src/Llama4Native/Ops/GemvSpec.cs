using Llama4Native.Devices;
using Llama4Native.Reference;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Gemv;
using R = Llama4Native.Reference.Gemv;

namespace Llama4Native.Ops;

/// <summary>
/// gemv cases (decode projections). Variant "warp" (a warp per GEMV_ROWS_PER_WARP outputs), "warp-misaligned" (x not 16-byte aligned). Dims: m, N, K. Types "x,w>y" (w always bf16).
/// x ~ N(0, 1), W ~ N(0, 1/K) like real weights, so |y| ~ 1 at every K.
/// </summary>
internal sealed class GemvSpec : OpSpec
{
    public override string Name => "gemv";

    static readonly string[] Types = ["f32,bf16>f32", "bf16,bf16>bf16", "bf16,bf16>f32"];

    public override IEnumerable<OpCase> Cases()
    {
        // m = 1..8 (1, 3, 8 everywhere); N odd/small/not a multiple of a block's 8 columns; K = 1 and 7 (the
        // scalar path), 8 (one vector per lane, most lanes idle), 64, 1000 (vector, partial last step), 5120.
        long[][] shapes =
        [
            [1, 1, 1], [3, 7, 7], [8, 65, 8], [1, 300, 64], [3, 65, 1000], [8, 7, 5120], [1, 300, 5120],
            [2, 1, 64], [4, 300, 7], [5, 65, 64], [6, 7, 1000], [7, 300, 8],
        ];
        foreach (var t in Types)
            foreach (var s in shapes)
                yield return new OpCase(Name, "warp", t, s);
        // x one element past a 16-byte boundary with K % 8 == 0: must take the scalar path, not fault.
        foreach (var t in Types)
            foreach (var s in new long[][] { [3, 65, 64], [1, 7, 1000] })
                yield return new OpCase(Name, "warp-misaligned", t, s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "warp", "bf16,bf16>bf16", [1, 5120, 5120], "attn_q");
        yield return new OpCase(Name, "warp", "bf16,bf16>bf16", [1, 1024, 5120], "attn_kv");
        yield return new OpCase(Name, "warp", "bf16,bf16>bf16", [1, 16384, 5120], "shexp_gate_up");
        yield return new OpCase(Name, "warp", "bf16,bf16>bf16", [1, 5120, 8192], "shexp_down");
        yield return new OpCase(Name, "warp", "bf16,bf16>f32", [1, 202048, 5120], "lm_head");
        yield return new OpCase(Name, "warp", "bf16,bf16>bf16", [4, 5120, 5120], "attn_q.m4");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int m, n, k;
        readonly float[] x, w; readonly Tensor tx, tw, ty;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (m, n, k) = ((int)c[0], (int)c[1], (int)c[2]);
            x = DeviceData.Normal(rng, (long)m * k, 1f, sig.In(0));
            w = DeviceData.Normal(rng, (long)n * k, (float)(1 / Math.Sqrt(k)), sig.In(1));
            // "misaligned": x starts one element into its buffer (not 16-byte aligned).
            int skew = c.Variant.EndsWith("misaligned", StringComparison.Ordinal) ? 1 : 0;
            var xs = new float[x.Length + skew];
            x.CopyTo(xs, skew);
            long esz = sig.In(0) == DType.BF16 ? 2 : 4;
            tx = new Tensor(Track(DeviceData.Upload(dev, xs, sig.In(0))).Ptr + skew * esz, sig.In(0), new Shape(m, k));
            tw = new Tensor(Track(DeviceData.Upload(dev, w, sig.In(1))).Ptr, sig.In(1), new Shape(n, k));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)m * n, sig.Output)).Ptr, sig.Output, new Shape(m, n));
        }
        public override double Bytes => tx.Bytes + tw.Bytes + ty.Bytes;
        public override double Flops => 2.0 * m * n * k;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, tw, ty, stream);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            var want = new float[ty.Elements];
            // x was generated in its dtype (bf16 values are exactly representable in the float array).
            R.Forward(x, Bits.ToBf16(w), want, m, n, k);
            if (sig.Output == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("y", got, want, Tolerances.For("gemv", sig.Output, k));
        }
    }
}
