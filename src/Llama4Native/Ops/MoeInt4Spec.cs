using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.MoeInt4;
using M = Llama4Native.Kernels.Moe;
using R = Llama4Native.Reference.Moe;

namespace Llama4Native.Ops;

/// <summary>
/// moe_int4 cases: the routed MoE layer with int4 experts (wgu I4 [E, 2I, D], wd I4 [E, D, I]; random q and scales, a
/// different matrix per expert so a wrong expert or row permutation shows). Dims: T, D, I, E, k, G. Variant
/// "&lt;auto|mma|gemv|simple&gt;[-bm16|-bm64][-acc]": "auto" runs <see cref="M.Forward"/> (the bf16 entry points, which dispatch
/// on the weight's dtype: the graph's route); the others run the steps with that int4 path forced. bm16/bm64 force the
/// alignment tile (else <see cref="M.For"/>); "acc" adds into an existing y. Types: the activation dtype.
/// Each step is checked against the reference (Reference.Moe with the dequantized weights, transposed to HF's layout)
/// fed the device's own inputs to that step: the grouping (exact), h, out, y; then y against the whole layer from x with
/// the device's routing. The mma path is checked with bf16(q·s) weights (what it feeds the tensor cores).
/// </summary>
internal sealed class MoeInt4Spec : OpSpec
{
    public override string Name => "moe_int4";

