using System.Runtime.CompilerServices;
using System.Text;
using Llama4Native.Generation;
using Llama4Native.Vision;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Serving;

/// <summary>
/// <see cref="IChatClient"/> over a <see cref="ServingScheduler"/>: calls from many callers at once share the
/// scheduler's steps (the same engine the HTTP server uses), each call a sequence of its own. Stateless like the
/// HTTP API: every call feeds its whole conversation (no KV reuse across turns — <see cref="Llama4ChatClient"/>
/// keeps one conversation's cache instead). A full queue surfaces as <see cref="ServerOverloadedException"/>.
/// </summary>
internal sealed class ServingChatClient(ServingScheduler scheduler, ITextCodec codec, Llama4ImageProcessor? images = null, string modelId = "llama4") : IChatClient
{
    readonly ChatClientMetadata metadata = new("llama4native", null, modelId);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AI.ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        await foreach (var u in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(u.Text);
            finish = u.FinishReason ?? finish;
            if (u.Contents.OfType<UsageContent>().FirstOrDefault() is { } uc) usage = uc.Details;
        }
        return new ChatResponse(new AI.ChatMessage(AI.ChatRole.Assistant, text.ToString())) { ModelId = modelId, FinishReason = finish, Usage = usage };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AI.ChatMessage> messages, ChatOptions? options = null,
                                                                                [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var dialog = new List<Message>();
        if (options?.Instructions is { Length: > 0 } instructions) dialog.Add(new Message(MessageRole.System, instructions));
        foreach (var m in messages)
        {
            var pics = m.Contents.OfType<DataContent>().Where(d => d.HasTopLevelMediaType("image"))
                        .Select((d, i) => ImageInput.FromBytes(d.Data, d.Name ?? $"{d.MediaType} #{i + 1}")).ToList();
            var role = m.Role == AI.ChatRole.System ? MessageRole.System
                     : m.Role == AI.ChatRole.Assistant ? MessageRole.Assistant
                     : m.Role == AI.ChatRole.Tool ? MessageRole.Tool
                     : MessageRole.User;
            dialog.Add(new Message(role, m.Text, pics.Count > 0 ? pics : null));
        }
        var (ids, tiles) = ServingPrompt.Dialog(codec, images, dialog);
        int room = scheduler.Engine.MaxContext - ids.Count;
        var o = new GenerationOptions
        {
            MaxNewTokens = Math.Max(0, Math.Min(options?.MaxOutputTokens ?? 256, room)),
            Temperature = options?.Temperature ?? 0,
            TopP = options?.TopP ?? 1,
            TopK = options?.TopK ?? 0,
            FrequencyPenalty = options?.FrequencyPenalty ?? 0,
            PresencePenalty = options?.PresencePenalty ?? 0,
            Seed = (ulong)(options?.Seed ?? 0),
            StopStrings = options?.StopSequences is { } s ? [.. s] : [],
        };
        var seq = scheduler.Submit(new ServingRequest { Prompt = ids, Options = o, Images = tiles, Cancellation = cancellationToken });
        var id = Guid.NewGuid().ToString("N");
        await foreach (var piece in seq.Pieces.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            if (piece.Text.Length > 0)
                yield return new ChatResponseUpdate(AI.ChatRole.Assistant, piece.Text) { ResponseId = id, ModelId = modelId };
        var r = await seq.Completion.ConfigureAwait(false);
        if (r.Reason == FinishReason.Error) throw new InvalidOperationException("generation failed: " + r.Detail, r.Error);
        cancellationToken.ThrowIfCancellationRequested();
        yield return new ChatResponseUpdate
        {
            Role = AI.ChatRole.Assistant, ResponseId = id, ModelId = modelId,
            FinishReason = r.Reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop,
            Contents = [new UsageContent(new UsageDetails { InputTokenCount = r.PromptTokens, OutputTokenCount = r.CompletionTokens, TotalTokenCount = r.PromptTokens + r.CompletionTokens })],
        };
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(scheduler) ? scheduler
        : null;

    public void Dispose() { }
}
