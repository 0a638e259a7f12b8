using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Generation;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Text;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Tests.Distributed;

/// <summary>
/// Several devices through the library and the CLI, against one device: <see cref="Llama4ModelOptions.Devices"/> = emu:2
/// for a conversation (two turns, the KV caches carried over; greedy and seeded sampling) and an image through
/// IChatClient; and separate OS processes of <c>llama4 run --rank r --world-size W --init tcp://127.0.0.1:P</c> (the socket
/// communicator) giving the reply of one device, with a rank that never arrives being a clear timeout.
/// </summary>
[Category("Emulator")]
public class MultiDeviceGenerationTests
{
    static string dir = "";

    [OneTimeSetUp]
    public void Write()
    {
        dir = CkptTestUtil.NewTempDir("multidev");
        Synth.Write(Presets.ConfigJson("tiny-demo"), dir, new SynthOptions(Seed: CkptTestUtil.Seed("multidev library")));
    }

    [OneTimeTearDown]
    public void Remove() { try { Directory.Delete(dir, true); } catch (IOException) { } }

    static Llama4Model Load(string? devices) =>
        Llama4Model.Load(dir, new Llama4ModelOptions(Device: "emu", MaxContext: 1024, Devices: devices,
                                                     Codec: Llama4TextCodec.Create(Llama4Tokenizer.CreateDemo(), Llama4Native.Model.Llama4Config.Load(dir))));

    static async Task<List<int>> Turn(ChatSession chat, string prompt, GenerationOptions o)
    {
        var ids = new List<int>();
        await foreach (var p in chat.GenerateAsync(prompt, o)) ids.Add(p.TokenId);
        return ids;
    }

    [Test]
    public async Task ConversationOnTwoDevicesEqualsOneDevice()
    {
        var greedy = new GenerationOptions { MaxNewTokens = 4, Temperature = 0 };
        var sampled = new GenerationOptions { MaxNewTokens = 4, Temperature = 0.8f, TopP = 0.9f, Seed = 7 };
        async Task<(List<int>, List<int>, List<int>, string, int)> Run(string? devices)
        {
            using var model = Load(devices);
            using var chat = model.CreateSession();
            var a = await Turn(chat, "Why is the sky blue?", greedy);
            var b = await Turn(chat, "And at sunset?", sampled);   // continues the cache on every rank
            using var fresh = model.CreateSession();
            var c = await Turn(fresh, "Why is the sky blue?", greedy);
            return (a, b, c, model.DeviceName, chat.ContextUsed);
        }
        var one = await Run(null);
        var two = await Run("emu:2");
        TestContext.Out.WriteLine($"one device: {string.Join(",", one.Item1)} | {string.Join(",", one.Item2)}; emu:2 on {two.Item4}");
        Assert.That(two.Item4, Does.Contain("emu:2").And.Contain("2 devices"));
        Assert.That(two.Item1, Is.EqualTo(one.Item1), "greedy turn 1");
        Assert.That(two.Item2, Is.EqualTo(one.Item2), "seeded sampling, turn 2 over the carried-over caches");
        Assert.That(two.Item3, Is.EqualTo(one.Item1), "a fresh session on the same sharded weights");
        Assert.That(two.Item5, Is.EqualTo(one.Item5), "the same context used");
    }

    [Test]
    public async Task ImageThroughIChatClientOnTwoDevicesEqualsOneDevice()
    {
        var png = await File.ReadAllBytesAsync(Path.Combine(CkptTestUtil.Fixture("llama4-image-processor"), "wide_500x300.png"));
        async Task<(string, long?)> Ask(string? devices)
        {
            using var model = Load(devices);
            using IChatClient client = model.AsChatClient();
            var r = await client.GetResponseAsync([new AI.ChatMessage(AI.ChatRole.User, [new DataContent(png, "image/png"), new AI.TextContent("What is this?")])],
                                                  new ChatOptions { MaxOutputTokens = 3, Temperature = 0 });
            return (r.Text, r.Usage?.InputTokenCount);
        }
        var one = await Ask(null);
        var two = await Ask("emu:2");
        Assert.That(two, Is.EqualTo(one), "the same reply to the same image and prompt");
    }