    public override IEnumerable<OpCase> Cases()
    {
        // Fixture shapes (tiny-scout G = 16, tiny-maverick G = 8), decode, odd T, multi-tile experts; K = 72, 40, 48
        // (not multiples of 32) take the GEMV's scalar loop, 64/128/256 its 16-byte loads.
        foreach (var (v, t) in new[] { ("simple", "f32"), ("auto", "f32"), ("mma", "bf16"), ("gemv", "bf16"), ("auto", "bf16"), ("simple", "bf16") })
        {
            bool decodeOnly = v == "gemv";
            foreach (var tok in new long[] { 1, 3, 17, 69 })
            {
                if (decodeOnly && tok > 17) continue;
                yield return new OpCase(Name, v, t, [tok, 64, 48, 4, 1, 16], "scout");
                yield return new OpCase(Name, v, t, [tok, 64, 40, 8, 1, 8], "maverick");
            }
            yield return new OpCase(Name, v, t, [1, 128, 96, 16, 2, 32]);
            yield return new OpCase(Name, v, t, [1, 128, 96, 8, 1, 32], "decode");
            yield return new OpCase(Name, v, t, [5, 256, 128, 8, 3, 128], "g128");
            yield return new OpCase(Name, v, t, [7, 72, 40, 8, 2, 8], "odd");
            yield return new OpCase(Name, v + "-acc", t, [9, 64, 48, 8, 2, 16], "residual");
            if (!decodeOnly) yield return new OpCase(Name, v, t, [40, 96, 144, 4, 2, 24], "multi-tile");
        }
        yield return new OpCase(Name, "mma-bm16", "bf16", [40, 64, 136, 4, 2, 8], "multi-tile");
        yield return new OpCase(Name, "gemv-bm64", "bf16", [11, 64, 72, 4, 2, 8], "multi-chunk");
        yield return new OpCase(Name, "gemv-bm16", "bf16", [20, 128, 64, 2, 1, 32], "multi-chunk");
        yield return new OpCase(Name, "simple-bm16", "f32", [20, 72, 40, 8, 2, 8]);
        yield return new OpCase(Name, "gemv", "bf16", [3, 96, 48, 4, 2, 24], "g24");  // 32-k loads straddle groups; down's K = 48: scalar
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Scout: E = 16, D = 5120, I = 8192, top-1; Maverick: E = 128. Decode (T = 1) and prefill (T = 2048). G = 128.
        foreach (var e in new long[] { 16, 128 })
        {
            string m = e == 16 ? "scout" : "maverick";
            yield return new OpCase(Name, "auto", "bf16", [1, 5120, 8192, e, 1, 128], m + ".decode");
            yield return new OpCase(Name, "auto", "bf16", [2048, 5120, 8192, e, 1, 128], m + ".prefill");
        }
        yield return new OpCase(Name, "auto", "f32", [1, 5120, 8192, 16, 1, 128], "scout.decode.fp32");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly bool bf16, accumulate, perf, dispatch, mmaPath; readonly K.Variant variant; readonly M.Config cfg;
        readonly int t, d, i, e, k, g;
        readonly float[] x = [], wr = [], y0 = [], wguIm = [], wdIm = [];  // dequantized weights in HF's input-major layout
        readonly Tensor tx, twr, twgu, twd, ty;
        readonly M.Workspace ws;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            bf16 = dt == DType.BF16;
            (t, d, i, e, k, g) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3], (int)c[4], (int)c[5]);
            var parts = c.Variant.Split('-');
            dispatch = parts[0] == "auto";
            variant = parts[0] switch { "mma" => K.Variant.Mma, "gemv" => K.Variant.Gemv, "simple" => K.Variant.Simple, _ => K.Variant.Auto };
            accumulate = parts.Contains("acc");
            cfg = parts.Contains("bm16") ? M.Config.Decode : parts.Contains("bm64") ? M.Config.Default : M.For(t, k);
            mmaPath = variant == K.Variant.Mma || (variant == K.Variant.Auto && bf16 && (long)t * k > M.DecodeMaxRows);
            long nWgu = (long)e * 2 * i * d, nWd = (long)e * d * i;
            perf = nWgu > (1L << 26);

            x = DeviceData.Normal(rng, (long)t * d, 1f, dt);
            wr = DeviceData.Normal(rng, (long)e * d, (float)(1 / Math.Sqrt(d)), DType.BF16);
            tx = Up(dev, x, dt, t, d);
            twr = Up(dev, wr, DType.BF16, e, d);
            if (perf)
            {   // real sizes: constant bytes 0x35 (q = 5 at even k, 3 at odd k) and constant scales; Check knows the result
                twgu = Fill(dev, g, e, 2L * i, d);
                twd = Fill(dev, g, e, d, i);
            }
            else
            {
                var (pgu, sgu) = Random4(rng, (long)e * 2 * i, d, g);
                var (pd, sd) = Random4(rng, (long)e * d, i, g);
                twgu = Up4(dev, pgu, sgu, g, e, 2L * i, d);
                twd = Up4(dev, pd, sd, g, e, d, i);
                wguIm = Reference.MoeInt4.GateUpWeights(pgu, sgu, e, i, d, g, bf16Weights: mmaPath);  // [E, D, 2I]
                wdIm = Reference.MoeInt4.DownWeights(pd, sd, e, i, d, g, bf16Weights: mmaPath);       // [E, I, D]
            }
            if (accumulate)
            {
                y0 = DeviceData.Normal(rng, (long)t * d, 1f, dt);
                ty = Up(dev, y0, dt, t, d);
            }
            else ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)t * d, dt)).Ptr, dt, new Shape(t, d));
            ws = new M.Workspace(dev, t, k, e, d, i, dt);
            foreach (var b in ws.Buffers) Track(b);
            foreach (var s in new[] { ws.Logits, ws.TopkScore, ws.H, ws.Out }) dev.Memset(s.Ptr, 0xFF, s.Bytes);
            foreach (var s in new[] { ws.TopkIdx, ws.SortedSlots, ws.SlotRow, ws.TileExpert, ws.ExpertOffsets }) dev.Memset(s.Ptr, 0x7F, s.Bytes);
        }

        /// <summary>Random q (every byte value) and scales U(0.5, 1.5)/(4.6·√K): w' ~ 1/√K in size.</summary>
        static (byte[], float[]) Random4(Random rng, long rows, int kk, int group)
        {
            var p = new byte[rows * kk / 2];
            rng.NextBytes(p);
            var s = new float[rows * (kk / group)];
            float unit = (float)(1 / (4.6 * Math.Sqrt(kk)));
            for (long q = 0; q < s.Length; q++) s[q] = (float)(0.5 + rng.NextDouble()) * unit;
            return (p, s);
        }

        Tensor Up(Device dev, float[] v, DType type, params long[] shape) => new(Track(DeviceData.Upload(dev, v, type)).Ptr, type, new Shape(shape));

        Tensor Up4(Device dev, byte[] p, float[] s, int group, params long[] shape) =>
            Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, p)).Ptr, DType.I4, new Shape(shape), Track(DeviceData.Upload<float>(dev, s)).Ptr, group);

        Tensor Fill(Device dev, int group, params long[] shape)
        {
            var sh = new Shape(shape);
            var p = Track(dev.Allocate(sh.Elements / 2));
            var s = Track(dev.Allocate(sh.Elements / group * 4));
            dev.Memset(p.Ptr, 0x35, p.Bytes);
            dev.Memset(s.Ptr, 0x3c, s.Bytes);  // f32 0x3c3c3c3c ≈ 0.0115
            return Tensor.Quantized(p.Ptr, DType.I4, sh, s.Ptr, group);
        }

        public override double Bytes => tx.Bytes + twr.Bytes + 2 * ty.Bytes
            + (double)Math.Min(e, (long)t * k) * (twgu.Bytes + twgu.ScaleBytes + twd.Bytes + twd.ScaleBytes) / e;  // the experts actually read
        public override double Flops => 2.0 * t * k * d * 3.0 * i + 2.0 * t * d * e;

        public override void Launch(DeviceStream? stream = null)
        {
            if (dispatch) { M.Forward(Device, tx, twr, twgu, twd, ty, ws, accumulate, stream, M.Variant.Auto, cfg); return; }
            var idx = Rows(ws.TopkIdx, t); var score = Rows(ws.TopkScore, t); var slotRow = Rows(ws.SlotRow, t);
            M.Router(Device, tx, twr, Rows(ws.Logits, t), idx, score, stream);
            M.Align(Device, idx, e, ws.SortedSlots, slotRow, ws.TileExpert, ws.ExpertOffsets, stream, cfg.BM);
            K.GateUp(Device, tx, score, ws.SortedSlots, ws.TileExpert, ws.ExpertOffsets, twgu, ws.H, stream, variant, cfg);
            K.Down(Device, ws.H, ws.TileExpert, ws.ExpertOffsets, twd, ws.Out, t, k, stream, variant, cfg, ws.SortedSlots);
            M.Combine(Device, ws.Out, slotRow, idx, ty, accumulate, stream);
        }

        static Tensor Rows(Tensor a, long rows) => new(a.Ptr, a.DType, new Shape(rows, a.Shape[1]));
        int[] Ints(Tensor a, long n) { var r = new int[n]; Device.Download(a.Ptr, r.AsSpan()); return r; }

        public override OpCheck Check()
        {
            var tol = Tolerances.For("moe_int4", dt, Math.Max(d, i));
            var tolLayer = Tolerances.For("moe.layer", dt, Math.Max(d, i));
            int n = t * k;
            var idx = Ints(ws.TopkIdx, n);
            var score = DeviceData.Download(Device, ws.TopkScore.Ptr, n, DType.F32);

            // 1. grouping (exact, from the device's routing)
            var offsets = Ints(ws.ExpertOffsets, e + 1);
            var sorted = Ints(ws.SortedSlots, ws.SortedSlots.Elements);
            var slotRow = Ints(ws.SlotRow, n);
            var wSorted = new int[ws.SortedSlots.Elements]; var wSlotRow = new int[n]; var wTiles = new int[ws.TileExpert.Elements]; var wOffsets = new int[e + 1];
            int total = R.Align(idx, t, k, e, cfg.BM, wSorted, wSlotRow, wTiles, wOffsets);
            var c = OpCheck.Compare("expert_offsets", F(offsets), F(wOffsets), Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("sorted_slots", F(sorted.AsSpan(0, total)), F(wSorted.AsSpan(0, total)), Tolerances.Exact);
            if (!c.Passed) return c;

            // the weights the reference uses: the dequantized ones, or for the perf cases one column of the constant pattern
            float cs = BitConverter.UInt32BitsToSingle(0x3c3c3c3c);
            float[] ConstCol(int rows, int cols) { var w = new float[rows * cols]; for (int r = 0; r < rows; r++) for (int q = 0; q < cols; q++) w[r * cols + q] = (r % 2 == 0 ? 5 : 3) * cs; return w; }
            float[] gu1 = perf ? ConstCol(d, 2) : [], d1 = perf ? ConstCol(i, 1) : [];
            if (perf && mmaPath) { DeviceData.RoundToBf16(gu1); DeviceData.RoundToBf16(d1); }

            // 2. gate_up over the padded rows, from the device's scores
            var h = DeviceData.Download(Device, ws.H.Ptr, (long)total * i, dt);
            var wantH = new float[(long)total * i];
            var zeros = new float[d];
            for (int r = 0; r < total; r++)
            {
                int slot = sorted[r];
                var xr = slot >= 0 ? x.AsSpan(slot / k * d, d) : zeros;
                float sc = slot >= 0 ? score[slot] : 0f;
                if (!perf) R.GateUpRow(xr, sc, wguIm, wTiles[r / cfg.BM], d, i, wantH.AsSpan(r * i, i), bf16);
                else { var one = new float[1]; R.GateUpRow(xr, sc, gu1, 0, d, 1, one, bf16); wantH.AsSpan(r * i, i).Fill(one[0]); }
            }
            c = OpCheck.Compare("h", h, wantH, tol);
            if (!c.Passed) return c;

            // 3. down, from the device's h
            var o = DeviceData.Download(Device, ws.Out.Ptr, (long)total * d, dt);
            var wantO = new float[(long)total * d];
            for (int r = 0; r < total; r++)
            {
                if (!perf) { R.DownRow(h.AsSpan(r * i, i), wdIm, wTiles[r / cfg.BM], i, d, wantO.AsSpan(r * d, d), bf16); continue; }
                var one = new float[1];
                R.DownRow(h.AsSpan(r * i, i), d1, 0, i, 1, one, bf16);
                wantO.AsSpan(r * d, d).Fill(one[0]);
            }
            c = OpCheck.Compare("out", o, wantO, tol);
            if (!c.Passed) return c;

            // 4. combine, from the device's out; then the whole layer from x with the device's routing
            var y = DeviceData.Download(Device, ty.Ptr, (long)t * d, dt);
            return MoeSpec.CheckCombineAndLayer(y, o, slotRow, idx, y0, t, d, k, accumulate, dt, tol, tolLayer, perf,
                layerY => R.Experts(x, idx, score, wguIm, wdIm, layerY, t, d, i, e, k, accumulate, bf16));
        }

        static float[] F(ReadOnlySpan<int> a) { var r = new float[a.Length]; for (int q = 0; q < a.Length; q++) r[q] = a[q]; return r; }
    }
}
