using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Generation;

/// <summary>
/// Token-level generation over one sequence: the prompt is prefilled in pieces of at most
/// <see cref="MaxPiece"/> tokens, then one token per step, through a <see cref="KvCache"/>. Calls continue
/// the same sequence (a conversation): the last token produced by one call is fed at the start of the next,
/// so the history in the cache is exactly what was generated. Cancellation is honoured between tokens and
/// leaves the sequence usable. Tokens are chosen on the device (kernels/sample.cu: greedy, or penalties,
/// temperature, top-k/top-p/min-p and a seeded draw) from the logits row left there by the forward, so a step
/// brings back one int, not V floats; <see cref="LastLogits"/> downloads the row only when asked.
/// </summary>
internal sealed class TokenGenerator : IDisposable
{
    /// <summary>Llama 4's stop tokens: &lt;|end_of_text|&gt;, &lt;|eom|&gt;, &lt;|eot|&gt;.</summary>
    public static readonly int[] Llama4StopTokens = [200001, 200007, 200008];

    readonly ModelWeights weights;
    readonly ComputeMode mode;
    readonly Dictionary<int, Llama4TextGraph> graphs = [];
    Llama4VisionGraph? vision;
    // Several devices: the ranks this process drives, one graph per piece size over all of them (run in lockstep), a
    // KV cache per rank (Cache is local rank 0's) and a replicated vision tower per rank. Tokens are sampled on local
    // rank 0 from the gathered logits — every process of a multi-process group does the same with the same bits, so
    // they all choose the same tokens without another collective.
    readonly Distributed.ShardedWeights? sharded;
    readonly Dictionary<int, Distributed.ShardedTextGraph> shardedGraphs = [];
    readonly KvCache[] caches;
    Llama4VisionGraph[]? rankVisions;
    readonly HashSet<int> modelStops;
    readonly List<int> history = [];
    int? pending;
    // Sampler state on the device, one buffer: params (36 B) | step (int) | chosen id (int) | Σ logits (f32) | counts [V] int32.
    // Σ logits (a gemv with `ones`) is the cheap finiteness check, downloaded with the id: NaN/inf in ⇒ non-finite out.
    // counts = how often each token was generated in the current call (frequency/presence/repetition penalties).
    readonly DeviceBuffer sampler;
    Tensor lastRow;
    const int ParamsBytes = SampleParams.Size, StepAt = 40, IdAt = 44, SumAt = 48, CountsAt = 64;
    readonly DeviceBuffer ones;   // bf16 [V] of 1.0
    ImageTiles? callImages;

    public KvCache Cache { get; }
    /// <summary>The largest prefill piece (powers of two below it feed the tail of a prompt).</summary>
    public int MaxPiece { get; }
    /// <summary>MaxPiece was chosen from the device's free memory (maxPiece ≤ 0).</summary>
    public bool PieceAuto { get; }

    /// <summary>The piece sizes the auto rule tries, largest first: at ≥ 2,048 tokens a piece reads every routed expert once per
    /// 2,048 prompt tokens (pieces of 256 read them 8× as often), and lm_head runs on the last piece only whatever the size.</summary>
    public static readonly int[] AutoPieces = [2048, 1024, 512, 256];

    /// <summary>
    /// The auto rule: the largest of <see cref="AutoPieces"/> (at most the context) whose KV cache (the RoPE layers' ring grows
    /// with the piece: chunk + piece) and prefill graph (its activation arena and workspaces) allocate on the device AND leave
    /// free at least that graph's size again (the smaller tail pieces' graphs and the decode step's). Measured by allocating
    /// on the device itself, not estimated; the smallest candidate is taken as it comes (an out-of-memory then is real).
    /// </summary>
    KvCache AutoPiece(ModelWeights w, ComputeMode mode, int maxContext, DType? kvType, out Llama4TextGraph? graph, out int piece)
    {
        var dev = w.Device;
        var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
        var candidates = AutoPieces.Where(p => p <= maxContext).DefaultIfEmpty(maxContext).ToArray();
        for (int i = 0; i < candidates.Length; i++)
        {
            bool last = i == candidates.Length - 1;
            KvCache? kv = null;
            Llama4TextGraph? g = null;
            try
            {
                kv = new KvCache(dev, w.Config.Text, act, maxContext, candidates[i], kvType);
                long afterKv = dev.FreeMemory;
                g = new Llama4TextGraph(w, candidates[i], mode, kv, lastLogitsOnly: true);
                long graphBytes = afterKv - dev.FreeMemory;
                long free = dev.FreeMemory;   // > 0: a device that does not refuse (the recording one) reports 0 when over
                if (last || (free > 0 && free >= graphBytes))
                {
                    graphs[candidates[i]] = g;
                    graph = g; piece = candidates[i];
                    return kv;
                }
            }
            catch (DeviceOutOfMemoryException) when (!last) { }
            g?.Dispose();
            kv?.Dispose();
        }
        throw new InvalidOperationException("unreachable: the last candidate piece returns or throws");
    }
    public int Vocab { get; }
    public GenerationStats? LastStats { get; private set; }
    /// <summary>The raw logits [V] the last yielded token was chosen from (before penalties/temperature;
    /// downloaded on each access, valid until the next step).</summary>
    public float[] LastLogits => lastRow.Elements == 0 ? [] : Ops.DeviceData.Download(weights.Device, lastRow.Ptr, lastRow.Elements, DType.F32);
    /// <summary>Every token fed to the model so far (prompt and generated), in order.</summary>
    public IReadOnlyList<int> History => history;
    /// <summary>The last generated token, not yet fed: it goes first into the next call.</summary>
    public int? Pending => pending;

