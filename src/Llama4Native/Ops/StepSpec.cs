using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Step;
using R = Llama4Native.Reference.Step;

namespace Llama4Native.Ops;

/// <summary>
/// step cases. Variant "kv_append" (f32, bf16), dims [T rows in the piece, E = Hkv·d, S cache rows, kv_len, maxRows grid
/// bound]: the whole caches are compared (rows outside the piece must keep their random contents). Variant
/// "step_decode" (i32), dims [q_pos0 of the previous piece, its length, chunk]: ids, pos and both descriptors.
/// </summary>
internal sealed class StepSpec : OpSpec
{
    public override string Name => "step";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
        {
            yield return new OpCase(Name, "kv_append", t, [1, 1024, 40, 1, 1]);
            yield return new OpCase(Name, "kv_append", t, [1, 12, 9, 9, 1]);        // last slot, E not a multiple of 8
            yield return new OpCase(Name, "kv_append", t, [5, 1000, 64, 37, 8]);    // grid bound above the piece length
            yield return new OpCase(Name, "kv_append", t, [17, 72, 300, 290, 17]);
        }
        foreach (var (p0, n, chunk) in new[] { (0L, 1L, 0L), (7, 9, 16), (255, 1, 8), (8190, 1, 8192), (8191, 1, 8192), (100, 256, 0) })
            yield return new OpCase(Name, "step_decode", "i32", [p0, n, chunk]);
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "kv_append", "bf16", [1, 1024, 8192, 8000, 1], "decode.kv_append");
        yield return new OpCase(Name, "kv_append", "bf16", [2048, 1024, 8192, 4096, 2048], "prefill.kv_append");
        yield return new OpCase(Name, "step_decode", "i32", [8000, 1, 8192], "decode.step");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) =>
        c.Variant == "kv_append" ? new Append(device, c, rng) : new Decode(device, c, rng);

    sealed class Append : OpInstance
    {
        readonly DType dt; readonly float[] kn, vn, kc, vc; readonly int[] desc; readonly Tensor tkn, tvn, tkc, tvc; readonly DevicePtr pd; readonly int maxRows;
        public Append(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            long t = c[0], e = c[1], s = c[2];
            maxRows = (int)c[4];
            kn = DeviceData.Normal(rng, Math.Max(t, maxRows) * e, 1f, dt); vn = DeviceData.Normal(rng, Math.Max(t, maxRows) * e, 1f, dt);
            kc = DeviceData.Normal(rng, s * e, 1f, dt); vc = DeviceData.Normal(rng, s * e, 1f, dt);
            desc = [0, (int)t, (int)c[3], 0, 0, 0, 0, 0];
            long rows = Math.Max(t, maxRows);
            tkn = new Tensor(Track(DeviceData.Upload(dev, kn, dt)).Ptr, dt, new Shape(rows, e));
            tvn = new Tensor(Track(DeviceData.Upload(dev, vn, dt)).Ptr, dt, new Shape(rows, e));
            tkc = new Tensor(Track(DeviceData.Upload(dev, kc, dt)).Ptr, dt, new Shape(s, e));
            tvc = new Tensor(Track(DeviceData.Upload(dev, vc, dt)).Ptr, dt, new Shape(s, e));
            pd = Track(DeviceData.Upload<int>(dev, desc)).Ptr;
        }
        public override double Bytes => 4.0 * Math.Min(Case[0], maxRows) * tkn.DType.BytesOf(Case[1]);
        public override void Launch(DeviceStream? stream = null) => K.KvAppend(Device, tkn, tvn, tkc, tvc, pd, maxRows, stream);
        public override OpCheck Check()
        {
            var wk = (float[])kc.Clone(); var wv = (float[])vc.Clone();
            R.KvAppend<float>(kn, vn, wk, wv, desc, Case[1], maxRows);
            var gk = DeviceData.Download(Device, tkc.Ptr, kc.Length, dt);
            var gv = DeviceData.Download(Device, tvc.Ptr, vc.Length, dt);
            var ck = OpCheck.Compare("k_cache", gk, wk, Tolerances.For("step", dt));
            return ck.Passed ? OpCheck.Compare("v_cache", gv, wv, Tolerances.For("step", dt)) : ck;
        }
    }

    sealed class Decode : OpInstance
    {
        readonly int sampled; readonly int[] rope, nope; readonly DevicePtr ps, pids, ppos, prope, pnope; readonly int chunk;
        public Decode(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sampled = rng.Next(0, 202048);
            chunk = (int)c[2];
            int p0 = (int)c[0], n = (int)c[1], b = chunk > 0 ? p0 / chunk * chunk : 0;
            nope = [0, n, p0 + n, p0, 0, 0, 0, 0];
            rope = [0, n, p0 + n - b, p0, b, 0, 0, 0];
            ps = Track(DeviceData.Upload<int>(dev, [sampled])).Ptr;
            pids = Track(DeviceData.Poisoned(dev, 1, DType.I32)).Ptr;
            ppos = Track(DeviceData.Poisoned(dev, 1, DType.I32)).Ptr;
            prope = Track(DeviceData.Upload<int>(dev, rope)).Ptr;
            pnope = Track(DeviceData.Upload<int>(dev, nope)).Ptr;
        }
        public override double Bytes => 12 + 4 * K.DescriptorBytes;
        // Checked after the first launch: each further (timing) launch advances the step once more, which is fine.
        public override void Launch(DeviceStream? stream = null) =>
            K.Decode(Device, ps, new Tensor(pids, DType.I32, new Shape(1)), new Tensor(ppos, DType.I32, new Shape(1)), prope, pnope, chunk, stream);
        public override OpCheck Check()
        {
            int[] ids = [0], pos = [0], r = (int[])rope.Clone(), n = (int[])nope.Clone();
            R.Decode(sampled, ids, pos, r, n, chunk);
            int[] want = [.. ids, .. pos, .. r, .. n];
            var got = new int[2 + 2 * R.DescriptorInts];
            Device.Download(pids, got.AsSpan(0, 1)); Device.Download(ppos, got.AsSpan(1, 1));
            Device.Download(prope, got.AsSpan(2, R.DescriptorInts)); Device.Download(pnope, got.AsSpan(2 + R.DescriptorInts, R.DescriptorInts));
            return OpCheck.Compare("ids|pos|rope|nope", got.Select(v => (float)v).ToArray(), want.Select(v => (float)v).ToArray(), Tolerances.Exact);
        }
    }
}
