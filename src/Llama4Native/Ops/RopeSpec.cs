using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Rope;
using R = Llama4Native.Reference.Rope;

namespace Llama4Native.Ops;

/// <summary>
/// rope cases. Dims: T, heads, d. Variants: "rope" (plain θ), "rope-llama3" (tiny-scout's llama3 scaling),
/// "rope-qknorm" (llama3 + the QK norm), "temperature"; "qk[-qknorm]" (dims T, hq, d, hk): q and k blocks in one launch. Positions are absolute and non-contiguous: two packed
/// sequences, the second starting deep into its context.
/// </summary>
internal sealed class RopeSpec : OpSpec
{
    public override string Name => "rope";
    static readonly RopeScaling TinyScout = new("llama3", 16, 1, 1, 64);
    static readonly RopeScaling Scout = new("llama3", 16, 1, 1, 8192);

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
            foreach (var v in new[] { "rope", "rope-llama3", "rope-qknorm", "temperature" })
                foreach (var s in new long[][] { [1, 1, 2], [5, 4, 16], [7, 2, 16], [3, 8, 64], [2, 40, 128], [3, 1, 130] })
                    yield return new OpCase(Name, v, t, s);
        // "qk[-qknorm]": q [T, hq, d] and k [T, hk, d] of a fused projection in one launch (dims T, hq, d, hk); T = 1 is decode
        foreach (var t in new[] { "f32", "bf16" })
            foreach (var v in new[] { "qk", "qk-qknorm" })
                foreach (var s in new long[][] { [1, 5, 16, 1], [7, 4, 16, 2], [3, 40, 128, 8], [5, 2, 130, 1] })
                    yield return new OpCase(Name, v, t, s);
        // positions near 2^31 (issue #15: overflow at long context): the second sequence ends at int.MaxValue
        foreach (var t in new[] { "f32", "bf16" })
            foreach (var v in new[] { "rope-llama3", "rope-qknorm", "temperature" })
                yield return new OpCase(Name, v, t, [6, 2, 16, int.MaxValue - 2], "pos2^31");
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "rope-qknorm", "bf16", [1, 40, 128], "decode.q");
        yield return new OpCase(Name, "rope-qknorm", "bf16", [2048, 40, 128], "prefill.q");
        yield return new OpCase(Name, "temperature", "bf16", [2048, 40, 128], "prefill.q");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly int t, heads, d, hk; readonly float[] x, freq; readonly int[] pos;
        readonly Tensor tx, tpos, tfreq; readonly string variant;
        const float Eps = 1e-5f, AttnScale = 0.1f, FloorScale = 4f;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            variant = c.Variant;
            (t, heads, d) = ((int)c[0], (int)c[1], (int)c[2]);
            hk = variant.StartsWith("qk", StringComparison.Ordinal) ? (int)c[3] : 0;
            x = DeviceData.Normal(rng, (long)t * (heads + hk) * d, 1f, dt);
            // Two packed sequences: positions 0.. and, for the second, from somewhere past a million.
            // (an optional 4th dim fixes the second sequence's first position, e.g. near int.MaxValue)
            int split = t / 2, start2 = c.Dims.Length > 3 && hk == 0 ? (int)c[3] : rng.Next(1_000_000, 10_000_000);
            pos = Enumerable.Range(0, t).Select(i => i < split ? i : start2 + i - split).ToArray();
            freq = TextConfig.ComputeInvFreq(d, 5e5, variant == "rope" ? null : d <= 16 ? TinyScout : Scout);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, dt)).Ptr, dt, new Shape(t, heads + hk, d));
            tpos = new Tensor(Track(DeviceData.Upload<int>(dev, pos)).Ptr, DType.I32, new Shape(t));
            tfreq = new Tensor(Track(DeviceData.Upload(dev, freq, DType.F32)).Ptr, DType.F32, new Shape(freq.Length));
        }
        public override double Bytes => 2.0 * tx.Bytes;
        public override void Launch(DeviceStream? stream = null)
        {
            if (hk > 0) K.ApplyQk(Device, tx, t, heads, hk, tpos, tfreq, variant == "qk-qknorm", Eps, stream);
            else if (variant == "temperature") K.Temperature(Device, tx, tpos, AttnScale, FloorScale, stream);
            else K.Apply(Device, tx, tpos, tfreq, variant == "rope-qknorm", Eps, stream);
        }
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, tx.Ptr, tx.Elements, dt);
            var want = (float[])x.Clone();
            if (hk > 0)
            {   // the q block and the k block, each as its own [T, heads, d] rotation
                long nq = (long)t * heads * d;
                var wq = want[..(int)nq]; var wk = want[(int)nq..];
                R.Apply(wq, pos, freq, heads, d, variant == "qk-qknorm", Eps);
                R.Apply(wk, pos, freq, hk, d, variant == "qk-qknorm", Eps);
                wq.CopyTo(want, 0); wk.CopyTo(want, (int)nq);
            }
            else if (variant == "temperature") R.Temperature(want, pos, AttnScale, FloorScale);
            else R.Apply(want, pos, freq, heads, d, variant == "rope-qknorm", Eps);
            if (dt == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("x", got, want, Tolerances.For("rope", dt));
        }
    }
}
