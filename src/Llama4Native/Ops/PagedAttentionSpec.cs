using Llama4Native.Devices;
using Llama4Native.Reference;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.PagedAttention;
using R = Llama4Native.Reference.PagedAttention;

namespace Llama4Native.Ops;

/// <summary>
/// paged_attention cases: a step's keys/values appended into a paged pool, then attention of every row over its
/// sequence's pages — one launch for the whole batch. Dims: H, Hkv, d, chunk, P (page size), ring (1 = the chunked
/// layers' ring of ceil((chunk + max rows) / P) + 1 pages per sequence), then per sequence (rows, q_pos0).
/// Variant "&lt;direct|split|append&gt;[-f8]" or "mma": one split (O written by the attention kernel) or 32 keys per split (partials +
/// combine), or the append alone (only the pools checked), or the tensor-core prefill kernel (bf16; attention.mma tolerance); f8 = an e4m3 pool with a scale per (token, kv head). The history (positions before q_pos0) is written
/// by the host into pages in a shuffled order, table rows are a permutation of the sequences, every other pool slot
/// (partial last pages, spare pages) holds NaN, so a read through a wrong page poisons the output. Checked: O against
/// <see cref="Reference.Attention.Forward"/> over each sequence's LOGICAL keys (contiguous, positions 0.. or the ring's
/// chunk window), and the pools after the append against <see cref="R.Append"/> (exact: values, FP8 codes and scales).
/// </summary>
internal sealed class PagedAttentionSpec : OpSpec
{
    public override string Name => "paged_attention";