    /// <summary>Decode steps are captured (a CUDA graph; a recorded launch list on the emulator and the recording device)
    /// and replayed: see <see cref="DecodeStep"/>.</summary>
    public bool CaptureDecode { get; }
    /// <summary>Captured decode steps so far (one per attention-length bound and sampler kind) and graph replays.</summary>
    public int CapturedSteps => stepGraphs.Count;
    public long GraphReplays { get; private set; }
    readonly Dictionary<(int, bool), DeviceGraph> stepGraphs = [];
    readonly HashSet<(int, bool)> warmed = [];
    readonly HostBuffer idHost;
    bool deviceStateValid; // the device's descriptors and sampled id describe the host's position and pending token

    /// <param name="maxPiece">the largest prefill piece; ≤ 0 = auto (<see cref="AutoPieces"/>: the largest that fits the device's free memory)</param>
    public TokenGenerator(ModelWeights weights, ComputeMode mode, int maxContext, int maxPiece = 0, bool captureDecode = false,
                          KvCacheFormat kvCache = KvCacheFormat.Default)
        : this(weights, null, mode, maxContext, maxPiece, captureDecode, kvCache) { }

    /// <summary>Generation over the ranks of <paramref name="sharded"/> that this process drives (a group of one = one device).</summary>
    public TokenGenerator(Distributed.ShardedWeights sharded, ComputeMode mode, int maxContext, int maxPiece = 0, bool captureDecode = false,
                          KvCacheFormat kvCache = KvCacheFormat.Default)
        : this(sharded.Ranks[0], sharded.Group.World > 1 ? sharded : null, mode, maxContext, maxPiece, captureDecode, kvCache) { }

    TokenGenerator(ModelWeights weights, Distributed.ShardedWeights? sharded, ComputeMode mode, int maxContext, int maxPiece, bool captureDecode,
                   KvCacheFormat kvCache)
    {
        if (captureDecode && !weights.Device.CanCapture) throw new NotSupportedException($"{weights.Device.Name} cannot capture graphs");
        if (captureDecode && sharded is not null)
            throw new NotSupportedException($"decode capture on several devices ({sharded.Group.Spec}) is not implemented: the lockstep runner issues each " +
                                            "collective between the ranks' nodes; generate without capture there");
        CaptureDecode = captureDecode;
        this.weights = weights;
        this.sharded = sharded;
        this.mode = mode;
        var c = weights.Config.Text;
        Vocab = c.VocabSize;
        var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
        DType? kvType = kvCache == KvCacheFormat.Fp8 ? DType.F8E4M3 : null;
        if (sharded is not null)
        {
            // auto on several devices: the serving piece (each rank's free memory is not probed yet)
            MaxPiece = Math.Min(maxPiece > 0 ? maxPiece : 256, maxContext);
            caches = sharded.CreateCaches(act, maxContext, MaxPiece, kvType);
        }
        else if (maxPiece > 0)
        {
            MaxPiece = Math.Min(maxPiece, maxContext);
            caches = [new KvCache(weights.Device, c, act, maxContext, MaxPiece, kvType)];
        }
        else
        {
            caches = [AutoPiece(weights, mode, maxContext, kvType, out _, out int piece)];
            (MaxPiece, PieceAuto) = (piece, true);
        }
        Cache = caches[0];
        modelStops = [.. c.EosTokenIds, .. Llama4StopTokens.Where(t => t < Vocab)];
        sampler = weights.Device.Allocate(CountsAt + 4L * Vocab);
        idHost = weights.Device.AllocatePinned(16);
        ones = weights.Device.Allocate(2L * Vocab);
        weights.Device.Upload<ushort>(Enumerable.Repeat((ushort)0x3F80, Vocab).ToArray(), ones.Ptr);   // bf16 1.0
    }