    [Test]
    public void DevicesThatCannotSplitTheModelAreAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => Load("emu:3"));
        Assert.That(e!.Message, Does.Contain("num_attention_heads (4) is not divisible by 3"));
        Assert.That(() => Llama4Model.Load(dir, new Llama4ModelOptions(Devices: "tpu:2")), Throws.ArgumentException.With.Message.Contains("unknown device kind"));
    }

    // ---- separate OS processes ------------------------------------------------------------------------------

    static readonly string Cli = Path.Combine(AppContext.BaseDirectory, "llama4.dll");

    static Process Start(params string[] args) => StartIn(null, args);

    /// <summary>The CLI in a child process; <paramref name="cache"/>: its LLAMA4_CACHE (where the demo model lives).</summary>
    static Process StartIn(string? cache, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (cache is not null) psi.Environment["LLAMA4_CACHE"] = cache;
        psi.ArgumentList.Add(Cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    static (int Rc, string Out, string Err) Finish(Process p, int seconds)
    {
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(seconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"llama4 (pid {p.Id}) did not finish in {seconds} s: a hang. stderr so far: {(e.IsCompleted ? e.Result : "")}");
        }
        p.WaitForExit();
        return (p.ExitCode, o.Result, e.Result);
    }

    static readonly string[] RunArgs = ["run", "--device", "emu", "--prompt", "Hello, Llama 4!", "--max-new-tokens", "4", "--temperature", "0"];

    /// <summary>The demo model's reply on one device (in this process), then W processes, one rank each.</summary>
    [Test]
    public void TwoProcessesGiveTheReplyOfOneDevice()
    {
        const int world = 2;
        // The demo vocabulary needs no tokenizer file: the checkpoint is the demo's (synthesised), run without --model.
        var o = new StringWriter();
        var err = new StringWriter();
        var demo = RunArgs;
        Assert.That(Commands.Run(demo, o, err), Is.EqualTo(0), err.ToString());
        string want = o.ToString();
        int port = CollectiveTests.FreePort();
        var procs = Enumerable.Range(0, world)
            .Select(r => Start([.. demo, "--rank", $"{r}", "--world-size", $"{world}", "--init", $"tcp://127.0.0.1:{port}", "--init-timeout", "240"]))
            .ToArray();
        var results = procs.Select(p => Finish(p, 600)).ToArray();
        for (int r = 0; r < world; r++)
        {
            TestContext.Out.WriteLine($"rank {r}: rc {results[r].Rc}; stderr: {results[r].Err.Trim().Split('\n').LastOrDefault()}");
            Assert.That(results[r].Rc, Is.EqualTo(0), $"rank {r} of {world}: {results[r].Err}");
            Assert.That(results[r].Err, Does.Contain($"rank {r} of {world}").And.Contain($"{world} devices"));
            Assert.That(results[r].Out, Is.EqualTo(want), $"rank {r} of {world}: the reply of one device");
        }
    }

    /// <summary>
    /// Three processes: the demo model does not split over 3 (4 heads), so the children get a cache whose demo is a
    /// 6-head, 3-KV-head, 6-expert variant (I 48, Im 96; vocab 202,048 padded to 3 × 67,350) — the one-device reply from
    /// one child, then three ranks. The kernel cache is shared (a link), so nothing is compiled again.
    /// </summary>
    [Test]
    public void ThreeProcessesGiveTheReplyOfOneDevice()
    {
        string cache = CkptTestUtil.NewTempDir("multidev-cache3");
        try
        {
            Directory.CreateSymbolicLink(Path.Combine(cache, "kernels"), Llama4Native.Kernels.KernelCache.DefaultRoot());
            var json = System.Text.Json.Nodes.JsonNode.Parse(Presets.ConfigJson("tiny-demo"))!;
            var t = json["text_config"]!;
            t["num_attention_heads"] = 6; t["num_key_value_heads"] = 3; t["num_local_experts"] = 6; t["intermediate_size"] = 48; t["intermediate_size_mlp"] = 96;
            Synth.Write(json.ToJsonString(), Path.Combine(cache, "demo", "tiny-demo"), new SynthOptions(Seed: CkptTestUtil.Seed("multidev 3 ranks")));
            var (rc1, want, err1) = Finish(StartIn(cache, RunArgs), 600);
            Assert.That(rc1, Is.EqualTo(0), err1);
            int port = CollectiveTests.FreePort();
            var procs = Enumerable.Range(0, 3)
                .Select(r => StartIn(cache, [.. RunArgs, "--rank", $"{r}", "--world-size", "3", "--init", $"tcp://127.0.0.1:{port}", "--init-timeout", "240"]))
                .ToArray();
            var results = procs.Select(p => Finish(p, 600)).ToArray();
            for (int r = 0; r < 3; r++)
            {
                Assert.That(results[r].Rc, Is.EqualTo(0), $"rank {r} of 3: {results[r].Err}");
                Assert.That(results[r].Out, Is.EqualTo(want), $"rank {r} of 3: the reply of one device");
            }
            TestContext.Out.WriteLine($"3 ranks and one device: {want.Trim()}");
        }
        finally
        {
            // the link first (unlinked, never followed: the shared kernel cache stays), then the rest
            try { new DirectoryInfo(Path.Combine(cache, "kernels")).Delete(); Directory.Delete(cache, true); } catch (IOException) { }
        }
    }

    [Test]
    public void ARankThatNeverArrivesIsATimeoutNotAHang()
    {
        int port = CollectiveTests.FreePort();
        var lone = Start("run", "--device", "emu", "--prompt", "x", "--max-new-tokens", "1",
                         "--rank", "0", "--world-size", "2", "--init", $"tcp://127.0.0.1:{port}", "--init-timeout", "3");
        var (rc, _, stderr) = Finish(lone, 300);
        Assert.That(rc, Is.EqualTo(1), stderr);
        Assert.That(stderr, Does.Contain("rank(s) 1 of 2").And.Contain("never arrived").And.Contain($"127.0.0.1:{port}"));
    }
}
