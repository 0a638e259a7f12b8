using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Step;
using R = Llama4Native.Reference.Step;

namespace Llama4Native.Ops;

/// <summary>
/// step cases. Variant "kv_append" (f32, bf16), dims [T rows in the piece, E = Hkv·d, S cache rows, kv_len, maxRows grid
/// bound]: the whole caches are compared (rows outside the piece must keep their random contents). Variant
/// "step_decode" (i32), dims [q_pos0 of the previous piece, its length, chunk]: ids, pos and both descriptors. Variant
/// "kv_append-f8": the FP8 cache, see <see cref="AppendFp8"/>.
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
        // a prefill piece of more than 65,535 rows (the old grid.y limit): 16-byte vectors (bf16, E = 8) and element copies (f32, E = 6)
        yield return new OpCase(Name, "kv_append", "bf16", [70000, 8, 70003, 70002, 70000], "rows70k");
        yield return new OpCase(Name, "kv_append", "f32", [66000, 6, 66010, 66005, 66000], "rows66k.unaligned");
        // the FP8 cache (kv_append_*_f8, a warp per (row, kv head)): dims [T, Hkv, d, S, kv_len, maxRows]; a decode row and
        // a piece of more than 65,535 rows
        foreach (var t in new[] { "f32", "bf16" })
        {
            yield return new OpCase(Name, "kv_append-f8", t, [1, 8, 128, 40, 17, 1]);
            yield return new OpCase(Name, "kv_append-f8", t, [7, 3, 16, 30, 29, 9]);
        }
        yield return new OpCase(Name, "kv_append-f8", "bf16", [66000, 1, 16, 66010, 66004, 66000], "rows66k");
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
        c.Variant switch { "kv_append" => new Append(device, c, rng), "kv_append-f8" => new AppendFp8(device, c, rng), _ => new Decode(device, c, rng) };

    /// <summary>kv_append into an FP8 cache [S, Hkv, d] (codes) + [S, Hkv] scales: the piece's rows quantized per (row, head) by
    /// the FBGEMM row rule; every other slot keeps its contents (checked exactly: codes and scales).</summary>
    sealed class AppendFp8 : OpInstance
    {
        readonly DType dt; readonly float[] kn, vn; readonly byte[] kc0, vc0; readonly float[] ks0, vs0; readonly int[] desc;
        readonly Tensor tkn, tvn, tkc, tvc; readonly DevicePtr pd; readonly int maxRows, hkv, d;
        public AppendFp8(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            long t = c[0], s = c[3];
            (hkv, d, maxRows) = ((int)c[1], (int)c[2], (int)c[5]);
            long rows = Math.Max(t, maxRows), e = (long)hkv * d;
            kn = DeviceData.Normal(rng, rows * e, 1f, dt); vn = DeviceData.Normal(rng, rows * e, 1f, dt);
            kc0 = new byte[s * e]; vc0 = new byte[s * e]; rng.NextBytes(kc0); rng.NextBytes(vc0);
            ks0 = DeviceData.Normal(rng, s * hkv, 1f, DType.F32); vs0 = DeviceData.Normal(rng, s * hkv, 1f, DType.F32);
            desc = [0, (int)t, (int)c[4], 0, 0, 0, 0, 0];
            tkn = new Tensor(Track(DeviceData.Upload(dev, kn, dt)).Ptr, dt, new Shape(rows, e));
            tvn = new Tensor(Track(DeviceData.Upload(dev, vn, dt)).Ptr, dt, new Shape(rows, e));
            var shape = new Shape(s, hkv, d);
            tkc = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, kc0)).Ptr, DType.F8E4M3, shape, Track(DeviceData.Upload<float>(dev, ks0)).Ptr, d);
            tvc = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, vc0)).Ptr, DType.F8E4M3, shape, Track(DeviceData.Upload<float>(dev, vs0)).Ptr, d);
            pd = Track(DeviceData.Upload<int>(dev, desc)).Ptr;
        }
        public override double Bytes => 2.0 * Math.Min(Case[0], maxRows) * hkv * (tkn.DType.BytesOf(d) + d + 4);
        public override void Launch(DeviceStream? stream = null) => K.KvAppend(Device, tkn, tvn, tkc, tvc, pd, maxRows, stream);
        public override OpCheck Check()
        {
            var (kc, vc, ks, vs) = (kc0.ToArray(), vc0.ToArray(), ks0.ToArray(), vs0.ToArray());
            int t = desc[1] - desc[0];
            for (long r = 0; r < Math.Min(t, maxRows); r++)
                for (int g = 0; g < hkv; g++)
                {
                    long src = (r * hkv + g) * d, row = ((long)desc[2] - t + r) * hkv + g;
                    ks[row] = Reference.QuantizeFp8.Row(kn.AsSpan((int)src, d), kc.AsSpan((int)(row * d), d), float.PositiveInfinity);
                    vs[row] = Reference.QuantizeFp8.Row(vn.AsSpan((int)src, d), vc.AsSpan((int)(row * d), d), float.PositiveInfinity);
                }
            var gk = new byte[kc.Length]; Device.Download<byte>(tkc.Ptr, gk);
            var gv = new byte[vc.Length]; Device.Download<byte>(tvc.Ptr, gv);
            OpCheck last = default!;
            foreach (var chk in new[] {
                OpCheck.Compare("K codes", gk.Select(x => (float)x).ToArray(), kc.Select(x => (float)x).ToArray(), default),
                OpCheck.Compare("V codes", gv.Select(x => (float)x).ToArray(), vc.Select(x => (float)x).ToArray(), default),
                OpCheck.Compare("K scales", DeviceData.Download(Device, tkc.Scale, ks.Length, DType.F32), ks, default),
                OpCheck.Compare("V scales", DeviceData.Download(Device, tvc.Scale, vs.Length, DType.F32), vs, default) })
            {
                if (!chk.Passed) return chk;
                last = chk;
            }
            return last;
        }
    }

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