    /// <summary>The text graphs planned so far (one per piece size): their arenas are the activation memory.</summary>
    internal IEnumerable<Llama4TextGraph> Graphs => graphs.Values;

    Distributed.ShardedTextGraph ShardedGraph(int tokens)
    {
        if (!shardedGraphs.TryGetValue(tokens, out var g)) shardedGraphs[tokens] = g = new Distributed.ShardedTextGraph(sharded!, tokens, mode, caches, lastLogitsOnly: true);
        return g;
    }

    Llama4TextGraph Graph(int tokens)
    {
        if (!graphs.TryGetValue(tokens, out var g)) graphs[tokens] = g = new Llama4TextGraph(weights, tokens, mode, Cache, lastLogitsOnly: true);
        return g;
    }

    /// <summary>
    /// Feeds <paramref name="ids"/> in pieces — MaxPiece tokens, then powers of two for the tail, so at most
    /// log2(MaxPiece) + 1 graphs exist whatever the prompt lengths — and returns the logits [V] after the last.
    /// With <paramref name="imageRows"/> (the projected rows of every &lt;|patch|&gt; token in <paramref name="ids"/>,
    /// in order), each piece gets the rows of its own &lt;|patch|&gt; tokens, wherever the piece boundaries fall.
    /// </summary>
    /// <returns>the logits row [1, V] of the last token, on the device</returns>
    Tensor Feed(ReadOnlySpan<int> ids, CancellationToken ct, Tensor? imageRows = null, Tensor[]? rankRows = null)
    {
        Tensor last = default;
        int used = 0, imageToken = weights.Config.ImageTokenIndex;
        for (int at = 0; at < ids.Length;)
        {
            ct.ThrowIfCancellationRequested();
            int left = ids.Length - at;
            int n = left >= MaxPiece ? MaxPiece : 1 << (31 - System.Numerics.BitOperations.LeadingZeroCount((uint)left));
            var piece = ids.Slice(at, n);
            Tensor? rows = null;
            int from = used, count = 0;
            if (imageRows is { } all && EarlyFusion.CountPatches(piece, imageToken) is var k and > 0)
            {
                rows = all.Slice(used, k);
                used += count = k;
            }
            deviceStateValid = false;
            if (sharded is not null) // each local rank takes the same rows from its own vision graph's output
                last = ShardedGraph(n).Run(piece, imageRows: rows is null ? null : r => rankRows![r].Slice(from, count));
            else last = Graph(n).Run(piece, imageRows: rows, logits: at + n == ids.Length); // lm_head on the last piece only
            deviceStateValid = true;
            history.AddRange(ids.Slice(at, n).ToArray());
            at += n;
        }
        return last.Slice(last.Shape[0] - 1, 1);
    }

    /// <summary>Resets the sampler for a call: its settings, step 0 (so a seed reproduces), no counts.</summary>
    void BeginSampling(GenerationOptions o)
    {
        var dev = weights.Device;
        var p = new SampleParams(o.Temperature, o.TopK, o.TopP, o.MinP, o.RepetitionPenalty, o.FrequencyPenalty, o.PresencePenalty, 0).WithSeed(o.Seed);
        dev.Upload<SampleParams>([p], sampler.Ptr);
        dev.Memset(sampler.Ptr + StepAt, 0, 4);
        dev.Memset(sampler.Ptr + CountsAt, 0, 4L * Vocab);
    }

    static bool Penalised(GenerationOptions o) => o.RepetitionPenalty != 1 || o.FrequencyPenalty != 0 || o.PresencePenalty != 0;

    /// <summary>Chooses the next token from the logits row on the device and brings back its id.</summary>
    int Choose(Tensor row, GenerationOptions o)
    {
        var dev = weights.Device;
        var id = new Tensor(sampler.Ptr + IdAt, DType.I32, new Shape(1));
        Sample.Run(dev, row, sampler.Ptr, Penalised(o) ? sampler.Ptr + CountsAt : DevicePtr.Null, sampler.Ptr + StepAt, id,
                   DevicePtr.Null, update: true);
        Gemv.Run(dev, row, new Tensor(ones.Ptr, DType.BF16, new Shape(1, Vocab)), new Tensor(sampler.Ptr + SumAt, DType.F32, new Shape(1, 1)));
        Span<int> next = stackalloc int[2];
        dev.Download<int>(id.Ptr, next);   // the id and Σ logits, one transfer
        if (!float.IsFinite(BitConverter.Int32BitsToSingle(next[1])))
            throw NonFinite.Diagnose(weights, mode, sharded is null ? history : [], callImages); // the text graph re-run is one device's
        return next[0];
    }

