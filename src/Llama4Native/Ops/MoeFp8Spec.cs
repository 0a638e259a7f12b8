using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.MoeFp8;
using M = Llama4Native.Kernels.Moe;
using Q = Llama4Native.Reference.QuantizeFp8;
using R = Llama4Native.Reference.MoeFp8;

namespace Llama4Native.Ops;

/// <summary>
/// moe_fp8 cases: the routed experts with FP8 weights, as the graph runs them — moe.cu's align, then MoeFp8.GateUp and
/// MoeFp8.Down, then moe.cu's combine — from a random routing (distinct experts per token, sigmoid scores). Dims: T, D,
/// I, E, k. Types: the activation dtype. Variants: "mma" (tensor-core tiles, bm 64), "mma-bf16" (the sm_80 path
/// forced), "gemv" (the decode kernels, bm 8), "auto" (MoeFp8.For picks), and "-relayout" (the weights start as an
/// FP8 checkpoint stores them, input-major e4m3 [E, D, 2I] / [E, I, D] with per-output-channel scales; QuantizeFp8.
/// Relayout runs on the device first, and the whole layer is compared with the reference reading the checkpoint
/// layout directly — the fixture README's golden math). Weights are random codes per expert (quantized N(0, 1/K) rows),
/// so a permutation of experts, rows or columns shows. Each step is checked against the reference fed the device's own
/// inputs to that step: the grouping (exact), aq/as (bit-exact), h, hq/hs (bit-exact), out, y; then y from x alone.
/// </summary>
internal sealed class MoeFp8Spec : OpSpec
{
    public override string Name => "moe_fp8";
    const float Ub = 1200f;

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
        {
            foreach (var v in new[] { "mma", "gemv", "mma-bf16" })
            {
                yield return new OpCase(Name, v, t, [1, 64, 40, 8, 1], "maverick");
                yield return new OpCase(Name, v, t, [5, 64, 48, 4, 2]);
                yield return new OpCase(Name, v, t, [7, 37, 21, 8, 2], "odd");
                yield return new OpCase(Name, v, t, [33, 72, 40, 16, 1]);
            }
            yield return new OpCase(Name, "mma", t, [131, 200, 136, 4, 1], "multi-tile");
            yield return new OpCase(Name, "gemv", t, [20, 200, 136, 2, 1], "multi-chunk");
            yield return new OpCase(Name, "auto-relayout", t, [3, 64, 40, 8, 1], "decode");
            yield return new OpCase(Name, "auto-relayout", t, [40, 64, 40, 8, 1], "prefill");
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Maverick: D = 5120, I = 8192, E = 128, top-1; decode and prefill. Weights are a device-side byte fill.
        yield return new OpCase(Name, "auto", "bf16", [1, 5120, 8192, 128, 1], "maverick.decode");
        yield return new OpCase(Name, "auto", "bf16", [2048, 5120, 8192, 128, 1], "maverick.prefill");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly bool bf16, relayout, viaBf16, perf;
        readonly K.Config cfg;
        readonly int t, d, i, e, k;
        readonly float[] x, score;
        readonly int[] idx;
        readonly byte[] wgu = [], wd = [];   // output-major codes (or input-major when relayout)
        readonly float[] wguS = [], wdS = [];
        readonly Tensor tx, tScore, tIdx, tSorted, tSlotRow, tTiles, tOffsets, twgu, twd, twguIm, twdIm, tH, tOut, ty, aq, aS, hq, hS;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            bf16 = dt == DType.BF16;
            (t, d, i, e, k) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3], (int)c[4]);
            var parts = c.Variant.Split('-');
            relayout = parts.Contains("relayout");
            viaBf16 = parts.Contains("bf16");
            cfg = parts[0] switch { "mma" => K.Config.Prefill, "gemv" => K.Config.Decode, _ => K.For(t, k) };
            long nWgu = (long)e * 2 * i * d, nWd = (long)e * d * i;
            perf = nWgu > (1L << 26);

            x = DeviceData.Normal(rng, (long)t * d, 1f, dt);
            idx = new int[t * k]; score = new float[t * k];
            for (int q = 0; q < t; q++)
            {
                var pick = Enumerable.Range(0, e).OrderBy(_ => rng.Next()).Take(k).ToArray();
                for (int s = 0; s < k; s++)
                {
                    idx[q * k + s] = pick[s];
                    float sc = (float)(1 / (1 + Math.Exp(-NextNormal(rng))));
                    score[q * k + s] = bf16 ? Reference.BF16.Round(sc) : sc;
                }
            }
            tx = Up(dev, x, dt, t, d);
            tScore = new Tensor(Track(DeviceData.Upload<float>(dev, score)).Ptr, DType.F32, new Shape(t, k));
            tIdx = new Tensor(Track(DeviceData.Upload<int>(dev, idx)).Ptr, DType.I32, new Shape(t, k));

            if (perf)
            {   // Real sizes: a byte fill (e4m3 0x2c = 0.09375), unit-ish scales; Check() uses the constant-weight shortcut.
                twgu = Tensor.Quantized(Track(dev.Allocate(nWgu)).Ptr, DType.F8E4M3, new Shape(e, 2L * i, d), Fill(dev, 2L * e * i, 0.01f), d);
                twd = Tensor.Quantized(Track(dev.Allocate(nWd)).Ptr, DType.F8E4M3, new Shape(e, d, i), Fill(dev, (long)e * d, 0.01f), i);
                dev.Memset(twgu.Ptr, 0x2c, nWgu);
                dev.Memset(twd.Ptr, 0x2c, nWd);
            }
            else
            {
                // Random per-expert weights, quantized per output row in the runtime's layout (output-major).
                wgu = new byte[nWgu]; wguS = new float[2L * e * i]; wd = new byte[nWd]; wdS = new float[(long)e * d];
                Q.Weights(DeviceData.Normal(rng, nWgu, (float)(1 / Math.Sqrt(d)), DType.BF16), false, wgu, wguS, e, 2 * i, d);
                Q.Weights(DeviceData.Normal(rng, nWd, (float)(1 / Math.Sqrt(i)), DType.BF16), false, wd, wdS, e, d, i);
                var sgu = Track(DeviceData.Upload<float>(dev, wguS)).Ptr; var sd = Track(DeviceData.Upload<float>(dev, wdS)).Ptr;
                if (relayout)
                {   // store them as the checkpoint does: input-major codes; the device relayouts them into output-major tensors
                    var guIm = new byte[nWgu]; var dIm = new byte[nWd];
                    Transpose(wgu, guIm, e, 2 * i, d); Transpose(wd, dIm, e, d, i);
                    wgu = guIm; wd = dIm;
                    twguIm = new Tensor(Track(DeviceData.Upload<byte>(dev, wgu)).Ptr, DType.F8E4M3, new Shape(e, d, 2L * i));
                    twdIm = new Tensor(Track(DeviceData.Upload<byte>(dev, wd)).Ptr, DType.F8E4M3, new Shape(e, i, d));
                    twgu = Tensor.Quantized(Track(DeviceData.Poisoned(dev, nWgu, DType.U8)).Ptr, DType.F8E4M3, new Shape(e, 2L * i, d), sgu, d);
                    twd = Tensor.Quantized(Track(DeviceData.Poisoned(dev, nWd, DType.U8)).Ptr, DType.F8E4M3, new Shape(e, d, i), sd, i);
                }
                else
                {
                    twgu = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, wgu)).Ptr, DType.F8E4M3, new Shape(e, 2L * i, d), sgu, d);
                    twd = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, wd)).Ptr, DType.F8E4M3, new Shape(e, d, i), sd, i);
                }
            }

            long rows = M.MaxRows(t, k, e, cfg.BM), tiles = M.MaxTiles(t, k, e, cfg.BM);
            tSorted = I32(dev, rows); tSlotRow = I32(dev, (long)t * k, t, k); tTiles = I32(dev, tiles); tOffsets = I32(dev, e + 1);
            tH = new Tensor(Track(DeviceData.Poisoned(dev, rows * i, dt)).Ptr, dt, new Shape(rows, i));
            tOut = new Tensor(Track(DeviceData.Poisoned(dev, rows * d, dt)).Ptr, dt, new Shape(rows, d));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)t * d, dt)).Ptr, dt, new Shape(t, d));
            // One scratch pair for both GEMMs would do (MoeFp8.Scratch); two here, so Check() can read aq after Down ran.
            var sa = Track(dev.Allocate(K.ScratchBytes(rows, d, i))); var sh = Track(dev.Allocate(K.ScratchBytes(rows, d, i)));
            dev.Memset(sa.Ptr, 0x7f, sa.Bytes); dev.Memset(sh.Ptr, 0x7f, sh.Bytes);
            (aq, aS) = K.Scratch(sa.Ptr, rows, d, i);
            (hq, hS) = K.Scratch(sh.Ptr, rows, d, i);
        }

        static double NextNormal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

        Tensor Up(Device dev, float[] v, DType type, params long[] shape) => new(Track(DeviceData.Upload(dev, v, type)).Ptr, type, new Shape(shape));
        Tensor I32(Device dev, long n, params long[] shape)
        {
            var b = Track(dev.Allocate(Math.Max(16, 4 * n)));
            dev.Memset(b.Ptr, 0x7f, b.Bytes);
            return new Tensor(b.Ptr, DType.I32, shape.Length > 0 ? new Shape(shape) : new Shape(n));
        }
        DevicePtr Fill(Device dev, long n, float v) { var a = new float[n]; a.AsSpan().Fill(v); return Track(DeviceData.Upload<float>(dev, a)).Ptr; }

        // [E, rows, cols] -> [E, cols, rows]
        static void Transpose(byte[] src, byte[] dst, int e, int rows, int cols)
        {
            for (int q = 0; q < e; q++)
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < cols; c++) dst[((long)q * cols + c) * rows + r] = src[((long)q * rows + r) * cols + c];
        }

        public override double Bytes => tx.Bytes + 2 * ty.Bytes + (double)Math.Min(e, (long)t * k) * (twgu.Bytes + twd.Bytes) / e;
        public override double Flops => 2.0 * t * k * d * 3.0 * i;

        public override void Launch(DeviceStream? stream = null)
        {
            var dev = Device;
            if (relayout)
            {
                Kernels.QuantizeFp8.Relayout(dev, twguIm, twgu, stream);
                Kernels.QuantizeFp8.Relayout(dev, twdIm, twd, stream);
            }
            M.Align(dev, tIdx, e, tSorted, tSlotRow, tTiles, tOffsets, stream, cfg.BM);
            K.GateUp(dev, tx, tScore, tSorted, tTiles, tOffsets, twgu, tH, aq, aS, Ub, stream, cfg, viaBf16);
            K.Down(dev, tH, tSorted, tTiles, tOffsets, twd, tOut, t, k, hq, hS, Ub, stream, cfg, viaBf16);
            M.Combine(dev, tOut, tSlotRow, tIdx, ty, accumulate: false, stream);
        }

        int[] Ints(Tensor a, long n) { var r = new int[n]; Device.Download(a.Ptr, r.AsSpan()); return r; }
        byte[] Bytes8(Tensor a, long n) { var r = new byte[n]; Device.Download(a.Ptr, r.AsSpan()); return r; }
        float[] F32(Tensor a, long n) => DeviceData.Download(Device, a.Ptr, n, DType.F32);

        public override OpCheck Check()
        {
            var tolStep = Tolerances.For("moe_fp8", dt, Math.Max(d, i));
            int n = t * k, lda = (int)aq.Shape[1];
            // 1. grouping (moe.cu's, exact)
            var offsets = Ints(tOffsets, e + 1);
            var sorted = Ints(tSorted, tSorted.Elements);
            var slotRow = Ints(tSlotRow, n);
            var tiles = Ints(tTiles, tTiles.Elements);
            var wSorted = new int[tSorted.Elements]; var wSlotRow = new int[n]; var wTiles = new int[tTiles.Elements]; var wOffsets = new int[e + 1];
            int total = Reference.Moe.Align(idx, t, k, e, cfg.BM, wSorted, wSlotRow, wTiles, wOffsets);
            var c = OpCheck.Compare("expert_offsets", F(offsets), F(wOffsets), Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("sorted_slots", F(sorted.AsSpan(0, total)), F(wSorted.AsSpan(0, total)), Tolerances.Exact);
            if (!c.Passed) return c;

            // 2. aq, as: bit-exact from x and the scores
            var gotAq = Bytes8(aq, (long)total * lda); var gotAs = F32(aS, total);
            var wantAq = new byte[gotAq.Length]; var wantAs = new float[total];
            for (int r = 0; r < total; r++)
            {
                int slot = sorted[r];
                if (slot < 0) { wantAs[r] = Q.MinScale; continue; }
                wantAs[r] = R.QuantizeInput(x.AsSpan(slot / k * d, d), score[slot], bf16, Ub, wantAq.AsSpan(r * lda, d));
            }
            c = OpCheck.Compare("a_scale", gotAs, wantAs, Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("aq", Codes(gotAq, total, lda, d), Codes(wantAq, total, lda, d), Tolerances.Exact);
            if (!c.Passed) return c;

            // 3. h from the device's aq/as
            var h = DeviceData.Download(Device, tH.Ptr, (long)total * i, dt);
            var wantH = new float[h.Length];
            var gu = perf ? ConstWeights(2 * i * d) : wgu;  var guS = perf ? ConstScales(2 * i) : wguS;
            for (int r = 0; r < total; r++)
            {
                if (sorted[r] < 0) continue;  // padding: exactly zero
                int ex = tiles[r / cfg.BM];
                if (perf) { var one = new float[i]; R.GateUpRow(gotAq.AsSpan(r * lda, d), gotAs[r], gu, guS, 0, d, i, one, bf16); one.CopyTo(wantH.AsSpan(r * i, i)); continue; }
                if (relayout) GateUpIm(gotAq.AsSpan(r * lda, d), gotAs[r], ex, wantH.AsSpan(r * i, i));
                else R.GateUpRow(gotAq.AsSpan(r * lda, d), gotAs[r], wgu, wguS, ex, d, i, wantH.AsSpan(r * i, i), bf16);
            }
            c = OpCheck.Compare("h", h, wantH, tolStep);
            if (!c.Passed) return c;

            // 4. hq, hs: bit-exact from the device's h
            int ldq = (int)hq.Shape[1];
            var gotHq = Bytes8(hq, (long)total * ldq); var gotHs = F32(hS, total);
            var wantHq = new byte[gotHq.Length]; var wantHs = new float[total];
            for (int r = 0; r < total; r++)
                wantHs[r] = sorted[r] < 0 ? Q.MinScale : Q.Row(h.AsSpan(r * i, i), wantHq.AsSpan(r * ldq, i), Ub);
            c = OpCheck.Compare("h_scale", gotHs, wantHs, Tolerances.Exact);
            if (c.Passed) c = OpCheck.Compare("hq", Codes(gotHq, total, ldq, i), Codes(wantHq, total, ldq, i), Tolerances.Exact);
            if (!c.Passed) return c;

            // 5. out from the device's hq/hs
            var o = DeviceData.Download(Device, tOut.Ptr, (long)total * d, dt);
            var wantO = new float[o.Length];
            var dw = perf ? ConstWeights(d * i) : wd; var dS = perf ? ConstScales(d) : wdS;
            for (int r = 0; r < total; r++)
            {
                if (sorted[r] < 0) continue;
                int ex = tiles[r / cfg.BM];
                if (perf) R.DownRow(gotHq.AsSpan(r * ldq, i), gotHs[r], dw, dS, 0, i, d, wantO.AsSpan(r * d, d));
                else if (relayout) DownIm(gotHq.AsSpan(r * ldq, i), gotHs[r], ex, wantO.AsSpan(r * d, d));
                else R.DownRow(gotHq.AsSpan(r * ldq, i), gotHs[r], wd, wdS, ex, i, d, wantO.AsSpan(r * d, d));
            }
            c = OpCheck.Compare("out", o, wantO, tolStep);
            if (!c.Passed) return c;

            // 6. combine, then the whole layer from x alone
            var y = DeviceData.Download(Device, ty.Ptr, (long)t * d, dt);
            var wantY = new float[t * d];
            Reference.Moe.Combine(o, slotRow, idx, wantY, t, d, k, false, bf16);
            c = OpCheck.Compare("y (combine)", y, wantY, tolStep);
            if (!c.Passed || perf) return c;
            var layerY = new float[t * d];
            R.Experts(x, idx, score, wgu, wguS, wd, wdS, layerY, t, d, i, e, k, false, bf16, Ub, inputMajor: relayout);
            var whole = OpCheck.Compare("y (whole layer, from x)", y, layerY, Tolerances.For("moe_fp8.layer", dt, Math.Max(d, i)));
            // Every step above is exact against its own inputs; from x alone, a last-ulp difference in silu·up (the
            // device's exp vs the reference's) can flip one e4m3 rounding of h (a 1/16 relative step) in a row, which
            // moves that row's outputs by up to a step of h's contribution. Allowed: ≤ 1% of values, each within 1/4 of
            // the layer's largest |y| (a permutation or a wrong scale moves most values, far more).
            if (whole.Passed) return whole;
            double big = layerY.Max(v => Math.Abs((double)v));
            return whole.Bad <= Math.Max(1, whole.Count / 100) && whole.MaxAbs <= 0.25 * big
                ? whole with { Bad = 0, Output = $"y (whole layer, from x; {whole.Bad} values moved by e4m3 rounding flips, max abs {whole.MaxAbs:g3})" } : whole;
        }

        // The checkpoint layout read directly (relayout cases): one expert's rows through the reference's input-major path.
        void GateUpIm(ReadOnlySpan<byte> aRow, float aScale, int ex, Span<float> h)
        {   // a one-token, one-expert Experts call would also quantize; call the step directly via a single-expert slice
            var slice = wgu.AsSpan((int)((long)ex * 2 * i * d), 2 * i * d).ToArray();
            var sc = wguS.AsSpan(ex * 2 * i, 2 * i).ToArray();
            var om = new byte[slice.Length];
            Transpose(slice, om, 1, d, 2 * i);  // [D, 2I] -> [2I, D]
            R.GateUpRow(aRow, aScale, om, sc, 0, d, i, h, bf16);
        }
        void DownIm(ReadOnlySpan<byte> hRow, float hScale, int ex, Span<float> outRow)
        {
            var slice = wd.AsSpan((int)((long)ex * i * d), i * d).ToArray();
            var om = new byte[slice.Length];
            Transpose(slice, om, 1, i, d);      // [I, D] -> [D, I]
            R.DownRow(hRow, hScale, om, wdS.AsSpan(ex * d, d), 0, i, d, outRow);
        }

        static byte[] ConstWeights(int n) { var w = new byte[n]; w.AsSpan().Fill(0x2c); return w; }
        static float[] ConstScales(int n) { var s = new float[n]; s.AsSpan().Fill(0.01f); return s; }
        static float[] Codes(byte[] b, int rows, int ld, int cols)
        {
            var r = new float[(long)rows * cols];
            for (int q = 0; q < rows; q++) for (int j = 0; j < cols; j++) r[(long)q * cols + j] = b[(long)q * ld + j];
            return r;
        }
        static float[] F(ReadOnlySpan<int> a) { var r = new float[a.Length]; for (int q = 0; q < a.Length; q++) r[q] = a[q]; return r; }
    }
}
