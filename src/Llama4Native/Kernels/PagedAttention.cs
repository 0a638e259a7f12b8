using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/paged_attention.cu`: attention over a paged KV cache for a batch of sequences in one launch (decode rows
/// and prefill pieces mixed), and the append that writes a step's keys and values into the pages. The pools are
/// [pages, Hkv, P, d] per layer (f32, bf16, or e4m3 codes with an f32 scale per (token, kv head): <c>Tensor.Quantized</c>
/// with scales [pages, Hkv, P] and Group = d); a sequence's key j (its absolute position) sits in page
/// <c>table[slot, (j / P) mod ring]</c> (ring = 0: no modulo). See the .cu file for the design.
/// </summary>
internal static class PagedAttention
{
    public const string File = "paged_attention.cu";
    const int DecRows = 8, DecThreads = 128, DecTile = 32, CombineThreads = 128, AppendHeadsPerBlock = 4;
    const int MmaRows = 64, MmaThreads = 128;   // paged_attn_mma_bf16's MBQ, MNT (attention_mma.cuh)

    /// <summary>Which kernel <see cref="Run"/> launches. Auto: <see cref="Mma"/> for bf16 Q/pool with d % 16 == 0 when the
    /// call's MaxQ ≥ 64 (prefill pieces; Attention.Auto's mma rule), else <see cref="CudaCores"/> (decode rows, f32, FP8 pools).</summary>
    public enum Variant { Auto, CudaCores, Mma }

    /// <summary>Whether <see cref="Variant.Auto"/> takes the tensor-core kernel for this call.</summary>
    public static bool UsesMma(DType q, DType pool, int headDim, int maxQ) =>
        q == DType.BF16 && pool == DType.BF16 && headDim % 16 == 0 && maxQ >= MmaRows;

    /// <summary>
    /// A step's batch on the device: QStart [B+1] (cu_seqlens of the packed rows), QPos0 [B] (position of each
    /// sequence's first row), SeqSlot [B] (its row of the block table), BlockTable [slots, TableStride] int32 page
    /// numbers; Ring (0 or the ring length in pages, for chunked layers), PageSize (a power of two). Host UPPER bounds
    /// size the grid: MaxQ (rows of the longest piece), MaxKv (the longest history including the piece).
    /// </summary>
    public readonly record struct Pages(DevicePtr QStart, DevicePtr QPos0, DevicePtr SeqSlot, DevicePtr BlockTable, int TableStride,
                                        int Ring, int PageSize, int Count, int MaxQ, int MaxKv)
    {
        public int Shift => System.Numerics.BitOperations.Log2((uint)PageSize);
        public Pages WithRing(DevicePtr table, int stride, int ring) => this with { BlockTable = table, TableStride = stride, Ring = ring };
    }

    public static KernelDefines Defines(int headDim) => Attention.Defines(headDim);

    /// <summary>Splits of a grid: ceil(maxKv / keysPerSplit), at least 1.</summary>
    public static int Splits(int maxKv, int keysPerSplit) => Math.Max(1, (maxKv + keysPerSplit - 1) / keysPerSplit);

    /// <summary>Keys per split from the bounds (0 in <see cref="Run"/>): attention.cu's rule — about two waves of 132 SMs.</summary>
    public static int DefaultKeysPerSplit(Pages p, int heads, int kvHeads, int chunk) =>
        Attention.DefaultKeysPerSplit(VisibleBound(p, chunk), QTiles(p.MaxQ, heads, kvHeads) * kvHeads * p.Count);

    /// <summary>Most keys one tile of rows can see: the history (causal), or its chunk plus the piece (chunked). Splits
    /// count from the first visible key, so this sizes the split grid.</summary>
    public static int VisibleBound(Pages p, int chunk) => chunk > 0 ? (int)Math.Min(p.MaxKv, (long)chunk + p.MaxQ) : p.MaxKv;

    static long QTiles(int maxQ, int heads, int kvHeads) => ((long)maxQ * (heads / kvHeads) + DecRows - 1) / DecRows;

    /// <summary>Workspace for <paramref name="totalQ"/> rows and <paramref name="splits"/> splits: o_part and ml_part, f32; 0 for one split.</summary>
    public static long WorkspaceBytes(long totalQ, int heads, int headDim, int splits) =>
        splits <= 1 ? 0 : (long)splits * totalQ * heads * (headDim + 2) * sizeof(float);

    /// <summary>Most query rows of ONE sequence a launch takes: the attention grid's y = Hkv·ceil(rows·G / 8) and the append's
    /// y = rows must stay ≤ 65,535 (a longer piece of one sequence is launched in parts of this many rows).</summary>
    public static int MaxRowsPerLaunch(int heads, int kvHeads) => (int)Math.Min(65535, 65535L / kvHeads * DecRows / Math.Max(1, heads / kvHeads));

    /// <summary>Workspace enough for any step of ≤ <paramref name="maxRows"/> rows (one sequence) and ≤ <paramref name="maxKv"/> keys
    /// under the default split rule (<see cref="DefaultKeysPerSplit"/>): a grid has at most ceil(TargetBlocks / blocks per split)
    /// splits and at most ceil(maxKv / MinKeysPerSplit), and none once the rows alone fill the device (prefill pieces).</summary>
    public static long DefaultWorkspaceBytes(int maxRows, int heads, int kvHeads, int headDim, int maxKv)
    {
        long most = 0, byKeys = Math.Max(1, ((long)maxKv + Attention.MinKeysPerSplit - 1) / Attention.MinKeysPerSplit);
        for (int t = 1; t <= maxRows; t++)
        {
            long blocks = QTiles(t, heads, kvHeads) * kvHeads;
            long splits = Math.Min(byKeys, Math.Clamp((Attention.TargetBlocks + blocks - 1) / blocks, 1, Attention.TargetBlocks));
            if (splits <= 1) break;
            most = Math.Max(most, WorkspaceBytes(t, heads, headDim, (int)splits));
        }
        return most;
    }

    static void CheckPool(string op, Tensor pool, Tensor other, int kvHeads, int d, int pageSize)
    {
        KernelCheck.Same(op, "K pool", pool, "V pool", other);
        if (pool.Shape.Rank != 4 || pool.Shape[1] != kvHeads || pool.Shape[2] != pageSize || pool.Shape[3] != d)
            throw new ArgumentException($"{op}: the pool has shape {pool.Shape}, expected [pages, Hkv = {kvHeads}, P = {pageSize}, d = {d}]");
        if (pool.DType == DType.F8E4M3 && (pool.Scale.IsNull || other.Scale.IsNull || pool.Group != d || other.Group != d))
            throw new ArgumentException($"{op}: an FP8 pool needs scales [pages, Hkv, P] and Group = d = {d} (got {pool.Group}, {other.Group}); build it with Tensor.Quantized");
    }

    static void CheckPages(string op, Pages p)
    {
        if (p.PageSize < 1 || !System.Numerics.BitOperations.IsPow2(p.PageSize) || p.PageSize > (1 << 20))
            throw new ArgumentException($"{op}: page size {p.PageSize} must be a power of two ≤ 2^20");
        if (p.Count < 1 || p.Count > 65535 || p.MaxQ < 0 || p.MaxKv < p.MaxQ || p.Ring < 0 || p.TableStride < 1)
            throw new ArgumentException($"{op}: bad batch {p} (1 ≤ B ≤ 65535, 0 ≤ MaxQ ≤ MaxKv, Ring ≥ 0, TableStride ≥ 1)");
        if (p.Ring > p.TableStride) throw new ArgumentException($"{op}: a ring of {p.Ring} pages does not fit table rows of {p.TableStride}");
        if (p.Ring == 0 && ((long)p.MaxKv + p.PageSize - 1) / p.PageSize > p.TableStride)
            throw new ArgumentException($"{op}: histories of {p.MaxKv} keys need {((long)p.MaxKv + p.PageSize - 1) / p.PageSize} pages, table rows hold {p.TableStride}");
        if (p.QStart.IsNull || p.QPos0.IsNull || p.SeqSlot.IsNull || p.BlockTable.IsNull) throw new ArgumentException($"{op}: every descriptor is required");
    }

    /// <summary>Stores rows of <paramref name="kNew"/>/<paramref name="vNew"/> [totalQ, Hkv, d] at their sequences' positions q_pos0 + r.</summary>
    public static unsafe void Append(Device dev, Tensor kNew, Tensor vNew, Tensor kPool, Tensor vPool, Pages p, DeviceStream? stream = null)
    {
        const string op = "paged_kv_append";
        KernelCheck.Same(op, "k_new", kNew, "v_new", vNew);
        if (kNew.Shape.Rank != 3) throw new ArgumentException($"{op}: k_new has shape {kNew.Shape}, expected [totalQ, Hkv, d]");
        int hkv = KernelCheck.Int(op, "Hkv", kNew.Shape[1]), d = KernelCheck.Int(op, "d", kNew.Shape[2]);
        CheckPool(op, kPool, vPool, hkv, d, p.PageSize);
        CheckPages(op, p);
        bool f8 = kPool.DType == DType.F8E4M3;
        if (kNew.DType is not (DType.F32 or DType.BF16) || (kPool.DType != kNew.DType && !f8))
            throw KernelCheck.Unsupported(op, $"{kNew.DType}>{kPool.DType}");
        if (p.MaxQ == 0 || kNew.Shape[0] == 0) return;
        ulong kn = kNew.Ptr.Value, vn = vNew.Ptr.Value, kc = kPool.Ptr.Value, vc = vPool.Ptr.Value, ks = kPool.Scale.Value, vs = vPool.Scale.Value;
        ulong qs = p.QStart.Value, qp = p.QPos0.Value, sl = p.SeqSlot.Value, bt = p.BlockTable.Value;
        int bts = p.TableStride, ring = p.Ring, shift = p.Shift, maxQ = p.MaxQ;
        long rows = Math.Min(kNew.Shape[0], (long)p.MaxQ * p.Count);
        dev.Cost(2L * rows * hkv * (kNew.DType.BytesOf(d) + kPool.DType.BytesOf(d) + (f8 ? 4 : 0)), f8 ? 6.0 * rows * hkv * d : 0);
        // a warp per (row, kv head) pair, the pairs on x (warps stride past the cap): any number of rows
        var grid = new Dim3(KernelCheck.Blocks((long)maxQ * hkv, AppendHeadsPerBlock, 1 << 16), 1, (uint)p.Count);
        string t = KernelCheck.Name(kNew.DType);
        if (f8)
        {
            void** a8 = stackalloc void*[] { &kn, &vn, &kc, &vc, &ks, &vs, &qs, &qp, &sl, &bt, &bts, &ring, &shift, &hkv, &d, &maxQ };
            dev.Launch(dev.Kernels.Get(File, $"paged_kv_append_{t}_f8"), grid, 32 * AppendHeadsPerBlock, 0, a8, stream);
            return;
        }
        void** a = stackalloc void*[] { &kn, &vn, &kc, &vc, &qs, &qp, &sl, &bt, &bts, &ring, &shift, &hkv, &d, &maxQ };
        dev.Launch(dev.Kernels.Get(File, $"paged_kv_append_{t}"), grid, 32 * AppendHeadsPerBlock, 0, a, stream);
    }

    /// <summary>O = attention of every row of <paramref name="q"/> [totalQ, H, d] over its sequence's keys 0..q_pos0+r
    /// (chunked when <paramref name="chunk"/> &gt; 0). One split writes O directly; several need a workspace of
    /// <see cref="WorkspaceBytes"/> and add the combine launch.</summary>
    /// <param name="keysPerSplit">0 = <see cref="DefaultKeysPerSplit"/>; a fixed value makes each row's summation order
    /// independent of the rest of the batch (batch invariance)</param>
    public static unsafe void Run(Device dev, Tensor q, Tensor kPool, Tensor vPool, Tensor o, Pages p, int chunk,
                                  DeviceStream? stream = null, double? scale = null, DevicePtr workspace = default, long workspaceBytes = 0,
                                  int keysPerSplit = 0, Variant variant = Variant.Auto)
    {
        const string op = "paged_attention";
        KernelCheck.Same(op, "Q", q, "O", o);
        if (q.Shape.Rank != 3) throw new ArgumentException($"{op}: Q has shape {q.Shape}, expected [totalQ, H, d]");
        int totalQ = KernelCheck.Int(op, "totalQ", q.Shape[0]), heads = KernelCheck.Int(op, "H", q.Shape[1]), d = KernelCheck.Int(op, "d", q.Shape[2]);
        if (kPool.Shape.Rank != 4) throw new ArgumentException($"{op}: the pool has shape {kPool.Shape}, expected [pages, Hkv, P, d]");
        int hkv = (int)kPool.Shape[1];
        CheckPool(op, kPool, vPool, hkv, d, p.PageSize);
        CheckPages(op, p);
        bool f8 = kPool.DType == DType.F8E4M3;
        if (q.DType != o.DType || q.DType is not (DType.F32 or DType.BF16) || (kPool.DType != q.DType && !f8))
            throw KernelCheck.Unsupported(op, $"Q {q.DType}, pool {kPool.DType}, O {o.DType} (Q, O f32 or bf16; the pool that dtype or F8E4M3)");
        if (d % 8 != 0 || hkv < 1 || heads % hkv != 0) throw new ArgumentException($"{op}: d = {d} must be a multiple of 8 and H = {heads} a multiple of Hkv = {hkv}");
        if (chunk < 0) throw new ArgumentException($"{op}: chunk = {chunk} must be ≥ 0");
        if (variant == Variant.Mma && (q.DType != DType.BF16 || kPool.DType != DType.BF16 || d % 16 != 0))
            throw KernelCheck.Unsupported(op + " (mma)", $"Q {q.DType}, pool {kPool.DType}, d = {d} (bf16 Q and pool, d a multiple of 16; FP8 pools use the CUDA-core kernel)");
        if (totalQ == 0 || p.MaxQ == 0) return;
        bool aligned = q.Ptr.Value % 16 == 0 && o.Ptr.Value % 16 == 0;
        if (variant == Variant.Mma && !aligned) throw new ArgumentException($"{op} (mma): Q and O must be 16-byte aligned");
        if (variant == Variant.Mma || (variant == Variant.Auto && aligned && UsesMma(q.DType, kPool.DType, d, p.MaxQ)))
        {
            RunMma(dev, q, kPool, vPool, o, p, chunk, heads, hkv, d, (float)(scale ?? 1.0 / Math.Sqrt(d)), stream);
            return;
        }
        long qTiles = QTiles(p.MaxQ, heads, hkv);
        if (qTiles * hkv > 65535) throw new ArgumentException($"{op}: Hkv·ceil(MaxQ·G/{DecRows}) = {qTiles * hkv} exceeds gridDim.y; use smaller pieces");
        int kps = keysPerSplit > 0 ? keysPerSplit : DefaultKeysPerSplit(p, heads, hkv, chunk);
        if (kps % DecTile != 0) throw new ArgumentException($"{op}: keysPerSplit = {kps} must be a multiple of {DecTile}");
        int nsplit = Splits(VisibleBound(p, chunk), kps);
        long need = WorkspaceBytes(totalQ, heads, d, nsplit);
        if (need > 0 && (workspace.IsNull || workspaceBytes < need))
            throw new ArgumentException($"{op}: {nsplit} splits need a workspace of {need} bytes, got {workspaceBytes}; pass one or raise keysPerSplit");
        string t = KernelCheck.Name(q.DType);
        float sc = (float)(scale ?? 1.0 / Math.Sqrt(d));
        var defines = Defines(d);
        ulong qp_ = q.Ptr.Value, kp = kPool.Ptr.Value, vp = vPool.Ptr.Value, op_ = o.Ptr.Value, ksc = kPool.Scale.Value, vsc = vPool.Scale.Value;
        ulong opart = workspace.Value, mlpart = need > 0 ? workspace.Value + (ulong)((long)nsplit * totalQ * heads * d * sizeof(float)) : 0;
        ulong qs = p.QStart.Value, qpos = p.QPos0.Value, sl = p.SeqSlot.Value, bt = p.BlockTable.Value;
        int bts = p.TableStride, ring = p.Ring, shift = p.Shift;
        var fn = dev.Kernels.Get(File, $"paged_attn_{t}{(f8 ? "_f8" : "")}", defines);
        void** a1 = stackalloc void*[] { &qp_, &kp, &vp, &op_, &opart, &mlpart, &qs, &qpos, &sl, &bt, &bts, &ring, &shift, &heads, &hkv, &chunk, &sc, &kps, &totalQ, &ksc, &vsc };
        // O: written here with one split, by the combine (its own cost) with several
        dev.Cost(Traffic(q, nsplit == 1 ? o : default, kPool.DType, p, hkv, d, chunk) + need, Flops(p, heads, d, chunk));
        dev.Launch(fn, new Dim3((uint)nsplit, (uint)(qTiles * hkv), (uint)p.Count), DecThreads, Attention.DecodeSharedBytes(d, kPool.DType), a1, stream);
        if (nsplit == 1) return;
        var fc = dev.Kernels.Get(File, $"paged_attn_combine_{t}", defines);
        void** a2 = stackalloc void*[] { &opart, &mlpart, &op_, &heads, &nsplit, &totalQ };
        dev.Cost(need + o.Bytes, 3.0 * nsplit * totalQ * heads * d);
        dev.Launch(fc, new Dim3((uint)totalQ, (uint)heads), CombineThreads, 0, a2, stream);
    }

    /// <summary>paged_attn_mma_bf16: a block per 64 query rows × head × sequence, O written directly (no workspace).</summary>
    static unsafe void RunMma(Device dev, Tensor q, Tensor kPool, Tensor vPool, Tensor o, Pages p, int chunk, int heads, int hkv, int d,
                              float sc, DeviceStream? stream)
    {
        ulong qp_ = q.Ptr.Value, kp = kPool.Ptr.Value, vp = vPool.Ptr.Value, op_ = o.Ptr.Value;
        ulong qs = p.QStart.Value, qpos = p.QPos0.Value, sl = p.SeqSlot.Value, bt = p.BlockTable.Value;
        int bts = p.TableStride, ring = p.Ring, shift = p.Shift;
        var fn = dev.Kernels.Get(File, "paged_attn_mma_bf16", Defines(d));
        void** a = stackalloc void*[] { &qp_, &kp, &vp, &op_, &qs, &qpos, &sl, &bt, &bts, &ring, &shift, &heads, &hkv, &chunk, &sc };
        // DRAM traffic as for every attention kernel: K/V once per sequence. The 64-row tiles × query heads re-read their
        // windows, but from L2 (the heads of a kv head run side by side; one layer's 8K-token KV is 33.5 MB for Scout).
        dev.Cost(Traffic(q, o, DType.BF16, p, hkv, d, chunk), Flops(p, heads, d, chunk));
        dev.Launch(fn, new Dim3(KernelCheck.Blocks(p.MaxQ, MmaRows), (uint)heads, (uint)p.Count), MmaThreads, 0, a, stream);
    }

    /// <summary>Compulsory traffic at the bounds: Q, O once; each sequence's visible keys and values once (a chunked
    /// layer reads at most its chunk plus the piece), FP8 scales included.</summary>
    static long Traffic(Tensor q, Tensor o, DType kvType, Pages p, int hkv, int d, int chunk)
    {
        long keys = chunk > 0 ? Math.Min(p.MaxKv, (long)chunk + p.MaxQ) : p.MaxKv;
        long per = kvType.BytesOf((long)keys * hkv * d) + (kvType == DType.F8E4M3 ? 4L * keys * hkv : 0);
        return q.Bytes + o.Bytes + 2 * per * p.Count + 4L * p.Count * ((keys + p.PageSize - 1) / p.PageSize + 3);
    }

    static double Flops(Pages p, int heads, int d, int chunk)
    {
        double qn = p.MaxQ, kvLen = p.MaxKv;
        double pairs = qn * kvLen - qn * (qn - 1) / 2;
        if (chunk > 0) pairs = Math.Min(pairs, qn * (double)chunk);
        return 4.0 * d * heads * pairs * p.Count;
    }
}
