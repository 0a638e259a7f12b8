using System.Runtime.CompilerServices;
using Llama4Native.Model;
using Llama4Native.Vision;

namespace Llama4Native.Generation;

/// <summary>
/// A conversation with a loaded model: text in, streamed text out. Each call takes the whole dialog; when it
/// extends what the session has already seen (the usual next turn), only the new tokens are fed — the KV
/// cache is reused — otherwise the session starts over. One generation at a time; cancellation between
/// tokens leaves the session usable. <see cref="Dispose"/> (or disposing the model) from any thread while a
/// generation runs cancels it, waits for the token being computed, and frees the session's device memory once;
/// the generation then ends with <see cref="ObjectDisposedException"/>.
/// </summary>
public sealed class ChatSession : IDisposable
{
    readonly TokenGenerator gen;
    readonly ITextCodec codec;
    readonly Llama4ImageProcessor? images;
    readonly SemaphoreSlim busy = new(1, 1);
    // Device work (a token step, a reset) runs under this lock; Dispose takes it after cancelling, so it never
    // frees memory a kernel is using. `life` is cancelled by Dispose and linked into every generation.
    readonly object stepLock = new();
    readonly CancellationTokenSource life = new();
    readonly Action<ChatSession>? onDispose;
    volatile bool disposed;
    int disposing;
    // What the model has seen, as messages (its own replies included), and whether a longer dialog that
    // starts with it can be continued in place (not after a reply was cut by a stop string).
    List<Message> transcript = [];
    bool canContinue;

    readonly GenerationOptions defaults;

    internal ChatSession(TokenGenerator generator, ITextCodec codec, Llama4ImageProcessor? images = null, Action<ChatSession>? onDispose = null,
                         GenerationOptions? defaults = null)
    {
        gen = generator; this.codec = codec; this.images = images; this.onDispose = onDispose;
        this.defaults = defaults ?? new GenerationOptions();
    }

    /// <summary>The options used when a call passes none: the checkpoint's generation_config.json (HF semantics).</summary>
    public GenerationOptions Defaults => defaults;

    /// <summary>Whether <see cref="Dispose"/> has been called (the session's device memory is freed or being freed).</summary>
    public bool IsDisposed => disposed;

    /// <summary>Counts and timings of the last completed generation; null before the first.</summary>
    public GenerationStats? LastStats => gen.LastStats;
    /// <summary>Tokens held in the session's KV cache (the dialog fed so far, replies included).</summary>
    public int ContextUsed => gen.Cache.Position;
    /// <summary>The most tokens the session can hold, prompt and reply together.</summary>
    public int MaxContext => gen.Cache.MaxContext;

