namespace Llama4Native.Generation;

public enum MessageRole { System, User, Assistant, Tool }

/// <summary>One turn of a conversation.</summary>
public sealed record Message(MessageRole Role, string Text);

/// <summary>
/// The text side of a model: how a dialog becomes token ids (chat format, special tokens) and how generated
/// ids become text as they stream. The Llama 4 tokenizer and chat format implement it; tests may use a toy.
/// </summary>
public interface ITextCodec
{
    /// <summary>
    /// Ids of the dialog, ending with the assistant header so that the model answers next. With
    /// <paramref name="continuation"/> the messages follow a closed assistant turn: no begin-of-text.
    /// </summary>
    IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false);
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
