using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.LayerNorm;
using R = Llama4Native.Reference.LayerNorm;

namespace Llama4Native.Ops;

/// <summary>
/// layernorm cases. Dims: rows, cols. Types "x,w>y" (b has w's dtype). Variant "&lt;block|warp&gt;[-inplace]";
/// label "offset" adds 64 to every x (a mean far from 0 next to a unit spread: the one-pass E[x²] − mean² variance
/// would cancel catastrophically there).
/// </summary>
internal sealed class LayerNormSpec : OpSpec
{
    public override string Name => "layernorm";
    static readonly string[] Types = ["f32,f32>f32", "f32,bf16>f32", "bf16,bf16>bf16"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[1, 1], [3, 7], [5, 64], [2, 100], [7, 1000], [2, 1025], [3, 1408], [9, 16], [1, 5120], [4, 32]];
        foreach (var v in new[] { "block", "warp" })
            foreach (var t in Types)
            {
                foreach (var s in shapes) yield return new OpCase(Name, v, t, s);
                yield return new OpCase(Name, v + "-inplace", t, [5, 1408]);
                yield return new OpCase(Name, v + "-inplace", t, [3, 33]);
                yield return new OpCase(Name, v, t, [6, 1408], "offset");
                yield return new OpCase(Name, v, t, [6, 77], "offset");
            }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // 17 tiles (16 + the global one) of 577 tokens (576 patches + the class token) at Dv = 1408
        yield return new OpCase(Name, "block", "bf16,bf16>bf16", [17 * 577, 1408], "vision.17tiles");
        yield return new OpCase(Name, "block-inplace", "bf16,bf16>bf16", [17 * 577, 1408], "vision.17tiles");
        yield return new OpCase(Name, "block", "f32,f32>f32", [17 * 577, 1408], "vision.17tiles");
        yield return new OpCase(Name, "block", "bf16,bf16>bf16", [577, 1408], "vision.1tile");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int rows, cols; readonly K.Variant variant; readonly bool inplace;
        readonly float[] x, w, b; readonly Tensor tx, tw, tb, ty; const float Eps = 1e-5f;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            rows = (int)c[0]; cols = (int)c[1];
            variant = c.Variant.StartsWith("warp", StringComparison.Ordinal) ? K.Variant.Warp : K.Variant.Block;
            inplace = c.Variant.EndsWith("-inplace", StringComparison.Ordinal);
            DType dx = sig.In(0), dw = sig.In(1);
            x = DeviceData.Normal(rng, (long)rows * cols, 1.5f, dx);
            if (c.Label == "offset") { for (int i = 0; i < x.Length; i++) x[i] += 64; if (dx == DType.BF16) DeviceData.RoundToBf16(x); }
            w = DeviceData.Normal(rng, cols, 0.2f).Select(v => 1 + v).ToArray();
            if (dw == DType.BF16) DeviceData.RoundToBf16(w);
            b = DeviceData.Normal(rng, cols, 0.5f, dw);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, dx)).Ptr, dx, new Shape(rows, cols));
            tw = new Tensor(Track(DeviceData.Upload(dev, w, dw)).Ptr, dw, new Shape(cols));
            tb = new Tensor(Track(DeviceData.Upload(dev, b, dw)).Ptr, dw, new Shape(cols));
            ty = inplace ? tx : new Tensor(Track(DeviceData.Poisoned(dev, (long)rows * cols, sig.Output)).Ptr, sig.Output, new Shape(rows, cols));
        }

        public override double Bytes => tx.Bytes + ty.Bytes + tw.Bytes + tb.Bytes;
        // In place: checked after the first launch; later (timing) launches re-normalise the output, which is fine.
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, tw, tb, ty, Eps, stream, variant);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            float[] want;
            if (sig.Output == DType.BF16)
            {
                var y = new ushort[x.Length];
                R.Forward(Bits.ToBf16(x), Bits.ToBf16(w), Bits.ToBf16(b), y, rows, cols, Eps);
                want = Bits.FromBf16(y);
            }
            else
            {
                want = new float[x.Length];
                if (sig.In(1) == DType.BF16) R.Forward(x, Bits.ToBf16(w), Bits.ToBf16(b), want, rows, cols, Eps);
                else R.Forward(x, w, b, want, rows, cols, Eps);
            }
            return OpCheck.Compare("y", got, want, sig.Output == DType.F32 ? F32Tolerance() : Tolerances.For("layernorm", sig.Output));
        }

        // f32 output. The kernel's mean is an fp32 sum of `cols` values, then × 1/cols: every add rounds by at
        // most 2^-24 of its partial sum, and a value reaches the total through at most ⌈log2 cols⌉ + 2 adds
        // (short per-thread chains, then the shuffle/shared-memory tree), so |δmean| ≤ (⌈log2 cols⌉ + 2)·2^-24·|mean|
        // (+1 for the × 1/cols). y = (x − mean)·inv·w + b carries δmean into every output as |w|·inv·|δmean|; it
        // does not cancel. At the "offset" cases' mean of 64 that is ~4e-5 — the ~1.2–1.5e-5 errors seen, which
        // the flat atol 1e-5 rejected about 1 run in 10. The rest (variance, rsqrt, ·w, +b) is relative,
        // ~(log2 cols)·2^-24, inside Tolerances' rtol 2e-5 and its atol 1e-5 for results near 0.
        Tolerance F32Tolerance()
        {
            var tol = Tolerances.For("layernorm", DType.F32);
            var wf = sig.In(1) == DType.BF16 ? Bits.FromBf16(Bits.ToBf16(w)) : w;
            double maxW = wf.Max(v => Math.Abs((double)v)), worst = 0;
            double depth = Math.Ceiling(Math.Log2(Math.Max(cols, 2))) + 3;
            for (int r = 0; r < rows; r++)
            {
                var xr = x.AsSpan(r * cols, cols);
                double mean = 0; foreach (var v in xr) mean += v; mean /= cols;
                double var_ = 0; foreach (var v in xr) var_ += (v - mean) * (v - mean); var_ /= cols;
                double inv = 1 / Math.Sqrt(var_ + Eps);
                worst = Math.Max(worst, depth * Math.Pow(2, -24) * Math.Abs(mean) * inv * maxW);
            }
            return new Tolerance(tol.Atol + worst, tol.Rtol);
        }
    }
}
