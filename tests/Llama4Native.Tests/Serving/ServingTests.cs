#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental in the OpenAI package
using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Server;
using Llama4Native.Serving;
using Llama4Native.Tests.Checkpoints;
using OpenAI;
using OpenAI.Chat;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Tests.Serving;

/// <summary>
/// The serving layer on the emulated device with the tiny Maverick fixture (512-token random vocabulary, a toy
/// byte codec): the scheduler's batch invariance and bookkeeping, and the HTTP server driven by the official
/// OpenAI .NET client (streaming and not, 8 concurrent streams, a client that goes away) and by raw HTTP for
/// what the client cannot send (bad requests, /v1/completions, /metrics). The whole fixture runs over both step
/// engines: the sequential one, and the batched one (one forward per step over a paged KV cache of 16-token pages) —
/// every reply must be the lone <see cref="TokenGenerator"/>'s, alone or among others.
/// </summary>
[Category("Emulator")]
[NonParallelizable]
[TestFixture(ServingEngine.Sequential)]
[TestFixture(ServingEngine.Batched)]
public class ServingTests(ServingEngine kind)
{
    const int Context = 128, Piece = 32, Slots = 8, PageTokens = 16;
    Llama4Model model = null!;
    ServingScheduler scheduler = null!;
    Llama4Server server = null!;
    HttpClient http = null!;
    Random rng = null!;

    /// <summary>Bytes 0–255 are ids 0–255; the chat specials are the fixture's own ids (eot = its eos 456).</summary>
    sealed class ByteCodec : ITextCodec, IPlainTextEncoder
    {
        public const int Bos = 448, HeaderStart = 453, HeaderEnd = 454, Eot = 456;
        public int EndOfTurn => Eot;
        public IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false, IReadOnlyList<(int Rows, int Cols)>? imageGrids = null)
        {
            if (imageGrids is { Count: > 0 }) throw new NotSupportedException("the byte codec has no image tokens");
            var ids = continuation ? new List<int>() : [Bos];
            void Header(string role) { ids.Add(HeaderStart); ids.AddRange(Bytes(role)); ids.Add(HeaderEnd); ids.AddRange(Bytes("\n\n")); }
            foreach (var m in messages) { Header(m.Role.ToString().ToLowerInvariant()); ids.AddRange(Bytes(m.Text)); ids.Add(Eot); }
            Header("assistant");
            return ids;
        }
        public IReadOnlyList<int> EncodePlain(string text, bool beginOfText) => beginOfText ? [Bos, .. Bytes(text)] : Bytes(text);
        static List<int> Bytes(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToList();
        public ITokenStreamDecoder CreateStreamDecoder() => new Decoder();
        sealed class Decoder : ITokenStreamDecoder
        {
            readonly System.Text.Decoder utf8 = Encoding.UTF8.GetDecoder();
            public string Push(int id)
            {
                if (id > 255) return "";
                var chars = new char[4];
                return new string(chars, 0, utf8.GetChars([(byte)id], 0, 1, chars, 0, flush: false));
            }
            public string Flush() { var chars = new char[8]; return new string(chars, 0, utf8.GetChars([], 0, 0, chars, 0, flush: true)); }
        }
    }

    static readonly ByteCodec Codec = new();

