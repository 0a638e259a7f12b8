using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Generation;

/// <summary>
/// Token-level generation over one sequence: the prompt is prefilled in pieces of at most
/// <see cref="MaxPiece"/> tokens, then one token per step, through a <see cref="KvCache"/>. Calls continue
/// the same sequence (a conversation): the last token produced by one call is fed at the start of the next,
/// so the history in the cache is exactly what was generated. Cancellation is honoured between tokens and
/// leaves the sequence usable.
/// </summary>
public sealed class TokenGenerator : IDisposable
{
    /// <summary>Llama 4's stop tokens: &lt;|end_of_text|&gt;, &lt;|eom|&gt;, &lt;|eot|&gt;.</summary>
    public static readonly int[] Llama4StopTokens = [200001, 200007, 200008];

    readonly ModelWeights weights;
    readonly ComputeMode mode;
    readonly Dictionary<int, Llama4TextGraph> graphs = [];
    Llama4VisionGraph? vision;
    readonly HashSet<int> modelStops;
    readonly List<int> history = [];
    int? pending;

    public KvCache Cache { get; }
    public int MaxPiece { get; }
    public int Vocab { get; }
    public GenerationStats? LastStats { get; private set; }
    /// <summary>The logits [V] the last yielded token was chosen from (valid until the next step).</summary>
    public float[] LastLogits { get; private set; } = [];
    /// <summary>Every token fed to the model so far (prompt and generated), in order.</summary>
    public IReadOnlyList<int> History => history;
    /// <summary>The last generated token, not yet fed: it goes first into the next call.</summary>
    public int? Pending => pending;

    public TokenGenerator(ModelWeights weights, ComputeMode mode, int maxContext, int maxPiece = 256)
    {
        this.weights = weights;
        this.mode = mode;
        var c = weights.Config.Text;
        MaxPiece = Math.Min(maxPiece, maxContext);
        Vocab = c.VocabSize;
        Cache = new KvCache(weights.Device, c, mode == ComputeMode.F32 ? DType.F32 : DType.BF16, maxContext, MaxPiece);
        modelStops = [.. c.EosTokenIds, .. Llama4StopTokens.Where(t => t < Vocab)];
    }

    Llama4TextGraph Graph(int tokens)
    {
        if (!graphs.TryGetValue(tokens, out var g)) graphs[tokens] = g = new Llama4TextGraph(weights, tokens, mode, Cache);
        return g;
    }

    /// <summary>
    /// Feeds <paramref name="ids"/> in pieces — MaxPiece tokens, then powers of two for the tail, so at most
    /// log2(MaxPiece) + 1 graphs exist whatever the prompt lengths — and returns the logits [V] after the last.
    /// With <paramref name="imageRows"/> (the projected rows of every &lt;|patch|&gt; token in <paramref name="ids"/>,
    /// in order), each piece gets the rows of its own &lt;|patch|&gt; tokens, wherever the piece boundaries fall.
    /// </summary>
    float[] Feed(ReadOnlySpan<int> ids, CancellationToken ct, Tensor? imageRows = null)
    {
        float[] last = [];
        int used = 0, imageToken = weights.Config.ImageTokenIndex;
        for (int at = 0; at < ids.Length;)
        {
            ct.ThrowIfCancellationRequested();
            int left = ids.Length - at;
            int n = left >= MaxPiece ? MaxPiece : 1 << (31 - System.Numerics.BitOperations.LeadingZeroCount((uint)left));
            var piece = ids.Slice(at, n);
            Tensor? rows = null;
            if (imageRows is { } all && EarlyFusion.CountPatches(piece, imageToken) is var k and > 0)
            {
                rows = all.Slice(used, k);
                used += k;
            }
            last = Graph(n).Forward(piece, imageRows: rows);
            history.AddRange(ids.Slice(at, n).ToArray());
            at += n;
        }
        return last.AsSpan(last.Length - Vocab).ToArray();
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
        if (options.Temperature > 0)
            throw new NotSupportedException("sampling with temperature > 0 needs the device sampler, which is not wired in yet; use temperature 0 (greedy)");
        foreach (var id in prompt)
            if ((uint)id >= (uint)Vocab) throw new ArgumentException($"prompt token id {id} is out of range [0, {Vocab})");
        var input = new List<int>(prompt.Count + 1);
        if (pending is { } p) input.Add(p);
        input.AddRange(prompt);
        if (input.Count == 0) throw new ArgumentException("nothing to generate from: the prompt is empty");
        if (Cache.Position + input.Count > Cache.MaxContext)
            throw new ContextLengthException($"the prompt needs {input.Count} tokens but only {Cache.MaxContext - Cache.Position} of the context's {Cache.MaxContext} are left");
        var stops = options.StopAtModelStops ? new HashSet<int>(modelStops) : [];
        stops.UnionWith(options.StopTokens);

        EarlyFusion.CheckPrompt(prompt.ToArray(), weights.Config, images?.Count);
        var sw = Stopwatch.StartNew();
        Tensor? imageRows = null;
        if (images is not null)
        {
            images.Check(weights.Config.Vision!);
            imageRows = Vision(images.Count).Forward(images.Pixels, images.Count);
            // A previously generated token fed first is never an image slot, even if it happens to be <|patch|>.
            if (pending is { } pp && pp == weights.Config.ImageTokenIndex && input.Count > 1)
            {
                Feed([pp], ct);
                pending = null;
                input.RemoveAt(0);
            }
        }
        var logits = Feed(input.ToArray(), ct, imageRows);
        pending = null;
        TimeSpan first = default;
        int produced = 0;
        string? reason = null;
        while (produced < options.MaxNewTokens)
        {
            LastLogits = logits;
            int next = Argmax(logits);
            produced++;
            if (produced == 1) first = sw.Elapsed;
            pending = next;
            LastStats = new GenerationStats(input.Count, produced, first, sw.Elapsed, null);
            yield return next;
            if (stops.Contains(next)) { reason = "stop token"; break; }
            if (produced == options.MaxNewTokens) { reason = "max new tokens"; break; }
            if (Cache.Position + 1 > Cache.MaxContext) { reason = "context full"; break; }
            ct.ThrowIfCancellationRequested();
            logits = Feed([next], ct);
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
            vision = new Llama4VisionGraph(weights, tiles, mode);
        }
        return vision;
    }

    /// <summary>Greedy choice: the largest logit, ties to the lowest id.</summary>
    static int Argmax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int j = 1; j < logits.Length; j++) if (logits[j] > logits[best]) best = j;
        return best;
    }

    /// <summary>Starts a new sequence (keeps the memory).</summary>
    public void Reset() { Cache.Reset(); history.Clear(); pending = null; }

    public void Dispose()
    {
        foreach (var g in graphs.Values) g.Dispose();
        vision?.Dispose();
        Cache.Dispose();
    }
}