    /// <summary>
    /// One decode step with everything on the device: <see cref="Step.Decode"/> takes the id the sampler left and
    /// advances ids, positions and descriptors; the one-token graph runs (<see cref="Llama4TextGraph.RunOnDevice"/>);
    /// the sampler chooses the next id. No upload, allocation or synchronisation inside; the only host wait is
    /// reading back the chosen id. With <see cref="CaptureDecode"/> the three are captured once per (attention-length
    /// bound, sampler kind) — the first time such a step runs eagerly (kernels load outside any capture), the second
    /// time it is captured — and replayed after that. Why bounds and not lengths: kernels read lengths from the
    /// descriptors, so a graph stays valid while the grid bounds (lengths rounded up to <see cref="KvCache.KvBucket"/>
    /// keys) do not move — a re-capture every 256 tokens instead of every token, and at most context/256 variants.
    /// </summary>
    int DecodeStep(GenerationOptions o)
    {
        var dev = weights.Device;
        var g = Graph(1);
        var key = (Cache.StepBound(), Penalised(o));
        Cache.BeginDeviceStep();
        deviceStateValid = false;
        try
        {
            if (stepGraphs.TryGetValue(key, out var graph)) { graph.Launch(); GraphReplays++; }
            else if (!CaptureDecode || warmed.Add(key)) EmitStep(g, o);
            else
            {
                var captured = dev.Capture(() => EmitStep(g, o));
                stepGraphs[key] = captured;
                captured.Launch();
                GraphReplays++;
            }
        }
        catch { Cache.AbortPiece(); throw; }
        Cache.EndPiece();
        unsafe
        {
            dev.CopyDeviceToHost(sampler.Ptr + IdAt, idHost.Pointer, 8);   // the id and Σ logits, one transfer
            dev.DefaultStream.Synchronize();
            deviceStateValid = true;
            if (!float.IsFinite(((float*)idHost.Pointer)[1]))
                throw NonFinite.Diagnose(weights, mode, sharded is null ? history : [], callImages); // the text graph re-run is one device's
            return *(int*)idHost.Pointer;
        }
    }

    void EmitStep(Llama4TextGraph g, GenerationOptions o)
    {
        var dev = weights.Device;
        Step.Decode(dev, sampler.Ptr + IdAt, g.Plan[g.Ids], g.Plan[g.Positions], Cache.RopeDescriptor, Cache.NopeDescriptor, Cache.Chunk);
        g.RunOnDevice();
        var logits = g.Plan[g.Logits];
        var row = logits.Slice(logits.Shape[0] - 1, 1);
        Sample.Run(dev, row, sampler.Ptr, Penalised(o) ? sampler.Ptr + CountsAt : DevicePtr.Null, sampler.Ptr + StepAt,
                   new Tensor(sampler.Ptr + IdAt, DType.I32, new Shape(1)), DevicePtr.Null, update: true);
        // The finiteness check rides along as in Choose: Σ logits next to the id, read back with it.
        Gemv.Run(dev, row, new Tensor(ones.Ptr, DType.BF16, new Shape(1, Vocab)), new Tensor(sampler.Ptr + SumAt, DType.F32, new Shape(1, 1)));
    }

    /// <summary>
    /// Appends <paramref name="prompt"/> to the sequence and yields new tokens until a stop token (yielded
    /// last), <see cref="GenerationOptions.MaxNewTokens"/>, or the end of the context.
    /// </summary>
    public IEnumerable<int> Generate(IReadOnlyList<int> prompt, GenerationOptions options, CancellationToken ct = default) =>
        Generate(prompt, options, null, ct);

