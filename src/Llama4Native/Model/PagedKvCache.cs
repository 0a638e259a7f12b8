using System.Runtime.InteropServices;
using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Tensors;

namespace Llama4Native.Model;

/// <summary>No free KV page is left for a sequence's next tokens (the pool is shared by every sequence).</summary>
internal sealed class KvCacheFullException(string message) : Exception(message);

/// <summary>
/// The KV cache of MANY sequences, paged (issue #13 part 1; the long-context design of issue #15): a pool of pages of
/// <see cref="PageSize"/> token positions and a block table row per sequence slot.
/// <para>
/// NoPE (global) layers keep every token: their pages come from one free list shared by all slots (a stack of page
/// numbers: allocation and free are O(1), <see cref="FreePages"/> is what a scheduler admits by). A page number means
/// the same page in every NoPE layer's pool ([pages, Hkv, P, d] per layer), so one table row serves all those layers.
/// Chunked RoPE layers only ever attend inside their chunk: each slot owns a fixed RING of <see cref="RingPages"/> =
/// ceil((C + max step rows) / P) + 1 pages (position j lives in ring entry (j / P) mod ring), assigned when the cache is
/// built — a slot's RoPE memory is bounded and constant, passing into the next chunk costs no copy and no allocation,
/// and admission only has to count NoPE pages. (A ring beats pages-with-free here: the window moves every chunk, and
/// freeing/reallocating would churn the free list for memory the slot needs again at once.)
/// </para>
/// Page size: 64 positions by default — a whole number of the paged kernel's 32-key tiles and of a 64-key tensor-core
/// prefill tile; a sequence wastes at most 63 positions (Scout NoPE bf16: 12 layers × 8 × 128 × 2 × 2 B = 48 KiB per
/// position, 3 MB per sequence), and the table of a 10M-token sequence is 156K ints. Offsets are 64-bit in the kernels
/// (a pool of 10M tokens × 8 × 128 is 10^10 elements); positions and page numbers are int32.
/// <para>
/// A step: <see cref="BeginStep"/> with each sequence's (slot, rows) — reserves pages for the new positions (all or
/// nothing), uploads the descriptors (q_start, q_pos0, slot) and the table entries that changed; each layer's
/// <see cref="StoreAndAttend"/> appends the step's keys/values and attends for every row of every sequence in one launch;
/// <see cref="EndStep"/> advances the lengths. The split-KV grid uses a fixed number of keys per split (from the max
/// context), so a row's summation order depends only on its own sequence — a request's tokens do not depend on the batch.
/// </para>
/// <para>
/// ONE sequence (<see cref="KvCache"/>, the single-sequence view TokenGenerator, capture and the sharded graph use): one
/// slot, its pages reserved for the whole context up front (<see cref="Reserve"/>: the block table never changes during a
/// sequence, so a captured decode step stays valid), the default split rule (keys per split from the step's bound: no
/// batch to be invariant to), and descriptors laid out as kernels/step.cu's step_decode reads and advances them
/// (q_start {0, T} | kv_len | q_pos0 | kv_pos0 | seq_slot | 0 | 0), so a decode step can be advanced on the device
/// (<see cref="BeginDeviceStep"/>) with no upload.
/// </para>
/// </summary>
internal sealed class PagedKvCache : IDisposable
{
    public const int DefaultPageSize = 64;
    /// <summary>Most splits of the decode grid over the longest history (bounds the workspace).</summary>
    public const int MaxSplits = 32;

    readonly Device dev;
    readonly TextConfig cfg;
    readonly DeviceBuffer?[] k, v, ks, vs;
    readonly int[] nopeTable;       // [Slots, NopeStride]; -1 = none
    readonly int[] length;          // positions held per slot
    readonly int[] pagesHeld;       // NoPE pages per slot
    readonly bool[] active;
    readonly int[] freeStack;       // free NoPE pages; [0, freeCount) valid
    int freeCount;
    readonly DeviceBuffer nopeTableDev, ropeTableDev, desc, workspace;
    readonly int descInts, qPosAt, slotAt;   // the descriptor's int layout (see the class notes)
    readonly int launchRows;                 // one sequence: rows per launch (the grids' y limit); longer pieces go in parts
    const int PartsAt = 16;                  // one sequence: the parts' descriptor sets (8 ints each) after step_decode's two
    int stepPos0;
    readonly int heads, kvHeads;
    PagedAttention.Pages step;
    int stepRows = -1;
    (int Slot, int Rows)[] stepSeqs = [];

