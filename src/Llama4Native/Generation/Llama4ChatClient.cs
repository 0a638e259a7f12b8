using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Generation;

/// <summary>
/// <see cref="IChatClient"/> over a <see cref="Llama4Model"/>, so .NET hosts on Microsoft.Extensions.AI plug it in
/// unchanged. Calls pass the whole conversation; when it extends the previous one the KV cache is reused.
/// Calls are serialised (one session); create several clients for parallel conversations.
/// </summary>
public sealed class Llama4ChatClient : IChatClient
{
    readonly Llama4Model model;
    readonly ChatSession session;
    readonly SemaphoreSlim gate = new(1, 1);
    readonly ChatClientMetadata metadata;

    public Llama4ChatClient(Llama4Model model)
    {
        this.model = model;
        session = model.CreateSession();
        metadata = new ChatClientMetadata("llama4native", null, System.IO.Path.GetFileName(model.Path.TrimEnd('/', '\\')));
    }

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

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
                                                                                [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var dialog = new List<Message>();
        if (options?.Instructions is { Length: > 0 } instructions) dialog.Add(new Message(MessageRole.System, instructions));
        foreach (var m in messages)
        {
            // Images arrive as DataContent (bytes with an image/* media type); other contents are not ours to read.
            var pics = m.Contents.OfType<DataContent>().Where(d => d.HasTopLevelMediaType("image"))
                        .Select((d, i) => ImageInput.FromBytes(d.Data, d.Name ?? $"{d.MediaType} #{i + 1}")).ToList();
            dialog.Add(new Message(Role(m.Role), m.Text, pics.Count > 0 ? pics : null));
        }
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
        Seed = (ulong)(o.Seed ?? 0),
        StopStrings = o.StopSequences is { } s ? [.. s] : [],
    };

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(model) ? model
        : null;

    public void Dispose() { session.Dispose(); gate.Dispose(); }
}
