namespace Llama4Native.Generation;

public enum MessageRole { System, User, Assistant, Tool }

/// <summary>One turn of a conversation. <paramref name="Images"/> come before the text in the prompt (as in
/// HF's chat template for `[image, …, text]` content). Messages are equal when role, text and images (by their
/// bytes) are: that is how a session recognises the history it has already fed.</summary>
public sealed record Message(MessageRole Role, string Text, IReadOnlyList<ImageInput>? Images = null)
{
    /// <summary>The message's text (never null: a null text is an <see cref="ArgumentNullException"/>).</summary>
    public string Text { get; init => field = value ?? throw new ArgumentNullException(nameof(Text), NullText); } = Text ?? throw new ArgumentNullException(nameof(Text), NullText);
    const string NullText = "a message needs a text (use \"\" for none)";
    /// <summary>The message's images, in order (null or empty for none; no null entries).</summary>
    public IReadOnlyList<ImageInput>? Images { get; init; } = Images is not null && Images.Any(i => i is null)
        ? throw new ArgumentException("a message's images must not contain null", nameof(Images)) : Images;

    public Message(MessageRole role, string text, params ImageInput[] images) : this(role, text, (IReadOnlyList<ImageInput>)images) { }

    public bool Equals(Message? other) =>
        other is not null && Role == other.Role && Text == other.Text &&
        (Images ?? []).SequenceEqual(other.Images ?? []);

    public override int GetHashCode() => HashCode.Combine(Role, Text, Images?.Count ?? 0);
}

/// <summary>
/// An image attached to a message: the encoded file's bytes (JPEG, PNG, BMP, GIF), read once when the input is
/// made, so a stream may be closed afterwards and a transcript can be encoded again. <see cref="Name"/> names the
/// image in errors.
/// </summary>
public sealed class ImageInput : IEquatable<ImageInput>
{
    public ReadOnlyMemory<byte> Data { get; }
    public string Name { get; }

    ImageInput(ReadOnlyMemory<byte> data, string name) { Data = data; Name = name; }

    public static ImageInput FromFile(string path)
    {
        try { return new ImageInput(File.ReadAllBytes(path), Path.GetFileName(path)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Vision.ImageException(path, $"cannot read the file ({e.Message})", e);
        }
    }

    public static ImageInput FromBytes(ReadOnlyMemory<byte> data, string name = "image") => new(data, name);

    public bool Equals(ImageInput? other) => other is not null && (ReferenceEquals(this, other) || Data.Span.SequenceEqual(other.Data.Span));
    public override bool Equals(object? obj) => Equals(obj as ImageInput);
    public override int GetHashCode() => Data.Length;

    public static ImageInput FromStream(Stream stream, string name = "image")
    {
        var ms = new MemoryStream();
        stream.CopyTo(ms);
        return new ImageInput(ms.GetBuffer().AsMemory(0, (int)ms.Length), name);
    }
}

/// <summary>
/// The text side of a model: how a dialog becomes token ids (chat format, special tokens) and how generated
/// ids become text as they stream. The Llama 4 tokenizer and chat format implement it; tests may use a toy.
/// </summary>
public interface ITextCodec
{
    /// <summary>
    /// Ids of the dialog, ending with the assistant header so that the model answers next. With
    /// <paramref name="continuation"/> the messages follow a closed assistant turn: no begin-of-text.
    /// <paramref name="imageGrids"/> holds the tile grid of every image of the messages, in order, from which
    /// the image placeholders are expanded (a codec without image support throws when one is given).
    /// </summary>
    IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false,
                                    IReadOnlyList<(int Rows, int Cols)>? imageGrids = null);
    /// <summary>The token that closes a turn (&lt;|eot|&gt;).</summary>
    int EndOfTurn { get; }
    /// <summary>A decoder for one stream of generated ids.</summary>
    ITokenStreamDecoder CreateStreamDecoder();
}

/// <summary>Streaming decode: returns only complete text (never half a UTF-8 character); specials give "".</summary>
public interface ITokenStreamDecoder
{
    string Push(int id);
    /// <summary>Whatever is still held back at the end of the stream.</summary>
    string Flush();
}

/// <summary>A piece of streamed output: its text (possibly empty, e.g. for a stop token) and the token it came from.</summary>
public readonly record struct GeneratedPiece(string Text, int TokenId);
