using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/attention.cu`: flash-style attention (fp32 online softmax, GQA) with the causal (<c>chunk = 0</c>) or
/// chunked (<c>chunk = C</c>) mask by absolute positions, over a varlen batch of B ≥ 1 sequences whose
/// descriptors live on the device (see <see cref="Batch"/>). Variants: <see cref="Variant.Fwd"/> (CUDA cores, a
/// block per 32 query rows × head × sequence; f32 and bf16), <see cref="Variant.Mma"/> (bf16 only, tensor cores,
/// a block per 64 query rows; the Auto choice for bf16 prefill) and <see cref="Variant.SplitKv"/> (keys split across blocks, then a
/// combine kernel; decode with long histories, needs a workspace of <see cref="WorkspaceBytes"/>). K and V may be an FP8 KV
/// cache (<see cref="DType.F8E4M3"/> via <c>Tensor.Quantized</c>, Group = d: a scale per (token, kv head) row), with
/// f32 or bf16 Q/O: dequantized in the loads (fwd and split variants; Auto never picks mma for FP8).
/// </summary>
internal static class Attention
{
    public const string File = "attention.cu";
    public enum Variant { Auto, Fwd, Mma, SplitKv }

    const int FwdRows = 32, FwdThreads = 128;   // ATTN_BQ, 4·ATTN_BQ
    const int MmaRows = 64, MmaThreads = 128;   // MBQ, MNT (fixed in the kernel)
    const int DecRows = 8, DecThreads = 128, DecTile = 32, CombineThreads = 128; // ATTN_DEC_Q, ATTN_DEC_THREADS, ATTN_DEC_BK, ATTN_COMBINE_THREADS
    /// <summary>Head dims the op table (and so every test and benchmark) compiles; any positive multiple of 8 works
    /// (the tensor-core variant needs a multiple of 16; 88 is the vision encoder's).</summary>
    public static readonly int[] TableHeadDims = [16, 64, 88, 128];

    /// <summary>
    /// The per-sequence device arrays (int32 unless noted), and the host's UPPER BOUNDS that size the grid (no
    /// read-back of actual lengths): QStart [B+1] (cu_seqlens of the packed Q/O), KvLen [B], QPos0 [B], KvPos0 [B],
    /// KvOff [B] int64 (element offset of each sequence's key slot 0, kv head 0, in K and V).
    /// </summary>
    public readonly record struct Batch(DevicePtr QStart, DevicePtr KvLen, DevicePtr QPos0, DevicePtr KvPos0, DevicePtr KvOff,
                                        int Count, int MaxQ, int MaxKv);

    /// <summary>Where key slot j, kv head g of a sequence lives: K[KvOff + j·RowStride + g·HeadStride + i] (elements).
    /// A per-sequence cache [Hkv, S_cap, d] is (RowStride = d, HeadStride = S_cap·d); packed [T, Hkv, d] is (Hkv·d, d).</summary>
    public readonly record struct KvLayout(int KvHeads, int RowStride, int HeadStride);

    public static KernelDefines Defines(int headDim) => headDim == 128 ? KernelDefines.None : KernelDefines.Of(("ATTN_HEAD_DIM", headDim));

    /// <summary>Blocks the split-KV grid aims for: two waves of an H100/H200's 132 SMs.</summary>
    public const int TargetBlocks = 2 * 132;
    /// <summary>Fewest keys a split takes (4 tiles): shorter splits would make the combine cost more than it saves.</summary>
    public const int MinKeysPerSplit = 4 * DecTile;

    /// <summary>Keys per split for a bound on the kv length when each split has <paramref name="blocksPerSplit"/> blocks
    /// (Hkv · query tiles · sequences): enough splits that the grid reaches <see cref="TargetBlocks"/> at any length, whole
    /// tiles, at least <see cref="MinKeysPerSplit"/> keys. Depends only on host bounds, so a captured step stays valid.</summary>
    public static int DefaultKeysPerSplit(int maxKv, long blocksPerSplit = 1)
    {
        long splits = Math.Clamp((TargetBlocks + blocksPerSplit - 1) / Math.Max(1, blocksPerSplit), 1, TargetBlocks);
        long kps = (Math.Max(1, maxKv) + splits - 1) / splits;
        return (int)Math.Max(MinKeysPerSplit, (kps + DecTile - 1) / DecTile * DecTile);
    }

    public static int Splits(int maxKv, int keysPerSplit) => Math.Max(1, (maxKv + keysPerSplit - 1) / keysPerSplit);

    /// <summary>Dynamic shared memory of the split-KV decode kernels (attention.cu and paged_attention.cu, attention_common.cuh's
    /// decode_smem_bytes): two cp.async stages of raw K and V tiles, 2 · 2 · ATTN_DEC_BK · d elements of the KV dtype
    /// (d = 128: 32 KiB bf16, 16 KiB e4m3, 64 KiB f32 — above 48 KiB the CUDA device opts in at launch).</summary>
    public static uint DecodeSharedBytes(int headDim, DType kvType) => (uint)(4 * kvType.BytesOf((long)(headDim <= 128 ? 32 : 16) * headDim));

    /// <summary>Workspace of the split-KV variant: o_part [nsplit, totalQ, H, d] and ml_part [nsplit, totalQ, H, 2], f32. With the
    /// default split (keysPerSplit = 0) it is sized for the most splits any grid may use (one block per split).</summary>
    public static long WorkspaceBytes(long totalQ, int heads, int headDim, int maxKv, int keysPerSplit = 0)
    {
        int kps = keysPerSplit > 0 ? keysPerSplit : DefaultKeysPerSplit(maxKv);
        return (long)Splits(maxKv, kps) * totalQ * heads * (headDim + 2) * sizeof(float);
    }

    /// <param name="q">[totalQ, H, d], f32 or bf16</param>
    /// <param name="k">the key buffer (any shape; its dtype must be q's), addressed through <paramref name="kv"/> and the batch's KvOff</param>
    /// <param name="v">the value buffer, same layout as k</param>
    /// <param name="o">[totalQ, H, d], q's dtype</param>
    /// <param name="chunk">0 = causal (NoPE layers); C &gt; 0 = chunked attention with chunk C (RoPE layers)</param>
    /// <param name="scale">score scale; default d^-0.5</param>
    /// <param name="workspace">split-KV only: at least <see cref="WorkspaceBytes"/> bytes</param>
    /// <param name="keysPerSplit">split-KV only: 0 = <see cref="DefaultKeysPerSplit"/></param>
    public static unsafe void Run(Device dev, Tensor q, Tensor k, Tensor v, Tensor o, Batch batch, KvLayout kv, int chunk,
                                  DeviceStream? stream = null, Variant variant = Variant.Auto, double? scale = null,
                                  DevicePtr workspace = default, long workspaceBytes = 0, int keysPerSplit = 0)
    {
        const string op = "attention";
        if (q.Shape.Rank != 3) throw new ArgumentException($"{op}: Q has shape {q.Shape}, expected [totalQ, H, d]");
        KernelCheck.Same(op, "Q", q, "O", o);
        bool f8 = k.DType == DType.F8E4M3; // the FP8 KV cache: e4m3 codes, one f32 scale per (token, kv head) row (Tensor.Scale, Group = d)
        if (q.DType != o.DType || k.DType != v.DType || (k.DType != q.DType && !f8))
            throw KernelCheck.Unsupported(op, $"Q {q.DType}, K {k.DType}, V {v.DType}, O {o.DType} (Q, O one dtype; K, V that dtype or F8E4M3)");
        if (q.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, KernelCheck.Name(q.DType));
        int totalQ = KernelCheck.Int(op, "totalQ", q.Shape[0]), heads = KernelCheck.Int(op, "H", q.Shape[1]), d = KernelCheck.Int(op, "d", q.Shape[2]);
        if (heads < 1 || d < 1 || d % 8 != 0) throw new ArgumentException($"{op}: Q {q.Shape}: H must be ≥ 1 and d a positive multiple of 8");
        if (kv.KvHeads < 1 || heads % kv.KvHeads != 0) throw new ArgumentException($"{op}: H = {heads} is not a multiple of Hkv = {kv.KvHeads}");
        if (kv.RowStride < 0 || kv.HeadStride < 0) throw new ArgumentException($"{op}: negative K/V strides {kv}");
        if (chunk < 0) throw new ArgumentException($"{op}: chunk = {chunk} must be ≥ 0");
        if (batch.Count < 1 || batch.MaxQ < 0 || batch.MaxKv < 0) throw new ArgumentException($"{op}: bad batch {batch}");
        if (batch.Count > 65535) throw new ArgumentException($"{op}: {batch.Count} sequences exceed gridDim.z (65535)");
        if (f8 && (k.Scale.IsNull || v.Scale.IsNull || k.Group != d || v.Group != d || kv.RowStride % d != 0 || kv.HeadStride % d != 0))
            throw new ArgumentException($"{op}: FP8 K/V need scales with Group = d = {d} (got {k.Group}, {v.Group}) and strides that are multiples of d ({kv}); " +
                                        "build them with Tensor.Quantized; KvOff must be a multiple of d too");
        if (f8 && variant == Variant.Mma) throw KernelCheck.Unsupported(op + " (mma)", "F8E4M3 K/V; use the fwd or split variant");
        if (totalQ == 0 || batch.MaxQ == 0) return;
        string t = KernelCheck.Name(q.DType);
        float sc = (float)(scale ?? 1.0 / Math.Sqrt(d));
        var defines = Defines(d);
        // Auto: every decode-sized call (≤ DecRows query rows) takes split-KV when a workspace is given, at any history
        // length (no threshold: the grid simply has fewer splits for short histories).
        bool split = variant == Variant.SplitKv
                     || (variant == Variant.Auto && batch.MaxQ <= DecRows && !workspace.IsNull);
        ulong qp = q.Ptr.Value, kp = k.Ptr.Value, vp = v.Ptr.Value, op_ = o.Ptr.Value, ksc = k.Scale.Value, vsc = v.Scale.Value;
        string kvSuffix = f8 ? "_f8" : "";
        ulong qs = batch.QStart.Value, kl = batch.KvLen.Value, qpos = batch.QPos0.Value, kpos = batch.KvPos0.Value, koff = batch.KvOff.Value;
        int hkv = kv.KvHeads, rs = kv.RowStride, hs = kv.HeadStride;
        if (variant == Variant.Mma && q.DType != DType.BF16) throw KernelCheck.Unsupported(op + " (mma)", t);
        if (variant == Variant.Mma && d % 16 != 0) throw new ArgumentException($"{op} (mma): d = {d} must be a multiple of 16; use the fwd variant");
        bool mma = !split && !f8 && (variant == Variant.Mma || (variant == Variant.Auto && q.DType == DType.BF16 && d % 16 == 0));
        if (mma)
        {
            if (q.Ptr.Value % 16 != 0 || o.Ptr.Value % 16 != 0) throw new ArgumentException($"{op} (mma): Q and O must be 16-byte aligned");
            var fn = dev.Kernels.Get(File, "attn_fwd_mma_bf16", defines);
            void** args = stackalloc void*[] { &qp, &kp, &vp, &op_, &qs, &kl, &qpos, &kpos, &koff, &heads, &hkv, &rs, &hs, &chunk, &sc };
            dev.Cost(Traffic(q, o, k.DType, batch, kv, d), Flops(batch, heads, d, chunk));
            dev.Launch(fn, new Dim3(KernelCheck.Blocks(batch.MaxQ, MmaRows), (uint)heads, (uint)batch.Count), MmaThreads, 0, args, stream);
            return;
        }
        if (!split)
        {
            var fn = dev.Kernels.Get(File, $"attn_fwd_{t}{kvSuffix}", defines);
            void** args = stackalloc void*[] { &qp, &kp, &vp, &op_, &qs, &kl, &qpos, &kpos, &koff, &heads, &hkv, &rs, &hs, &chunk, &sc, &ksc, &vsc };
            dev.Cost(Traffic(q, o, k.DType, batch, kv, d), Flops(batch, heads, d, chunk));
            dev.Launch(fn, new Dim3(KernelCheck.Blocks(batch.MaxQ, FwdRows), (uint)heads, (uint)batch.Count), FwdThreads, 0, args, stream);
            return;
        }
        // a block per tile of DecRows (query row, head) combos of one kv head: the G heads of a kv head share its K/V reads
        long qTiles = ((long)batch.MaxQ * (heads / kv.KvHeads) + DecRows - 1) / DecRows;
        int kps = keysPerSplit > 0 ? keysPerSplit : DefaultKeysPerSplit(batch.MaxKv, qTiles * kv.KvHeads * batch.Count);
        int nsplit = Splits(batch.MaxKv, kps);
        long need = WorkspaceBytes(totalQ, heads, d, batch.MaxKv, kps);
        if (workspace.IsNull || workspaceBytes < need)
            throw new ArgumentException($"{op}: the split-KV variant needs a workspace of {need} bytes, got {workspaceBytes}");
        if (qTiles * kv.KvHeads > 65535) throw new ArgumentException($"{op}: Hkv·ceil(maxQ·G/{DecRows}) = {qTiles * kv.KvHeads} exceeds gridDim.y; use the fwd variant");
        ulong opart = workspace.Value, mlpart = workspace.Value + (ulong)((long)nsplit * totalQ * heads * d * sizeof(float));
        var fs = dev.Kernels.Get(File, $"attn_decode_split_{t}{kvSuffix}", defines);
        void** a1 = stackalloc void*[] { &qp, &kp, &vp, &opart, &mlpart, &qs, &kl, &qpos, &kpos, &koff, &heads, &hkv, &rs, &hs, &chunk, &sc, &kps, &totalQ, &ksc, &vsc };
        dev.Cost(Traffic(q, default, k.DType, batch, kv, d) + need, Flops(batch, heads, d, chunk));
        dev.Launch(fs, new Dim3((uint)nsplit, (uint)(qTiles * kv.KvHeads), (uint)batch.Count), DecThreads, DecodeSharedBytes(d, k.DType), a1, stream);
        var fc = dev.Kernels.Get(File, $"attn_decode_combine_{t}", defines);
        void** a2 = stackalloc void*[] { &opart, &mlpart, &op_, &heads, &nsplit, &totalQ };
        dev.Cost(need + o.Bytes, 3.0 * nsplit * totalQ * heads * d);
        dev.Launch(fc, new Dim3((uint)totalQ, (uint)heads), CombineThreads, 0, a2, stream);
    }

    /// <summary>Compulsory traffic: Q and O once, and each sequence's keys and values up to the kv bound once (the query
    /// heads of a kv head share its reads).</summary>
    static long Traffic(Tensor q, Tensor o, DType kvType, Batch b, KvLayout kv, int d) =>
        q.Bytes + o.Bytes + 2 * (kvType.BytesOf((long)b.Count * b.MaxKv * kv.KvHeads * d)
                                 + (kvType == DType.F8E4M3 ? 4L * b.Count * b.MaxKv * kv.KvHeads : 0)); // + FP8 scales

    /// <summary>QKᵀ and PV (4·d per (query, key) pair) over the pairs the mask keeps, at the batch's bounds: the last MaxQ
    /// positions of MaxKv keys, causal (a chunked layer's cache holds only its chunk, which the bound already is).</summary>
    static double Flops(Batch b, int heads, int d, int chunk)
    {
        double q = b.MaxQ, kvLen = Math.Max(b.MaxKv, b.MaxQ);
        double pairs = q * kvLen - q * (q - 1) / 2;
        if (chunk > 0) pairs = Math.Min(pairs, q * (double)chunk);
        return 4.0 * d * heads * pairs * b.Count;
    }
}
