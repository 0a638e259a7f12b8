using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Generation;

/// <summary>
/// <see cref="IChatClient"/> over a <see cref="Llama4Model"/>, so .NET hosts on Microsoft.Extensions.AI plug it in
/// unchanged. Calls pass the whole conversation; when it extends the previous one the KV cache is reused.
/// Calls are serialised (one session); create several clients for parallel conversations.
/// What it does not support is refused with <see cref="NotSupportedException"/>, never silently dropped: tools and
/// tool calls/results (<see cref="ChatOptions.Tools"/>, <see cref="FunctionCallContent"/>, <see cref="FunctionResultContent"/>),
/// a JSON response format, contents other than text and <c>image/*</c> <see cref="DataContent"/> (e.g. audio, PDFs,
/// <see cref="UriContent"/> — download the image and pass its bytes). <see cref="ChatOptions.AdditionalProperties"/>,
/// <see cref="ChatOptions.ModelId"/> and <see cref="ChatOptions.ConversationId"/> are ignored. A negative
/// <see cref="ChatOptions.Seed"/> is an <see cref="ArgumentOutOfRangeException"/>.
/// </summary>
public sealed class Llama4ChatClient : IChatClient
{
    readonly Llama4Model model;
    readonly ChatSession session;
    readonly SemaphoreSlim gate = new(1, 1);
    readonly ChatClientMetadata metadata;

    /// <summary>A client with its own session on <paramref name="model"/> (see also <see cref="Llama4Model.AsChatClient"/>).
    /// Dispose the client to free the session; the model stays loaded.</summary>
    /// <param name="model">A loaded model; it must outlive the client.</param>
    public Llama4ChatClient(Llama4Model model)
    {
        this.model = model;
        session = model.CreateSession();
        metadata = new ChatClientMetadata("llama4native", null, System.IO.Path.GetFileName(model.Path.TrimEnd('/', '\\')));
    }

