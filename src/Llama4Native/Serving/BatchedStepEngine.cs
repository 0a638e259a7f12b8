using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Kernels;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Serving;

/// <summary>
/// The batched step engine (issue #13 part 1): a step's pieces — decode rows and prefill pieces of different sequences —
/// run as ONE forward of <see cref="Llama4TextGraph"/> over a <see cref="PagedKvCache"/> (several forwards only when the
/// step holds more rows than <see cref="MaxStepTokens"/>). KV is counted in pages: <see cref="KvBlockTokens"/> =
/// the page size, <see cref="KvBlocks"/> = the NoPE pages, so the scheduler admits by free pages and a retired
/// sequence's pages return at once (<see cref="End"/>).
/// <para>
/// Sampling: each slot keeps its own sampler state on the device (settings, seed, step counter, penalty counts, in
/// buffers indexed by slot), and the step's sampling rows are sampled in ONE launch (sample_slots_f32: row b uses the
/// state of its slot and draws as row 0), so the Philox stream of a seed is the one a lone <see cref="TokenGenerator"/>
/// draws: a request's tokens do not depend on its row in the batch. One GEMV per 8 rows sums each row (the
/// non-finite check), and one download brings back every id and sum.
/// Stops, limits and cancellation stay with the scheduler, as with <see cref="SequentialStepEngine"/>.
/// </para>
/// Images: <see cref="Begin"/> encodes a request's tiles with the vision graph (one per engine, re-planned for more
/// tiles) and keeps the slot's projected rows; its prompt comes as one piece (the scheduler keeps an image prompt
/// whole), which the engine feeds in pieces of <see cref="MaxPrefillPiece"/> — the leading ones in forwards of their
/// own, the last in the step's batch with everyone else — each piece with the rows of its own &lt;|patch|&gt; tokens.
/// Capture (<see cref="CaptureDecode"/>): a decode-only step is one captured graph per (rows, key bound) — see
/// <see cref="CapturedDecode"/>; steps with prefill pieces run eagerly.
/// Batch invariance: in fp32 a sequence's logits are bit for bit the same alone and in any batch (the graph's linears
/// run as GEMVs of ≤ 8 rows whatever the row count); in bf16 within the bf16 tolerances (the GEMV/GEMM switch is kept).
/// Not here yet: graphs bucketed by row count (padding B to 1, 2, 4, 8 …): graphs and captures are per exact (rows,
/// sequences), the least recently used graphs dropped past <see cref="MaxGraphs"/> with their captures; the per-step
/// uploads (ids, positions, descriptors, slot map) are host copies before the replay, not a device-side step kernel.
/// </summary>
internal sealed class BatchedStepEngine : IStepEngine
{
    /// <summary>Graphs kept (one per (rows, sequences) shape seen).</summary>
    public const int MaxGraphs = 16;
    // Sampler state, indexed by slot: params [Slots] (36 B each), steps [Slots] int, counts [Slots, V] int.
    // Per forward: the sampling rows' slots [≤ Slots] int, then ids [B] int and Σ logits [B] f32 back to back (one download).

    readonly ModelWeights weights;
    readonly ComputeMode mode;
    readonly PagedKvCache kv;
    readonly DeviceBuffer sampleParams, sampleSteps, sampleCounts, sampleIo, sampleRows;
    readonly DeviceBuffer ones;
    readonly GenerationOptions[] options;
    readonly int[] last;          // the token sampled last per slot (−1: none yet)
    readonly bool[] busy;
    readonly Dictionary<(int T, int B), Llama4TextGraph> graphs = [];
    // Images per slot: the projected rows of its prompt's images [rows, D] (device), how many rows the pieces fed so far.
    readonly DeviceBuffer?[] imageBuf;
    readonly int[] imageRows, imageFed;
    Llama4VisionGraph? vision;
    readonly LinkedList<(int T, int B)> lru = new();