    static OpCase C(string variant, string types, int h, int hkv, int d, int chunk, int page, int ring, string label, params (int Rows, int Pos0)[] seqs)
    {
        var dims = new List<long> { h, hkv, d, chunk, page, ring };
        foreach (var s in seqs) dims.AddRange([s.Rows, s.Pos0]);
        return new OpCase("paged_attention", variant, types, [.. dims], label);
    }

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
            foreach (var v in new[] { "direct", "split" })
            {
                // decode rows of four sequences: empty history, partial last page, many pages
                yield return C(v, t, 8, 2, 16, 0, 4, 0, "decode.b4", (1, 0), (1, 5), (1, 37), (1, 100));
                // decode rows and prefill pieces of different sequences in one launch (a fresh prompt, continued pieces)
                yield return C(v, t, 10, 2, 16, 0, 8, 0, "mixed", (1, 50), (13, 0), (7, 21), (1, 3));
                // chunked RoPE layers through the ring: pieces crossing chunk boundaries, histories of several chunks
                yield return C(v, t, 4, 1, 16, 16, 4, 1, "chunked.ring", (1, 70), (9, 45), (20, 0), (3, 31));
                yield return C(v, t, 6, 2, 16, 8, 8, 0, "chunked.table", (6, 30), (1, 9));
                yield return C(v, t, 10, 2, 128, 0, 16, 0, "d128.g5", (1, 40), (5, 17));
                yield return C(v, t, 8, 2, 64, 0, 64, 0, "page64", (1, 130), (70, 0), (2, 64));
                // positions near 2^31 (10M-token safety): the ring window of a chunked layer at the end of int range
                yield return C(v, t, 4, 2, 16, 8192, 64, 1, "pos2^31.ring", (2, int.MaxValue - 2), (1, 100));
            }
        foreach (var t in new[] { "f32", "bf16" })
        {
            yield return C("split-f8", t, 10, 2, 16, 0, 8, 0, "mixed", (1, 50), (13, 0), (7, 21), (1, 3));
            yield return C("direct-f8", t, 4, 1, 16, 16, 4, 1, "chunked.ring", (1, 70), (9, 45), (20, 0));
            yield return C("split-f8", t, 10, 2, 128, 0, 16, 0, "d128.g5", (1, 40), (5, 17));
        }
        // "mma": bf16 prefill on tensor cores (paged_attn_mma_bf16). Ragged pieces crossing 64-key pages and 64-row tiles,
        // history + new piece, fresh prompts, chunked layers through the ring (chunk not a multiple of the page, pieces
        // crossing chunk boundaries), odd pages (16, 128), d = 128 (MBK = 64) and d = 64, positions near 2^31
        yield return C("mma", "bf16", 8, 2, 128, 0, 64, 0, "d128.ragged", (70, 0), (130, 57), (1, 200), (64, 64), (5, 3));
        yield return C("mma", "bf16", 10, 2, 64, 0, 64, 0, "d64.g5", (100, 30), (65, 128), (3, 0));
        yield return C("mma", "bf16", 4, 1, 128, 96, 64, 1, "d128.chunked.ring", (150, 40), (70, 250), (20, 0));
        yield return C("mma", "bf16", 8, 2, 64, 128, 64, 1, "d64.chunked.ring", (200, 300), (66, 0), (1, 700));
        yield return C("mma", "bf16", 6, 2, 64, 48, 16, 0, "d64.chunked.table.p16", (90, 20), (64, 0));
        yield return C("mma", "bf16", 4, 2, 128, 0, 128, 0, "d128.p128", (129, 100), (2, 5));
        yield return C("mma", "bf16", 4, 2, 64, 8192, 64, 1, "pos2^31.ring", (70, int.MaxValue - 70), (65, 100));
        // decode lengths at the edges of the cp.async tiles (32 keys), pages (16) and splits (32): 1, 63, 64, 65 and
        // 4097 keys, one ragged batch; every variant and KV format at d = 128
        foreach (var v in new[] { "direct", "split", "direct-f8", "split-f8" })
            yield return C(v, "bf16", 5, 1, 128, 0, 16, 0, "lengths", (1, 0), (1, 62), (1, 63), (1, 64), (1, 4096));
        yield return C("split", "f32", 5, 1, 128, 0, 16, 0, "lengths", (1, 0), (1, 64), (1, 4096));
        // "append[-f8]": the append alone (pools checked exactly), a piece of more than 65,535 rows (the old grid.y limit)
        yield return C("append", "bf16", 2, 2, 8, 0, 16, 0, "rows70k", (70000, 5), (3, 40));
        yield return C("append-f8", "f32", 2, 2, 16, 0, 64, 0, "rows66k", (3, 7), (66000, 0));
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Scout NoPE layer, 64-token pages: 32 decode rows at 8K history each; a mixed step (prefill piece + decodes)
        var dec = Enumerable.Repeat((1, 8191), 32).ToArray();
        yield return C("split", "bf16", 40, 8, 128, 0, 64, 0, "scout.decode.b32.8k", dec);
        yield return C("split-f8", "bf16", 40, 8, 128, 0, 64, 0, "scout.decode.b32.8k", dec);
        yield return C("direct", "bf16", 40, 8, 128, 0, 64, 0, "scout.mixed", [(512, 4096), .. Enumerable.Repeat((1, 8191), 15)]);
        // Scout NoPE / chunked layers, a 2048-token prefill piece after 6K of history: CUDA cores vs tensor cores
        yield return C("direct", "bf16", 40, 8, 128, 0, 64, 0, "scout.prefill2k.8k", (2048, 6144));
        yield return C("mma", "bf16", 40, 8, 128, 0, 64, 0, "scout.prefill2k.8k", (2048, 6144));
        yield return C("mma", "bf16", 40, 8, 128, 8192, 64, 1, "scout.prefill2k.chunked", (2048, 6144));
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly int h, hkv, d, chunk, page, ring, stride, totalQ, kps; readonly bool f8;
        readonly PagedSeq[] seqs; readonly int[] table; readonly int[] winStart;
        readonly float[] q, kNew, vNew; readonly float[][] kLog, vLog; // logical keys/values per sequence from winStart
        readonly float[] kPool0, vPool0; readonly byte[]? kCodes0, vCodes0; readonly float[]? kSc0, vSc0;
        readonly Tensor tq, tkn, tvn, tkp, tvp, to; readonly K.Pages pages; readonly DevicePtr ws; readonly long wsBytes;
        readonly long poolRows; readonly double visiblePairs; readonly bool appendOnly, mma;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            (h, hkv, d, chunk, page, ring) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3], (int)c[4], (int)c[5]);
            int nb = (c.Dims.Length - 6) / 2;
            if (nb < 1 || c.Dims.Length != 6 + 2 * nb) throw new ArgumentException($"{c.Id}: dims must be H, Hkv, d, chunk, P, ring, then (rows, q_pos0) per sequence");
            f8 = c.Variant.EndsWith("-f8", StringComparison.Ordinal);
            bool split = c.Variant.StartsWith("split", StringComparison.Ordinal);
            appendOnly = c.Variant.StartsWith("append", StringComparison.Ordinal);
            mma = c.Variant == "mma";
            seqs = new PagedSeq[nb]; winStart = new int[nb];
            int maxQ = 0, maxKv = 0;
            var slots = Enumerable.Range(0, nb + 1).OrderBy(_ => rng.Next()).ToArray(); // table rows, one spare
            for (int b = 0, qs = 0; b < nb; b++)
            {
                int rows = (int)c[6 + 2 * b], p0 = (int)c[7 + 2 * b];
                seqs[b] = new PagedSeq(qs, rows, p0, slots[b]);
                qs += rows; totalQ = qs;
                maxQ = Math.Max(maxQ, rows); maxKv = Math.Max(maxKv, p0 + rows);
                // keys a row can see start at the chunk of the first row (chunked) or 0; a ring holds no more than that
                winStart[b] = chunk > 0 && ring > 0 ? p0 / chunk * chunk : 0;
            }
            int ringPages = ring > 0 ? (chunk + maxQ + page - 1) / page + 1 : 0;
            stride = ring > 0 ? ringPages : Math.Max(1, (int)((maxKv + (long)page - 1) / page));
            // physical pages: each sequence's used table entries get distinct pages in shuffled order, plus 3 spare pages
            table = new int[(nb + 1) * stride];
            Array.Fill(table, -1);
            var need = new List<(int Slot, int Lp)>();
            for (int b = 0; b < nb; b++)
            {
                var s = seqs[b];
                long first = winStart[b] / page, last = ((long)s.QPos0 + s.QLen - 1) / page;
                if (s.QPos0 + s.QLen == 0) continue;
                var lps = new HashSet<int>();
                for (long lp = first; lp <= last; lp++) lps.Add((int)(ring > 0 ? lp % ringPages : lp));
                foreach (var lp in lps) need.Add((s.Slot, lp));
            }
            int nPages = need.Count + 3;
            var perm = Enumerable.Range(0, nPages).OrderBy(_ => rng.Next()).ToArray();
            for (int i = 0; i < need.Count; i++) table[need[i].Slot * stride + need[i].Lp] = perm[i];
            poolRows = (long)nPages * hkv * page;
            long poolElems = poolRows * d;

            q = DeviceData.Normal(rng, (long)totalQ * h * d, 1f, dt);
            kNew = DeviceData.Normal(rng, (long)totalQ * hkv * d, 1f, dt);
            vNew = DeviceData.Normal(rng, (long)totalQ * hkv * d, 1f, dt);
            kPool0 = new float[poolElems]; vPool0 = new float[poolElems];
            Array.Fill(kPool0, float.NaN); Array.Fill(vPool0, float.NaN);
            if (f8)
            {
                kCodes0 = new byte[poolElems]; vCodes0 = new byte[poolElems]; kSc0 = new float[poolRows]; vSc0 = new float[poolRows];
                Array.Fill(kCodes0, (byte)0x7F); Array.Fill(vCodes0, (byte)0x7F); Array.Fill(kSc0, float.NaN); Array.Fill(vSc0, float.NaN);
            }
            // the history: logical rows (winStart..q_pos0-1) written through the table in position order (a ring wraps)
            kLog = new float[nb][]; vLog = new float[nb][];
            for (int b = 0; b < nb; b++)
            {
                var s = seqs[b];
                int n = s.QPos0 + s.QLen - winStart[b], hist = s.QPos0 - winStart[b];
                kLog[b] = new float[(long)n * hkv * d]; vLog[b] = new float[kLog[b].Length];
                var kh = DeviceData.Normal(rng, (long)hist * hkv * d, 1f, dt);
                var vh = DeviceData.Normal(rng, (long)hist * hkv * d, 1f, dt);
                for (int j = 0; j < hist; j++)
                    for (int g = 0; g < hkv; g++)
                    {
                        long row = R.PageRow(table, stride, s.Slot, ringPages, page, hkv, g, (long)winStart[b] + j);
                        int src = (j * hkv + g) * d;
                        if (f8)
                        {
                            kSc0![row] = QuantizeFp8.Row(kh.AsSpan(src, d), kCodes0.AsSpan((int)(row * d), d), float.PositiveInfinity);
                            vSc0![row] = QuantizeFp8.Row(vh.AsSpan(src, d), vCodes0.AsSpan((int)(row * d), d), float.PositiveInfinity);
                            for (int i = 0; i < d; i++)
                            {
                                kLog[b][src + i] = QuantizeFp8.ToFloat(kCodes0![row * d + i]) * kSc0[row];
                                vLog[b][src + i] = QuantizeFp8.ToFloat(vCodes0![row * d + i]) * vSc0[row];
                            }
                        }
                        else
                            for (int i = 0; i < d; i++) { kPool0[row * d + i] = kLog[b][src + i] = kh[src + i]; vPool0[row * d + i] = vLog[b][src + i] = vh[src + i]; }
                    }
                // the piece's own rows: as the append stores them (FP8: quantized by the same row rule)
                for (int r = 0; r < s.QLen; r++)
                    for (int g = 0; g < hkv; g++)
                    {
                        int src = ((s.QStart + r) * hkv + g) * d, dst = ((hist + r) * hkv + g) * d;
                        if (f8)
                        {
                            var codes = new byte[d];
                            float ks = QuantizeFp8.Row(kNew.AsSpan(src, d), codes, float.PositiveInfinity);
                            for (int i = 0; i < d; i++) kLog[b][dst + i] = QuantizeFp8.ToFloat(codes[i]) * ks;
                            float vs = QuantizeFp8.Row(vNew.AsSpan(src, d), codes, float.PositiveInfinity);
                            for (int i = 0; i < d; i++) vLog[b][dst + i] = QuantizeFp8.ToFloat(codes[i]) * vs;
                        }
                        else
                            for (int i = 0; i < d; i++) { kLog[b][dst + i] = kNew[src + i]; vLog[b][dst + i] = vNew[src + i]; }
                    }
                for (int r = 0; r < (appendOnly ? 0 : s.QLen); r++)
                    for (int j = winStart[b]; j <= s.QPos0 + r; j++)
                        if (Reference.Attention.Visible((long)s.QPos0 + r, j, chunk)) visiblePairs++;
            }

            tq = new Tensor(Track(DeviceData.Upload(dev, q, dt)).Ptr, dt, new Shape(totalQ, h, d));
            tkn = new Tensor(Track(DeviceData.Upload(dev, kNew, dt)).Ptr, dt, new Shape(totalQ, hkv, d));
            tvn = new Tensor(Track(DeviceData.Upload(dev, vNew, dt)).Ptr, dt, new Shape(totalQ, hkv, d));
            var poolShape = new Shape(nPages, hkv, page, d);
            if (f8)
            {
                tkp = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, kCodes0!)).Ptr, DType.F8E4M3, poolShape, Track(DeviceData.Upload<float>(dev, kSc0!)).Ptr, d);
                tvp = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, vCodes0!)).Ptr, DType.F8E4M3, poolShape, Track(DeviceData.Upload<float>(dev, vSc0!)).Ptr, d);
            }
            else
            {
                tkp = new Tensor(Track(DeviceData.Upload(dev, kPool0, dt)).Ptr, dt, poolShape);
                tvp = new Tensor(Track(DeviceData.Upload(dev, vPool0, dt)).Ptr, dt, poolShape);
            }
            to = new Tensor(Track(DeviceData.Poisoned(dev, (long)totalQ * h * d, dt)).Ptr, dt, new Shape(totalQ, h, d));
            var qStart = new int[nb + 1];
            for (int b = 0; b < nb; b++) qStart[b + 1] = qStart[b] + seqs[b].QLen;
            pages = new K.Pages(Track(DeviceData.Upload<int>(dev, qStart)).Ptr,
                                Track(DeviceData.Upload<int>(dev, seqs.Select(s => s.QPos0).ToArray())).Ptr,
                                Track(DeviceData.Upload<int>(dev, seqs.Select(s => s.Slot).ToArray())).Ptr,
                                Track(DeviceData.Upload<int>(dev, table)).Ptr, stride, ringPages, page, nb, maxQ, maxKv);
            kps = split ? 32 : 1 << 30;
            wsBytes = K.WorkspaceBytes(totalQ, h, d, K.Splits(K.VisibleBound(pages, chunk), kps));
            if (wsBytes > 0) ws = Track(dev.Allocate(wsBytes)).Ptr;
        }

        public override double Bytes => tq.Bytes + to.Bytes + 2.0 * tkn.Bytes + 2.0 * seqs.Select((s, b) => (double)kLog[b].Length).Sum() * (f8 ? 1 + 4.0 / d : dt.Size());
        public override double Flops => 4.0 * visiblePairs * h * d;

        public override void Launch(DeviceStream? stream = null)
        {
            K.Append(Device, tkn, tvn, tkp, tvp, pages, stream);
            if (appendOnly) return;
            K.Run(Device, tq, tkp, tvp, to, pages, chunk, stream, workspace: ws, workspaceBytes: wsBytes, keysPerSplit: kps,
                  variant: mma ? K.Variant.Mma : K.Variant.CudaCores);
        }

        public override OpCheck Check()
        {
            // the pools after the append, exactly
            var nb = seqs.Length;
            if (f8)
            {
                var kc = kCodes0!.ToArray(); var vc = vCodes0!.ToArray(); var ksc = kSc0!.ToArray(); var vsc = vSc0!.ToArray();
                R.AppendFp8(kNew, vNew, kc, vc, ksc, vsc, seqs, table, stride, pages.Ring, page, hkv, d);
                var gotK = new byte[kc.Length]; Device.Download<byte>(tkp.Ptr, gotK); var gotKs = DeviceData.Download(Device, tkp.Scale, ksc.Length, DType.F32);
                var gotV = new byte[vc.Length]; Device.Download<byte>(tvp.Ptr, gotV); var gotVs = DeviceData.Download(Device, tvp.Scale, vsc.Length, DType.F32);
                foreach (var chk in new[] {
                    OpCheck.Compare("K codes", gotK.Select(x => (float)x).ToArray(), kc.Select(x => (float)x).ToArray(), default),
                    OpCheck.Compare("V codes", gotV.Select(x => (float)x).ToArray(), vc.Select(x => (float)x).ToArray(), default),
                    OpCheck.Compare("K scales", gotKs, ksc, default), OpCheck.Compare("V scales", gotVs, vsc, default) })
                    if (!chk.Passed || (appendOnly && chk.Output == "V scales")) return chk;
            }
            else
            {
                var kp = kPool0.ToArray(); var vp = vPool0.ToArray();
                R.Append(kNew, vNew, kp, vp, seqs, table, stride, pages.Ring, page, hkv, d);
                var ck = OpCheck.Compare("K pool", DeviceData.Download(Device, tkp.Ptr, kp.Length, dt), kp, default);
                if (!ck.Passed) return ck;
                var cv = OpCheck.Compare("V pool", DeviceData.Download(Device, tvp.Ptr, vp.Length, dt), vp, default);
                if (!cv.Passed || appendOnly) return cv;
            }
            var got = DeviceData.Download(Device, to.Ptr, to.Elements, dt);
            var want = new float[to.Elements];
            for (int b = 0; b < nb; b++)
            {
                var s = seqs[b];
                Reference.Attention.Forward(q, kLog[b], vLog[b], want,
                    [new AttentionSeq(s.QStart, s.QLen, s.QPos0 + s.QLen - winStart[b], s.QPos0, winStart[b], 0)],
                    h, hkv, d, (long)hkv * d, d, chunk, 1.0 / Math.Sqrt(d));
            }
            if (dt == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("O", got, want, Tolerances.For(mma ? "attention.mma" : "attention", dt));
        }
    }
}
