using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Tests.Checkpoints;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Tests.Generation;

/// <summary>
/// The library under misuse, as a host would misuse it: Dispose (of the model or of a session) from another thread
/// while a generation runs, use after Dispose, null/empty inputs, and IChatClient features we do not have. None
/// may crash the host: each is an exception naming the problem, and device memory is freed exactly once.
/// </summary>
[Category("Emulator")]
public class LibrarySafetyTests
{
    static Llama4Model Load(Device dev) =>
        Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"),
                         new Llama4ModelOptions(Device: "emu", MaxContext: 256, MaxPrefillPiece: 32, Codec: new ChatApiTests.ByteCodec()), dev);

    static readonly GenerationOptions Long = new() { MaxNewTokens = 200, Temperature = 1, Seed = 3, StopAtModelStops = false };

    /// <summary>Consumes a generation; returns null when it completed, else the exception it ended with.</summary>
    static async Task<Exception?> Consume(ChatSession chat, int maxNew = 200)
    {
        try
        {
            await foreach (var _ in chat.GenerateAsync("abcdef", Long with { MaxNewTokens = maxNew })) { }
            return null;
        }
        catch (Exception e) { return e; }
    }

    /// <summary>
    /// Many rounds with random timing (replay with LLAMA4_TEST_SEED): a generation runs on a pool thread while this
    /// thread disposes the model or the session after a random delay (none, up to 80 ms, or up to 1.5 s — past the end of a one-token generation, ~0.5 s on the emulator). The
    /// generation completes or ends with ObjectDisposedException — never a crash, never another exception — and
    /// the device's memory is all back (freed once: a double free would make the emulator's count negative).
    /// </summary>
    [Test]
    public async Task DisposeDuringGenerationNeverCrashesAndFreesOnce()
    {
        int seed = TestSeed.For(nameof(DisposeDuringGenerationNeverCrashesAndFreesOnce));
        TestContext.Out.WriteLine($"seed {seed} (LLAMA4_TEST_SEED={TestSeed.Run})");
        var rng = new Random(seed);
        using var dev = TestDevices.Emulated();
        long total = dev.TotalMemory;
        int disposedMidway = 0, completed = 0;
        {
            using var m0 = Load(dev);
            using var c0 = m0.CreateSession();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            Assert.That(await Consume(c0, 1), Is.Null);
            TestContext.Out.WriteLine($"one-token generation: {sw.Elapsed.TotalMilliseconds:0.0} ms");
        }
        for (int round = 0; round < 60; round++)
        {
            var model = Load(dev);
            var chat = model.CreateSession();
            long withSession = dev.FreeMemory;
            bool disposeModel = rng.Next(2) == 0;
            int delayUs = rng.Next(4) switch { 0 => 0, 1 => rng.Next(1_500_000), _ => rng.Next(80_000) };
            int maxNew = rng.Next(3) == 0 ? 1 : 200;
            var run = Task.Run(() => Consume(chat, maxNew));
            if (round % 10 == 9) await run;   // every tenth round: Dispose after the generation ended
            else if (delayUs > 0) Thread.Sleep(TimeSpan.FromMicroseconds(delayUs));
            if (disposeModel) model.Dispose(); else chat.Dispose();
            var error = await run;
            Assert.That(error, Is.Null.Or.TypeOf<ObjectDisposedException>(), $"round {round}: {error}");
            if (error is null) completed++; else disposedMidway++;
            Assert.That(chat.IsDisposed, Is.True);
            if (!disposeModel)
            {
                Assert.That(dev.FreeMemory, Is.GreaterThan(withSession), "the session's memory is freed");
                Assert.That(() => chat.GenerateAsync("x").GetAsyncEnumerator().MoveNextAsync().AsTask().GetAwaiter().GetResult(),
                            Throws.TypeOf<ObjectDisposedException>());
                using var again = model.CreateSession();   // the model is still fine
                model.Dispose();
            }
            model.Dispose();   // twice: harmless
            chat.Dispose();
            Assert.That(dev.FreeMemory, Is.EqualTo(total), $"round {round}: device memory not all freed (or freed twice)");
        }
        TestContext.Out.WriteLine($"{disposedMidway} generations cut by Dispose, {completed} completed first");
        Assert.That(disposedMidway, Is.GreaterThan(0), "no round disposed during a generation: the test tests nothing");
        Assert.That(completed, Is.GreaterThan(0), "no generation completed before Dispose: the after-completion path is untested");
    }

    /// <summary>The consumer holds the enumerator between tokens (not pulling) when another thread disposes: its next
    /// pull is an ObjectDisposedException, and Dispose did not wait for the consumer.</summary>
    [Test]
    public async Task DisposeWhileTheConsumerIsBetweenTokens()
    {
        using var dev = TestDevices.Emulated();
        var model = Load(dev);
        var chat = model.CreateSession();
        await using var e = chat.GenerateAsync("abc", Long).GetAsyncEnumerator();
        Assert.That(await e.MoveNextAsync(), Is.True);
        var disposer = Task.Run(model.Dispose);
        Assert.That(disposer.Wait(TimeSpan.FromSeconds(30)), Is.True, "Dispose waited for a consumer that was not pulling");
        Assert.That(async () => await e.MoveNextAsync(), Throws.TypeOf<ObjectDisposedException>());
        Assert.That(dev.FreeMemory, Is.EqualTo(dev.TotalMemory));
    }

    [Test]
    public void UseAfterDisposeIsObjectDisposed()
    {
        using var dev = TestDevices.Emulated();
        var model = Load(dev);
        IChatClient client = model.AsChatClient();
        model.Dispose();
        Assert.That(() => model.CreateSession(), Throws.TypeOf<ObjectDisposedException>());
        Assert.That(() => model.AsChatClient(), Throws.TypeOf<ObjectDisposedException>());
        Assert.That(async () => await client.GetResponseAsync("hi"), Throws.TypeOf<ObjectDisposedException>());
        client.Dispose();
        Assert.That(dev.FreeMemory, Is.EqualTo(dev.TotalMemory));
    }

    [Test]
    public void BadDialogsAreArgumentErrors()
    {
        Assert.That(() => new Message(MessageRole.User, null!), Throws.TypeOf<ArgumentNullException>().With.Message.Contains("text"));
        Assert.That(() => new Message(MessageRole.User, "x", [null!]), Throws.ArgumentException);
        Assert.That(() => new Message(MessageRole.User, "ok") with { Text = null! }, Throws.TypeOf<ArgumentNullException>());
        using var dev = TestDevices.Emulated();
        using var model = Load(dev);
        using var chat = model.CreateSession();
        Assert.That(async () => { await foreach (var _ in chat.GenerateAsync([])) { } }, Throws.ArgumentException.With.Message.Contains("empty"));
        Assert.That(async () => { await foreach (var _ in chat.GenerateAsync((IReadOnlyList<Message>)null!)) { } }, Throws.TypeOf<ArgumentNullException>());
        Assert.That(async () => { await foreach (var _ in chat.GenerateAsync([null!])) { } }, Throws.ArgumentException.With.Message.Contains("null"));
        Assert.That(async () => { await foreach (var _ in chat.GenerateAsync("x", new GenerationOptions { StopTokens = [512] })) { } },
                    Throws.ArgumentException.With.Message.Contains("stop token id 512 is out of range [0, 512)"));
        Assert.That(async () => { await foreach (var _ in chat.GenerateAsync("x", new GenerationOptions { StopTokens = [-1] })) { } },
                    Throws.ArgumentException.With.Message.Contains("stop token id (-1)"));
    }

    public static IEnumerable<TestCaseData> BadOptions()
    {
        foreach (var (name, v) in new[] { ("NaN", float.NaN), ("+inf", float.PositiveInfinity), ("-inf", float.NegativeInfinity) })
        {
            yield return new TestCaseData(new GenerationOptions { Temperature = v }, "temperature").SetName($"Options_temperature_{name}");
            yield return new TestCaseData(new GenerationOptions { TopP = v }, "top-p").SetName($"Options_topp_{name}");
            yield return new TestCaseData(new GenerationOptions { MinP = v }, "min-p").SetName($"Options_minp_{name}");
            yield return new TestCaseData(new GenerationOptions { RepetitionPenalty = v }, "repetition penalty").SetName($"Options_repetition_{name}");
            yield return new TestCaseData(new GenerationOptions { FrequencyPenalty = v }, "frequency penalty").SetName($"Options_frequency_{name}");
            yield return new TestCaseData(new GenerationOptions { PresencePenalty = v }, "presence penalty").SetName($"Options_presence_{name}");
        }
        yield return new TestCaseData(new GenerationOptions { Temperature = 1e30f }, "temperature").SetName("Options_temperature_huge");
        yield return new TestCaseData(new GenerationOptions { Temperature = -0.1f }, "temperature").SetName("Options_temperature_negative");
        yield return new TestCaseData(new GenerationOptions { TopP = 0 }, "top-p").SetName("Options_topp_zero");
        yield return new TestCaseData(new GenerationOptions { TopP = 1.5f }, "top-p").SetName("Options_topp_above1");
        yield return new TestCaseData(new GenerationOptions { MinP = 1 }, "min-p").SetName("Options_minp_one");
        yield return new TestCaseData(new GenerationOptions { RepetitionPenalty = 0 }, "repetition penalty").SetName("Options_repetition_zero");
        yield return new TestCaseData(new GenerationOptions { RepetitionPenalty = 1000 }, "repetition penalty").SetName("Options_repetition_huge");
        yield return new TestCaseData(new GenerationOptions { FrequencyPenalty = 1000.5f }, "frequency penalty").SetName("Options_frequency_range");
        yield return new TestCaseData(new GenerationOptions { PresencePenalty = -1001 }, "presence penalty").SetName("Options_presence_range");
        yield return new TestCaseData(new GenerationOptions { TopK = -1 }, "top-k").SetName("Options_topk_negative");
        yield return new TestCaseData(new GenerationOptions { MaxNewTokens = -1 }, "max new tokens").SetName("Options_maxnew_negative");
        yield return new TestCaseData(new GenerationOptions { StopStrings = [null!] }, "stop strings").SetName("Options_stopstring_null");
    }

    [TestCaseSource(nameof(BadOptions))]
    public void OutOfRangeOptionsAreRejected(GenerationOptions o, string what) =>
        Assert.That(o.Validate, Throws.ArgumentException.With.Message.Contains(what));

    [Test]
    public void BoundaryOptionsAreAccepted()
    {
        new GenerationOptions { Temperature = 100, TopP = 1, MinP = 0.999f, RepetitionPenalty = 100, FrequencyPenalty = -1000, PresencePenalty = 1000, Seed = ulong.MaxValue }.Validate();
    }

    public static IEnumerable<TestCaseData> UnsupportedChat()
    {
        var fn = AIFunctionFactory.Create(() => 1, "one");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.User, "x") }, new ChatOptions { Tools = [fn] }, typeof(NotSupportedException), "tools").SetName("Chat_tools");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.User, "x") }, new ChatOptions { ResponseFormat = ChatResponseFormat.Json }, typeof(NotSupportedException), "JSON").SetName("Chat_json");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.User, [new DataContent(new byte[] { 1, 2 }, "audio/wav")]) }, null, typeof(NotSupportedException), "audio/wav").SetName("Chat_audio");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.User, [new UriContent("https://example.com/a.png", "image/png")]) }, null, typeof(NotSupportedException), "UriContent").SetName("Chat_uri");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.Assistant, [new FunctionCallContent("c1", "one")]) }, null, typeof(NotSupportedException), "tool calls").SetName("Chat_functioncall");
        yield return new TestCaseData(new List<AI.ChatMessage>(), null, typeof(ArgumentException), "empty").SetName("Chat_empty");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.User, "x") }, new ChatOptions { Seed = -1 }, typeof(ArgumentOutOfRangeException), "seed").SetName("Chat_negative_seed");
        yield return new TestCaseData(new List<AI.ChatMessage> { new(AI.ChatRole.User, "x") }, new ChatOptions { Temperature = float.NaN }, typeof(ArgumentException), "temperature").SetName("Chat_nan_temperature");
    }

    [TestCaseSource(nameof(UnsupportedChat))]
    public void IChatClientRefusesWhatItCannotHonour(List<AI.ChatMessage> messages, ChatOptions? options, Type error, string what)
    {
        using var dev = TestDevices.Emulated();
        using var model = Load(dev);
        using IChatClient client = model.AsChatClient();
        var e = Assert.CatchAsync(async () => await client.GetResponseAsync(messages, options));
        Assert.That(e, Is.TypeOf(error));
        Assert.That(e!.Message, Does.Contain(what));
    }
}