    public int Slots { get; }
    public int MaxContext { get; }
    public int KvBlockTokens => kv.PageSize;
    public int KvBlocks => kv.NopePages;
    public int MaxPrefillPiece { get; }
    public int MaxStepTokens { get; }
    public int Vocab { get; }
    public IReadOnlySet<int> ModelStops { get; }
    public int ImageToken { get; }
    /// <summary>The paged cache (pages used/free for metrics).</summary>
    public PagedKvCache Cache => kv;
    /// <summary>Forwards run so far (a step is one forward unless it holds more than <see cref="MaxStepTokens"/> rows).</summary>
    public long Forwards { get; private set; }
    /// <summary>The logits [B, V] f32 of the last forward, on the device (valid until that graph runs again; for tests).</summary>
    internal Tensor LastLogits { get; private set; }
    /// <summary>Decode-only steps are captured (<see cref="CapturedDecode"/>).</summary>
    public bool CaptureDecode { get; }
    /// <summary>Captured steps are keyed by the key bound rounded up to this many keys.</summary>
    public int CaptureKvBucket { get; }
    /// <summary>Captured decode steps held, and replays so far.</summary>
    public int CapturedSteps => stepGraphs.Count;
    public long GraphReplays { get; private set; }
    readonly Dictionary<(int B, int Bound), DeviceGraph> stepGraphs = [];
    readonly HashSet<(int B, int Bound)> warmed = [];

    /// <param name="slots">sequences held at once</param>
    /// <param name="maxStepTokens">rows of one forward (0 = slots + maxPrefillPiece: every decode row and one full piece)</param>
    /// <param name="pages">NoPE pages (0 = every slot at max context)</param>
    public BatchedStepEngine(ModelWeights weights, ComputeMode mode, int slots, int maxContext, int maxPrefillPiece = 256,
                             int maxStepTokens = 0, int pages = 0, KvCacheFormat kvFormat = KvCacheFormat.Default,
                             int pageSize = PagedKvCache.DefaultPageSize, bool captureDecode = false, int captureKvBucket = KvCache.KvBucket)
    {
        if (captureDecode && !weights.Device.CanCapture) throw new NotSupportedException($"{weights.Device.Name} cannot capture graphs");
        if (captureKvBucket < 1) throw new ArgumentException($"capture kv bucket ({captureKvBucket}) must be ≥ 1");
        CaptureDecode = captureDecode;
        CaptureKvBucket = captureKvBucket;
        if (slots < 1) throw new ArgumentException($"slots ({slots}) must be ≥ 1 (--max-batch)");
        if (maxContext < 2) throw new ArgumentException($"max context ({maxContext}) must be ≥ 2 (--max-context)");
        if (maxPrefillPiece < 1) throw new ArgumentException($"max prefill piece ({maxPrefillPiece}) must be ≥ 1");
        this.weights = weights;
        this.mode = mode;
        Slots = slots;
        MaxContext = maxContext;
        MaxPrefillPiece = Math.Min(maxPrefillPiece, maxContext);
        MaxStepTokens = maxStepTokens > 0 ? Math.Max(maxStepTokens, MaxPrefillPiece) : slots + MaxPrefillPiece;
        var c = weights.Config.Text;
        Vocab = c.VocabSize;
        ModelStops = new HashSet<int>([.. c.EosTokenIds, .. TokenGenerator.Llama4StopTokens.Where(t => t < Vocab)]);
        ImageToken = weights.Config.Vision is null ? -1 : weights.Config.ImageTokenIndex;
        var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
        var dev = weights.Device;
        kv = new PagedKvCache(dev, c, act, slots, maxContext, MaxStepTokens, pages > 0 ? pages : null,
                              kvFormat == KvCacheFormat.Fp8 ? DType.F8E4M3 : null, pageSize);
        options = new GenerationOptions[slots];
        last = new int[slots];
        busy = new bool[slots];
        imageBuf = new DeviceBuffer?[slots];
        imageRows = new int[slots];
        imageFed = new int[slots];
        try
        {
            sampleParams = dev.Allocate((long)SampleParams.Size * slots);
            sampleSteps = dev.Allocate(4L * slots);
            sampleCounts = dev.Allocate(4L * slots * Vocab);
            sampleIo = dev.Allocate(8L * slots);
            sampleRows = dev.Allocate(8L * slots);
            ones = Ops.DeviceData.Upload(dev, Enumerable.Repeat(1f, Vocab).ToArray(), DType.BF16);
        }
        catch { Dispose(); throw; }
    }

