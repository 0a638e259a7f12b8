namespace Llama4Native.Generation;

/// <summary>Who speaks in a <see cref="Message"/>; each role has its own header in the Llama 4 chat format.</summary>
public enum MessageRole
{
    /// <summary>Instructions that frame the conversation (at most one, first).</summary>
    System,
    /// <summary>The person talking to the model.</summary>
    User,
    /// <summary>The model's own earlier replies.</summary>
    Assistant,
    /// <summary>The output of a tool the model called (Llama 4's <c>ipython</c> role).</summary>
    Tool,
}

/// <summary>One turn of a conversation. <paramref name="Images"/> come before the text in the prompt (as in
/// HF's chat template for `[image, …, text]` content). Messages are equal when role, text and images (by their
/// bytes) are: that is how a session recognises the history it has already fed.</summary>
/// <param name="Role">Who speaks.</param>
/// <param name="Text">What is said; "" for none, never null.</param>
/// <param name="Images">Images attached to the turn (user turns), or null.</param>
public sealed record Message(MessageRole Role, string Text, IReadOnlyList<ImageInput>? Images = null)
{
    /// <summary>The message's text (never null: a null text is an <see cref="ArgumentNullException"/>).</summary>
    public string Text { get; init => field = value ?? throw new ArgumentNullException(nameof(Text), NullText); } = Text ?? throw new ArgumentNullException(nameof(Text), NullText);
    const string NullText = "a message needs a text (use \"\" for none)";
    /// <summary>The message's images, in order (null or empty for none; no null entries).</summary>
    public IReadOnlyList<ImageInput>? Images { get; init; } = Images is not null && Images.Any(i => i is null)
        ? throw new ArgumentException("a message's images must not contain null", nameof(Images)) : Images;

    /// <summary>A message with its images given inline: <c>new Message(MessageRole.User, "What is this?", ImageInput.FromFile("cat.jpg"))</c>.</summary>
    /// <param name="role">Who speaks.</param>
    /// <param name="text">What is said; "" for none, never null.</param>
    /// <param name="images">The images, in order.</param>
    public Message(MessageRole role, string text, params ImageInput[] images) : this(role, text, (IReadOnlyList<ImageInput>)images) { }

    /// <summary>Equal when role, text and images (compared by their bytes) are.</summary>
    /// <param name="other">The message to compare with.</param>
    public bool Equals(Message? other) =>
        other is not null && Role == other.Role && Text == other.Text &&
        (Images ?? []).SequenceEqual(other.Images ?? []);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Role, Text, Images?.Count ?? 0);
}

/// <summary>
/// An image attached to a message: the encoded file's bytes (JPEG, PNG, BMP, GIF), read once when the input is
/// made, so a stream may be closed afterwards and a transcript can be encoded again. <see cref="Name"/> names the
/// image in errors.
/// </summary>
public sealed class ImageInput : IEquatable<ImageInput>
{
    /// <summary>The encoded image file, as read.</summary>
    public ReadOnlyMemory<byte> Data { get; }
    /// <summary>How errors name the image: the file name, or the name given to <see cref="FromBytes"/>/<see cref="FromStream"/>.</summary>
    public string Name { get; }

    ImageInput(ReadOnlyMemory<byte> data, string name) { Data = data; Name = name; }

    /// <summary>Reads an image file now; a missing or unreadable file is an <see cref="Vision.ImageException"/> naming it.
    /// The bytes are decoded (and a corrupt image reported) when the message is generated from.</summary>
    /// <param name="path">The image file (JPEG, PNG, BMP or GIF).</param>
    public static ImageInput FromFile(string path)
    {
        try { return new ImageInput(File.ReadAllBytes(path), Path.GetFileName(path)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Vision.ImageException(path, $"cannot read the file ({e.Message})", e);
        }
    }

    /// <summary>An image from encoded bytes already in memory (not copied: do not change them afterwards).</summary>
    /// <param name="data">The encoded image file.</param>
    /// <param name="name">How errors name it.</param>
    public static ImageInput FromBytes(ReadOnlyMemory<byte> data, string name = "image") => new(data, name);

    /// <summary>Equal when the bytes are.</summary>
    /// <param name="other">The image to compare with.</param>
    public bool Equals(ImageInput? other) => other is not null && (ReferenceEquals(this, other) || Data.Span.SequenceEqual(other.Data.Span));
    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as ImageInput);
    /// <inheritdoc/>
    public override int GetHashCode() => Data.Length;

    /// <summary>Reads the rest of <paramref name="stream"/> now (it may be closed afterwards).</summary>
    /// <param name="stream">The encoded image file, from its current position to its end.</param>
    /// <param name="name">How errors name it.</param>
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
    /// <summary>Takes the next generated id and returns the text it completes ("" while a character is incomplete).</summary>
    /// <param name="id">A token id of the model's vocabulary.</param>
    string Push(int id);
    /// <summary>Whatever is still held back at the end of the stream.</summary>
    string Flush();
}

/// <summary>A piece of streamed output: its text (possibly empty, e.g. for a stop token) and the token it came from.</summary>
/// <param name="Text">The text this token completed; "" for special tokens and incomplete characters.</param>
/// <param name="TokenId">The generated token id.</param>
public readonly record struct GeneratedPiece(string Text, int TokenId);
