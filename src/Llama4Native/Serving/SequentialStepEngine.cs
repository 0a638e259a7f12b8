using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Serving;

/// <summary>
/// The step engine of today: <b>the kernels and the graph do not batch sequences yet</b> (one sequence per
/// forward), so a step runs its pieces one after the other, each on its slot's own <see cref="TokenGenerator"/>
/// and <see cref="KvCache"/>. Scheduling, admission, streaming and the HTTP server are the same as they will be
/// with a batched engine; only throughput is not (aggregate tokens/s does not grow with concurrency here — see
/// bench/RESULTS.md). A batched implementation of <see cref="IStepEngine"/> (paged KV, one forward per step)
/// replaces this class.
/// <para>
/// KV memory: each slot's cache holds a whole context (<see cref="MaxContext"/> positions), made when the slot is
/// first used and kept for the next sequence; "freeing" a slot resets its cache, so capacity is counted as one
/// block of <see cref="MaxContext"/> tokens per slot. Per slot the generator keeps its graphs (one per piece
/// size), the sampler state on the device (settings, seed, step, penalty counts) — per-row sampling comes free.
/// </para>
/// <para>
/// How a sequence maps onto <see cref="TokenGenerator.Generate(IReadOnlyList{int}, GenerationOptions, ImageTiles?, CancellationToken)"/>:
/// a prefill piece that does not sample is a call with MaxNewTokens = 0 (it only feeds); the last prompt piece
/// starts the reply's enumerator (it feeds and samples the first token) and every decode step is one MoveNext
/// (it feeds the previous token and samples the next). The generator's own stops are off: the scheduler decides
/// when a sequence ends. The generator cuts a piece the way it cuts a whole prompt (MaxPiece, then powers of
/// two), and the scheduler's pieces are MaxPiece long, so a served reply is token-for-token what a lone
/// <see cref="TokenGenerator"/> gives for the same prompt and settings.
/// </para>
/// </summary>
internal sealed class SequentialStepEngine : IStepEngine
{
    readonly ModelWeights weights;
    readonly ComputeMode mode;
    readonly Slot[] slots;

    sealed class Slot
    {
        public TokenGenerator? Gen;
        public GenerationOptions Options = new();
        public ImageTiles? Images;
        public IEnumerator<int>? Reply;
        public bool Busy;
    }

    readonly KvCacheFormat kvCache;
    public int Slots => slots.Length;
    public int MaxContext { get; }
    public int KvBlockTokens => MaxContext;
    public int KvBlocks => slots.Length;
    public int MaxPrefillPiece { get; }
    public int Vocab { get; }
    public IReadOnlySet<int> ModelStops { get; }
    public int ImageToken { get; }

    /// <param name="slots">sequences held at once (each gets a KV cache of <paramref name="maxContext"/> tokens on first use)</param>
    /// <param name="kvCache">how each slot's cache stores keys and values (the compute dtype or FP8)</param>
    public SequentialStepEngine(ModelWeights weights, ComputeMode mode, int slots, int maxContext, int maxPrefillPiece = 256,
                                KvCacheFormat kvCache = KvCacheFormat.Default)
    {
        this.kvCache = kvCache;
        if (slots < 1) throw new ArgumentException($"slots ({slots}) must be ≥ 1 (--max-batch)");
        if (maxContext < 2) throw new ArgumentException($"max context ({maxContext}) must be ≥ 2 (--max-context)");
        if (maxPrefillPiece < 1) throw new ArgumentException($"max prefill piece ({maxPrefillPiece}) must be ≥ 1");
        this.weights = weights;
        this.mode = mode;
        this.slots = new Slot[slots];
        for (int i = 0; i < slots; i++) this.slots[i] = new Slot();
        MaxContext = maxContext;
        MaxPrefillPiece = Math.Min(maxPrefillPiece, maxContext);
        var c = weights.Config.Text;
        Vocab = c.VocabSize;
        ModelStops = new HashSet<int>([.. c.EosTokenIds, .. TokenGenerator.Llama4StopTokens.Where(t => t < Vocab)]);
        ImageToken = weights.Config.Vision is null ? -1 : weights.Config.ImageTokenIndex;
    }