    /// <summary>
    /// As above, with the prompt's images: <paramref name="images"/> holds the processed tiles of every image in
    /// prompt order; the vision graph encodes them all at once and their projected rows replace the prompt's
    /// &lt;|patch|&gt; embeddings in order (the count must be tiles × tokens per tile, else
    /// <see cref="ImageTokenMismatchException"/>). A prompt with &lt;|patch|&gt; tokens needs images.
    /// </summary>
    public IEnumerable<int> Generate(IReadOnlyList<int> prompt, GenerationOptions options, ImageTiles? images, CancellationToken ct = default)
    {
        options.Validate();
        foreach (var id in prompt)
            if ((uint)id >= (uint)Vocab) throw new ArgumentException($"prompt token id {id} is out of range [0, {Vocab})");
        var input = new List<int>(prompt.Count + 1);
        if (pending is { } p) input.Add(p);
        input.AddRange(prompt);
        if (input.Count == 0) throw new ArgumentException("nothing to generate from: the prompt is empty");
        if (Cache.Position + input.Count > Cache.MaxContext)
            throw new ContextLengthException($"the prompt needs {input.Count} tokens but only {Cache.MaxContext - Cache.Position} of the context's {Cache.MaxContext} are left; " +
                                             "shorten it, start a new conversation, or raise the maximum context (--max-context, Llama4ModelOptions.MaxContext)");
        var stops = options.StopAtModelStops ? new HashSet<int>(modelStops) : [];
        stops.UnionWith(options.StopTokens);

        EarlyFusion.CheckPrompt(prompt.ToArray(), weights.Config, images?.Count);
        var sw = Stopwatch.StartNew();
        BeginSampling(options);
        callImages = images;
        Tensor? imageRows = null;
        Tensor[]? rankRows = null;
        if (images is not null)
        {
            images.Check(weights.Config.Vision!);
            imageRows = Vision(images.Count).Forward(images.Pixels, images.Count);
            if (sharded is not null) // the vision tower is replicated: every local rank encodes the images on its own device
                rankRows = [imageRows.Value, .. rankVisions!.Skip(1).Select(v => v.Forward(images.Pixels, images.Count))];
            // A previously generated token fed first is never an image slot, even if it happens to be <|patch|>.
            if (pending is { } pp && pp == weights.Config.ImageTokenIndex && input.Count > 1)
            {
                Feed([pp], ct);
                pending = null;
                input.RemoveAt(0);
            }
        }
        var logits = Feed(input.ToArray(), ct, imageRows, rankRows);
        pending = null;
        TimeSpan first = default;
        int produced = 0;
        string? reason = null;
        int? stepped = null;
        while (produced < options.MaxNewTokens)
        {
            lastRow = logits;
            int next = stepped ?? Choose(logits, options);
            produced++;
            if (produced == 1) first = sw.Elapsed;
            pending = next;
            LastStats = new GenerationStats(input.Count, produced, first, sw.Elapsed, null);
            yield return next;
            if (stops.Contains(next)) { reason = "stop token"; break; }
            if (produced == options.MaxNewTokens) { reason = "max new tokens"; break; }
            if (Cache.Position + 1 > Cache.MaxContext) { reason = "context full"; break; }
            ct.ThrowIfCancellationRequested();
            if (CaptureDecode && deviceStateValid)
            {
                // the device holds `next` (the sampler's id) and the descriptors of the last piece: step there
                stepped = DecodeStep(options);
                history.Add(next);
                var all = Graph(1).Plan[Graph(1).Logits];
                logits = all.Slice(all.Shape[0] - 1, 1);
            }
            else
            {
                stepped = null;
                logits = Feed([next], ct);
            }
            pending = null;
        }
        LastStats = new GenerationStats(input.Count, produced, first, sw.Elapsed, reason);
    }

    /// <summary>The vision graph, planned for at least <paramref name="tiles"/> tiles (re-planned when a prompt needs more).</summary>
    Llama4VisionGraph Vision(int tiles)
    {
        if (vision is null || vision.MaxTiles < tiles)
        {
            vision?.Dispose();
            vision = null;
            foreach (var v in rankVisions ?? []) v?.Dispose();
            rankVisions = null;
            vision = new Llama4VisionGraph(weights, tiles, mode);
            if (sharded is not null)
            {
                rankVisions = new Llama4VisionGraph[sharded.Ranks.Count];
                rankVisions[0] = vision;
                for (int r = 1; r < rankVisions.Length; r++) rankVisions[r] = new Llama4VisionGraph(sharded.Ranks[r], tiles, mode);
            }
        }
        return vision;
    }

    /// <summary>Starts a new sequence (keeps the memory).</summary>
    public void Reset() { foreach (var c in caches) c.Reset(); history.Clear(); pending = null; lastRow = default; deviceStateValid = false; }

    public void Dispose()
    {
        foreach (var g in graphs.Values) g.Dispose();
        foreach (var g in shardedGraphs.Values) g.Dispose();
        vision?.Dispose();
        foreach (var v in rankVisions?.Skip(1) ?? []) v.Dispose();
        foreach (var g in stepGraphs.Values) g.Dispose();
        foreach (var c in caches) c.Dispose();
        sampler.Dispose();
        idHost.Dispose();
        ones.Dispose();
    }
}
