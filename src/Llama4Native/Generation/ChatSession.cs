using System.Runtime.CompilerServices;
using Llama4Native.Model;
using Llama4Native.Vision;

namespace Llama4Native.Generation;

/// <summary>
/// A conversation with a loaded model: text in, streamed text out. Each call takes the whole dialog; when it
/// extends what the session has already seen (the usual next turn), only the new tokens are fed — the KV
/// cache is reused — otherwise the session starts over. One generation at a time; cancellation between
/// tokens leaves the session usable.
/// </summary>
public sealed class ChatSession : IDisposable
{
    readonly TokenGenerator gen;
    readonly ITextCodec codec;
    readonly Llama4ImageProcessor? images;
    readonly SemaphoreSlim busy = new(1, 1);
    // What the model has seen, as messages (its own replies included), and whether a longer dialog that
    // starts with it can be continued in place (not after a reply was cut by a stop string).
    List<Message> transcript = [];
    bool canContinue;

    internal ChatSession(TokenGenerator generator, ITextCodec codec, Llama4ImageProcessor? images = null)
    {
        gen = generator; this.codec = codec; this.images = images;
    }

    public GenerationStats? LastStats => gen.LastStats;
    public int ContextUsed => gen.Cache.Position;
    public int MaxContext => gen.Cache.MaxContext;

    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken ct = default) =>
        GenerateAsync([new Message(MessageRole.User, prompt)], options, ct);

    public async IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<Message> messages, GenerationOptions? options = null,
                                                                [EnumeratorCancellation] CancellationToken ct = default)
    {
        options ??= new GenerationOptions();
        if (!busy.Wait(0)) throw new InvalidOperationException("this session is already generating; use one session per concurrent conversation");
        try
        {
            var (newIds, tiles) = Continuation(messages);
            canContinue = false;   // until this reply completes
            var decoder = codec.CreateStreamDecoder();
            var stops = options.StopStrings.Where(x => x.Length > 0).ToArray();
            var text = new System.Text.StringBuilder();
            int emitted = 0;   // text[..emitted] has been yielded; the rest may still turn out to start a stop string
            var reply = new System.Text.StringBuilder();
            using var tokens = gen.Generate(newIds, options, tiles, ct).GetEnumerator();
            // Each token is computed off the caller's thread: a UI or server thread stays responsive.
            while (await Task.Run(tokens.MoveNext, ct).ConfigureAwait(false))
            {
                int id = tokens.Current;
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
        finally { busy.Release(); }
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

    public void Reset() { gen.Reset(); transcript = []; canContinue = false; }

    public void Dispose() { gen.Dispose(); busy.Dispose(); }
}
