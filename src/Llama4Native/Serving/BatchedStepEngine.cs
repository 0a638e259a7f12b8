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
/// Sampling: each slot keeps its own sampler state on the device (settings, seed, step counter, penalty counts — the
/// layout <see cref="TokenGenerator"/> uses), and its row of the step's logits is sampled with it as row 0, so the
/// Philox stream of a seed is the one a lone <see cref="TokenGenerator"/> draws: a request's tokens do not depend on
/// its row in the batch. (One small sample launch per sampling sequence; a slot indirection in sample.cu would make it one.)
/// Stops, limits and cancellation stay with the scheduler, as with <see cref="SequentialStepEngine"/>.
/// </para>
/// Not here yet: images (a request with images is refused at <see cref="Begin"/>; the sequential engine serves those),
/// CUDA-graph capture of the batched step, graphs bucketed by row count (graphs are built per (rows, sequences) and the
/// least recently used are dropped past <see cref="MaxGraphs"/>).
/// </summary>
internal sealed class BatchedStepEngine : IStepEngine
{
    /// <summary>Graphs kept (one per (rows, sequences) shape seen).</summary>
    public const int MaxGraphs = 16;
    // Sampler state per slot, one buffer: params (36 B) | step (int) @40 | chosen id (int) @44 | Σ logits (f32) @48 | counts [V] @64.
    const int StepAt = 40, IdAt = 44, SumAt = 48, CountsAt = 64;

    readonly ModelWeights weights;
    readonly ComputeMode mode;
    readonly PagedKvCache kv;
    readonly DeviceBuffer[] sampler;
    readonly DeviceBuffer ones;
    readonly GenerationOptions[] options;
    readonly int[] last;          // the token sampled last per slot (−1: none yet)
    readonly bool[] busy;
    readonly Dictionary<(int T, int B), Llama4TextGraph> graphs = [];
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

    /// <param name="slots">sequences held at once</param>
    /// <param name="maxStepTokens">rows of one forward (0 = slots + maxPrefillPiece: every decode row and one full piece)</param>
    /// <param name="pages">NoPE pages (0 = every slot at max context)</param>
    public BatchedStepEngine(ModelWeights weights, ComputeMode mode, int slots, int maxContext, int maxPrefillPiece = 256,
                             int maxStepTokens = 0, int pages = 0, KvCacheFormat kvFormat = KvCacheFormat.Default,
                             int pageSize = PagedKvCache.DefaultPageSize)
    {
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
        sampler = new DeviceBuffer[slots];
        options = new GenerationOptions[slots];
        last = new int[slots];
        busy = new bool[slots];
        try
        {
            for (int i = 0; i < slots; i++) sampler[i] = dev.Allocate(CountsAt + 4L * Vocab);
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
        if (images is not null) throw new NotSupportedException("the batched engine does not take images yet; serve image requests with the sequential engine");
        options.Validate();
        var dev = weights.Device;
        var p = new SampleParams(options.Temperature, options.TopK, options.TopP, options.MinP, options.RepetitionPenalty,
                                 options.FrequencyPenalty, options.PresencePenalty, 0).WithSeed(options.Seed);
        dev.Upload<SampleParams>([p], sampler[slot].Ptr);
        dev.Memset(sampler[slot].Ptr + StepAt, 0, 4);
        dev.Memset(sampler[slot].Ptr + CountsAt, 0, 4L * Vocab);
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
        if (p.Tokens.Length < 1 || p.Tokens.Length > MaxPrefillPiece)
            throw new ArgumentException($"slot {slot}: a piece of {p.Tokens.Length} tokens (1..{MaxPrefillPiece})");
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
        for (int b = 0; b < group.Count; b++) batch[b] = (pieces[group[b]].Slot, pieces[group[b]].Tokens);
        var g = Graph(batch.Sum(x => x.Ids.Length), batch.Length);
        var logits = g.RunBatch(batch);
        Forwards++;
        Span<int> got = stackalloc int[2];
        for (int b = 0; b < group.Count; b++)
        {
            var p = pieces[group[b]];
            if (!p.Sample) continue;
            var s = sampler[p.Slot];
            var o = options[p.Slot];
            bool penalised = o.RepetitionPenalty != 1 || o.FrequencyPenalty != 0 || o.PresencePenalty != 0;
            var row = logits.Slice(b, 1);
            Sample.Run(dev, row, s.Ptr, penalised ? s.Ptr + CountsAt : DevicePtr.Null, s.Ptr + StepAt,
                       new Tensor(s.Ptr + IdAt, DType.I32, new Shape(1)), DevicePtr.Null, update: true);
            Gemv.Run(dev, row, new Tensor(ones.Ptr, DType.BF16, new Shape(1, Vocab)), new Tensor(s.Ptr + SumAt, DType.F32, new Shape(1, 1)));
            dev.Download<int>(s.Ptr + IdAt, got);
            if (!float.IsFinite(BitConverter.Int32BitsToSingle(got[1])))
            {
                results[group[b]] = new StepResult(-1, new NonFiniteException($"slot {p.Slot}: the logits of this step are not finite", null));
                continue;
            }
            last[p.Slot] = got[0];
            results[group[b]] = new StepResult(got[0], null);
        }
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
        busy[slot] = false;
        last[slot] = -1;
    }

    public void Dispose()
    {
        foreach (var g in graphs.Values) g.Dispose();
        graphs.Clear();
        foreach (var s in sampler) s?.Dispose();
        ones?.Dispose();
        kv.Dispose();
    }
}
