using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Sample;
using R = Llama4Native.Reference.Sample;

namespace Llama4Native.Ops;

/// <summary>
/// sample cases. Dims: B, V. Types "f32>i32". Variants pick the per-row settings: greedy, sample (temperature
/// only), topk, topp, minp, penalty, all (everything at once, mixed with greedy rows). ids must equal the
/// reference's exactly, except on a row where the two candidates' race scores tie within float rounding
/// (|Δscore| &lt; 1e-4); the chosen token's probability within atol 1e-6 + rtol 1e-4.
/// Variant "slots" runs sample_slots_f32: B rows over S = B + 3 sequences' states ("all" settings, penalty counts),
/// each row picking a random distinct slot, against the reference's per-slot rows drawn as row 0.
/// </summary>
internal sealed class SampleSpec : OpSpec
{
    public override string Name => "sample";
    static readonly string[] Variants = ["greedy", "sample", "topk", "topp", "minp", "penalty", "all", "slots"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[1, 1], [3, 7], [4, 100], [2, 1000], [5, 4099], [1, 32000]];
        foreach (var v in Variants) foreach (var s in shapes) yield return new OpCase(Name, v, "f32>i32", s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        foreach (var v in new[] { "greedy", "all" })
        {
            yield return new OpCase(Name, v, "f32>i32", [1, 202048], "decode.sample");
            yield return new OpCase(Name, v, "f32>i32", [8, 202048], "decode.sample_b8");
        }
        yield return new OpCase(Name, "slots", "f32>i32", [32, 202048], "decode.sample_slots_b32");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    /// <summary>Settings of row r for a variant (deterministic in rng).</summary>
    public static SampleParams Params(string variant, int r, Random rng)
    {
        uint seed = (uint)rng.Next(), hi = r % 2 == 0 ? 0u : (uint)rng.Next();   // odd rows: 64-bit seeds (Philox key hi word)
        float t = r % 2 == 0 ? 1f : 0.7f;
        return variant switch
        {
            "greedy" => new(0, 0, 1, 0, r % 2 == 0 ? 1f : 1.3f, r % 2 == 0 ? 0 : 0.2f, r % 2 == 0 ? 0 : 0.5f, seed, hi),
            "sample" => new(t, 0, 1, 0, 1, 0, 0, seed, hi),
            "topk" => new(t, new[] { 1, 5, 50 }[r % 3], 1, 0, 1, 0, 0, seed, hi),
            "topp" => new(t, 0, new[] { 0.9f, 0.5f, 0f }[r % 3], 0, 1, 0, 0, seed, hi),
            "minp" => new(t, 0, 1, new[] { 0.05f, 0.2f }[r % 2], 1, 0, 0, seed, hi),
            "penalty" => new(0.8f, 0, 1, 0, 1.3f, 0.2f, 0.5f, seed, hi),
            "all" or "slots" => r % 4 == 3 ? new(0, 0, 1, 0, 1.2f, 0.1f, 0.3f, seed, hi) : new(t, 40, 0.9f, 0.02f, 1.2f, 0.1f, 0.3f, seed, hi),
            _ => throw new ArgumentException($"sample: unknown variant '{variant}'"),
        };
    }

    sealed class Instance : OpInstance
    {
        readonly int b, v; readonly float[] logits; readonly SampleParams[] ps; readonly int[] counts, steps, slots;
        readonly Tensor tl, tids, tslots; readonly DevicePtr pp, cp, sp, probp;
        readonly bool slotted;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            b = (int)c[0]; v = (int)c[1];
            slotted = c.Variant == "slots";
            int states = slotted ? b + 3 : b;
            logits = DeviceData.Normal(rng, (long)b * v, 3f);
            ps = Enumerable.Range(0, states).Select(r => Params(c.Variant, r, rng)).ToArray();
            bool pen = c.Variant is "greedy" or "penalty" or "all" or "slots";
            counts = pen ? Enumerable.Range(0, states * v).Select(_ => rng.NextDouble() < 0.05 ? rng.Next(1, 4) : 0).ToArray() : [];
            steps = Enumerable.Range(0, states).Select(_ => rng.Next(0, 1000)).ToArray();
            slots = slotted ? Enumerable.Range(0, states).OrderBy(_ => rng.Next()).Take(b).ToArray() : [];
            tslots = slotted ? new Tensor(Track(DeviceData.Upload<int>(dev, slots)).Ptr, DType.I32, new Shape(b)) : default;
            tl = new Tensor(Track(DeviceData.Upload(dev, logits, DType.F32)).Ptr, DType.F32, new Shape(b, v));
            pp = Track(DeviceData.Upload<SampleParams>(dev, ps)).Ptr;
            cp = pen ? Track(DeviceData.Upload<int>(dev, counts)).Ptr : new DevicePtr(0);
            sp = Track(DeviceData.Upload<int>(dev, steps)).Ptr;
            tids = new Tensor(Track(DeviceData.Poisoned(dev, b, DType.I32)).Ptr, DType.I32, new Shape(b));
            probp = Track(DeviceData.Poisoned(dev, b, DType.F32)).Ptr;
        }

        public override double Bytes => tl.Bytes + (counts.Length > 0 ? 4.0 * b * v : 0);
        public override void Launch(DeviceStream? stream = null)
        {
            if (slotted) K.RunSlots(Device, tl, pp, cp, sp, tslots, tids, probp, false, ps.Length, stream);
            else K.Run(Device, tl, pp, cp, sp, tids, probp, false, stream);
        }

        // The state row and the Philox row word of logits row r.
        int State(int r) => slotted ? slots[r] : r;
        int RngRow(int r) => slotted ? 0 : r;
        ReadOnlySpan<int> CountsOf(int r) => counts.Length > 0 ? counts.AsSpan(State(r) * v, v) : default;

        public override OpCheck Check()
        {
            var got = new int[b]; Device.Download(tids.Ptr, got.AsSpan());
            var gotP = DeviceData.Download(Device, probp, b, DType.F32);
            var want = new int[b]; var wantP = new float[b];
            if (slotted) R.ForwardSlots(logits, ps, counts, steps, slots, want, wantP, b, v);
            else R.Forward(logits, ps, counts, steps, want, wantP, b, v);
            var g = new float[b]; var w = new float[b];
            for (int r = 0; r < b; r++)
            {
                g[r] = got[r]; w[r] = want[r];
                // A near-tie may pick the other token; its probability is still checked, against the reference
                // distribution's value for the token the device chose (never the device's own value).
                if (got[r] != want[r] && NearTie(r, got[r], want[r]))
                {
                    w[r] = got[r];
                    wantP[r] = (float)R.Distribution(logits.AsSpan(r * v, v), ps[State(r)], CountsOf(r))[got[r]];
                }
            }
            var ids = OpCheck.Compare("ids", g, w, Tolerances.For("sample", DType.I32));
            if (!ids.Passed) return ids;
            var pr = OpCheck.Compare("prob", gotP, wantP, Tolerances.For("sample", DType.F32));
            return pr.Passed ? ids : pr;
        }

        // Both tokens are kept by the reference and their race scores agree within float rounding.
        bool NearTie(int r, int gi, int wi)
        {
            var p = ps[State(r)];
            if (gi < 0 || gi >= v || !(p.Temperature > 0f)) return false;
            var row = logits.AsSpan(r * v, v);
            var z = R.Adjusted(row, p, CountsOf(r));
            var kept = R.Kept(z, p, out float m);
            if (!kept[gi]) return false;
            double S(int i) => (double)z[i] - m - Math.Log(-Math.Log(R.Uniform(p.Seed64, RngRow(r), steps[State(r)], i)));
            return Math.Abs(S(gi) - S(wi)) < 1e-4;
        }
    }
}
