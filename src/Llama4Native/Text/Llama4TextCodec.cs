using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Text;

/// <summary>
/// The Llama 4 text side of a model for the generation layer: <see cref="ChatFormat"/> over the
/// <see cref="Llama4Tokenizer"/> turns a dialog into ids, and a <see cref="StreamingDecoder"/> turns generated ids
/// back into complete UTF-8 text (special tokens produce no text).
/// </summary>
internal sealed class Llama4TextCodec(ChatFormat format) : ITextCodec
{
    public ChatFormat Format { get; } = format;
    public Llama4Tokenizer Tokenizer => Format.Tokenizer;
    public int EndOfTurn => Llama4Tokenizer.EndOfTurn;

    /// <summary>The codec of a checkpoint: its tokenizer (<see cref="Llama4Tokenizer.FromCheckpoint"/>, or
    /// <paramref name="tokenizerPath"/> when given) and the vision token settings of its config.</summary>
    public static Llama4TextCodec Load(string checkpointDir, Llama4Config config, string? tokenizerPath = null)
    {
        var tok = tokenizerPath is null ? Llama4Tokenizer.FromCheckpoint(checkpointDir) : Llama4Tokenizer.FromFile(tokenizerPath);
        return Create(tok, config);
    }

    /// <summary>A codec over <paramref name="tokenizer"/>, checked against the model's vocabulary.</summary>
    public static Llama4TextCodec Create(Llama4Tokenizer tokenizer, Llama4Config config)
    {
        if (config.Text.VocabSize < Llama4Tokenizer.VocabSize)
            throw new ArgumentException(
                $"the model's vocabulary has {config.Text.VocabSize} tokens but the Llama 4 tokenizer has {Llama4Tokenizer.VocabSize}: " +
                "this checkpoint was not trained with it (the test fixtures, for instance, remap their ids); feed token ids instead (llama4 eval)");
        return new Llama4TextCodec(new ChatFormat(tokenizer, VisionSettings(config)));
    }

    /// <summary>The image-token layout a config implies (tile size, patch size, pixel shuffle, tiles).</summary>
    public static VisionTokenSettings VisionSettings(Llama4Config config) => config.Vision is { } v
        ? new VisionTokenSettings(v.ImageSize, v.PatchSize, v.PixelShuffleRatio)
        : new VisionTokenSettings();

    public IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false,
                                           IReadOnlyList<(int Rows, int Cols)>? imageGrids = null)
    {
        var ids = new List<int>(256);
        if (!continuation) ids.Add(Llama4Tokenizer.BeginOfText);
        int image = 0, images = messages.Sum(m => m.Images?.Count ?? 0);
        if (images != (imageGrids?.Count ?? 0))
            throw new ArgumentException($"the messages hold {images} images but {imageGrids?.Count ?? 0} tile grids were given");
        foreach (var m in messages)
        {
            var content = new List<PromptContent>();
            foreach (var _ in m.Images ?? [])
            {
                var (rows, cols) = imageGrids![image++];
                content.Add(new PromptImage(rows, cols));
            }
            if (m.Text.Length > 0 || content.Count == 0) content.Add(new PromptText(m.Text));
            Format.EncodeMessage(new PromptMessage(Role(m.Role), content), ids);
        }
        Format.EncodeHeader(PromptRole.Assistant, ids);
        return ids;
    }

    static PromptRole Role(MessageRole r) => r switch
    {
        MessageRole.System => PromptRole.System,
        MessageRole.User => PromptRole.User,
        MessageRole.Assistant => PromptRole.Assistant,
        MessageRole.Tool => PromptRole.Tool,
        _ => throw new ArgumentOutOfRangeException(nameof(r), r, "unknown role"),
    };

    public ITokenStreamDecoder CreateStreamDecoder() => new Decoder(Tokenizer);

    sealed class Decoder(Llama4Tokenizer tokenizer) : ITokenStreamDecoder
    {
        readonly StreamingDecoder inner = tokenizer.CreateStreamingDecoder();
        public string Push(int id) => tokenizer.IsSpecial(id) ? "" : inner.Push(id);
        public string Flush() => inner.Flush();
    }
}
