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
    readonly int descInts;
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
    public int KeysPerSplit { get; }
    public DType DType { get; }
    public DType KvDType { get; }
    /// <summary>Device bytes of the pools (codes + scales for FP8) and tables.</summary>
    public long Bytes { get; }
    public int FreePages => freeCount;
    public int UsedPages => NopePages - freeCount;

    /// <param name="pages">NoPE pages in the pool; null = enough for every slot at <paramref name="maxContext"/></param>
    /// <param name="kvDType">null = <paramref name="dtype"/>; <see cref="DType.F8E4M3"/> = e4m3 with a scale per (token, kv head)</param>
    public PagedKvCache(Device device, TextConfig config, DType dtype, int slots, int maxContext, int maxStepTokens,
                        int? pages = null, DType? kvDType = null, int pageSize = DefaultPageSize)
    {
        KvDType = kvDType ?? dtype;
        if (dtype is not (DType.F32 or DType.BF16) || (KvDType != dtype && KvDType != DType.F8E4M3))
            throw new ArgumentException($"paged kv cache: stores {dtype} as {dtype} or F8E4M3, not {KvDType}");
        if (slots < 1 || maxContext < 1 || maxStepTokens < 1)
            throw new ArgumentException($"paged kv cache: slots ({slots}), max context ({maxContext}) and max step tokens ({maxStepTokens}) must be ≥ 1");
        if (pageSize < 1 || pageSize > 4096 || (pageSize & (pageSize - 1)) != 0)
            throw new ArgumentException($"paged kv cache: page size {pageSize} must be a power of two ≤ 4096");
        dev = device; cfg = config; DType = dtype; Slots = slots; MaxContext = maxContext; MaxStepTokens = maxStepTokens; PageSize = pageSize;
        Chunk = config.AttentionChunkSize;
        NopeStride = (int)(((long)maxContext + pageSize - 1) / pageSize);
        long nopePages = pages ?? (long)slots * NopeStride;
        if (nopePages < 1 || nopePages > int.MaxValue / 2) throw new ArgumentException($"paged kv cache: {nopePages} pages is outside [1, 2^30)");
        NopePages = (int)nopePages;
        RingPages = Chunk > 0 ? Math.Min(NopeStride, (Chunk + maxStepTokens + pageSize - 1) / pageSize + 1) : 0;
        // fixed keys per split: at most MaxSplits over the longest history, whole 32-key tiles, at least 4 tiles
        KeysPerSplit = (int)Math.Max(128, ((long)maxContext + MaxSplits - 1) / MaxSplits + 31) / 32 * 32;
        int layers = config.NumHiddenLayers, hkv = config.NumKeyValueHeads, d = config.HeadDim;
        k = new DeviceBuffer?[layers]; v = new DeviceBuffer?[layers]; ks = new DeviceBuffer?[layers]; vs = new DeviceBuffer?[layers];
        nopeTable = new int[slots * NopeStride];
        Array.Fill(nopeTable, -1);
        length = new int[slots]; pagesHeld = new int[slots]; active = new bool[slots];
        freeStack = new int[NopePages];
        for (int i = 0; i < NopePages; i++) freeStack[i] = NopePages - 1 - i; // page 0 first
        freeCount = NopePages;
        descInts = 3 * slots + 1;
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
            int splits = PagedAttention.Splits(maxContext, KeysPerSplit);
            workspace = Alloc(PagedAttention.WorkspaceBytes(maxStepTokens, config.NumAttentionHeads, d, splits));
        }
        catch
        {
            foreach (var b in allocated) b.Dispose();
            throw;
        }
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
            need += PagesFor(end) - pagesHeld[slot];
        }
        if (total > MaxStepTokens) throw new ArgumentException($"paged kv cache: {total} rows in one step; this cache was built for ≤ {MaxStepTokens}");
        if (need > freeCount)
            throw new KvCacheFullException($"the step needs {need} more KV pages of {PageSize} tokens but {freeCount} of {NopePages} are free: " +
                                           "finish or cancel other sequences, or build the cache with more pages");
        foreach (var (slot, rows) in seqs)
        {
            int had = pagesHeld[slot], want = PagesFor((long)length[slot] + rows);
            if (want == had) continue;
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
            d[Slots + 1 + b] = length[seqs[b].Slot];
            d[2 * Slots + 1 + b] = seqs[b].Slot;
        }
        dev.Upload<int>(d, desc.Ptr);
        step = new PagedAttention.Pages(desc.Ptr, desc.Ptr + 4L * (Slots + 1), desc.Ptr + 4L * (2 * Slots + 1), nopeTableDev.Ptr, NopeStride,
                                        0, PageSize, seqs.Length, maxQ, maxKv);
        stepRows = total;
        stepSeqs = seqs.ToArray();
    }

    /// <summary>Appends the step's keys and values of <paramref name="layer"/>, then attends every row over its sequence.</summary>
    /// <param name="q">[T, H, d]</param><param name="kNew">[T, Hkv, d]</param><param name="vNew">[T, Hkv, d]</param><param name="o">[T, H, d]</param>
    public void StoreAndAttend(int layer, Tensor q, Tensor kNew, Tensor vNew, Tensor o, float scale, DeviceStream? stream)
    {
        if (stepRows < 0) throw new InvalidOperationException("paged kv cache: BeginStep was not called");
        if (q.Shape[0] != stepRows) throw new ArgumentException($"paged kv cache: the step has {stepRows} rows, the layer gave {q.Shape[0]}");
        bool chunked = Chunked(layer);
        var p = chunked ? step.WithRing(ropeTableDev.Ptr, RingPages, RingPages) : step;
        var (kp, vp) = Pools(layer);
        PagedAttention.Append(dev, kNew, vNew, kp, vp, p, stream);
        PagedAttention.Run(dev, q, kp, vp, o, p, chunked ? Chunk : 0, stream, scale, workspace.Ptr, workspace.Bytes, KeysPerSplit);
    }

    /// <summary>Layer <paramref name="layer"/>'s pools [pages, Hkv, P, d] (FP8: quantized tensors with scales [pages, Hkv, P]).</summary>
    public (Tensor K, Tensor V) Pools(int layer)
    {
        long pages = Chunked(layer) ? (long)Slots * RingPages : NopePages;
        var shape = new Shape(pages, cfg.NumKeyValueHeads, PageSize, cfg.HeadDim);
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