    [OneTimeSetUp]
    public async Task Start()
    {
        rng = new Random((int)CkptTestUtil.Seed("serving"));
        model = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"),
                                 new Llama4ModelOptions(Device: "emu", Compute: ComputeMode.F32, MaxContext: Context, MaxPrefillPiece: Piece, Codec: Codec));
        scheduler = new ServingScheduler(Engine(Slots), Codec, new ServingOptions { MaxQueue = 16, StepTokenBudget = 48 });
        server = await Llama4Server.StartAsync(scheduler, Codec, null, new Llama4ServerOptions
        {
            Host = "127.0.0.1", Port = 0, ModelId = "tiny", HandleSignals = false, MaxBodyBytes = 1 << 20, ShutdownTimeout = TimeSpan.FromSeconds(5),
        });
        http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
    }

    /// <summary>A step engine of this fixture's kind over the loaded model.</summary>
    IStepEngine Engine(int slots) => kind == ServingEngine.Batched
        ? new BatchedStepEngine(model.Weights, model.Compute, slots, Context, Piece, pageSize: PageTokens)
        : SequentialStepEngine.For(model, slots, Context);

    /// <summary>Forwards the batched engine has run (0 for the sequential one).</summary>
    long Forwards => (scheduler.Engine as BatchedStepEngine)?.Forwards ?? 0;

    /// <summary>Every KV page of the batched engine is back in its pool (the sequential engine has no pool).</summary>
    void AssertAllPagesFree()
    {
        if (scheduler.Engine is BatchedStepEngine b) Assert.That(b.Cache.FreePages, Is.EqualTo(b.Cache.NopePages), "every KV page is back in the pool");
    }

    [OneTimeTearDown]
    public async Task Stop()
    {
        http?.Dispose();
        if (server is not null) await server.DisposeAsync();
        scheduler?.Dispose();
        model?.Dispose();
    }

    ChatClient Client(string key = "unused", Uri? at = null) =>
        new("tiny", new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(at ?? server.BaseAddress, "/v1"), NetworkTimeout = TimeSpan.FromSeconds(60), Transport = Transport });

    // A client that leaves a stream early closes its connection: no draining of the rest of the response to reuse it
    // (SocketsHttpHandler's default), which would hide the disconnect from the server.
    static readonly System.ClientModel.Primitives.HttpClientPipelineTransport Transport =
        new(new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0, ResponseDrainTimeout = TimeSpan.Zero }));

    int[] RandomPrompt(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(0, 448)).ToArray();

    /// <summary>What a lone TokenGenerator gives (no scheduler), with the scheduler's own stop rules.</summary>
    List<int> Lone(int[] prompt, GenerationOptions o)
    {
        using var gen = new TokenGenerator(model.Weights, ComputeMode.F32, Context, Piece);
        var stops = new HashSet<int>(scheduler.Engine.ModelStops);
        var list = new List<int>();
        foreach (var t in gen.Generate(prompt, o with { StopAtModelStops = false, MaxNewTokens = int.MaxValue }))
        {
            list.Add(t);
            if (stops.Contains(t) || list.Count == o.MaxNewTokens || gen.Cache.Position >= Context) break;
        }
        return list;
    }

    static async Task<(List<int> Tokens, ServingResult Result)> Collect(ServingSequence s)
    {
        var ids = new List<int>();
        await foreach (var p in s.Pieces.ReadAllAsync()) if (p.TokenId >= 0) ids.Add(p.TokenId);
        return (ids, await s.Completion);
    }

    async Task WaitIdle()
    {
        for (int i = 0; i < 400 && scheduler.Snapshot() is var s && (s.Running > 0 || s.Waiting > 0); i++) await Task.Delay(25);
        Assert.That(scheduler.Snapshot().Running, Is.Zero, "sequences still running");
    }

    [Test]
    public async Task AGreedyReplyDoesNotDependOnWhatElseRuns()
    {
        // Prompt lengths across piece boundaries (1, < piece, = piece, several pieces); greedy and seeded sampling.
        int[] lengths = [1, 7, 32, 33, 50, 70, 95, 12];
        var requests = lengths.Select((n, i) => new ServingRequest
        {
            Prompt = RandomPrompt(n),
            Options = i % 2 == 0 ? new GenerationOptions { MaxNewTokens = 6 }
                                 : new GenerationOptions { MaxNewTokens = 6, Temperature = 0.9f, TopP = 0.95f, Seed = (ulong)rng.NextInt64() },
        }).ToArray();
        var alone = new List<List<int>>();
        foreach (var r in requests) alone.Add((await Collect(scheduler.Submit(r))).Tokens);
        long forwards = Forwards;
        var together = await Task.WhenAll(requests.Select(r => scheduler.Submit(r)).ToList().Select(Collect));
        forwards = Forwards - forwards;
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.That(together[i].Tokens, Is.EqualTo(alone[i]), $"request {i} ({lengths[i]} prompt tokens): alone vs among {requests.Length - 1} others");
            Assert.That(alone[i], Is.EqualTo(Lone(requests[i].Prompt.ToArray(), requests[i].Options)), $"request {i}: served vs a lone TokenGenerator");
            Assert.That(together[i].Result.Reason, Is.AnyOf(FinishReason.Stop, FinishReason.Length));
            Assert.That(together[i].Result.PromptTokens, Is.EqualTo(lengths[i]));
        }
        await WaitIdle();
        Assert.That(scheduler.Snapshot().KvBlocksUsed, Is.Zero, "every finished sequence freed its KV");
        AssertAllPagesFree();
        if (kind == ServingEngine.Batched)
        {
            int pieces = requests.Select((r, i) => (r.Prompt.Count + Piece - 1) / Piece + together[i].Tokens.Count - 1).Sum();
            Assert.That(forwards, Is.LessThan(pieces / 2), $"{forwards} forwards for {pieces} pieces: the steps held several sequences");
        }
    }

    [Test]
    public async Task AReplyThatReachesTheContextEndsWithLength()
    {
        int p = Context - rng.Next(3, 10);
        var prompt = RandomPrompt(p);
        var o = new GenerationOptions { MaxNewTokens = 50, StopAtModelStops = false, Temperature = 0.8f, Seed = (ulong)rng.NextInt64() };
        var (tokens, result) = await Collect(scheduler.Submit(new ServingRequest { Prompt = prompt, Options = o }));
        Assert.That(result.Reason, Is.EqualTo(FinishReason.Length));
        Assert.That(tokens, Has.Count.EqualTo(Context - p + 1), "every position of the context is used; the last token is sampled, not fed");
        using var gen = new TokenGenerator(model.Weights, ComputeMode.F32, Context, Piece);
        Assert.That(tokens, Is.EqualTo(gen.Generate(prompt, o with { MaxNewTokens = Context - p + 1 }).ToList()), "the lone generator's tokens");
        await WaitIdle();
        AssertAllPagesFree();
    }

    [Test]
    public async Task CancellingARunningOrQueuedRequestFreesItsSlot()
    {
        using var cts = new CancellationTokenSource();
        var s = scheduler.Submit(new ServingRequest { Prompt = RandomPrompt(10), Options = new GenerationOptions { MaxNewTokens = 100, StopAtModelStops = false }, Cancellation = cts.Token });
        await s.Pieces.ReadAsync();          // running: it produced a token
        cts.Cancel();
        var r = await s.Completion.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.That(r.Reason, Is.EqualTo(FinishReason.Cancelled));
        Assert.That(r.CompletionTokens, Is.LessThan(100));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var q = scheduler.Submit(new ServingRequest { Prompt = RandomPrompt(5), Cancellation = cancelled.Token });
        Assert.That((await q.Completion.WaitAsync(TimeSpan.FromSeconds(30))).Reason, Is.EqualTo(FinishReason.Cancelled));
        await WaitIdle();
        Assert.That(scheduler.Snapshot().KvBlocksUsed, Is.Zero);
        AssertAllPagesFree();
    }

    [Test]
    public void BadSubmissionsAreRefusedBeforeTheyQueue()
    {
        Assert.Throws<ContextLengthException>(() => scheduler.Submit(new ServingRequest { Prompt = RandomPrompt(Context + 1) }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new ServingRequest { Prompt = [] }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new ServingRequest { Prompt = [512] }));
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new ServingRequest { Prompt = [1, 492, 2] }), "the image token without images");
        Assert.Throws<ArgumentException>(() => scheduler.Submit(new ServingRequest { Prompt = [1], Options = new GenerationOptions { TopP = 0 } }));
    }

    /// <summary>A batched engine whose page pool holds less than its slots at full context: a request waits for pages
    /// (not only for a slot), in FIFO order, and one that could never fit is refused at once.</summary>
    [Test]
    public async Task ARequestWaitsForKvPagesAndOneLargerThanThePoolIsRefused()
    {
        using var small = new ServingScheduler(new BatchedStepEngine(model.Weights, model.Compute, 3, Context, Piece, pages: 4, pageSize: PageTokens), Codec,
                                               new ServingOptions { MaxQueue = 4 });
        Assert.That(small.Engine.KvBlocks, Is.EqualTo(4));
        Assert.Throws<ContextLengthException>(() => small.Submit(new ServingRequest { Prompt = RandomPrompt(10), Options = new GenerationOptions { MaxNewTokens = 60 } }),
                                              "70 positions = 5 pages of 16 > the pool's 4");
        var o = new GenerationOptions { MaxNewTokens = 30, StopAtModelStops = false };   // 10 + 30 = 40 positions = 3 pages each
        var requests = Enumerable.Range(0, 2).Select(_ => new ServingRequest { Prompt = RandomPrompt(10), Options = o }).ToArray();
        var a = small.Submit(requests[0]);
        await a.Pieces.ReadAsync();                   // a runs and holds 3 of the 4 pages
        var b = small.Submit(requests[1]);
        await Task.Delay(100);
        var mid = small.Snapshot();
        Assert.That((mid.Running, mid.Waiting, mid.KvBlocksUsed), Is.EqualTo((1, 1, 3)), "b waits for pages although a slot is free");
        var (ta, tb) = (await Collect(a), await Collect(b));
        Assert.That(ta.Tokens, Has.Count.EqualTo(29), "a's first token was read above");
        Assert.That(tb.Tokens, Is.EqualTo(Lone([.. requests[1].Prompt], o)));
        for (int i = 0; i < 200 && small.Snapshot().Running > 0; i++) await Task.Delay(25);
        Assert.That(small.Snapshot().KvBlocksUsed, Is.Zero);
        var engine = (BatchedStepEngine)small.Engine;
        Assert.That(engine.Cache.FreePages, Is.EqualTo(4));
    }

    [Test]
    public async Task AStopStringEndsTheReplyAndIsNotReturned()
    {
        var prompt = RandomPrompt(9);
        var full = await Collect(scheduler.Submit(new ServingRequest { Prompt = prompt, Options = new GenerationOptions { MaxNewTokens = 12 } }));
        var text = Decode(full.Tokens);
        int k = Enumerable.Range(1, Math.Max(0, text.Length - 1)).FirstOrDefault(i => text[i] != '\uFFFD' && !char.IsSurrogate(text[i]));
        if (k == 0) Assert.Ignore("the reply has no usable character for a stop string");
        var stop = text[k].ToString();
        var s = scheduler.Submit(new ServingRequest { Prompt = prompt, Options = new GenerationOptions { MaxNewTokens = 12, StopStrings = [stop] } });
        var sb = new StringBuilder();
        await foreach (var p in s.Pieces.ReadAllAsync()) sb.Append(p.Text);
        var r = await s.Completion;
        Assert.That(sb.ToString(), Is.EqualTo(text[..text.IndexOf(stop, StringComparison.Ordinal)]));
        Assert.That(r.Reason, Is.EqualTo(FinishReason.Stop));
        Assert.That(r.Detail, Is.EqualTo("stop string"));
    }

    [Test]
    public async Task IChatClientsAnswerOnTheSameModel()
    {
        // Microsoft.Extensions.AI over the scheduler: concurrent calls share its steps.
        using AI.IChatClient client = new ServingChatClient(scheduler, Codec, null, "tiny");
        string[] prompts = ["first question", "second, longer question about things", "third"];
        var replies = await Task.WhenAll(prompts.Select(p => client.GetResponseAsync([new AI.ChatMessage(AI.ChatRole.User, p)], new AI.ChatOptions { MaxOutputTokens = 5 })));
        for (int i = 0; i < prompts.Length; i++)
        {
            var want = Lone([.. Codec.EncodeDialog([new Message(MessageRole.User, prompts[i])])], new GenerationOptions { MaxNewTokens = 5 });
            Assert.That(replies[i].Text, Is.EqualTo(Decode(want)), prompts[i]);
            Assert.That(replies[i].Usage?.OutputTokenCount, Is.EqualTo(want.Count));
        }
        // The library's own one-conversation client keeps working on the same loaded model.
        using var lib = model.AsChatClient();
        var own = await lib.GetResponseAsync([new AI.ChatMessage(AI.ChatRole.User, prompts[0])], new AI.ChatOptions { MaxOutputTokens = 5 });
        Assert.That(own.Text, Is.EqualTo(replies[0].Text));
    }

    [Test]
    public void ToolsRenderAndCallsParseLikeTheLlama4ChatTemplate()
    {
        using var doc = JsonDocument.Parse("{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather in a city\"," +
                                           "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}");
        var rendered = ToolCalls.Render([new Message(MessageRole.System, " Be brief. "), new Message(MessageRole.User, " Weather in Paris? ")], [doc.RootElement]);
        Assert.That(rendered[0].Text, Is.EqualTo("Environment: ipython\nBe brief."));
        // What Jinja's `t | tojson(indent=4)` prints (json.dumps, indent 4, keys as given).
        const string json = "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Weather in a city\",\n" +
                            "        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n" +
                            "                    \"type\": \"string\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}";
        Assert.That(rendered[1].Text, Is.EqualTo(ToolCalls.Instruction + json + "\n\nWeather in Paris?"));
        Assert.That(ToolCalls.CallText("get_weather", "{\"city\":\"Paris\"}"), Is.EqualTo("{\"name\": \"get_weather\", \"parameters\": {\"city\":\"Paris\"}}"));

        Assert.That(ToolCalls.Parse(" {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n"), Is.EqualTo(new[] { ("get_weather", "{\"city\": \"Paris\"}") }));
        Assert.That(ToolCalls.Parse("[{\"name\": \"a\", \"parameters\": {}}, {\"name\": \"b\", \"arguments\": {\"x\": 1}}]")!.Select(c => c.Name), Is.EqualTo(new[] { "a", "b" }));
        Assert.That(ToolCalls.Parse("It is sunny in Paris."), Is.Null);
        Assert.That(ToolCalls.Parse("{\"name\": 3, \"parameters\": {}}"), Is.Null);
        Assert.That(ToolCalls.Parse("{\"name\": \"a\", \"parameters\": {"), Is.Null);
    }

    /// <summary>An engine that answers every request with the same bytes, then end-of-turn: what a real model's
    /// tool call looks like on the wire, without a real model.</summary>
    sealed class ScriptedEngine(string reply) : IStepEngine
    {
        readonly int[] script = [.. Encoding.UTF8.GetBytes(reply).Select(b => (int)b), ByteCodec.Eot];
        readonly int[] position = new int[2], at = new int[2];
        public int Slots => 2;
        public int MaxContext => 4096;
        public int KvBlockTokens => 4096;
        public int KvBlocks => 2;
        public int MaxPrefillPiece => 64;
        public int Vocab => 512;
        public IReadOnlySet<int> ModelStops { get; } = new HashSet<int> { ByteCodec.Eot };
        public int ImageToken => -1;
        public void Begin(int slot, GenerationOptions options, ImageTiles? images) { position[slot] = 0; at[slot] = 0; }
        public void Step(ReadOnlySpan<StepPiece> pieces, Span<StepResult> results)
        {
            for (int i = 0; i < pieces.Length; i++)
            {
                var p = pieces[i];
                position[p.Slot] += p.Tokens.Length;
                results[i] = new StepResult(p.Sample ? script[Math.Min(at[p.Slot]++, script.Length - 1)] : -1, null);
            }
        }
        public int Position(int slot) => position[slot];
        public void End(int slot) { }
        public void Dispose() { }
    }

    [Test]
    public async Task AToolCallReplyComesBackAsToolCallsStreamingAndNot()
    {
        using var sched = new ServingScheduler(new ScriptedEngine("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"), Codec);
        await using var srv = await Llama4Server.StartAsync(sched, Codec, null, new Llama4ServerOptions { Port = 0, ModelId = "tiny", HandleSignals = false });
        var client = Client(at: srv.BaseAddress);
        var tool = ChatTool.CreateFunctionTool("get_weather", "Weather in a city", BinaryData.FromString("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}"));
        var o = new ChatCompletionOptions { Tools = { tool } };
        ChatCompletion c = await client.CompleteChatAsync([new UserChatMessage("Weather in Paris?")], o);
        Assert.That(c.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
        Assert.That(c.ToolCalls, Has.Count.EqualTo(1));
        Assert.That(c.ToolCalls[0].FunctionName, Is.EqualTo("get_weather"));
        Assert.That(JsonDocument.Parse(c.ToolCalls[0].FunctionArguments.ToString()).RootElement.GetProperty("city").GetString(), Is.EqualTo("Paris"));
        var plain = Codec.EncodeDialog([new Message(MessageRole.User, "Weather in Paris?")]).Count;
        Assert.That(c.Usage.InputTokenCount, Is.GreaterThan(plain + ToolCalls.Instruction.Length + "get_weather".Length), "the tools are in the prompt");

        string? name = null;
        var args = new StringBuilder();
        OpenAI.Chat.ChatFinishReason? finish = null;
        await foreach (var u in client.CompleteChatStreamingAsync([new UserChatMessage("Weather in Paris?")], o))
        {
            foreach (var t in u.ToolCallUpdates) { name ??= t.FunctionName; args.Append(t.FunctionArgumentsUpdate?.ToString()); }
            finish ??= u.FinishReason;
        }
        Assert.That(name, Is.EqualTo("get_weather"));
        Assert.That(JsonDocument.Parse(args.ToString()).RootElement.GetProperty("city").GetString(), Is.EqualTo("Paris"));
        Assert.That(finish, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));

        // The conversation goes on with the call and its result; without tools the same reply is plain content.
        List<ChatMessage> history = [new UserChatMessage("Weather in Paris?"), new AssistantChatMessage(c.ToolCalls), new ToolChatMessage(c.ToolCalls[0].Id, "{\"celsius\": 21}")];
        Assert.That((await client.CompleteChatAsync(history, o)).Value.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.ToolCalls));
        var text = await client.CompleteChatAsync([new UserChatMessage("Weather in Paris?")]);
        Assert.That(text.Value.Content[0].Text, Does.StartWith("{\"name\""));
        Assert.That(text.Value.FinishReason, Is.EqualTo(OpenAI.Chat.ChatFinishReason.Stop));
    }

    [Test]
    public async Task OpenAIClientGetsTheSameReplyStreamingAndNot()
    {
        var client = Client();
        List<ChatMessage> messages = [new SystemChatMessage("Be brief."), new UserChatMessage("Hello there, tiny model!")];
        var o = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 };
        ChatCompletion done = await client.CompleteChatAsync(messages, o);
        var ids = Codec.EncodeDialog([new Message(MessageRole.System, "Be brief."), new Message(MessageRole.User, "Hello there, tiny model!")]);
        var want = Lone([.. ids], new GenerationOptions { MaxNewTokens = 8 });
        var wantText = Decode(want);
        Assert.That(done.Content.Count == 0 ? "" : done.Content[0].Text, Is.EqualTo(wantText));
        Assert.That(done.Role, Is.EqualTo(ChatMessageRole.Assistant));
        Assert.That(done.FinishReason, Is.EqualTo(want.Count == 8 && want[^1] != ByteCodec.Eot ? OpenAI.Chat.ChatFinishReason.Length : OpenAI.Chat.ChatFinishReason.Stop));
        Assert.That(done.Usage.InputTokenCount, Is.EqualTo(ids.Count));
        Assert.That(done.Usage.OutputTokenCount, Is.EqualTo(want.Count));
        Assert.That(done.Model, Is.EqualTo("tiny"));

        var text = new StringBuilder();
        OpenAI.Chat.ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var u in client.CompleteChatStreamingAsync(messages, new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 }))
        {
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            finish ??= u.FinishReason;
            usage ??= u.Usage;
        }
        Assert.That(text.ToString(), Is.EqualTo(wantText));
        Assert.That(finish, Is.EqualTo(done.FinishReason));
        Assert.That(usage?.OutputTokenCount, Is.EqualTo(want.Count), "the client asks for usage in the stream (stream_options.include_usage)");
    }

    static string Decode(IEnumerable<int> ids)
    {
        var d = Codec.CreateStreamDecoder();
        var sb = new StringBuilder();
        foreach (var id in ids) sb.Append(d.Push(id));
        return sb.Append(d.Flush()).ToString();
    }

    [Test]
    public async Task EightConcurrentStreamsWithTheirOwnSettingsEachGetTheirOwnReply()
    {
        var client = Client();
        var cases = Enumerable.Range(0, 8).Select(i => (
            Prompt: $"Prompt number {i}: " + new string((char)('a' + i), 3 * i + 1),
            Options: new ChatCompletionOptions
            {
                MaxOutputTokenCount = 4 + i % 3,
                Temperature = i % 2 == 0 ? 0 : 0.8f,
                TopP = i % 3 == 0 ? 1 : 0.9f,
                Seed = 1000 + i,
                FrequencyPenalty = i == 5 ? 0.5f : 0,
            })).ToArray();
        // Stop strings on some: a character that is likely in a byte-level reply ends those early.
        foreach (int i in new[] { 2, 5, 7 }) cases[i].Options.StopSequences.Add(i == 2 ? "e" : i == 5 ? " " : "a");
        async Task<(string Text, int? Tokens, OpenAI.Chat.ChatFinishReason? Finish)> Stream(int i)
        {
            var sb = new StringBuilder();
            int? tokens = null;
            OpenAI.Chat.ChatFinishReason? finish = null;
            await foreach (var u in client.CompleteChatStreamingAsync([new UserChatMessage(cases[i].Prompt)], cases[i].Options))
            {
                foreach (var p in u.ContentUpdate) sb.Append(p.Text);
                tokens ??= u.Usage?.OutputTokenCount;
                finish ??= u.FinishReason;
            }
            return (sb.ToString(), tokens, finish);
        }
        long forwards = Forwards;
        var together = await Task.WhenAll(Enumerable.Range(0, 8).Select(Stream));
        forwards = Forwards - forwards;
        long aloneForwards = Forwards;
        for (int i = 0; i < 8; i++)
        {
            var alone = await client.CompleteChatAsync([new UserChatMessage(cases[i].Prompt)], cases[i].Options);
            Assert.That(together[i].Text, Is.EqualTo(alone.Value.Content.Count == 0 ? "" : alone.Value.Content[0].Text), $"stream {i}");
            Assert.That(together[i].Tokens, Is.EqualTo(alone.Value.Usage.OutputTokenCount), $"stream {i}: tokens");
            Assert.That(together[i].Finish, Is.EqualTo(alone.Value.FinishReason), $"stream {i}: finish reason");
        }
        aloneForwards = Forwards - aloneForwards;
        if (kind == ServingEngine.Batched)
            Assert.That(forwards, Is.LessThan(aloneForwards), $"8 streams at once: {forwards} forwards; one after another: {aloneForwards}");
        await WaitIdle();
        AssertAllPagesFree();
    }

    [Test]
    public async Task AClientThatGoesAwayMidStreamHasItsSequenceCancelled()
    {
        // A seed whose reply runs long (the random model may hit its eos early): the client leaves before the end.
        const string prompt = "Tell me a long story.";
        var ids = Codec.EncodeDialog([new Message(MessageRole.User, prompt)]).ToArray();
        int seed = Enumerable.Range(1, 20).First(s => Lone(ids, new GenerationOptions { MaxNewTokens = 40, Temperature = 0.7f, Seed = (ulong)s }).Count == 40);
        long before = scheduler.Metrics.Cancelled;
        using var cts = new CancellationTokenSource();
        int updates = 0;
        double usedMidStream = -1;
        try
        {
            await foreach (var u in Client().CompleteChatStreamingAsync([new UserChatMessage(prompt)],
                                                                      new ChatCompletionOptions { MaxOutputTokenCount = 90, Temperature = 0.7f, Seed = seed }, cts.Token))
                if (++updates == 2)
                {
                    usedMidStream = (await Metrics())["llama4_kv_blocks_used"];
                    cts.Cancel();
                    break;
                }
        }
        catch (OperationCanceledException) { }
        Assert.That(updates, Is.GreaterThanOrEqualTo(2));
        for (int i = 0; i < 400 && scheduler.Metrics.Cancelled == before; i++) await Task.Delay(25);
        Assert.That(scheduler.Metrics.Cancelled, Is.EqualTo(before + 1), $"the server cancelled the sequence when the client closed the stream (after {updates} updates; generated {scheduler.Metrics.GeneratedTokens})");
        await WaitIdle();
        Assert.That(scheduler.Snapshot().KvBlocksUsed, Is.Zero, "its slot and KV are free");
        // Seen from outside: /metrics counted its blocks while it ran and none after.
        int promptBlocks = (ids.Length + scheduler.Engine.KvBlockTokens - 1) / scheduler.Engine.KvBlockTokens;
        Assert.That(usedMidStream, Is.GreaterThanOrEqualTo(Math.Min(promptBlocks, scheduler.Engine.KvBlocks)), "the running sequence held its KV blocks");
        var after = await Metrics();
        Assert.That(after["llama4_kv_blocks_used"], Is.Zero);
        Assert.That(after["llama4_kv_blocks_free"], Is.EqualTo(scheduler.Engine.KvBlocks));
        Assert.That(after["llama4_requests_total{outcome=\"cancelled\"}"], Is.GreaterThanOrEqualTo(1));
        AssertAllPagesFree();
    }

    static Dictionary<string, double> ParseMetrics(string text) =>
        text.Split('\n').Where(l => l.Length > 0 && l[0] != '#')
            .ToDictionary(l => l[..l.LastIndexOf(' ')], l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));

    async Task<Dictionary<string, double>> Metrics() => ParseMetrics(await http.GetStringAsync("/metrics"));

    async Task<(HttpStatusCode Status, JsonElement Body, HttpResponseMessage Response)> Post(string path, string json, HttpClient? via = null)
    {
        var res = await (via ?? http).PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await res.Content.ReadAsStringAsync();
        return (res.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone(), res);
    }

    static void AssertError(JsonElement body, string type, string? param = null, string? code = null)
    {
        var e = body.GetProperty("error");
        Assert.That(e.GetProperty("message").GetString(), Is.Not.Empty);
        Assert.That(e.GetProperty("type").GetString(), Is.EqualTo(type));
        if (param is not null) Assert.That(e.GetProperty("param").GetString(), Is.EqualTo(param));
        if (code is not null) Assert.That(e.GetProperty("code").GetString(), Is.EqualTo(code));
    }

    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2}", "n")]
    [TestCase("{\"model\":\"tiny\"}", "messages")]
    [TestCase("{\"messages\":[]}", "messages")]
    [TestCase("{\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", "messages[0].role")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":5}", "temperature")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":0}", "max_tokens")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream_options\":{\"include_usage\":true}}", "stream_options")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"seed\":\"x\"}", "seed")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"required\"}", "tool_choice")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"no spaces\"}}]}", "tools[0].function.name")]
    [TestCase("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", "messages")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/a.png\"}}]}]}", "messages[0].content[0].image_url.url")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,!!!\"}}]}]}", "messages[0].content[0].image_url.url")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}", "messages[0].content[0].type")]
    [TestCase("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true}", "logprobs")]
    public async Task ABadFieldIsA400NamingIt(string json, string param)
    {
        var (status, body, _) = await Post("/v1/chat/completions", json);
        Assert.That(status, Is.EqualTo(HttpStatusCode.BadRequest));
        AssertError(body, "invalid_request_error", param);
    }

    [Test]
    public async Task ServerRefusalsHaveTheirStatusAndOpenAIsErrorShape()
    {
        var (s1, b1, _) = await Post("/v1/chat/completions", "{not json");
        Assert.That(s1, Is.EqualTo(HttpStatusCode.BadRequest));
        AssertError(b1, "invalid_request_error");
        var (s2, b2, _) = await Post("/v1/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
        Assert.That(s2, Is.EqualTo(HttpStatusCode.NotFound));
        AssertError(b2, "invalid_request_error", "model", "model_not_found");
        var (s3, b3, _) = await Post("/v1/embeddings", "{}");
        Assert.That(s3, Is.EqualTo(HttpStatusCode.NotFound));
        AssertError(b3, "invalid_request_error", code: "not_found");
        var big = "{\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('x', (1 << 20) + 10) + "\"}]}";
        // With Expect: 100-continue the refusal arrives before the body is sent (else the server may close the connection
        // on a client still sending, and the client sees a reset instead of the 413).
        var tooBig = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(big, Encoding.UTF8, "application/json") };
        tooBig.Headers.ExpectContinue = true;
        var r4 = await http.SendAsync(tooBig);
        Assert.That(r4.StatusCode, Is.EqualTo(HttpStatusCode.RequestEntityTooLarge));
        AssertError(JsonDocument.Parse(await r4.Content.ReadAsStringAsync()).RootElement, "invalid_request_error", code: "request_too_large");
        var (s5, b5, _) = await Post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('y', Context + 5) + "\"}]}");
        Assert.That(s5, Is.EqualTo(HttpStatusCode.BadRequest));
        AssertError(b5, "invalid_request_error", code: "context_length_exceeded");
        var res = await http.GetAsync("/v1/chat/completions");
        Assert.That(res.StatusCode, Is.EqualTo(HttpStatusCode.MethodNotAllowed));
        AssertError(JsonDocument.Parse(await res.Content.ReadAsStringAsync()).RootElement, "invalid_request_error");
    }

    [Test]
    public async Task CompletionsModelsAndHealthAnswer()
    {
        var (status, body, _) = await Post("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"Once upon a time\",\"max_tokens\":5,\"temperature\":0}");
        Assert.That(status, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(body.GetProperty("object").GetString(), Is.EqualTo("text_completion"));
        var want = Lone([.. Codec.EncodePlain("Once upon a time", true)], new GenerationOptions { MaxNewTokens = 5 });
        Assert.That(body.GetProperty("choices")[0].GetProperty("text").GetString(), Is.EqualTo(Decode(want)));
        Assert.That(body.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), Is.EqualTo(want.Count));

        // Streaming completion: SSE events, then [DONE].
        var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("{\"prompt\":[1,2,3,4],\"max_tokens\":3,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", Encoding.UTF8, "application/json"),
        };
        var res = await http.SendAsync(req);
        Assert.That(res.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/event-stream"));
        var lines = (await res.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.All.StartWith("data: "));
        Assert.That(lines[^1], Is.EqualTo("data: [DONE]"));
        var usage = JsonDocument.Parse(lines[^2][6..]).RootElement.GetProperty("usage");
        Assert.That(usage.GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(4));

        var models = await new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "/v1") })
                         .GetOpenAIModelClient().GetModelsAsync();
        Assert.That(models.Value.Select(m => m.Id), Is.EqualTo(new[] { "tiny" }));
        Assert.That((await http.GetAsync("/health")).StatusCode, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task MetricsAreInThePrometheusTextFormat()
    {
        await Client().CompleteChatAsync([new UserChatMessage("count me")], new ChatCompletionOptions { MaxOutputTokenCount = 2, Temperature = 0 });
        var res = await http.GetAsync("/metrics");
        Assert.That(res.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/plain"));
        var text = await res.Content.ReadAsStringAsync();
        var values = ParseMetrics(text);
        foreach (var name in new[] { "llama4_queue_depth", "llama4_batch_size", "llama4_kv_blocks_used", "llama4_kv_blocks_free", "llama4_kv_tokens_capacity",
                                     "llama4_prompt_tokens_total", "llama4_generation_tokens_total", "llama4_time_to_first_token_seconds_count",
                                     "llama4_requests_total{outcome=\"admitted\"}", "llama4_requests_total{outcome=\"rejected_overload\"}" })
            Assert.That(values.ContainsKey(name), name);
        Assert.That(values["llama4_generation_tokens_total"], Is.GreaterThanOrEqualTo(1));
        Assert.That(values["llama4_generation_tokens_per_second"], Is.GreaterThan(0), "tokens were generated within the window");
        Assert.That(values["llama4_prompt_tokens_per_second"], Is.GreaterThan(0));
        Assert.That(values["llama4_generation_tokens_per_second"] * ServingMetrics.RateWindowSeconds, Is.LessThanOrEqualTo(values["llama4_generation_tokens_total"]));
        Assert.That(values["llama4_kv_blocks_free"] + values["llama4_kv_blocks_used"], Is.EqualTo(scheduler.Engine.KvBlocks));
        Assert.That(values["llama4_kv_block_tokens"], Is.EqualTo(kind == ServingEngine.Batched ? PageTokens : Context));
        Assert.That(values["llama4_kv_tokens_capacity"], Is.EqualTo(Slots * Context));
        Assert.That(values["llama4_time_to_first_token_seconds_bucket{le=\"+Inf\"}"], Is.EqualTo(values["llama4_time_to_first_token_seconds_count"]));
        Assert.That(text, Does.Contain("# TYPE llama4_time_to_first_token_seconds histogram"));
    }

    /// <summary>A second server with an API key, one slot and no queue: 401 without the key, 429 with Retry-After when full.</summary>
    [Test]
    public async Task AKeyIsRequiredAndAFullServerSays429()
    {
        using var small = new ServingScheduler(Engine(1), Codec, new ServingOptions { MaxQueue = 0, RetryAfter = TimeSpan.FromSeconds(2) });
        await using var keyed = await Llama4Server.StartAsync(small, Codec, null, new Llama4ServerOptions { Port = 0, ApiKey = "sesame", ModelId = "tiny", HandleSignals = false });
        var wrong = Assert.ThrowsAsync<ClientResultException>(() => Client("nope", keyed.BaseAddress).CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.That(wrong!.Status, Is.EqualTo(401));
        using var raw = new HttpClient { BaseAddress = keyed.BaseAddress };
        var (s401, b401, _) = await Post("/v1/models", "", raw);
        Assert.That(s401, Is.EqualTo(HttpStatusCode.Unauthorized));
        AssertError(b401, "invalid_request_error", code: "invalid_api_key");
        Assert.That((await raw.GetAsync("/health")).StatusCode, Is.EqualTo(HttpStatusCode.OK), "health needs no key");

        // Fill the one slot with a long stream, then ask again.
        var client = Client("sesame", keyed.BaseAddress);
        using var cts = new CancellationTokenSource();
        var stream = client.CompleteChatStreamingAsync([new UserChatMessage("a long one")], new ChatCompletionOptions { MaxOutputTokenCount = 110, Temperature = 0.7f, Seed = 9 }, cts.Token)
                           .GetAsyncEnumerator(cts.Token);
        Assert.That(await stream.MoveNextAsync(), Is.True);
        raw.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sesame");
        var (s429, b429, r429) = await Post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"me too\"}],\"max_tokens\":2}", raw);
        Assert.That(s429, Is.EqualTo((HttpStatusCode)429));
        AssertError(b429, "server_overloaded", code: "server_at_capacity");
        Assert.That(r429.Headers.RetryAfter?.Delta, Is.EqualTo(TimeSpan.FromSeconds(2)));
        cts.Cancel();
        try { await stream.DisposeAsync(); } catch (OperationCanceledException) { }
        for (int i = 0; i < 400 && small.Snapshot().Running > 0; i++) await Task.Delay(25);
        var ok = await client.CompleteChatAsync([new UserChatMessage("me too")], new ChatCompletionOptions { MaxOutputTokenCount = 2 });
        Assert.That(ok.Value.Usage.OutputTokenCount, Is.InRange(1, 2), "the slot was freed when the first client went away");
    }

    [Test]
    public async Task AStoppingServerRefusesNewWorkWith503()
    {
        using var sched = new ServingScheduler(Engine(1), Codec);
        var srv = await Llama4Server.StartAsync(sched, Codec, null, new Llama4ServerOptions { Port = 0, ModelId = "tiny", HandleSignals = false });
        using var raw = new HttpClient { BaseAddress = srv.BaseAddress };
        sched.StopAdmitting();
        var (s, b, r) = await Post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"late\"}],\"max_tokens\":2}", raw);
        Assert.That(s, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        AssertError(b, "service_unavailable", code: "shutting_down");
        Assert.That(r.Headers.RetryAfter, Is.Not.Null);
        Assert.That((await raw.GetAsync("/health")).StatusCode, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        await srv.DisposeAsync();
    }

    [Test]
    public async Task DrainingFinishesShortWorkAndCancelsWhatOutlivesTheTimeout()
    {
        using var sched = new ServingScheduler(Engine(2), Codec);
        var shortOne = sched.Submit(new ServingRequest { Prompt = RandomPrompt(4), Options = new GenerationOptions { MaxNewTokens = 2, StopAtModelStops = false } });
        var longOne = sched.Submit(new ServingRequest { Prompt = RandomPrompt(4), Options = new GenerationOptions { MaxNewTokens = 120, StopAtModelStops = false } });
        await longOne.Pieces.ReadAsync();
        await sched.DrainAsync(TimeSpan.FromMilliseconds(300));
        Assert.That((await shortOne.Completion).Reason, Is.EqualTo(FinishReason.Length), "short work finished");
        var r = await longOne.Completion;
        Assert.That(r.Reason, Is.EqualTo(FinishReason.Cancelled));
        Assert.That(r.Detail, Is.EqualTo("shutdown"));
        Assert.Throws<ServerShuttingDownException>(() => sched.Submit(new ServingRequest { Prompt = [1] }));
        Assert.That(sched.Snapshot().Running, Is.Zero);
    }

    [Test]
    public void ServeVerbRejectsBadOptionsBeforeLoading()
    {
        var err = new StringWriter();
        Assert.That(Llama4Native.Cli.Commands.Run(["serve", "--model", "nowhere", "--quantize", "int3"], TextWriter.Null, err), Is.EqualTo(2));
        Assert.That(err.ToString(), Does.Contain("--quantize must be none, int4 or fp8"));
        err = new StringWriter();
        Assert.That(Llama4Native.Cli.Commands.Run(["serve", "--port", "70000"], TextWriter.Null, err), Is.EqualTo(2));
        Assert.That(err.ToString(), Does.Contain("--port").And.Contain("65535"));
    }
}

/// <summary>The step engine a <see cref="ServingTests"/> fixture serves with.</summary>
public enum ServingEngine
{
    /// <summary><see cref="SequentialStepEngine"/>: a step's sequences one after another.</summary>
    Sequential,
    /// <summary><see cref="BatchedStepEngine"/>: a step's sequences in one forward over a paged KV cache.</summary>
    Batched,
}