    /// <summary>An engine over a loaded model (its device, compute mode, prefill piece and KV format).</summary>
    public static BatchedStepEngine For(Llama4Model model, int slots, int maxContext) =>
        new(model.Weights, model.Compute, slots, maxContext, Math.Min(model.Options.ServingPrefillPiece, maxContext),
            kvFormat: model.Options.KvCache);

    int At(int slot) => (uint)slot < (uint)Slots ? slot : throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} of {Slots}");

    public void Begin(int slot, GenerationOptions options, ImageTiles? images)
    {
        if (busy[At(slot)]) throw new InvalidOperationException($"slot {slot} already holds a sequence");
        options.Validate();
        var dev = weights.Device;
        imageRows[slot] = imageFed[slot] = 0;
        if (images is not null)
        {
            var vc = weights.Config.Vision ?? throw new NotSupportedException("the request has images but this model has no vision tower (a text-only checkpoint)");
            images.Check(vc);
            if (vision is null || vision.MaxTiles < images.Count)
            {
                vision?.Dispose();
                vision = null;
                vision = new Llama4VisionGraph(weights, images.Count, mode);
            }
            var rows = vision.Forward(images.Pixels, images.Count);
            if (imageBuf[slot] is not { } buf || buf.Bytes < rows.Bytes) { imageBuf[slot]?.Dispose(); imageBuf[slot] = null; imageBuf[slot] = dev.Allocate(rows.Bytes); }
            dev.CopyDeviceToDevice(rows.Ptr, imageBuf[slot]!.Ptr, rows.Bytes);
            imageRows[slot] = (int)rows.Shape[0];
        }
        var p = new SampleParams(options.Temperature, options.TopK, options.TopP, options.MinP, options.RepetitionPenalty,
                                 options.FrequencyPenalty, options.PresencePenalty, 0).WithSeed(options.Seed);
        dev.Upload<SampleParams>([p], sampleParams.Ptr + (long)SampleParams.Size * slot);
        dev.Memset(sampleSteps.Ptr + 4L * slot, 0, 4);
        dev.Memset(sampleCounts.Ptr + 4L * slot * Vocab, 0, 4L * Vocab);
        kv.Begin(slot);
        this.options[slot] = options;
        last[slot] = -1;
        busy[slot] = true;
    }

    public void Step(ReadOnlySpan<StepPiece> pieces, Span<StepResult> results)
    {
        if (results.Length < pieces.Length) throw new ArgumentException("one result per piece");
        // Check each piece alone first: a bad piece fails only its own sequence.
        var ok = new List<int>(pieces.Length);
        var seen = new HashSet<int>();
        for (int i = 0; i < pieces.Length; i++)
        {
            results[i] = new StepResult(-1, null);
            try { Check(pieces[i], seen); ok.Add(i); }
            catch (Exception e) when (e is not OutOfMemoryException) { results[i] = new StepResult(-1, e); }
        }
        // An image prompt comes whole: its leading pieces of MaxPrefillPiece run first in forwards of their own.
        var work = pieces.ToArray();
        for (int j = ok.Count - 1; j >= 0; j--)
        {
            int i = ok[j];
            var p = work[i];
            if (p.Tokens.Length <= MaxPrefillPiece) continue;
            try
            {
                int at = 0;
                for (; p.Tokens.Length - at > MaxPrefillPiece; at += MaxPrefillPiece)
                    Forward([p with { Tokens = p.Tokens.Slice(at, MaxPrefillPiece), Sample = false }], [0], results.Slice(i, 1));
                work[i] = p with { Tokens = p.Tokens[at..] };
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                results[i] = new StepResult(-1, e);
                ok.RemoveAt(j);
            }
        }
        pieces = work;
        // Forwards of at most MaxStepTokens rows, pieces in order.
        for (int at = 0; at < ok.Count;)
        {
            int rows = 0, end = at;
            while (end < ok.Count && rows + pieces[ok[end]].Tokens.Length <= MaxStepTokens) rows += pieces[ok[end++]].Tokens.Length;
            var group = ok.GetRange(at, end - at);
            at = end;
            try { Forward(pieces, group, results); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                foreach (int i in group) results[i] = new StepResult(-1, e);
            }
        }
    }

    void Check(in StepPiece p, HashSet<int> seen)
    {
        int slot = At(p.Slot);
        if (!busy[slot]) throw new InvalidOperationException($"slot {slot} holds no sequence");
        if (!seen.Add(slot)) throw new InvalidOperationException($"slot {slot} has two pieces in one step");
        bool wholeImagePrompt = imageRows[slot] > 0 && !p.Decode && kv.Length(slot) == 0 && p.Sample;
        if (p.Tokens.Length < 1 || p.Tokens.Length > MaxPrefillPiece && !wholeImagePrompt)
            throw new ArgumentException($"slot {slot}: a piece of {p.Tokens.Length} tokens (1..{MaxPrefillPiece}; a prompt with images may come whole)");
        if (!p.Decode && ImageToken >= 0)
        {   // the rows a prompt piece's <|patch|> tokens take must exist; the prompt's last piece must use them all
            int k = EarlyFusion.CountPatches(p.Tokens.Span, ImageToken), left = imageRows[slot] - imageFed[slot];
            if (k > left || p.Sample && k != left)
                throw new ImageTokenMismatchException(imageRows[slot] == 0
                    ? $"slot {slot}: the prompt has <|patch|> tokens ({ImageToken}) but the request has no images"
                    : $"slot {slot}: the prompt has {imageFed[slot] + k}{(p.Sample ? "" : "+")} <|patch|> tokens but its images give {imageRows[slot]} rows",
                    imageFed[slot] + k, imageRows[slot]);
        }
        if (p.Decode)
        {
            if (last[slot] < 0) throw new InvalidOperationException($"slot {slot}: a decode before the prompt was fed");
            if (p.Tokens.Length != 1 || p.Tokens.Span[0] != last[slot])
                throw new InvalidOperationException($"slot {slot}: a decode must feed the token sampled last ({last[slot]})");
        }
        else if (last[slot] >= 0) throw new InvalidOperationException($"slot {slot}: prompt tokens after the reply started");
        if ((long)kv.Length(slot) + p.Tokens.Length > MaxContext)
            throw new ContextLengthException($"slot {slot}: the sequence would reach {kv.Length(slot) + p.Tokens.Length} tokens but the context is {MaxContext}");
    }

    void Forward(ReadOnlySpan<StepPiece> pieces, List<int> group, Span<StepResult> results)
    {
        var dev = weights.Device;
        var batch = new (int Slot, ReadOnlyMemory<int> Ids)[group.Count];
        Tensor?[]? fused = null;
        for (int b = 0; b < group.Count; b++)
        {
            var p = pieces[group[b]];
            batch[b] = (p.Slot, p.Tokens);
            if (p.Decode || imageRows[p.Slot] == 0) continue;
            int k = EarlyFusion.CountPatches(p.Tokens.Span, ImageToken);
            if (k == 0) continue;
            var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
            long d = weights.Config.Text.HiddenSize;
            fused ??= new Tensor?[group.Count];
            fused[b] = new Tensor(imageBuf[p.Slot]!.Ptr + act.BytesOf(imageFed[p.Slot] * d), act, new Shape(k, d));
            imageFed[p.Slot] += k;
        }
        var g = Graph(batch.Sum(x => x.Ids.Length), batch.Length);
        bool decodeOnly = CaptureDecode && fused is null;
        for (int b = 0; b < group.Count && decodeOnly; b++) decodeOnly = pieces[group[b]].Decode && pieces[group[b]].Sample;
        if (decodeOnly) { CapturedDecode(pieces, group, results, g, batch); return; }
        var logits = g.RunBatch(batch, imageRows: fused);
        LastLogits = logits;
        Forwards++;
        // The sampling rows (every piece samples but a prompt piece that is not the prompt's last).
        var rows = new List<int>(group.Count);
        for (int b = 0; b < group.Count; b++) if (pieces[group[b]].Sample) rows.Add(b);
        if (rows.Count == 0) return;
        Tensor sampled = logits;
        if (rows.Count < group.Count) // gather the sampling rows (the embedding kernel gathers rows of any width)
        {
            var at = new Tensor(sampleRows.Ptr + 4L * Slots, DType.I32, new Shape(rows.Count));
            dev.Upload<int>(rows.ToArray(), at.Ptr);
            sampled = new Tensor(GatherBuffer(rows.Count).Ptr, DType.F32, new Shape(rows.Count, Vocab));
            Embedding.Run(dev, at, logits, sampled, DevicePtr.Null);
        }
        int n = rows.Count;
        var slotsOf = new int[n];
        for (int r = 0; r < n; r++) slotsOf[r] = pieces[group[rows[r]]].Slot;
        var slotT = new Tensor(sampleRows.Ptr, DType.I32, new Shape(n));
        dev.Upload<int>(slotsOf, slotT.Ptr);
        var ids = new Tensor(sampleIo.Ptr, DType.I32, new Shape(n));
        var sums = new Tensor(sampleIo.Ptr + 4L * n, DType.F32, new Shape(n, 1));
        SampleRows(dev, sampled, slotT, ids, sums);
        Results(pieces, group, rows, results);
    }

    /// <summary>Brings back the ids and sums of the sampled <paramref name="rows"/> (one download) and answers their pieces.</summary>
    void Results(ReadOnlySpan<StepPiece> pieces, List<int> group, List<int> rows, Span<StepResult> results)
    {
        int n = rows.Count;
        var got = new int[2 * n];
        weights.Device.Download<int>(sampleIo.Ptr, got);
        for (int r = 0; r < n; r++)
        {
            var i = group[rows[r]];
            int slot = pieces[i].Slot;
            if (!float.IsFinite(BitConverter.Int32BitsToSingle(got[n + r])))
            {
                results[i] = new StepResult(-1, new NonFiniteException($"slot {slot}: the logits of this step are not finite", null));
                continue;
            }
            last[slot] = got[r];
            results[i] = new StepResult(got[r], null);
        }
    }

    /// <summary>
    /// A decode-only step (every row one token, every row sampled) with <see cref="CaptureDecode"/>: the host uploads the
    /// step's ids, positions, last rows, descriptors, new block-table entries and the sampling slot map into the graph's
    /// and the cache's static buffers (<see cref="Llama4TextGraph.BeginBatch"/>); the nodes and the one-launch sampler are
    /// then one captured graph per (rows B, key bound) — the bound rounded up to <see cref="CaptureKvBucket"/> keys, so
    /// a sequence growing re-captures every bucket, not every token — recorded the second time such a step runs (the
    /// first runs eagerly: kernels load outside any capture) and replayed after that. Results are the uncaptured step's
    /// bit for bit: the same launches with the same arguments.
    /// </summary>
    void CapturedDecode(ReadOnlySpan<StepPiece> pieces, List<int> group, Span<StepResult> results, Llama4TextGraph g,
                        (int Slot, ReadOnlyMemory<int> Ids)[] batch)
    {
        var dev = weights.Device;
        int n = group.Count;
        var slotsOf = new int[n];
        for (int r = 0; r < n; r++) slotsOf[r] = pieces[group[r]].Slot;
        g.BeginBatch(batch, null, CaptureKvBucket);
        bool ok = false;
        try
        {
            dev.Upload<int>(slotsOf, sampleRows.Ptr);
            var key = (n, kv.StepKvBound);
            var logits = g.Plan[g.Logits];
            var slotT = new Tensor(sampleRows.Ptr, DType.I32, new Shape(n));
            var ids = new Tensor(sampleIo.Ptr, DType.I32, new Shape(n));
            var sums = new Tensor(sampleIo.Ptr + 4L * n, DType.F32, new Shape(n, 1));
            if (stepGraphs.TryGetValue(key, out var graph)) { graph.Launch(); GraphReplays++; }
            else if (warmed.Add(key)) { g.RunBatchNodes(); SampleRows(dev, logits, slotT, ids, sums); }
            else
            {
                var captured = dev.Capture(() => { g.RunBatchNodes(); SampleRows(dev, logits, slotT, ids, sums); });
                stepGraphs[key] = captured;
                captured.Launch();
                GraphReplays++;
            }
            ok = true;
        }
        finally { g.EndBatch(ok); }
        LastLogits = g.Plan[g.Logits];
        Forwards++;
        Results(pieces, group, Enumerable.Range(0, n).ToList(), results);
    }

    /// <summary>Drops the captured steps of B rows (their graph of B rows is gone).</summary>
    void DropCaptured(int rows)
    {
        foreach (var k in stepGraphs.Keys.Where(k => k.B == rows).ToList()) { stepGraphs.Remove(k, out var c); c!.Dispose(); }
        warmed.RemoveWhere(k => k.B == rows);
    }

    /// <summary>One launch samples every row of <paramref name="logits"/> [n, V] with its slot's state (penalty counts
    /// always passed: with penalties off they change nothing, bit for bit), then Σ row per 8 rows (non-finite check).</summary>
    void SampleRows(Device dev, Tensor logits, Tensor slotT, Tensor ids, Tensor sums, DeviceStream? stream = null)
    {
        int n = (int)logits.Shape[0];
        Sample.RunSlots(dev, logits, sampleParams.Ptr, sampleCounts.Ptr, sampleSteps.Ptr, slotT, ids, DevicePtr.Null, update: true, Slots, stream);
        var oneRow = new Tensor(ones.Ptr, DType.BF16, new Shape(1, Vocab));
        for (int r = 0; r < n; r += Gemv.MaxRows)
        {
            int m = Math.Min(Gemv.MaxRows, n - r);
            Gemv.Run(dev, logits.Slice(r, m), oneRow, sums.Slice(r, m), stream);
        }
    }

    DeviceBuffer? gather;
    DeviceBuffer GatherBuffer(int rows)
    {
        if (gather is null || gather.Bytes < 4L * rows * Vocab) { gather?.Dispose(); gather = weights.Device.Allocate(4L * Slots * Vocab); }
        return gather;
    }

    Llama4TextGraph Graph(int tokens, int sequences)
    {
        var key = (tokens, sequences);
        if (graphs.TryGetValue(key, out var g)) { lru.Remove(key); lru.AddFirst(key); return g; }
        if (graphs.Count >= MaxGraphs)
        {
            var old = lru.Last!.Value;
            lru.RemoveLast();
            graphs.Remove(old, out var gone);
            if (old.T == old.B) DropCaptured(old.B);
            gone!.Dispose();
        }
        g = new Llama4TextGraph(weights, tokens, sequences, mode, kv);
        graphs[key] = g;
        lru.AddFirst(key);
        return g;
    }

    public int Position(int slot) => kv.IsActive(At(slot)) ? kv.Length(slot) : 0;

    public void End(int slot)
    {
        if (!busy[At(slot)]) return;
        kv.End(slot);
        imageRows[slot] = imageFed[slot] = 0;
        busy[slot] = false;
        last[slot] = -1;
    }

    public void Dispose()
    {
        foreach (var c in stepGraphs.Values) c.Dispose();
        stepGraphs.Clear();
        foreach (var g in graphs.Values) g.Dispose();
        graphs.Clear();
        sampleParams?.Dispose(); sampleSteps?.Dispose(); sampleCounts?.Dispose(); sampleIo?.Dispose(); sampleRows?.Dispose();
        gather?.Dispose();
        foreach (var b in imageBuf) b?.Dispose();
        vision?.Dispose();
        ones?.Dispose();
        kv.Dispose();
    }
}
