using Llama4Native.Devices;
using Llama4Native.Reference;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Attention;
using R = Llama4Native.Reference.Attention;

namespace Llama4Native.Ops;

/// <summary>
/// attention cases. Dims: H, Hkv, d, chunk, then per sequence (Tq, Tkv, q_pos0, kv_pos0). Variant
/// "&lt;fwd|mma|split&gt;-&lt;hsd|shd&gt;[1]": the kernel, and the K/V layout — hsd = a per-sequence cache [Hkv, S_cap, d]
/// (S_cap = max Tkv + 3; the 3 spare slots hold NaN, so reading past kv_len poisons the output), shd = the
/// sequences' keys packed [ΣTkv, Hkv, d]; a trailing 1 shifts every K/V offset by one element (unaligned rows). The split variant runs with 64 keys per split (several splits even
/// for short histories) below 4096 keys, the default above. Q, K, V ~ N(0, 1).
/// </summary>
internal sealed class AttentionSpec : OpSpec
{
    public override string Name => "attention";

    static OpCase C(string variant, string types, int h, int hkv, int d, int chunk, string label, params (int Tq, int Tkv, int QPos0, int KvPos0)[] seqs)
    {
        var dims = new List<long> { h, hkv, d, chunk };
        foreach (var s in seqs) dims.AddRange([s.Tq, s.Tkv, s.QPos0, s.KvPos0]);
        return new OpCase("attention", variant, types, [.. dims], label);
    }

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
        {
            // fwd: prefill, decode, GQA ratios 1/2/4/5, head dims 16/64/128, causal and chunked (C = 8, 16).
            yield return C("fwd-hsd", t, 4, 4, 16, 0, "decode.g1", (1, 37, 36, 0));
            yield return C("fwd-shd", t, 4, 2, 16, 0, "prefill.g2", (45, 45, 0, 0));
            yield return C("fwd-hsd", t, 8, 2, 64, 8, "prefill.g4.c8", (40, 40, 0, 0));
            yield return C("fwd-shd", t, 40, 8, 16, 0, "prefill.g5", (9, 9, 0, 0));
            yield return C("fwd-hsd", t, 40, 8, 16, 16, "decode.g5.c16", (1, 5, 36, 32));
            yield return C("fwd-hsd", t, 2, 1, 128, 16, "prefill.d128.c16", (50, 50, 0, 0));
            yield return C("fwd-hsd", t, 4, 2, 16, 8, "decode.midchunk.c8", (1, 5, 44, 40));
            // a prompt continued in pieces: queries 37..56 with the chunk cache from 32 (chunked), or all history
            yield return C("fwd-hsd", t, 4, 1, 16, 16, "piece.c16", (20, 25, 37, 32));
            yield return C("fwd-shd", t, 4, 1, 64, 0, "piece.causal", (20, 57, 37, 0));
            // keys beyond the queries are present in the cache: they must stay invisible
            yield return C("fwd-hsd", t, 2, 2, 16, 0, "future.keys", (5, 30, 10, 0));
            // B = 3 with different lengths and positions
            yield return C("fwd-shd", t, 6, 2, 16, 0, "b3", (1, 50, 49, 0), (17, 17, 0, 0), (6, 23, 17, 0));
            yield return C("fwd-hsd", t, 5, 1, 64, 8, "b3.c8", (1, 3, 50, 48), (33, 33, 0, 0), (6, 14, 19, 16));

            // split-KV decode: 1..few rows, several splits, ragged tiles, GQA 5, chunk 8/16 mid-chunk, B = 3
            yield return C("split-hsd", t, 40, 8, 128, 0, "decode.g5.d128", (1, 200, 199, 0));
            yield return C("split-shd", t, 4, 2, 16, 0, "decode.g2", (1, 131, 130, 0));
            yield return C("split-hsd", t, 8, 2, 64, 16, "decode.c16", (2, 13, 43, 32));
            yield return C("split-hsd", t, 4, 4, 16, 0, "rows9", (9, 150, 141, 0));
            yield return C("split-shd", t, 10, 2, 16, 8, "b3.c8", (1, 7, 102, 96), (3, 190, 187, 0), (2, 65, 63, 0));
            yield return C("split-hsd", t, 6, 3, 64, 0, "b3", (1, 300, 299, 0), (1, 1, 0, 0), (4, 77, 73, 0));
            // G = 5: 15 (row, head) combos over 2 tiles, split mid-row; rows 46, 47 | 48 straddle a chunk boundary
            yield return C("split-hsd", t, 10, 2, 16, 8, "g5.rows3.crosschunk", (3, 9, 46, 40));

            // the vision encoder: bidirectional (q_pos0 = kv_len puts every query after every key), one sequence per
            // tile, no GQA; head dim 88 (Scout/Maverick: 1408 / 16) is not a multiple of 16 (fwd pads it), 16 = the tiny fixture's
            yield return C("fwd-shd", t, 3, 3, 88, 0, "vision.bidir.d88", (37, 37, 37, 0), (20, 20, 20, 0));
            yield return C("fwd-hsd", t, 2, 2, 88, 0, "vision.bidir.d88", (40, 40, 40, 0));
            yield return C("fwd-shd", t, 2, 2, 16, 0, "vision.bidir.tiny", (65, 65, 65, 0), (65, 65, 65, 0), (65, 65, 65, 0));
            yield return C("fwd-shd", t, 2, 1, 88, 8, "d88.causal.c8", (30, 30, 0, 0));
            yield return C("split-hsd", t, 2, 1, 88, 0, "d88", (1, 150, 149, 0), (2, 70, 68, 0));
            // positions near 2^31 (issue #15: overflow at long context): the last keys before int.MaxValue, causal and chunked
            yield return C("split-hsd", t, 10, 2, 16, 0, "pos2^31", (2, 150, int.MaxValue - 1, int.MaxValue - 150));
            yield return C("split-hsd", t, 10, 2, 16, 8192, "pos2^31.c8192", (1, 100, int.MaxValue, int.MaxValue - 99));
            yield return C("fwd-hsd", t, 4, 2, 16, 16, "pos2^31.c16", (20, 40, int.MaxValue - 19, int.MaxValue - 39));
        }
        yield return C("fwd-shd1", "bf16", 2, 2, 88, 0, "vision.bidir.d88.unaligned.kv", (33, 33, 33, 0));
        yield return C("mma-shd", "bf16", 2, 2, 16, 0, "vision.bidir.tiny", (65, 65, 65, 0), (65, 65, 65, 0), (65, 65, 65, 0));
        // tensor-core prefill (bf16 only): several 64-row blocks and 64-key tiles, ragged edges, every head dim
        yield return C("mma-shd", "bf16", 4, 2, 16, 0, "prefill.g2", (45, 45, 0, 0));
        yield return C("mma-hsd", "bf16", 8, 2, 64, 8, "prefill.g4.c8", (70, 70, 0, 0));
        yield return C("mma-hsd", "bf16", 40, 8, 16, 16, "prefill.g5.c16", (9, 9, 0, 0));
        yield return C("mma-hsd", "bf16", 2, 1, 128, 16, "prefill.d128.c16", (130, 130, 0, 0));
        yield return C("mma-hsd", "bf16", 2, 1, 128, 0, "prefill.d128", (77, 77, 0, 0));
        yield return C("mma-hsd", "bf16", 4, 2, 16, 8, "decode.midchunk.c8", (1, 5, 44, 40));
        yield return C("mma-hsd", "bf16", 4, 1, 16, 16, "piece.c16", (20, 25, 37, 32));
        yield return C("mma-shd", "bf16", 4, 1, 64, 0, "piece.causal", (20, 57, 37, 0));
        yield return C("mma-hsd", "bf16", 2, 2, 16, 0, "future.keys", (5, 30, 10, 0));
        yield return C("mma-shd", "bf16", 6, 2, 16, 0, "b3", (1, 50, 49, 0), (67, 67, 0, 0), (6, 23, 17, 0));
        yield return C("mma-hsd", "bf16", 5, 1, 64, 8, "b3.c8", (1, 3, 50, 48), (33, 33, 0, 0), (6, 14, 19, 16));
        // K/V rows not 16-byte aligned: the gather path instead of cp.async
        yield return C("mma-hsd1", "bf16", 4, 2, 64, 0, "unaligned.kv", (70, 70, 0, 0));
        yield return C("fwd-shd1", "bf16", 4, 2, 16, 0, "unaligned.kv", (20, 20, 0, 0));
        yield return C("split-hsd1", "bf16", 4, 2, 16, 0, "unaligned.kv", (2, 100, 98, 0));
        // decode lengths at the edges of the cp.async tiles (32 keys) and splits (64): 1, 63, 64, 65 keys, and 4097 (default
        // splits); bf16 and FP8 KV, f32 once (its stages take 64 KiB of dynamic shared memory)
        foreach (var n in new[] { 1, 63, 64, 65, 4097 })
        {
            yield return C("split-hsd", "bf16", 5, 1, 128, 0, $"len{n}", (1, n, n - 1, 0));
            yield return C("split-hsd-f8", "bf16", 5, 1, 128, 0, $"len{n}", (1, n, n - 1, 0));
        }
        yield return C("split-shd", "f32", 5, 1, 128, 0, "len65", (1, 65, 64, 0));
        // FP8 KV cache ("…-f8"): K/V e4m3 with a scale per (token, kv head); the reference attends over the same codes × scales
        foreach (var t in new[] { "f32", "bf16" })
        {
            yield return C("fwd-hsd-f8", t, 8, 2, 64, 8, "prefill.g4.c8", (40, 40, 0, 0));
            yield return C("fwd-shd-f8", t, 6, 2, 16, 0, "b3", (1, 50, 49, 0), (17, 17, 0, 0), (6, 23, 17, 0));
            yield return C("fwd-hsd-f8", t, 3, 3, 88, 0, "vision.d88", (20, 20, 20, 0));
            yield return C("split-hsd-f8", t, 40, 8, 128, 0, "decode.g5.d128", (1, 200, 199, 0));
            yield return C("split-shd-f8", t, 10, 2, 16, 8, "b3.c8", (1, 7, 102, 96), (3, 190, 187, 0), (2, 65, 63, 0));
            yield return C("split-hsd-f8", t, 2, 1, 88, 0, "d88", (1, 150, 149, 0), (2, 70, 68, 0));
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        foreach (var t in new[] { "bf16", "f32" })
        {
            // Scout decode: one token against a chunk-local cache (mid-chunk) and against 32768 tokens of history.
            yield return C("split-hsd", t, 40, 8, 128, 8192, "scout.decode.chunked", (1, 8192, 106495, 98304));
            yield return C("split-hsd", t, 40, 8, 128, 0, "scout.decode.global", (1, 32768, 32767, 0));
            yield return C("fwd-hsd", t, 40, 8, 128, 0, "scout.decode.global.nosplit", (1, 32768, 32767, 0));
            // Scout prefill of 2048 tokens
            yield return C("fwd-shd", t, 40, 8, 128, 8192, "scout.prefill.chunked", (2048, 2048, 0, 0));
            yield return C("fwd-shd", t, 40, 8, 128, 0, "scout.prefill.global", (2048, 2048, 0, 0));
        }
        // Scout decode over long histories (issue #15): one token, 8K / 128K / 1M keys, bf16 and FP8 KV, default splits
        foreach (var (kv, label) in new[] { (8192, "8k"), (131072, "128k"), (1048576, "1m") })
        {
            yield return C("split-hsd", "bf16", 40, 8, 128, 0, $"scout.decode.{label}", (1, kv, kv - 1, 0));
            yield return C("split-hsd-f8", "bf16", 40, 8, 128, 0, $"scout.decode.{label}", (1, kv, kv - 1, 0));
        }
        yield return C("mma-shd", "bf16", 40, 8, 128, 8192, "scout.prefill.chunked", (2048, 2048, 0, 0));
        yield return C("mma-shd", "bf16", 40, 8, 128, 0, "scout.prefill.global", (2048, 2048, 0, 0));
        // the vision encoder: 17 tiles (16 + global) of 577 tokens, 16 heads of 88, bidirectional
        var tiles = Enumerable.Repeat((577, 577, 577, 0), 17).ToArray();
        yield return C("fwd-shd", "bf16", 16, 16, 88, 0, "vision.17tiles", tiles);
        yield return C("fwd-shd", "f32", 16, 16, 88, 0, "vision.17tiles", tiles);
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly K.Variant variant; readonly int h, hkv, d, chunk, totalQ, keysPerSplit; readonly bool split;
        readonly AttentionSeq[] seqs; readonly float[] q, k, v; readonly long rowStride, headStride;
        readonly Tensor tq, tk, tv, to; readonly K.Batch batch; readonly K.KvLayout layout;
        readonly DevicePtr ws; readonly long wsBytes; readonly double visiblePairs; readonly bool f8;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            (h, hkv, d, chunk) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3]);
            int nb = (c.Dims.Length - 4) / 4;
            if (nb < 1 || c.Dims.Length != 4 + 4 * nb) throw new ArgumentException($"{c.Id}: dims must be H, Hkv, d, chunk, then (Tq, Tkv, q_pos0, kv_pos0) per sequence");
            split = c.Variant.StartsWith("split", StringComparison.Ordinal);
            variant = split ? K.Variant.SplitKv : c.Variant.StartsWith("mma", StringComparison.Ordinal) ? K.Variant.Mma : K.Variant.Fwd;
            bool hsd = c.Variant.Contains("hsd", StringComparison.Ordinal);
            f8 = c.Variant.EndsWith("-f8", StringComparison.Ordinal);
            int shift = c.Variant.EndsWith('1') ? 1 : 0; // "…1": every sequence's K/V start one element late (unaligned rows)
            seqs = new AttentionSeq[nb];
            int maxKv = 0, maxQ = 0; long sumKv = 0;
            for (int b = 0; b < nb; b++) { maxKv = Math.Max(maxKv, (int)c[4 + 4 * b + 1]); maxQ = Math.Max(maxQ, (int)c[4 + 4 * b]); }
            int cap = maxKv + 3;
            long kvElems = 0;
            for (int b = 0, qs = 0; b < nb; b++)
            {
                int tq_ = (int)c[4 + 4 * b], tkv = (int)c[4 + 4 * b + 1];
                long off = shift + (hsd ? (long)b * hkv * cap * d : sumKv * hkv * d);
                seqs[b] = new AttentionSeq(qs, tq_, tkv, (int)c[4 + 4 * b + 2], (int)c[4 + 4 * b + 3], off);
                qs += tq_; sumKv += tkv; totalQ = qs;
            }
            (rowStride, headStride) = hsd ? ((long)d, (long)cap * d) : ((long)hkv * d, (long)d);
            kvElems = shift + (hsd ? (long)nb * hkv * cap * d : sumKv * hkv * d);
            q = DeviceData.Normal(rng, (long)totalQ * h * d, 1f, dt);
            k = DeviceData.Normal(rng, kvElems, 1f, dt);
            v = DeviceData.Normal(rng, kvElems, 1f, dt);
            if (hsd) // the spare slots of every head: NaN
                for (int b = 0; b < nb; b++)
                    for (int g = 0; g < hkv; g++)
                        for (int j = seqs[b].KvLen; j < cap; j++)
                            for (int i = 0; i < d; i++)
                            {
                                long e = seqs[b].KvOff + g * headStride + j * rowStride + i;
                                k[e] = float.NaN; v[e] = float.NaN;
                            }
            tq = new Tensor(Track(DeviceData.Upload(dev, q, dt)).Ptr, dt, new Shape(totalQ, h, d));
            if (f8)
            {   // quantize every (token, kv head) row of d: the codes and scales go to the device, k/v become codes × scale
                // (the NaN rows of the spare slots quantize to NaN codes: reading them still poisons the output)
                (tk, k) = Fp8(dev, k, d); (tv, v) = Fp8(dev, v, d);
            }
            else
            {
                tk = new Tensor(Track(DeviceData.Upload(dev, k, dt)).Ptr, dt, new Shape(kvElems));
                tv = new Tensor(Track(DeviceData.Upload(dev, v, dt)).Ptr, dt, new Shape(kvElems));
            }
            to = new Tensor(Track(DeviceData.Poisoned(dev, (long)totalQ * h * d, dt)).Ptr, dt, new Shape(totalQ, h, d));
            var qStart = new int[nb + 1];
            for (int b = 0; b < nb; b++) qStart[b + 1] = qStart[b] + seqs[b].QLen;
            batch = new K.Batch(
                Track(DeviceData.Upload<int>(dev, qStart)).Ptr,
                Track(DeviceData.Upload<int>(dev, seqs.Select(s => s.KvLen).ToArray())).Ptr,
                Track(DeviceData.Upload<int>(dev, seqs.Select(s => s.QPos0).ToArray())).Ptr,
                Track(DeviceData.Upload<int>(dev, seqs.Select(s => s.KvPos0).ToArray())).Ptr,
                Track(DeviceData.Upload<long>(dev, seqs.Select(s => s.KvOff).ToArray())).Ptr,
                nb, maxQ, maxKv);
            layout = new K.KvLayout(hkv, checked((int)rowStride), checked((int)headStride));
            keysPerSplit = maxKv < 4096 ? 64 : 0;
            if (split)
            {
                wsBytes = K.WorkspaceBytes(totalQ, h, d, maxKv, keysPerSplit);
                ws = Track(dev.Allocate(wsBytes)).Ptr;
            }
            foreach (var s in seqs)
                for (int r = 0; r < s.QLen; r++)
                    for (int j = 0; j < s.KvLen; j++)
                        if (R.Visible((long)s.QPos0 + r, (long)s.KvPos0 + j, chunk)) visiblePairs++;
        }

        (Tensor, float[]) Fp8(Device dev, float[] x, int d)
        {
            int rows = x.Length / d;
            var codes = new byte[x.Length]; var scales = new float[rows]; var deq = new float[x.Length];
            for (int r = 0; r < rows; r++)
            {
                var row = x.AsSpan(r * d, d);
                bool nan = float.IsNaN(row[0]);
                scales[r] = QuantizeFp8.Row(row, codes.AsSpan(r * d, d), float.PositiveInfinity);
                for (int i = 0; i < d; i++) deq[r * d + i] = nan ? float.NaN : QuantizeFp8.ToFloat(codes[r * d + i]) * scales[r];
            }
            var data = Track(DeviceData.Upload<byte>(dev, codes)).Ptr;
            var sc = Track(DeviceData.Upload<float>(dev, scales)).Ptr;
            return (Tensor.Quantized(data, DType.F8E4M3, new Shape(rows, d), sc, d), deq);
        }

        public override double Bytes => tq.Bytes + to.Bytes + 2.0 * seqs.Sum(s => (double)s.KvLen) * hkv * (f8 ? d + 4 : d * dt.Size());
        public override double Flops => 4.0 * visiblePairs * h * d;

        public override void Launch(DeviceStream? stream = null) =>
            K.Run(Device, tq, tk, tv, to, batch, layout, chunk, stream, variant,
                  workspace: ws, workspaceBytes: wsBytes, keysPerSplit: keysPerSplit);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, to.Ptr, to.Elements, dt);
            var want = new float[to.Elements];
            R.Forward(q, k, v, want, seqs, h, hkv, d, rowStride, headStride, chunk, 1.0 / Math.Sqrt(d));
            if (dt == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("O", got, want, Tolerances.For(variant == K.Variant.Mma ? "attention.mma" : "attention", dt));
        }
    }
}
