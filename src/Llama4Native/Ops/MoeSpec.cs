using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Moe;
using R = Llama4Native.Reference.Moe;

namespace Llama4Native.Ops;

/// <summary>
/// moe cases: the whole routed MoE layer (router → align → gate_up → down → combine), every step checked.
/// Dims: T, D, I, E, k. Variant "&lt;mma|simple&gt;[-one][-nan][-acc]": the grouped GEMMs' kernel; "one" biases the
/// router so every token's first choice is expert E−1 (all tokens to one expert); "nan" fills the weights of every
/// expert that no token chose with NaN (an idle expert must be harmless); "tie" gives experts 2j and 2j+1 (and q,
/// q − 32) the same router row (exact ties: the lower index first, as the reference); "acc" adds into an existing y (the
/// shared expert's output); "fused" routes with <see cref="K.Route"/> (one block, decode sizes); "bm16"/"bm64" force the grouped GEMMs' tile (<see cref="K.Config.Decode"/> /
/// <see cref="K.Config.Default"/>; otherwise <see cref="K.For"/> picks by T·k). Types: the activation dtype (weights bf16).
/// Each step is checked against the reference fed with the device's own inputs to that step (so a failure names
/// its step): logits, then the routing (a different choice is accepted only at a near-tie of the reference's
/// logits — SPEC: "router margins can be tiny"), the grouping (exact), h, out, y; then y against the whole-layer
/// reference from x alone.
/// </summary>
internal sealed class MoeSpec : OpSpec
{
    public override string Name => "moe";

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var (v, t) in new[] { ("simple", "f32"), ("mma", "bf16"), ("simple", "bf16") })
        {
            // Fixture shapes (scout E=4 I=48, maverick E=8 I=40, D=64, k=1), decode and odd T.
            foreach (var tok in new long[] { 1, 3, 17, 69 })
            {
                yield return new OpCase(Name, v, t, [tok, 64, 48, 4, 1], "scout");
                yield return new OpCase(Name, v, t, [tok, 64, 40, 8, 1], "maverick");
            }
            // k = 2, E = 16 (many idle experts at small T), D and I not multiples of anything (scalar edges).
            yield return new OpCase(Name, v, t, [1, 64, 48, 16, 2]);
            yield return new OpCase(Name, v, t, [33, 72, 40, 16, 2]);
            yield return new OpCase(Name, v, t, [7, 37, 21, 8, 2], "odd");
            yield return new OpCase(Name, v, t, [65, 100, 70, 4, 3], "odd");
            yield return new OpCase(Name, v + "-one", t, [70, 64, 48, 8, 1], "all-to-one");
            yield return new OpCase(Name, v + "-one-nan", t, [9, 64, 48, 16, 1], "idle-nan");
            yield return new OpCase(Name, v + "-acc", t, [13, 64, 48, 8, 2], "residual");
            yield return new OpCase(Name, v + "-tie", t, [21, 64, 48, 8, 1], "ties");
            yield return new OpCase(Name, v + "-tie", t, [45, 64, 48, 8, 3], "ties");
            yield return new OpCase(Name, v + "-tie", t, [5, 64, 48, 70, 2], "ties");
        }
        // moe_route (decode: router, top-k and grouping in one block), E inline and E > RouteInlineExperts (logits given).
        foreach (var (v, t) in new[] { ("simple-fused", "f32"), ("mma-fused", "bf16") })
        {
            foreach (var tok in new long[] { 1, 3, 17 }) yield return new OpCase(Name, v, t, [tok, 64, 48, 4, 1], "scout");
            yield return new OpCase(Name, v, t, [1, 72, 40, 16, 2]);
            yield return new OpCase(Name, v, t, [7, 37, 21, 8, 2], "odd");
            yield return new OpCase(Name, v + "-tie", t, [5, 64, 48, 70, 2], "ties");
            yield return new OpCase(Name, v, t, [2, 64, 40, 128, 1], "maverick-e");
            yield return new OpCase(Name, v + "-one-nan", t, [9, 64, 48, 16, 1], "idle-nan");
        }
        yield return new OpCase(Name, "mma-one", "bf16", [131, 64, 136, 4, 1], "multi-tile");
        // Both tiles on both sides of DecodeMaxRows (the automatic choice is covered above).
        yield return new OpCase(Name, "mma-bm16", "bf16", [69, 100, 70, 8, 2], "odd");
        yield return new OpCase(Name, "mma-bm16-one", "bf16", [40, 64, 136, 4, 1], "multi-tile");
        yield return new OpCase(Name, "mma-bm64", "bf16", [1, 64, 48, 16, 2]);
        yield return new OpCase(Name, "simple-bm16", "f32", [69, 100, 70, 8, 2], "odd");
        // Past the size where the expert weights are built on the device (the perf cases' check path).
        yield return new OpCase(Name, "mma", "bf16", [3, 4096, 8200, 2, 1], "pattern-weights");
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Scout: E = 16, D = 5120, I = 8192, top-1; Maverick: E = 128. Decode (T = 1) and prefill (T = 2048).
        foreach (var e in new long[] { 16, 128 })
        {
            string m = e == 16 ? "scout" : "maverick";
            yield return new OpCase(Name, "mma", "bf16", [1, 5120, 8192, e, 1], m + ".decode");
            yield return new OpCase(Name, "mma", "bf16", [2048, 5120, 8192, e, 1], m + ".prefill");
        }
        yield return new OpCase(Name, "simple", "f32", [1, 5120, 8192, 16, 1], "scout.decode.fp32");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    /// <summary>The last checks of a routed-MoE case (bf16 and int4 experts): the combine from the device's expert
    /// outputs <paramref name="o"/> against the device's y, then (correctness cases) the whole layer from x with the
    /// device's routing: <paramref name="layer"/> runs the reference experts into the array it is given (y0 in it when
    /// accumulating). bf16 allows the rounding flips a different summation order makes.</summary>
    internal static OpCheck CheckCombineAndLayer(float[] y, float[] o, int[] slotRow, int[] idx, float[] y0, int t, int d, int k,
                                                 bool accumulate, DType dt, Tolerance tol, Tolerance tolLayer, bool perf, Action<float[]> layer)
    {
        bool bf16 = dt == DType.BF16;
        var wantY = accumulate ? (float[])y0.Clone() : new float[t * d];
        R.Combine(o, slotRow, idx, wantY, t, d, k, accumulate, bf16);
        var c = OpCheck.Compare("y (combine)", y, wantY, tol);
        if (!c.Passed || perf) return c;
        var layerY = accumulate ? (float[])y0.Clone() : new float[t * d];
        layer(layerY);
        var whole = OpCheck.Compare("y (whole layer)", y, layerY, tolLayer);
        return bf16 ? OpCheck.AllowBf16RoundingFlips(whole, y, layerY) : whole;
    }

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly bool bf16, accumulate, perf, fused; readonly K.Variant variant; readonly K.Config cfg; readonly K.Config? forced;
        readonly int t, d, i, e, k;
        readonly float[] x = [], wr = [], wgu = [], wd = [], y0 = [];
        readonly Tensor tx, twr, twgu, twd, ty;
        readonly K.Workspace ws;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            bf16 = dt == DType.BF16;
            (t, d, i, e, k) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3], (int)c[4]);
            var parts = c.Variant.Split('-');
            variant = parts[0] == "mma" ? K.Variant.Mma : K.Variant.Simple;
            bool one = parts.Contains("one"), nan = parts.Contains("nan"), tie = parts.Contains("tie");
            accumulate = parts.Contains("acc");
            fused = parts.Contains("fused");
            forced = parts.Contains("bm16") ? K.Config.Decode : parts.Contains("bm64") ? K.Config.Default : null;
            cfg = forced ?? K.For(t, k);
            long nWgu = (long)e * d * 2 * i, nWd = (long)e * i * d;
            // Real Llama 4 sizes: the expert weights are built on the device (no host copy of 4–32 GB; values don't
            // change the timing): every row of expert e's gate_up is the same pattern over its 2I columns, every row of
            // its down the same pattern over D, both depending on (column, expert) through a hash — so a kernel that
            // permutes columns or experts, or mixes gate and up, gets different numbers. Check() verifies every
            // step cheaply: a weight constant along K reduces each output to a few distinct dot products.
            perf = nWgu > (1L << 26);

            x = DeviceData.Normal(rng, (long)t * d, 1f, dt);
            wr = DeviceData.Normal(rng, (long)e * d, (float)(1 / Math.Sqrt(d)), DType.BF16);
            if (tie)
            {   // experts 2j and 2j+1 (and, past 32, q and q − 32: one lane's candidates) have the same router row:
                // equal logits, the lower index must win
                for (int q = 1; q < e; q++)
                {
                    int src = q >= 32 ? q - 32 : q - (q & 1);
                    if (src != q) wr.AsSpan(src * d, d).CopyTo(wr.AsSpan(q * d, d));
                }
            }
            if (one)
            {   // feature 0 of every token is large and only expert E−1 weighs it: logit[E−1] ≈ 32 + N(0, 1)
                for (int r = 0; r < t; r++) x[r * d] = 8f;
                for (int q = 0; q < e; q++) wr[q * d] = q == e - 1 ? 4f : 0f;
            }
            tx = Up(dev, x, dt, t, d);
            twr = Up(dev, wr, DType.BF16, e, d);
            if (perf)
            {
                twgu = new Tensor(Track(dev.Allocate(nWgu * 2)).Ptr, DType.BF16, new Shape(e, d, 2L * i));
                twd = new Tensor(Track(dev.Allocate(nWd * 2)).Ptr, DType.BF16, new Shape(e, i, d));
                FillRows(dev, twgu.Ptr, e, d, 2 * i, GuPattern);
                FillRows(dev, twd.Ptr, e, i, d, DownPattern);
            }
            else
            {
                wgu = DeviceData.Normal(rng, nWgu, (float)(1 / Math.Sqrt(d)), DType.BF16);
                wd = DeviceData.Normal(rng, nWd, (float)(1 / Math.Sqrt(i)), DType.BF16);
                if (nan)
                {   // every expert nobody can choose (all but E−1 when k = 1) gets NaN weights
                    if (!one || k != 1) throw new ArgumentException("the 'nan' variant needs 'one' and k = 1");
                    for (int q = 0; q < e - 1; q++)
                    {
                        wgu.AsSpan((int)((long)q * d * 2 * i), d * 2 * i).Fill(float.NaN);
                        wd.AsSpan(q * i * d, i * d).Fill(float.NaN);
                    }
                }
                twgu = new Tensor(Track(DeviceData.Upload(dev, wgu, DType.BF16)).Ptr, DType.BF16, new Shape(e, d, 2L * i));
                twd = new Tensor(Track(DeviceData.Upload(dev, wd, DType.BF16)).Ptr, DType.BF16, new Shape(e, i, d));
            }
            if (accumulate)
            {
                y0 = DeviceData.Normal(rng, (long)t * d, 1f, dt);
                ty = Up(dev, y0, dt, t, d);
            }
            else ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)t * d, dt)).Ptr, dt, new Shape(t, d));
            ws = new K.Workspace(dev, t, k, e, d, i, dt);
            foreach (var b in ws.Buffers) Track(b);
            // Poison the scratch so that anything a kernel should have written and didn't shows up as NaN.
            foreach (var s in new[] { ws.Logits, ws.TopkScore, ws.H, ws.Out }) dev.Memset(s.Ptr, 0xFF, s.Bytes);
            foreach (var s in new[] { ws.TopkIdx, ws.SortedSlots, ws.SlotRow, ws.TileExpert, ws.ExpertOffsets }) dev.Memset(s.Ptr, 0x7F, s.Bytes);
        }

        Tensor Up(Device dev, float[] v, DType type, params long[] shape) =>
            new(Track(DeviceData.Upload(dev, v, type)).Ptr, type, new Shape(shape));

        public override double Bytes => tx.Bytes + twr.Bytes + 2 * ty.Bytes
            + (double)Math.Min(e, (long)t * k) * (twgu.Bytes + twd.Bytes) / e;  // the experts actually read
        public override double Flops => 2.0 * t * k * d * 3.0 * i + 2.0 * t * d * e;

        public override void Launch(DeviceStream? stream = null) => K.Forward(Device, tx, twr, twgu, twd, ty, ws, accumulate, stream, variant, forced, fused);

        int[] Ints(Tensor a, long n) { var r = new int[n]; Device.Download(a.Ptr, r.AsSpan()); return r; }

        public override OpCheck Check()
        {
            var tolStep = Tolerances.For("moe", dt, Math.Max(d, i));
            var tolLayer = Tolerances.For("moe.layer", dt, Math.Max(d, i));
            int n = t * k;

            // 1. router: logits, then the choice (near-ties accepted), then the scores of what the device chose.
            var logits = DeviceData.Download(Device, ws.Logits.Ptr, (long)t * e, dt);
            var idx = Ints(ws.TopkIdx, n);
            var score = DeviceData.Download(Device, ws.TopkScore.Ptr, n, DType.F32);
            var wantLogits = new float[t * e]; var wantIdx = new int[n]; var wantScore = new float[n];
            R.Router(x, wr, wantLogits, wantIdx, wantScore, t, d, e, k, bf16);
            var c = OpCheck.Compare("router_logits", logits, wantLogits, tolStep);
            if (!c.Passed) return c;
            var ownIdx = new int[n];  // the top-k of the device's own logits: exact, ties included
            R.TopK(logits, ownIdx, t, e, k);
            c = OpCheck.Compare("topk_idx (vs the top-k of the device's logits)", F(idx), F(ownIdx), Tolerances.Exact);
            if (!c.Passed) return c;
            var routeBad = new float[n]; var scoreWant = new float[n];
            for (int q = 0; q < n; q++)
            {
                int got = idx[q], want = wantIdx[q], tok = q / k;
                bool ok = got == want || ((uint)got < (uint)e && NearTie(wantLogits[tok * e + got], wantLogits[tok * e + want]));
                routeBad[q] = ok ? 0 : 1;
                scoreWant[q] = ok && (uint)got < (uint)e ? (float)Sigmoid(wantLogits[tok * e + got]) : float.NaN;
                if (bf16 && ok) scoreWant[q] = Reference.BF16.Round(scoreWant[q]);
            }
            c = OpCheck.Compare("topk_idx (1 = a choice that is not a near-tie)", routeBad, new float[n], Tolerances.Exact);
            if (!c.Passed) return c;
            c = OpCheck.Compare("topk_score", score, scoreWant, tolStep);
            if (!c.Passed) return c;

            // 2. grouping: exact, from the device's choice.
            var offsets = Ints(ws.ExpertOffsets, e + 1);
            var sorted = Ints(ws.SortedSlots, ws.SortedSlots.Elements);
            var slotRow = Ints(ws.SlotRow, n);
            var tiles = Ints(ws.TileExpert, ws.TileExpert.Elements);
            var wSorted = new int[ws.SortedSlots.Elements]; var wSlotRow = new int[n]; var wTiles = new int[ws.TileExpert.Elements]; var wOffsets = new int[e + 1];
            int total = R.Align(idx, t, k, e, cfg.BM, wSorted, wSlotRow, wTiles, wOffsets);
            c = OpCheck.Compare("expert_offsets", F(offsets), F(wOffsets), Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("sorted_slots", F(sorted.AsSpan(0, total)), F(wSorted.AsSpan(0, total)), Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("slot_row", F(slotRow), F(wSlotRow), Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("tile_expert", F(tiles.AsSpan(0, total / cfg.BM)), F(wTiles.AsSpan(0, total / cfg.BM)), Tolerances.Exact);
            if (!c.Passed) return c;

            // 3. gate_up over the padded rows, from the device's scores.
            var h = DeviceData.Download(Device, ws.H.Ptr, (long)total * i, dt);
            var wantH = new float[(long)total * i];
            var zeros = new float[d];
            for (int r = 0; r < total; r++)
            {
                int slot = sorted[r];
                var xr = slot >= 0 ? x.AsSpan(slot / k * d, d) : zeros;
                float sc = slot >= 0 ? score[slot] : 0f;
                if (!perf) R.GateUpRow(xr, sc, wgu, wTiles[r / cfg.BM], d, i, wantH.AsSpan(r * i, i), bf16);
                else
                {   // weights constant along D: column c of expert ex is one [1, D, 2] (gate, up) pair of patterns
                    int ex = wTiles[r / cfg.BM];
                    var memo = new Dictionary<(float, float), float>();
                    var one = new float[1]; var w2 = new float[d * 2];
                    for (int col = 0; col < i; col++)
                    {
                        var key = (GuPattern(col, ex), GuPattern(i + col, ex));
                        if (!memo.TryGetValue(key, out var val))
                        {
                            for (int q = 0; q < d; q++) { w2[2 * q] = key.Item1; w2[2 * q + 1] = key.Item2; }
                            R.GateUpRow(xr, sc, w2, 0, d, 1, one, bf16);
                            memo[key] = val = one[0];
                        }
                        wantH[(long)r * i + col] = val;
                    }
                }
            }
            c = OpCheck.Compare("h", h, wantH, tolStep);
            if (!c.Passed) return c;

            // 4. down, from the device's h.
            var o = DeviceData.Download(Device, ws.Out.Ptr, (long)total * d, dt);
            var wantO = new float[(long)total * d];
            for (int r = 0; r < total; r++)
            {
                if (!perf) { R.DownRow(h.AsSpan(r * i, i), wd, wTiles[r / cfg.BM], i, d, wantO.AsSpan(r * d, d), bf16); continue; }
                int ex = wTiles[r / cfg.BM];
                var memo = new Dictionary<float, float>();
                var one = new float[1]; var w1 = new float[i];
                for (int col = 0; col < d; col++)
                {
                    float q = DownPattern(col, ex);
                    if (!memo.TryGetValue(q, out var val))
                    {
                        w1.AsSpan().Fill(q);
                        R.DownRow(h.AsSpan(r * i, i), w1, 0, i, 1, one, bf16);
                        memo[q] = val = one[0];
                    }
                    wantO[(long)r * d + col] = val;
                }
            }
            c = OpCheck.Compare("out", o, wantO, tolStep);
            if (!c.Passed) return c;

            // 5. combine, from the device's out; then the whole layer from x alone (with the device's routing).
            var y = DeviceData.Download(Device, ty.Ptr, (long)t * d, dt);
            return CheckCombineAndLayer(y, o, slotRow, idx, y0, t, d, k, accumulate, dt, tolStep, tolLayer, perf,
                layerY => R.Experts(x, idx, scoreWant, wgu, wd, layerY, t, d, i, e, k, accumulate, bf16));
        }

        /// <summary>The perf cases' weights: one of 16 values (j+1)/64 (exact in bf16) per (column, expert), by a hash that
        /// has no short period in either, so a permutation of columns or experts changes the result.</summary>
        static float Pattern(long col, int expert, uint salt)
        {
            uint hsh = unchecked((uint)col * 2654435761u ^ (uint)expert * 40503u * 97u ^ salt);
            hsh ^= hsh >> 15; hsh = unchecked(hsh * 2246822519u); hsh ^= hsh >> 13;
            return ((hsh & 15) + 1) / 64f;
        }
        static float GuPattern(long col, int expert) => Pattern(col, expert, 0x9e3779b9u);
        static float DownPattern(long col, int expert) => Pattern(col, expert, 0x85ebca6bu);

        /// <summary>w[e, r, c] = pattern(c, e) for rows r &lt; rows: one uploaded row per expert, then doubling
        /// device-to-device copies (log2(rows) per expert).</summary>
        void FillRows(Device dev, DevicePtr p, int experts, int rows, int cols, Func<long, int, float> pattern)
        {
            long rowBytes = (long)cols * 2;
            for (int ex = 0; ex < experts; ex++)
            {
                var row = new float[cols];
                for (int col = 0; col < cols; col++) row[col] = pattern(col, ex);
                var baseP = p + (long)ex * rows * rowBytes;
                using (var up = DeviceData.Upload(dev, row, DType.BF16)) dev.CopyDeviceToDevice(up.Ptr, baseP, rowBytes);
                for (long done = 1; done < rows; done *= 2)
                    dev.CopyDeviceToDevice(baseP, baseP + done * rowBytes, Math.Min(done, rows - done) * rowBytes);
            }
        }

        bool NearTie(float a, float b) => Math.Abs(a - b) <= (bf16 ? Math.Max(Math.Abs(a), Math.Abs(b)) / 128 : 1e-5 * (1 + Math.Abs(a)));
        static double Sigmoid(float v) => 1.0 / (1.0 + Math.Exp(-(double)v));
        static float[] F(ReadOnlySpan<int> a) { var r = new float[a.Length]; for (int q = 0; q < a.Length; q++) r[q] = a[q]; return r; }
    }
}