    public int Slots { get; }
    public int MaxContext { get; }
    /// <summary>The most rows one step holds (all sequences together).</summary>
    public int MaxStepTokens { get; }
    public int PageSize { get; }
    public int Chunk { get; }
    public int NopePages { get; }
    public int NopeStride { get; }
    public int RingPages { get; }
    /// <summary>Keys per split of the attention grid: fixed from the max context (batch invariance), or 0 = the default
    /// rule from each step's bound (a single sequence, <c>batchInvariant: false</c>).</summary>
    public int KeysPerSplit { get; }
    public DType DType { get; }
    public DType KvDType { get; }
    /// <summary>Device bytes of the pools (codes + scales for FP8) and tables.</summary>
    public long Bytes { get; }
    public int FreePages => freeCount;
    /// <summary>Bytes of the block tables (NoPE rows and RoPE rings), part of <see cref="Bytes"/>.</summary>
    public long TableBytes => 4L * (nopeTable.Length + Math.Max(1, Slots * RingPages));
    public int UsedPages => NopePages - freeCount;

    /// <param name="pages">NoPE pages in the pool; null = enough for every slot at <paramref name="maxContext"/></param>
    /// <param name="kvDType">null = <paramref name="dtype"/>; <see cref="DType.F8E4M3"/> = e4m3 with a scale per (token, kv head)</param>
    /// <param name="heads">several devices: this rank's (query heads, KV heads); null = the config's</param>
    /// <param name="batchInvariant">true: fixed keys per split (a row's sums do not depend on the batch); false: the default
    /// split rule per step (one sequence: enough splits to fill the device at any length)</param>
    public PagedKvCache(Device device, TextConfig config, DType dtype, int slots, int maxContext, int maxStepTokens,
                        int? pages = null, DType? kvDType = null, int pageSize = DefaultPageSize, (int Q, int Kv)? heads = null,
                        bool batchInvariant = true)
    {
        KvDType = kvDType ?? dtype;
        if (dtype is not (DType.F32 or DType.BF16) || (KvDType != dtype && KvDType != DType.F8E4M3))
            throw new ArgumentException($"paged kv cache: stores {dtype} as {dtype} or F8E4M3, not {KvDType}");
        if (slots < 1 || maxContext < 1 || maxStepTokens < 1)
            throw new ArgumentException($"paged kv cache: slots ({slots}), max context ({maxContext}) and max step tokens ({maxStepTokens}) must be ≥ 1");
        if (pageSize < 1 || pageSize > 4096 || (pageSize & (pageSize - 1)) != 0)
            throw new ArgumentException($"paged kv cache: page size {pageSize} must be a power of two ≤ 4096");
        dev = device; cfg = config; DType = dtype; Slots = slots; MaxContext = maxContext; MaxStepTokens = maxStepTokens; PageSize = pageSize;
        (this.heads, kvHeads) = heads ?? (config.NumAttentionHeads, config.NumKeyValueHeads);
        Chunk = config.AttentionChunkSize;
        NopeStride = (int)(((long)maxContext + pageSize - 1) / pageSize);
        long nopePages = pages ?? (long)slots * NopeStride;
        if (nopePages < 1 || nopePages > int.MaxValue / 2) throw new ArgumentException($"paged kv cache: {nopePages} pages is outside [1, 2^30)");
        NopePages = (int)nopePages;
        RingPages = RingPagesFor(Chunk, NopeStride, maxStepTokens, pageSize);
        // fixed keys per split: at most MaxSplits over the longest history, whole 32-key tiles, at least 4 tiles
        KeysPerSplit = batchInvariant ? (int)Math.Max(128, ((long)maxContext + MaxSplits - 1) / MaxSplits + 31) / 32 * 32 : 0;
        int layers = config.NumHiddenLayers, hkv = kvHeads, d = config.HeadDim;
        k = new DeviceBuffer?[layers]; v = new DeviceBuffer?[layers]; ks = new DeviceBuffer?[layers]; vs = new DeviceBuffer?[layers];
        nopeTable = new int[slots * NopeStride];
        Array.Fill(nopeTable, -1);
        length = new int[slots]; pagesHeld = new int[slots]; active = new bool[slots];
        freeStack = new int[NopePages];
        for (int i = 0; i < NopePages; i++) freeStack[i] = NopePages - 1 - i; // page 0 first
        freeCount = NopePages;
        // one slot: step_decode's layout (q_start {0,T} | kv_len | q_pos0 | kv_pos0 | seq_slot | 0 | 0), then 8 ints it
        // writes as the "RoPE" descriptor (paged RoPE layers need none: the ring is addressed by absolute position)
        launchRows = slots == 1 ? PagedAttention.MaxRowsPerLaunch(this.heads, kvHeads) : int.MaxValue;
        if (slots == 1) { descInts = PartsAt + (maxStepTokens > launchRows ? 8 * ((maxStepTokens + launchRows - 1) / launchRows) : 0); qPosAt = 3; slotAt = 5; }
        else { descInts = 3 * slots + 1; qPosAt = slots + 1; slotAt = 2 * slots + 1; }
        var allocated = new List<DeviceBuffer>();
        DeviceBuffer Alloc(long bytes) { var b = dev.Allocate(Math.Max(1, bytes)); allocated.Add(b); return b; }
        try
        {
            for (int i = 0; i < layers; i++)
            {
                long rows = (long)(Chunked(i) ? slots * RingPages : NopePages) * hkv * pageSize;
                k[i] = Alloc(KvDType.BytesOf(rows * d)); v[i] = Alloc(KvDType.BytesOf(rows * d));
                Bytes += 2 * KvDType.BytesOf(rows * d);
                if (KvDType == DType.F8E4M3) { ks[i] = Alloc(rows * 4); vs[i] = Alloc(rows * 4); Bytes += 8 * rows; }
            }
            nopeTableDev = Alloc(4L * nopeTable.Length);
            dev.Upload<int>(nopeTable, nopeTableDev.Ptr);
            var ring = new int[Math.Max(1, slots * RingPages)];
            for (int i = 0; i < ring.Length; i++) ring[i] = i; // slot s owns pages s·R .. s·R + R − 1 of the RoPE pools
            ropeTableDev = Alloc(4L * ring.Length);
            dev.Upload<int>(ring, ropeTableDev.Ptr);
            Bytes += 4L * (nopeTable.Length + ring.Length);
            desc = Alloc(4L * descInts);
            dev.Memset(desc.Ptr, 0, 4L * descInts);
            workspace = Alloc(batchInvariant
                ? PagedAttention.WorkspaceBytes(maxStepTokens, this.heads, d, PagedAttention.Splits(maxContext, KeysPerSplit))
                : PagedAttention.DefaultWorkspaceBytes(maxStepTokens, this.heads, kvHeads, d, maxContext));
        }
        catch
        {
            foreach (var b in allocated) b.Dispose();
            throw;
        }
    }

