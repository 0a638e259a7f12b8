using System.Text;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tests.Checkpoints;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Tests.Generation;

/// <summary>
/// The library API end to end on the tiny fixture with a toy byte-level codec (the fixture's vocabulary is
/// 512 random tokens; ids 0–255 stand for bytes, the chat specials are the fixture's own ids).
/// </summary>
[Category("Emulator")]
public class ChatApiTests
{
    internal sealed class ByteCodec : ITextCodec
    {
        public const int Bos = 448, HeaderStart = 453, HeaderEnd = 454, Eot = 456;
        public int EndOfTurn => Eot;
        public IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false,
                                               IReadOnlyList<(int Rows, int Cols)>? imageGrids = null)
        {
            if (imageGrids is { Count: > 0 }) throw new NotSupportedException("the byte codec has no image tokens");
            var ids = continuation ? new List<int>() : new List<int> { Bos };
            void Header(string role) { ids.Add(HeaderStart); ids.AddRange(Encoding.UTF8.GetBytes(role).Select(b => (int)b)); ids.Add(HeaderEnd); ids.AddRange("\n\n"u8.ToArray().Select(b => (int)b)); }
            foreach (var m in messages)
            {
                Header(m.Role.ToString().ToLowerInvariant());
                ids.AddRange(Encoding.UTF8.GetBytes(m.Text).Select(b => (int)b));
                ids.Add(Eot);
            }
            Header("assistant");
            return ids;
        }
        public ITokenStreamDecoder CreateStreamDecoder() => new Decoder();
        sealed class Decoder : ITokenStreamDecoder
        {
            readonly List<byte> pending = [];
            readonly System.Text.Decoder utf8 = Encoding.UTF8.GetDecoder();
            public string Push(int id)
            {
                if (id > 255) return "";
                var chars = new char[4];
                int n = utf8.GetChars([(byte)id], 0, 1, chars, 0, flush: false);
                return new string(chars, 0, n);
            }
            public string Flush() { var chars = new char[8]; int n = utf8.GetChars([], 0, 0, chars, 0, flush: true); return new string(chars, 0, n); }
        }
    }

    static Llama4Model Load(int maxContext = 256) =>
        Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"), new Llama4ModelOptions(Device: "emu", MaxContext: maxContext, MaxPrefillPiece: 32, Codec: new ByteCodec()));

    static List<int> Reference(Llama4Model model, IReadOnlyList<int> prompt, int n)
    {
        using var gen = new TokenGenerator(model.Weights, ComputeMode.F32, 256, 32);
        return gen.Generate(prompt, new GenerationOptions { MaxNewTokens = n }).ToList();
    }

    [Test]
    public async Task SessionStreamsTheSameTokensAsTheGenerator_AndReusesTheCacheNextTurn()
    {
        using var model = Load();
        using var chat = model.CreateSession();
        var dialog = new List<Message> { new(MessageRole.System, "be brief"), new(MessageRole.User, "hi there") };
        var o = new GenerationOptions { MaxNewTokens = 12 };
        var pieces = new List<GeneratedPiece>();
        await foreach (var p in chat.GenerateAsync(dialog, o)) pieces.Add(p);
        var want = Reference(model, new ByteCodec().EncodeDialog(dialog), 12);
        Assert.That(pieces.Where(p => p.TokenId >= 0).Select(p => p.TokenId), Is.EqualTo(want));
        int used = chat.ContextUsed;

        // Next turn: the dialog grows by the reply and a new user message; only the new tokens are fed.
        var reply = string.Concat(pieces.Select(p => p.Text));
        dialog.Add(new(MessageRole.Assistant, reply));
        dialog.Add(new(MessageRole.User, "more"));
        await foreach (var _ in chat.GenerateAsync(dialog, o with { MaxNewTokens = 3 })) { }
        var turn = new ByteCodec().EncodeDialog([new(MessageRole.User, "more")], continuation: true);
        // Fed now: the pending last token, the end of the assistant turn (the reply hit max tokens) and the new turn.
        Assert.That(chat.LastStats!.PromptTokens, Is.EqualTo(turn.Count + 2), "only the new turn is fed: the cache was reused");
        Assert.That(chat.ContextUsed, Is.EqualTo(used + 1 + turn.Count + 1 + 2));
    }

    [Test]
    public async Task StopStringsCutTheTextAndTheSessionSurvivesCancellation()
    {
        using var model = Load();
        using var chat = model.CreateSession();
        var all = new StringBuilder();
        await foreach (var p in chat.GenerateAsync("abc", new GenerationOptions { MaxNewTokens = 40 })) all.Append(p.Text);
        var text = all.ToString();
        Assume.That(text.Length, Is.GreaterThan(4), "the random model produced too little text to pick a stop string from");
        string stop = text.Substring(text.Length / 2, 2);
        chat.Reset();
        var cut = new StringBuilder();
        await foreach (var p in chat.GenerateAsync("abc", new GenerationOptions { MaxNewTokens = 40, StopStrings = [stop] })) cut.Append(p.Text);
        Assert.That(cut.ToString(), Is.EqualTo(text[..text.IndexOf(stop, StringComparison.Ordinal)]));

        chat.Reset();
        using var cts = new CancellationTokenSource();
        int n = 0;
        Assert.ThrowsAsync<TaskCanceledException>(async () =>
        {
            await foreach (var _ in chat.GenerateAsync("abc", new GenerationOptions { MaxNewTokens = 40 }, cts.Token)) if (++n == 2) cts.Cancel();
        });
        await foreach (var _ in chat.GenerateAsync("abc", new GenerationOptions { MaxNewTokens = 2 })) { }  // still usable
        Assert.That(chat.LastStats!.NewTokens, Is.EqualTo(2));
    }

    [Test]
    public async Task IChatClientStreamsAndAnswers()
    {
        using var model = Load();
        using IChatClient client = model.AsChatClient();
        var messages = new List<ChatMessage> { new(AI.ChatRole.User, "hello") };
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 8 })) updates.Add(u);
        Assert.That(updates[^1].FinishReason, Is.Not.Null);
        var streamed = string.Concat(updates.Select(u => u.Text));

        using var model2 = Load();
        using IChatClient client2 = model2.AsChatClient();
        var response = await client2.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 8 });
        Assert.That(response.Text, Is.EqualTo(streamed), "streaming and non-streaming agree");
        Assert.That(response.Usage!.OutputTokenCount, Is.EqualTo(8).Or.LessThan(8));
        Assert.That(client.GetService(typeof(ChatClientMetadata)), Is.InstanceOf<ChatClientMetadata>());
        Assert.That(client.GetService(typeof(Llama4Model)), Is.SameAs(model));
    }
}