    /// <summary>Generates the whole reply to <paramref name="messages"/> (see <see cref="GetStreamingResponseAsync"/> for what is accepted).
    /// The response carries the finish reason and the token counts of this call.</summary>
    /// <param name="messages">The whole conversation, at least one message.</param>
    /// <param name="options">Sampling and stopping (temperature, top-p, top-k, penalties, seed, max output tokens, stop
    /// sequences); null = greedy, up to 256 tokens.</param>
    /// <param name="cancellationToken">Cancels between tokens.</param>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var u in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(u.Text);
            finish = u.FinishReason ?? finish;
        }
        var stats = session.LastStats;
        return new ChatResponse(new ChatMessage(AI.ChatRole.Assistant, text.ToString()))
        {
            ModelId = metadata.DefaultModelId,
            FinishReason = finish,
            Usage = stats is null ? null : new UsageDetails { InputTokenCount = stats.PromptTokens, OutputTokenCount = stats.NewTokens, TotalTokenCount = stats.PromptTokens + stats.NewTokens },
        };
    }

    /// <summary>Streams the reply to <paramref name="messages"/>, one update per generated token with text. Messages
    /// may hold text and <c>image/*</c> <see cref="DataContent"/>; an empty conversation is an <see cref="ArgumentException"/>,
    /// anything unsupported a <see cref="NotSupportedException"/> (see the class summary) — both thrown before any token.</summary>
    /// <param name="messages">The whole conversation, at least one message.</param>
    /// <param name="options">Sampling and stopping; null = greedy, up to 256 tokens.</param>
    /// <param name="cancellationToken">Cancels between tokens.</param>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
                                                                                [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var dialog = Dialog(messages, options);
        var o = Options(options);
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var id = Guid.NewGuid().ToString("N");
            await foreach (var piece in session.GenerateAsync(dialog, o, cancellationToken).ConfigureAwait(false))
                if (piece.Text.Length > 0)
                    yield return new ChatResponseUpdate(AI.ChatRole.Assistant, piece.Text) { ResponseId = id, ModelId = metadata.DefaultModelId };
            var reason = session.LastStats?.StopReason switch
            {
                "max new tokens" or "context full" => ChatFinishReason.Length,
                _ => ChatFinishReason.Stop,
            };
            yield return new ChatResponseUpdate { Role = AI.ChatRole.Assistant, FinishReason = reason, ResponseId = id, ModelId = metadata.DefaultModelId };
        }
        finally { gate.Release(); }
    }

    /// <summary>The conversation as our messages; anything we cannot honour is a <see cref="NotSupportedException"/>.</summary>
    internal static List<Message> Dialog(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        if (options?.Tools is { Count: > 0 } tools)
            throw new NotSupportedException($"tools are not supported by Llama4Native ({tools.Count} given in ChatOptions.Tools); call the model without them");
        if (options?.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException("a JSON response format (ChatOptions.ResponseFormat) is not supported: Llama4Native has no constrained decoding; ask for JSON in the prompt instead");
        var dialog = new List<Message>();
        if (options?.Instructions is { Length: > 0 } instructions) dialog.Add(new Message(MessageRole.System, instructions));
        int n = 0;
        foreach (var m in messages)
        {
            n++;
            if (m is null) throw new ArgumentException($"message #{n} is null", nameof(messages));
            var text = new StringBuilder();
            var pics = new List<ImageInput>();
            foreach (var c in m.Contents)
            {
                switch (c)
                {
                    case TextContent t: text.Append(t.Text); break;
                    // Images arrive as DataContent: bytes with an image/* media type.
                    case DataContent d when d.HasTopLevelMediaType("image"):
                        pics.Add(ImageInput.FromBytes(d.Data, d.Name ?? $"{d.MediaType} #{pics.Count + 1} of message #{n}"));
                        break;
                    case DataContent d:
                        throw new NotSupportedException($"message #{n} holds {d.MediaType} data: only image/* DataContent is supported");
                    case UriContent u:
                        throw new NotSupportedException($"message #{n} holds a UriContent ({u.MediaType}): Llama4Native does not download; pass the image's bytes as DataContent");
                    case FunctionCallContent or FunctionResultContent:
                        throw new NotSupportedException($"message #{n} holds a {c.GetType().Name}: tool calls are not supported");
                    case TextReasoningContent or UsageContent:
                        break;   // bookkeeping of earlier replies: not part of the prompt
                    default:
                        throw new NotSupportedException($"message #{n} holds a {c.GetType().Name}, which Llama4Native cannot read (text and image/* DataContent only)");
                }
            }
            dialog.Add(new Message(Role(m.Role), text.ToString(), pics.Count > 0 ? pics : null));
        }
        if (n == 0) throw new ArgumentException("the conversation is empty: pass at least one message", nameof(messages));
        return dialog;
    }

    static MessageRole Role(AI.ChatRole r) =>
        r == AI.ChatRole.System ? MessageRole.System
        : r == AI.ChatRole.Assistant ? MessageRole.Assistant
        : r == AI.ChatRole.Tool ? MessageRole.Tool
        : MessageRole.User;

    static GenerationOptions Options(ChatOptions? o) => o is null ? new GenerationOptions() : new GenerationOptions
    {
        MaxNewTokens = o.MaxOutputTokens ?? 256,
        Temperature = o.Temperature ?? 0,
        TopP = o.TopP ?? 1,
        TopK = o.TopK ?? 0,
        FrequencyPenalty = o.FrequencyPenalty ?? 0,
        PresencePenalty = o.PresencePenalty ?? 0,
        Seed = o.Seed is < 0 ? throw new ArgumentOutOfRangeException(nameof(o.Seed), o.Seed, "the seed must be ≥ 0") : (ulong)(o.Seed ?? 0),
        StopStrings = o.StopSequences is { } s ? [.. s] : [],
    };

    /// <summary>Returns the client's <see cref="ChatClientMetadata"/> (provider "llama4native", model id = the checkpoint
    /// folder's name), the client itself, or the <see cref="Llama4Model"/> it runs on; null for anything else or a key.</summary>
    /// <param name="serviceType">The type asked for.</param>
    /// <param name="serviceKey">Must be null (keyed services are not offered).</param>
    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(model) ? model
        : null;

    /// <summary>Frees the client's session (cancelling a running generation); the model stays loaded.</summary>
    public void Dispose() { session.Dispose(); gate.Dispose(); }
}