    static int RingPagesFor(int chunk, int nopeStride, int maxStepTokens, int pageSize) =>
        chunk > 0 ? (int)Math.Min(nopeStride, ((long)chunk + maxStepTokens + pageSize - 1) / pageSize + 1) : 0;

    /// <summary>The bytes a cache of <paramref name="slots"/> sequences of <paramref name="maxContext"/> tokens allocates for
    /// its pools and tables (as the constructor does; the descriptors and the split workspace aside): every NoPE layer
    /// whole pages for the context, every chunked layer its ring.</summary>
    public static long BytesFor(TextConfig c, long maxContext, int maxStepTokens, DType dtype, DType kvDType, int slots = 1,
                                int pageSize = DefaultPageSize, int? kvHeads = null)
    {
        int hkv = kvHeads ?? c.NumKeyValueHeads, d = c.HeadDim;
        int stride = (int)Math.Min(int.MaxValue, (maxContext + pageSize - 1) / pageSize);
        int ringPages = c.AttentionChunkSize > 0 ? RingPagesFor(c.AttentionChunkSize, stride, maxStepTokens, pageSize) : 0;
        long bytes = 4L * ((long)slots * stride + Math.Max(1, (long)slots * ringPages));
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            long rows = (c.UsesRope[i] && c.AttentionChunkSize > 0 ? (long)slots * ringPages : (long)slots * stride) * hkv * pageSize;
            bytes += 2 * kvDType.BytesOf(rows * d) + (kvDType == DType.F8E4M3 ? 8 * rows : 0);
        }
        return bytes;
    }

    bool Chunked(int layer) => cfg.UsesRope[layer] && Chunk > 0;

    /// <summary>Pages a sequence of <paramref name="tokens"/> positions holds.</summary>
    public int PagesFor(long tokens) => (int)((tokens + PageSize - 1) / PageSize);

    /// <summary>Positions the slot's sequence holds.</summary>
    public int Length(int slot) => length[CheckSlot(slot)];
    public bool IsActive(int slot) => active[CheckSlot(slot)];

    int CheckSlot(int slot) => (uint)slot < (uint)Slots ? slot : throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} is outside [0, {Slots})");

    /// <summary>Starts a new sequence in <paramref name="slot"/> (which must be free).</summary>
    public void Begin(int slot)
    {
        if (active[CheckSlot(slot)]) throw new InvalidOperationException($"paged kv cache: slot {slot} already holds a sequence; End it first");
        active[slot] = true; length[slot] = 0;
    }

    /// <summary>Takes pages now for the slot's first <paramref name="tokens"/> positions (one upload of the new table
    /// entries), so steps up to there take none: a single sequence reserves its whole context when it begins, which keeps
    /// the block table fixed under a captured decode step.</summary>
    public void Reserve(int slot, long tokens)
    {
        if (!active[CheckSlot(slot)]) throw new InvalidOperationException($"paged kv cache: slot {slot} holds no sequence; Begin it first");
        if (tokens > MaxContext) throw new ContextLengthException($"paged kv cache: {tokens} tokens exceed the context of {MaxContext}");
        int had = pagesHeld[slot], want = PagesFor(tokens);
        if (want <= had) return;
        if (want - had > freeCount)
            throw new KvCacheFullException($"reserving {tokens} tokens needs {want - had} more KV pages of {PageSize} tokens but {freeCount} of {NopePages} are free: " +
                                           "finish or cancel other sequences, or build the cache with more pages");
        int row = slot * NopeStride;
        for (int p = had; p < want; p++) nopeTable[row + p] = freeStack[--freeCount];
        pagesHeld[slot] = want;
        dev.Upload<int>(nopeTable.AsSpan(row + had, want - had), nopeTableDev.Ptr + 4L * (row + had));
    }

    /// <summary>Planning only (`llama4 plan` on the recording device): counts the slot's first <paramref name="tokens"/>
    /// positions as held without writing them, so one step at a long history can be recorded without its prefill. The
    /// pages must be reserved already.</summary>
    internal void AssumeLength(int slot, int tokens)
    {
        if (!active[CheckSlot(slot)] || tokens < 0 || tokens > MaxContext || PagesFor(tokens) > pagesHeld[slot])
            throw new InvalidOperationException($"paged kv cache: slot {slot} cannot hold {tokens} positions (reserve its pages first)");
        length[slot] = tokens;
    }

    /// <summary>Ends the slot's sequence and returns its pages to the pool at once (O(pages held)).</summary>
    public void End(int slot)
    {
        if (!active[CheckSlot(slot)]) return;
        int row = slot * NopeStride;
        for (int p = pagesHeld[slot] - 1; p >= 0; p--) { freeStack[freeCount++] = nopeTable[row + p]; nopeTable[row + p] = -1; }
        pagesHeld[slot] = 0; length[slot] = 0; active[slot] = false;
    }

    /// <summary>
    /// Starts a step: <paramref name="seqs"/> (slot, rows) in the order of the packed rows. Checks context and pages for
    /// every sequence first, then takes the pages (all or nothing), uploads the new table entries and the descriptors.
    /// With <paramref name="kvBucket"/> &gt; 0 the step's key bound (the attention grids' size) is rounded up to a multiple
    /// of it (capped at the context): a captured step stays valid while the bound does not move. The kernels read each
    /// row's length from the descriptors and split keys at fixed offsets, so the bound changes no result.
    /// </summary>
    public void BeginStep(ReadOnlySpan<(int Slot, int Rows)> seqs, int kvBucket = 0)
    {
        if (seqs.Length < 1 || seqs.Length > Slots) throw new ArgumentException($"paged kv cache: a step holds 1..{Slots} sequences, got {seqs.Length}");
        int total = 0, maxQ = 0, maxKv = 0, need = 0;
        Span<bool> seen = Slots <= 1024 ? stackalloc bool[Slots] : new bool[Slots];
        foreach (var (slot, rows) in seqs)
        {
            if (!active[CheckSlot(slot)]) throw new InvalidOperationException($"paged kv cache: slot {slot} holds no sequence; Begin it first");
            if (seen[slot]) throw new ArgumentException($"paged kv cache: slot {slot} appears twice in one step");
            seen[slot] = true;
            if (rows < 1) throw new ArgumentException($"paged kv cache: slot {slot} has {rows} rows in the step (≥ 1)");
            long end = (long)length[slot] + rows;
            if (end > MaxContext)
                throw new ContextLengthException($"the sequence would reach {end} tokens but the context is {MaxContext}: " +
                                                 "shorten the prompt or max new tokens, or load the model with a larger max context");
            total += rows; maxQ = Math.Max(maxQ, rows); maxKv = (int)Math.Max(maxKv, end);
            need += Math.Max(0, PagesFor(end) - pagesHeld[slot]);
        }
        if (total > MaxStepTokens) throw new ArgumentException($"paged kv cache: {total} rows in one step; this cache was built for ≤ {MaxStepTokens}");
        if (need > freeCount)
            throw new KvCacheFullException($"the step needs {need} more KV pages of {PageSize} tokens but {freeCount} of {NopePages} are free: " +
                                           "finish or cancel other sequences, or build the cache with more pages");
        foreach (var (slot, rows) in seqs)
        {
            int had = pagesHeld[slot], want = PagesFor((long)length[slot] + rows);
            if (want <= had) continue; // reserved before
            int row = slot * NopeStride;
            for (int p = had; p < want; p++) nopeTable[row + p] = freeStack[--freeCount];
            pagesHeld[slot] = want;
            dev.Upload<int>(nopeTable.AsSpan(row + had, want - had), nopeTableDev.Ptr + 4L * (row + had));
        }
        if (kvBucket > 0) maxKv = (int)Math.Min(MaxContext, ((long)maxKv + kvBucket - 1) / kvBucket * kvBucket);
        var d = new int[descInts];
        for (int b = 0; b < seqs.Length; b++)
        {
            d[b + 1] = d[b] + seqs[b].Rows;
            d[qPosAt + b] = length[seqs[b].Slot];
            d[slotAt + b] = seqs[b].Slot;
        }
        if (Slots == 1)
        {
            d[2] = length[seqs[0].Slot] + seqs[0].Rows; // kv_len, as step_decode keeps it
            for (int r = 0, j = 0; total > launchRows && r < total; r += launchRows, j++)
            {   // a piece past the grids' limit: one descriptor set per part of ≤ launchRows rows
                int at = PartsAt + 8 * j;
                d[at + 1] = Math.Min(launchRows, total - r);
                d[at + 3] = length[seqs[0].Slot] + r;
                d[at + 5] = seqs[0].Slot;
            }
        }
        stepPos0 = length[seqs[0].Slot];
        dev.Upload<int>(d, desc.Ptr);
        step = Descriptors(seqs.Length, maxQ, maxKv);
        stepRows = total;
        stepSeqs = seqs.ToArray();
    }

    PagedAttention.Pages Descriptors(int count, int maxQ, int maxKv) =>
        new(desc.Ptr, desc.Ptr + 4L * qPosAt, desc.Ptr + 4L * slotAt, nopeTableDev.Ptr, NopeStride, 0, PageSize, count, maxQ, maxKv);

    /// <summary>One sequence: step_decode's descriptors (<see cref="Step.Decode"/>'s rope_desc, nope_desc): the second is
    /// what the paged kernels read (q_start, q_pos0, seq_slot), the first is scratch the step writes and nothing reads.</summary>
    public (DevicePtr Rope, DevicePtr Nope) StepDescriptors =>
        Slots == 1 ? (desc.Ptr + Step.DescriptorBytes, desc.Ptr) : throw new InvalidOperationException("device-advanced steps are for a one-slot cache");

    /// <summary>The grid bound of a one-token step of slot 0 at its current length: the history rounded up to
    /// <paramref name="bucket"/> keys (at most the context). Kernels read the true length from the descriptors, so a
    /// captured step is valid while this is unchanged.</summary>
    public int DeviceStepBound(int bucket) => (int)Math.Min(MaxContext, ((long)length[0] + 1 + bucket - 1) / bucket * bucket);

    /// <summary>
    /// Starts a one-token step of slot 0 (a one-slot cache) whose descriptors <see cref="Step.Decode"/> advances on the
    /// device: checks room (the pages were reserved), uploads nothing; the grids are sized for <see cref="DeviceStepBound"/>.
    /// </summary>
    public void BeginDeviceStep(int bucket)
    {
        if (Slots != 1) throw new InvalidOperationException("device-advanced steps are for a one-slot cache");
        if (!active[0]) throw new InvalidOperationException("paged kv cache: slot 0 holds no sequence; Begin it first");
        long end = (long)length[0] + 1;
        if (end > MaxContext)
            throw new ContextLengthException($"the sequence would reach {end} tokens but the context is {MaxContext}: " +
                                             "shorten the prompt or max new tokens, or load the model with a larger max context");
        if (PagesFor(end) > pagesHeld[0]) throw new InvalidOperationException($"paged kv cache: position {end - 1} has no page; Reserve the context first");
        step = Descriptors(1, 1, DeviceStepBound(bucket));
        stepRows = 1;
        stepSeqs = [(0, 1)];
    }

    /// <summary>Appends the step's keys and values of <paramref name="layer"/>, then attends every row over its sequence.</summary>
    /// <param name="q">[T, H, d]</param><param name="kNew">[T, Hkv, d]</param><param name="vNew">[T, Hkv, d]</param><param name="o">[T, H, d]</param>
    public void StoreAndAttend(int layer, Tensor q, Tensor kNew, Tensor vNew, Tensor o, float scale, DeviceStream? stream)
    {
        if (stepRows < 0) throw new InvalidOperationException("paged kv cache: BeginStep was not called");
        if (q.Shape[0] != stepRows) throw new ArgumentException($"paged kv cache: the step has {stepRows} rows, the layer gave {q.Shape[0]}");
        bool chunked = Chunked(layer);
        var (kp, vp) = Pools(layer);
        PagedAttention.Pages Ring(PagedAttention.Pages s) => chunked ? s.WithRing(ropeTableDev.Ptr, RingPages, RingPages) : s;
        if (stepRows <= launchRows)
        {
            var p = Ring(step);
            PagedAttention.Append(dev, kNew, vNew, kp, vp, p, stream);
            PagedAttention.Run(dev, q, kp, vp, o, p, chunked ? Chunk : 0, stream, scale, workspace.Ptr, workspace.Bytes, KeysPerSplit);
            return;
        }
        // one sequence's piece past the grids' limit: its parts in order, each appended before it attends (causal across parts)
        for (int r = 0, j = 0; r < stepRows; r += launchRows, j++)
        {
            int n = Math.Min(launchRows, stepRows - r);
            var at = desc.Ptr + 4L * (PartsAt + 8 * j);
            var p = Ring(new PagedAttention.Pages(at, at + 4L * qPosAt, at + 4L * slotAt, nopeTableDev.Ptr, NopeStride, 0, PageSize, 1, n, stepPos0 + r + n));
            PagedAttention.Append(dev, kNew.Slice(r, n), vNew.Slice(r, n), kp, vp, p, stream);
            PagedAttention.Run(dev, q.Slice(r, n), kp, vp, o.Slice(r, n), p, chunked ? Chunk : 0, stream, scale, workspace.Ptr, workspace.Bytes, KeysPerSplit);
        }
    }

    /// <summary>Layer <paramref name="layer"/>'s pools [pages, Hkv, P, d] (FP8: quantized tensors with scales [pages, Hkv, P]).</summary>
    public (Tensor K, Tensor V) Pools(int layer)
    {
        long pages = Chunked(layer) ? (long)Slots * RingPages : NopePages;
        var shape = new Shape(pages, kvHeads, PageSize, cfg.HeadDim);
        if (ks[layer] is null) return (new Tensor(k[layer]!.Ptr, KvDType, shape), new Tensor(v[layer]!.Ptr, KvDType, shape));
        return (Tensor.Quantized(k[layer]!.Ptr, KvDType, shape, ks[layer]!.Ptr, cfg.HeadDim),
                Tensor.Quantized(v[layer]!.Ptr, KvDType, shape, vs[layer]!.Ptr, cfg.HeadDim));
    }

    /// <summary>The current step's key bound (<see cref="BeginStep"/>; with a bucket, rounded up).</summary>
    public int StepKvBound => step.MaxKv;

    /// <summary>The step's sequences (slot, rows), in row order.</summary>
    public ReadOnlySpan<(int Slot, int Rows)> StepSequences => stepSeqs;

    /// <summary>Ends the step: every sequence in it advances by its rows.</summary>
    public void EndStep()
    {
        if (stepRows < 0) throw new InvalidOperationException("paged kv cache: EndStep without BeginStep");
        foreach (var (slot, rows) in stepSeqs) length[slot] += rows;
        stepRows = -1;
    }

    /// <summary>Drops a step that failed mid-way: lengths do not move (the pages it took stay with their sequences).</summary>
    public void AbortStep() => stepRows = -1;

    public void Dispose()
    {
        foreach (var b in k.Concat(v).Concat(ks).Concat(vs)) b?.Dispose();
        nopeTableDev.Dispose(); ropeTableDev.Dispose(); desc.Dispose(); workspace.Dispose();
    }
}
