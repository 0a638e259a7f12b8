using System.Diagnostics;
using System.Text;
using System.Threading.Channels;
using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Serving;

/// <summary>How the scheduler admits and paces work.</summary>
internal sealed record ServingOptions
{
    /// <summary>Requests waiting for a slot; one more is refused (<see cref="ServerOverloadedException"/>, HTTP 429).</summary>
    public int MaxQueue { get; init; } = 64;
    /// <summary>Tokens one step may feed in all: one per decoding sequence, the rest for prefill pieces (at least
    /// one piece per step goes in, so a long prompt always progresses).</summary>
    public int StepTokenBudget { get; init; } = 512;
    /// <summary>What a refused client is told to wait before it retries (Retry-After).</summary>
    public TimeSpan RetryAfter { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>A request for one sequence: prompt ids, how to sample and stop, its images, and the token that
/// says the client went away (the sequence is then cancelled and its slot freed at the next step).</summary>
internal sealed class ServingRequest
{
    public required IReadOnlyList<int> Prompt { get; init; }
    public GenerationOptions Options { get; init; } = new();
    /// <summary>The processed tiles of the prompt's images, in order (the prompt holds their &lt;|patch|&gt; tokens).</summary>
    public ImageTiles? Images { get; init; }
    public CancellationToken Cancellation { get; init; }
}

internal enum FinishReason { Stop, Length, Cancelled, Error }

/// <summary>How a sequence ended: why, its token counts, and its timings (queue wait, time to first token, total; all from submission).</summary>
internal sealed record ServingResult(FinishReason Reason, string Detail, int PromptTokens, int CompletionTokens,
                                   TimeSpan Queued, TimeSpan TimeToFirstToken, TimeSpan Total, Exception? Error = null);

/// <summary>A submitted sequence: its pieces as they are generated, and how it ended.</summary>
internal sealed class ServingSequence
{
    internal ServingSequence(long id, int promptTokens, ChannelReader<GeneratedPiece> pieces, Task<ServingResult> completion)
    {
        Id = id; PromptTokens = promptTokens; Pieces = pieces; Completion = completion;
    }
    public long Id { get; }
    public int PromptTokens { get; }
    /// <summary>Text (empty for a special token) and token id of every generated token, stop token included;
    /// text that could still start a stop string is held back until it cannot.</summary>
    public ChannelReader<GeneratedPiece> Pieces { get; }
    /// <summary>Completes when the sequence ends (never faults: an error is <see cref="FinishReason.Error"/>).</summary>
    public Task<ServingResult> Completion { get; }
}

/// <summary>Refused: the queue is full. Retry after <see cref="RetryAfter"/> (HTTP 429).</summary>
internal sealed class ServerOverloadedException(string message, TimeSpan retryAfter) : Exception(message)
{
    public TimeSpan RetryAfter { get; } = retryAfter;
}

/// <summary>Refused: the server is shutting down (HTTP 503).</summary>
internal sealed class ServerShuttingDownException(string message, TimeSpan retryAfter) : Exception(message)
{
    public TimeSpan RetryAfter { get; } = retryAfter;
}

/// <summary>
/// Continuous batching over an <see cref="IStepEngine"/>. Requests are admitted while a slot and KV blocks are
/// free (a sequence reserves blocks for prompt + max new tokens, capped at the context), wait in a bounded FIFO
/// queue otherwise, and are refused when the queue is full. One loop thread runs steps: every decoding sequence
/// gets one token, then prompts get pieces of <see cref="IStepEngine.MaxPrefillPiece"/> tokens (cut from the
/// request alone, so the load never changes piece boundaries) while the step's token budget lasts; new requests
/// join at the next step and finished ones leave at once (their KV freed) — nobody waits for a batch to drain.
/// Stop tokens, stop strings, max new tokens and the end of the context end a sequence; a cancelled request is
/// dropped at the next step. Text is decoded here (when a codec is given) so stop strings can end generation.
/// </summary>
internal sealed class ServingScheduler : IDisposable
{
    readonly IStepEngine engine;
    readonly bool ownsEngine;
    readonly ITextCodec? codec;
    readonly ServingOptions options;
    readonly object gate = new();
    readonly LinkedList<Seq> waiting = new();
    readonly List<Seq> active = [];
    readonly Stack<int> freeSlots = new();
    readonly SemaphoreSlim wake = new(0);
    readonly Thread loop;
    int freeBlocks;
    long nextId;
    volatile bool admitting = true, stopping, cancelAll;

    public ServingMetrics Metrics { get; } = new();
    public IStepEngine Engine => engine;
    public ServingOptions Options => options;
    public bool Admitting => admitting;

    public ServingScheduler(IStepEngine engine, ITextCodec? codec = null, ServingOptions? options = null, bool ownsEngine = true)
    {
        this.engine = engine; this.codec = codec; this.ownsEngine = ownsEngine;
        this.options = options ?? new ServingOptions();
        if (this.options.MaxQueue < 0 || this.options.StepTokenBudget < 1)
            throw new ArgumentException($"max queue ({this.options.MaxQueue}) must be ≥ 0 and the step token budget ({this.options.StepTokenBudget}) ≥ 1");
        for (int i = engine.Slots - 1; i >= 0; i--) freeSlots.Push(i);
        freeBlocks = engine.KvBlocks;
        loop = new Thread(Loop) { IsBackground = true, Name = "llama4 serving steps" };
        loop.Start();
    }

    sealed class Seq
    {
        public required long Id;
        public required ServingRequest Request;
        public required int[] Prompt;
        public required HashSet<int> Stops;
        public required string[] StopStrings;
        public required int Blocks;
        public readonly Channel<GeneratedPiece> Out = Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        public readonly TaskCompletionSource<ServingResult> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly Stopwatch Clock = Stopwatch.StartNew();
        public TimeSpan Queued, FirstToken;
        public int Slot = -1, Fed, Generated, Last = -1;
        public ITokenStreamDecoder? Decoder;
        public readonly StringBuilder Text = new();
        public int Emitted;
        public CancellationTokenRegistration Wake;
    }

    /// <summary>Queues a request. Throws (before anything is queued) <see cref="ArgumentException"/> for a bad prompt
    /// or options, <see cref="ContextLengthException"/> when the prompt does not fit the context,
    /// <see cref="ServerOverloadedException"/> when the queue is full, <see cref="ServerShuttingDownException"/> when
    /// the scheduler no longer admits.</summary>
    public ServingSequence Submit(ServingRequest request)
    {
        var o = request.Options;
        o.Validate();
        var prompt = request.Prompt.ToArray();
        if (prompt.Length == 0) throw new ArgumentException("the prompt is empty");
        foreach (var id in prompt)
            if ((uint)id >= (uint)engine.Vocab) throw new ArgumentException($"prompt token id {id} is out of range [0, {engine.Vocab})");
        if (prompt.Length > engine.MaxContext)
            throw new ContextLengthException($"the prompt has {prompt.Length} tokens but a sequence holds at most {engine.MaxContext}; " +
                                             "shorten it, or start the server with a larger --max-context");
        if (request.Images is not null && engine.ImageToken < 0)
            throw new ArgumentException("the request has images but this model has no vision tower");
        if (request.Images is null && engine.ImageToken >= 0 && Array.IndexOf(prompt, engine.ImageToken) >= 0)
            throw new ArgumentException($"the prompt holds the image token <|patch|> ({engine.ImageToken}) but the request has no images");
        int need = Math.Min(prompt.Length + Math.Max(o.MaxNewTokens, 0), engine.MaxContext);
        int blocks = (need + engine.KvBlockTokens - 1) / engine.KvBlockTokens;
        if (blocks > engine.KvBlocks)
            throw new ContextLengthException($"the request needs {need} token positions of KV ({blocks} blocks of {engine.KvBlockTokens}) but the cache holds " +
                                             $"{engine.KvBlocks} blocks in all; lower max_tokens or shorten the prompt");
        var stops = o.StopAtModelStops ? new HashSet<int>(engine.ModelStops) : [];
        stops.UnionWith(o.StopTokens);
        var seq = new Seq
        {
            Id = Interlocked.Increment(ref nextId), Request = request, Prompt = prompt, Stops = stops, Blocks = blocks,
            StopStrings = codec is null ? [] : [.. o.StopStrings.Where(s => s.Length > 0)],
        };
        if (o.StopStrings.Any(s => s.Length > 0) && codec is null)
            throw new ArgumentException("stop strings need a text codec (this scheduler has none)");
        seq.Decoder = codec?.CreateStreamDecoder();
        var handle = new ServingSequence(seq.Id, prompt.Length, seq.Out.Reader, seq.Done.Task);
        if (o.MaxNewTokens == 0)
        {
            Finish(seq, FinishReason.Length, "max new tokens");
            return handle;
        }
        lock (gate)
        {
            if (!admitting)
            {
                Metrics.Rejected(503);
                throw new ServerShuttingDownException("the server is shutting down and admits no new requests", options.RetryAfter);
            }
            if (waiting.Count >= options.MaxQueue + freeSlots.Count)
            {
                Metrics.Rejected(429);
                throw new ServerOverloadedException($"the server is at capacity ({engine.Slots} sequences running, {waiting.Count} waiting; " +
                                                    $"the queue holds {options.MaxQueue}); retry later", options.RetryAfter);
            }
            waiting.AddLast(seq);
            Metrics.Submitted();
        }
        seq.Wake = request.Cancellation.Register(() => { try { wake.Release(); } catch (ObjectDisposedException) { } });
        wake.Release();
        return handle;
    }

    /// <summary>What the loop holds now: waiting, running, KV blocks in use and in all, token positions held.</summary>
    public ServingSnapshot Snapshot()
    {
        lock (gate)
        {
            int positions = 0;
            foreach (var s in active) positions += s.Fed + (s.Generated > 0 ? s.Generated - 1 : 0);
            return new ServingSnapshot(waiting.Count, active.Count, engine.Slots, engine.KvBlocks - freeBlocks, engine.KvBlocks,
                                       engine.KvBlockTokens, positions, admitting);
        }
    }

    /// <summary>Stops admitting (new submissions get <see cref="ServerShuttingDownException"/>); what runs and waits goes on.</summary>
    public void StopAdmitting() { admitting = false; wake.Release(); }

    /// <summary>Stops admitting, lets running and queued requests finish for up to <paramref name="timeout"/>, then
    /// cancels what is left. Completes when nothing runs.</summary>
    public async Task DrainAsync(TimeSpan timeout)
    {
        StopAdmitting();
        var done = IdleTask();
        if (await Task.WhenAny(done, Task.Delay(timeout)).ConfigureAwait(false) != done)
        {
            cancelAll = true;
            wake.Release();
            await done.ConfigureAwait(false);
        }
    }

    Task IdleTask()
    {
        lock (gate)
        {
            if (waiting.Count == 0 && active.Count == 0) return Task.CompletedTask;
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            idleWaiters.Add(tcs);
            return tcs.Task;
        }
    }
    readonly List<TaskCompletionSource> idleWaiters = [];

    void Loop()
    {
        var pieces = new List<StepPiece>();
        var owners = new List<Seq>();
        var results = Array.Empty<StepResult>();
        while (!stopping)
        {
            try
            {
                bool none;
                lock (gate)
                {
                    Sweep();
                    Admit();
                    none = active.Count == 0;
                    if (none && waiting.Count == 0 && idleWaiters.Count > 0)
                    {
                        foreach (var w in idleWaiters) w.TrySetResult();
                        idleWaiters.Clear();
                    }
                }
                if (none)
                {
                    wake.Wait(50);
                    continue;
                }
                Plan(pieces, owners);
                if (results.Length < pieces.Count) results = new StepResult[Math.Max(pieces.Count, engine.Slots)];
                var sw = Stopwatch.StartNew();
                engine.Step(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pieces), results.AsSpan(0, pieces.Count));
                Metrics.Step(pieces.Count, sw.Elapsed);
                for (int i = 0; i < pieces.Count; i++) Apply(owners[i], pieces[i], results[i]);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A failure outside any one sequence (the engine itself): fail every running sequence, keep serving.
                lock (gate)
                {
                    foreach (var s in active.ToArray()) Retire(s, FinishReason.Error, "engine failure: " + e.Message, e);
                }
            }
        }
    }

    /// <summary>Drops cancelled requests, waiting or running (and all of them after a drain timed out).</summary>
    void Sweep()
    {
        for (var n = waiting.First; n is not null;)
        {
            var next = n.Next;
            if (cancelAll || n.Value.Request.Cancellation.IsCancellationRequested)
            {
                waiting.Remove(n);
                Finish(n.Value, FinishReason.Cancelled, cancelAll ? "shutdown" : "client cancelled");
            }
            n = next;
        }
        foreach (var s in active.ToArray())
            if (cancelAll || s.Request.Cancellation.IsCancellationRequested)
                Retire(s, FinishReason.Cancelled, cancelAll ? "shutdown" : "client cancelled");
    }

    /// <summary>FIFO: the head waits until its blocks are free (no overtaking by smaller requests).</summary>
    void Admit()
    {
        while (waiting.First is { } n && freeSlots.Count > 0 && freeBlocks >= n.Value.Blocks)
        {
            var s = n.Value;
            waiting.RemoveFirst();
            s.Slot = freeSlots.Pop();
            freeBlocks -= s.Blocks;
            s.Queued = s.Clock.Elapsed;
            try { engine.Begin(s.Slot, s.Request.Options, s.Request.Images); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                active.Add(s);
                Retire(s, FinishReason.Error, e.Message, e);
                continue;
            }
            active.Add(s);
            Metrics.Admitted(s.Queued);
        }
    }

    void Plan(List<StepPiece> pieces, List<Seq> owners)
    {
        pieces.Clear(); owners.Clear();
        int budget = options.StepTokenBudget;
        lock (gate)
        {
            foreach (var s in active)
                if (s.Generated > 0)
                {
                    pieces.Add(new StepPiece(s.Slot, new[] { s.Last }, Sample: true, Decode: true));
                    owners.Add(s);
                    budget--;
                }
            foreach (var s in active)
            {
                if (s.Generated > 0) continue;
                int left = s.Prompt.Length - s.Fed;
                int n = s.Request.Images is not null ? left : Math.Min(left, engine.MaxPrefillPiece);
                if (n > budget && pieces.Count > 0) break;
                pieces.Add(new StepPiece(s.Slot, s.Prompt.AsMemory(s.Fed, n), Sample: n == left, Decode: false));
                owners.Add(s);
                budget -= n;
            }
        }
    }

    void Apply(Seq s, StepPiece p, StepResult r)
    {
        lock (gate)
        {
            if (s.Slot < 0) return;   // retired meanwhile
            if (r.Error is { } e) { Retire(s, FinishReason.Error, e.Message, e); return; }
            if (!p.Decode) { s.Fed += p.Tokens.Length; Metrics.PromptTokens(p.Tokens.Length); }
            if (!p.Sample) return;
            int token = r.Token;
            s.Generated++;
            s.Last = token;
            Metrics.GeneratedToken();
            if (s.Generated == 1) { s.FirstToken = s.Clock.Elapsed; Metrics.FirstToken(s.FirstToken - s.Queued, s.FirstToken); }
            if (s.Decoder is { } d)
            {
                s.Text.Append(d.Push(token));
                var (safe, stopAt) = ChatSession.Scan(s.Text, s.StopStrings, s.Emitted);
                int end = stopAt >= 0 ? stopAt : safe;
                s.Out.Writer.TryWrite(new GeneratedPiece(s.Text.ToString(s.Emitted, end - s.Emitted), token));
                s.Emitted = end;
                if (stopAt >= 0) { Retire(s, FinishReason.Stop, "stop string", flush: false); return; }
            }
            else s.Out.Writer.TryWrite(new GeneratedPiece("", token));
            if (s.Stops.Contains(token)) Retire(s, FinishReason.Stop, "stop token");
            else if (s.Generated >= s.Request.Options.MaxNewTokens) Retire(s, FinishReason.Length, "max new tokens");
            else if (engine.Position(s.Slot) >= engine.MaxContext) Retire(s, FinishReason.Length, "context full");
        }
    }

    /// <summary>Ends a running sequence: its slot and KV blocks are free for the next step's admissions.</summary>
    void Retire(Seq s, FinishReason reason, string detail, Exception? error = null, bool flush = true)
    {
        if (s.Slot >= 0)
        {
            try { engine.End(s.Slot); }
            catch (Exception e) when (e is not OutOfMemoryException) { error ??= e; }
            freeSlots.Push(s.Slot);
            freeBlocks += s.Blocks;
            s.Slot = -1;
        }
        active.Remove(s);
        if (flush && s.Decoder is { } d && reason is FinishReason.Stop or FinishReason.Length)
        {
            s.Text.Append(d.Flush());
            if (s.Text.Length > s.Emitted) s.Out.Writer.TryWrite(new GeneratedPiece(s.Text.ToString(s.Emitted, s.Text.Length - s.Emitted), -1));
            s.Emitted = s.Text.Length;
        }
        Finish(s, reason, detail, error);
    }

    void Finish(Seq s, FinishReason reason, string detail, Exception? error = null)
    {
        s.Wake.Dispose();
        var result = new ServingResult(reason, detail, s.Prompt.Length, s.Generated, s.Queued, s.FirstToken, s.Clock.Elapsed, error);
        Metrics.Finished(result);
        s.Out.Writer.TryComplete();
        s.Done.TrySetResult(result);
    }

    public void Dispose()
    {
        admitting = false;
        cancelAll = true;
        try { wake.Release(); } catch (ObjectDisposedException) { }
        // Let the loop sweep (cancel) what is left, then stop it.
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            lock (gate) if (waiting.Count == 0 && active.Count == 0) break;
            Thread.Sleep(5);
        }
        stopping = true;
        try { wake.Release(); } catch (ObjectDisposedException) { }
        loop.Join();
        lock (gate)
        {
            foreach (var w in idleWaiters) w.TrySetResult();
            idleWaiters.Clear();
        }
        if (ownsEngine) engine.Dispose();
    }
}

/// <summary>The scheduler at one moment.</summary>
internal readonly record struct ServingSnapshot(int Waiting, int Running, int Slots, int KvBlocksUsed, int KvBlocks, int KvBlockTokens,
                                              int KvPositions, bool Admitting);