    /// <summary>Streams the reply to a single user message: a new one-message dialog (the session starts over unless
    /// it had seen exactly that message before). See <see cref="GenerateAsync(IReadOnlyList{Message}, GenerationOptions?, CancellationToken)"/>.</summary>
    /// <param name="prompt">The user's text.</param>
    /// <param name="options">Sampling and stopping; null = <see cref="Defaults"/>.</param>
    /// <param name="ct">Cancels between tokens; the session stays usable.</param>
    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken ct = default) =>
        GenerateAsync([new Message(MessageRole.User, prompt)], options, ct);

    /// <summary>
    /// Streams the reply to <paramref name="messages"/> (the whole dialog, at least one message). Throws
    /// <see cref="ArgumentNullException"/>/<see cref="ArgumentException"/> for a null or empty dialog or invalid
    /// options, <see cref="ObjectDisposedException"/> when the session (or its model) is or gets disposed,
    /// <see cref="OperationCanceledException"/> when <paramref name="ct"/> is cancelled.
    /// </summary>
    public async IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<Message> messages, GenerationOptions? options = null,
                                                                [EnumeratorCancellation] CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0) throw new ArgumentException("the dialog is empty: pass at least one message", nameof(messages));
        for (int i = 0; i < messages.Count; i++)
            if (messages[i] is null) throw new ArgumentException($"message #{i + 1} of the dialog is null", nameof(messages));
        options ??= defaults;
        options.Validate();
        foreach (var t in options.StopTokens)
            if ((uint)t >= (uint)gen.Vocab) throw new ArgumentException($"stop token id {t} is out of range [0, {gen.Vocab})", nameof(options));
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!busy.Wait(0)) throw new InvalidOperationException("this session is already generating; use one session per concurrent conversation");
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, life.Token);
        var token = linked.Token;
        IEnumerator<int>? tokens = null;
        try
        {
            var (newIds, tiles) = Step(() => Continuation(messages));
            canContinue = false;   // until this reply completes
            var decoder = codec.CreateStreamDecoder();
            var stops = options.StopStrings.Where(x => x.Length > 0).ToArray();
            var text = new System.Text.StringBuilder();
            int emitted = 0;   // text[..emitted] has been yielded; the rest may still turn out to start a stop string
            tokens = gen.Generate(newIds, options, tiles, token).GetEnumerator();
            var e = tokens;
            // Each token is computed off the caller's thread: a UI or server thread stays responsive.
            while (await Task.Run(() => Step(e.MoveNext, ct), ct).ConfigureAwait(false))
            {
                int id = e.Current;
                text.Append(decoder.Push(id));
                var (safe, stopAt) = Scan(text, stops, emitted);
                int end = stopAt >= 0 ? stopAt : safe;
                yield return new GeneratedPiece(text.ToString(emitted, end - emitted), id);
                emitted = end;
                if (stopAt >= 0) yield break;  // the cache holds more than the text: the next call starts over
            }
            text.Append(decoder.Flush());
            if (text.Length > emitted) yield return new GeneratedPiece(text.ToString(emitted, text.Length - emitted), -1);
            transcript = [.. messages, new Message(MessageRole.Assistant, text.ToString())];
            canContinue = true;
        }
        finally
        {
            if (tokens is not null) lock (stepLock) tokens.Dispose();
            busy.Release();
        }
    }

    /// <summary>
    /// Runs device work under the step lock: never concurrently with <see cref="Dispose"/>, and never after it —
    /// a generation cut by Dispose ends with <see cref="ObjectDisposedException"/>, not a cancellation the caller
    /// did not ask for.
    /// </summary>
    T Step<T>(Func<T> work, CancellationToken ct = default)
    {
        lock (stepLock)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            try { return work(); }
            catch (OperationCanceledException) when (life.IsCancellationRequested)
            {
                throw new ObjectDisposedException(nameof(ChatSession), "the session (or its model) was disposed during the generation");
            }
            catch (OperationCanceledException e) when (ct.IsCancellationRequested && e.CancellationToken != ct)
            {
                throw new OperationCanceledException(e.Message, e, ct);   // the caller's token: Task.Run reports a cancelled task
            }
        }
    }

    /// <summary>
    /// The ids to feed for <paramref name="messages"/>, and the tiles of their images: only the new turns when the
    /// dialog extends what this session has seen (its last reply included, closed with the end-of-turn token if the
    /// reply did not end with one), else the whole dialog after a reset. Images are decoded and processed here,
    /// before anything is fed, so a broken image costs nothing and leaves the session as it was.
    /// </summary>
    (IReadOnlyList<int> Ids, ImageTiles? Tiles) Continuation(IReadOnlyList<Message> messages)
    {
        if (canContinue && messages.Count > transcript.Count && messages.Take(transcript.Count).SequenceEqual(transcript))
        {
            var turn = messages.Skip(transcript.Count).ToList();
            var (grids, t) = Process(turn);
            var ids = codec.EncodeDialog(turn, continuation: true, grids);
            return (gen.Pending == codec.EndOfTurn ? ids : [codec.EndOfTurn, .. ids], t);
        }
        var (allGrids, tiles) = Process(messages);
        var all = codec.EncodeDialog(messages, imageGrids: allGrids);
        gen.Reset();
        return (all, tiles);
    }

    /// <summary>Every image of <paramref name="messages"/>, in order: its tile grid, and all tiles as one batch.</summary>
    (IReadOnlyList<(int Rows, int Cols)>? Grids, ImageTiles? Tiles) Process(IReadOnlyList<Message> messages)
    {
        var inputs = messages.SelectMany(m => m.Images ?? []).ToList();
        if (inputs.Count == 0) return (null, null);
        if (images is null)
            throw new NotSupportedException($"the messages hold {inputs.Count} image(s) but this model has no vision tower (a text-only checkpoint)");
        var decoded = inputs.Select((x, i) => ImageDecoder.Decode(x.Data.ToArray(), $"{x.Name} (image #{i + 1})")).ToList();
        var batch = images.ProcessBatch(decoded);
        return (batch.Images.Select(p => (p.Rows, p.Cols)).ToList(), ImageTiles.FromBf16(batch.PixelValues, batch.TotalTiles));
    }

    /// <summary>
    /// Where the first stop string starts (or −1), and how far the text is safe to emit: everything except a
    /// suffix that could still grow into a stop string.
    /// </summary>
    internal static (int Safe, int StopAt) Scan(System.Text.StringBuilder sb, string[] stops, int from)
    {
        if (stops.Length == 0) return (sb.Length, -1);
        var s = sb.ToString();
        int stopAt = -1, longest = stops.Max(x => x.Length);
        foreach (var stop in stops)
        {
            int i = s.IndexOf(stop, Math.Max(0, from - longest + 1), StringComparison.Ordinal);
            if (i >= 0 && (stopAt < 0 || i < stopAt)) stopAt = i;
        }
        if (stopAt >= 0) return (Math.Max(from, stopAt), Math.Max(from, stopAt));
        int hold = 0;
        for (int k = Math.Min(longest - 1, s.Length - from); k > 0 && hold == 0; k--)
            if (stops.Any(stop => stop.StartsWith(s.AsSpan(s.Length - k), StringComparison.Ordinal))) hold = k;
        return (s.Length - hold, -1);
    }

    /// <summary>Forgets the conversation (keeps the memory). Not while a generation runs.</summary>
    public void Reset()
    {
        if (!busy.Wait(0)) throw new InvalidOperationException("cannot reset while the session is generating; cancel the generation first");
        try { Step(() => { gen.Reset(); return 0; }); transcript = []; canContinue = false; }
        finally { busy.Release(); }
    }

    /// <summary>
    /// Frees the session's device memory, once. Safe from any thread at any time: a running generation is
    /// cancelled, the token being computed is awaited, and the generation ends with <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposing, 1) != 0) return;
        life.Cancel();
        lock (stepLock)
        {
            disposed = true;
            gen.Dispose();
        }
        // `busy` and `life` are not disposed: a generation suspended at a yield still releases `busy` and links
        // `life` when its consumer moves on; neither holds unmanaged resources.
        onDispose?.Invoke(this);
    }
}