    /// <summary>An engine over a loaded model (its device, compute mode and prefill piece).</summary>
    public static SequentialStepEngine For(Llama4Model model, int slots, int maxContext) =>
        new(model.Weights, model.Compute, slots, maxContext, Math.Min(model.Options.ServingPrefillPiece, maxContext), model.Options.KvCache) { Sharded = model.Sharded };

    /// <summary>Several devices: every slot's generator runs over these ranks (<see cref="Llama4Model"/> loaded with Devices).</summary>
    public Distributed.ShardedWeights? Sharded { get; init; }

    Slot At(int slot) => (uint)slot < (uint)slots.Length ? slots[slot] : throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} of {slots.Length}");

    public void Begin(int slot, GenerationOptions options, ImageTiles? images)
    {
        var s = At(slot);
        if (s.Busy) throw new InvalidOperationException($"slot {slot} already holds a sequence");
        options.Validate();
        s.Gen ??= Sharded is not null ? new TokenGenerator(Sharded, mode, MaxContext, MaxPrefillPiece, kvCache: kvCache)
                                      : new TokenGenerator(weights, mode, MaxContext, MaxPrefillPiece, kvCache: kvCache);
        s.Gen.Reset();
        // The scheduler owns stops and limits: the generator only feeds and samples.
        s.Options = options with { MaxNewTokens = int.MaxValue, StopAtModelStops = false, StopTokens = [], StopStrings = [] };
        s.Images = images;
        s.Busy = true;
    }

    public void Step(ReadOnlySpan<StepPiece> pieces, Span<StepResult> results)
    {
        if (results.Length < pieces.Length) throw new ArgumentException("one result per piece");
        for (int i = 0; i < pieces.Length; i++)
        {
            var p = pieces[i];
            try { results[i] = new StepResult(Run(p), null); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                results[i] = new StepResult(-1, e);
            }
        }
    }

    int Run(StepPiece p)
    {
        var s = At(p.Slot);
        if (!s.Busy) throw new InvalidOperationException($"slot {p.Slot} holds no sequence");
        var gen = s.Gen!;
        if (p.Decode)
        {
            if (s.Reply is null) throw new InvalidOperationException($"slot {p.Slot}: a decode before the prompt was fed");
            if (p.Tokens.Length != 1 || p.Tokens.Span[0] != s.Reply.Current)
                throw new InvalidOperationException($"slot {p.Slot}: a decode must feed the token sampled last ({s.Reply.Current})");
            if (!s.Reply.MoveNext()) throw new ContextLengthException($"slot {p.Slot}: the sequence is at the end of its context ({MaxContext} tokens)");
            return s.Reply.Current;
        }
        if (s.Reply is not null) throw new InvalidOperationException($"slot {p.Slot}: prompt tokens after the reply started");
        var ids = p.Tokens.ToArray();
        if (!p.Sample)
        {
            if (s.Images is not null) throw new InvalidOperationException("a prompt with images is fed in one piece (its <|patch|> rows come with it)");
            foreach (var _ in gen.Generate(ids, s.Options with { MaxNewTokens = 0 })) { }
            return -1;
        }
        s.Reply = gen.Generate(ids, s.Options, s.Images).GetEnumerator();
        s.Images = null;
        if (!s.Reply.MoveNext()) throw new InvalidOperationException($"slot {p.Slot}: the prompt gave no token");
        return s.Reply.Current;
    }

    public int Position(int slot) => At(slot).Gen?.Cache.Position ?? 0;

    public void End(int slot)
    {
        var s = At(slot);
        s.Reply?.Dispose();
        s.Reply = null;
        s.Images = null;
        s.Gen?.Reset();
        s.Busy = false;
    }

    public void Dispose()
    {
        foreach (var s in slots)
        {
            s.Reply?.Dispose();
            s.Gen?.Dispose();
        }
    }
}
