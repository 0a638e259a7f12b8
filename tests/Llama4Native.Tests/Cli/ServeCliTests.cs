#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental in the OpenAI package
using System.ClientModel;
using System.Diagnostics;
using System.Text;
using OpenAI;
using OpenAI.Chat;

namespace Llama4Native.Tests.Cli;

/// <summary>
/// `llama4 serve --device emu --engine batched` as a user runs it: a separate process (the CLI's own llama4.dll, the
/// tiny demo model with its demo vocabulary since no --model is given), answered by the official OpenAI client —
/// streaming and not, three streams at once — then SIGTERM: the server drains and the process exits 0.
/// </summary>
[Category("Emulator")]
[NonParallelizable]
public class ServeCliTests
{
    sealed class Server : IDisposable
    {
        public readonly Process Process;
        public readonly StringBuilder Err = new();
        public Uri BaseAddress = null!;

        public Server(params string[] args)
        {
            string dll = Path.Combine(AppContext.BaseDirectory, "llama4.dll");
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(dll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            Process = Process.Start(psi)!;
            Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (Err) Err.AppendLine(e.Data); };
            Process.BeginErrorReadLine();
        }

        /// <summary>Reads stdout until the "serving 'id' at URL" line (the first start compiles the demo's kernels).</summary>
        public async Task<Uri> ReadyAsync(TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            while (await Process.StandardOutput.ReadLineAsync(cts.Token) is { } line)
            {
                int at = line.IndexOf(" at http://", StringComparison.Ordinal);
                if (line.StartsWith("serving ", StringComparison.Ordinal) && at > 0)
                    return BaseAddress = new Uri(line[(at + 4)..line.IndexOf(' ', at + 4)]);
            }
            throw new InvalidOperationException($"llama4 serve exited before serving (rc {(Process.HasExited ? Process.ExitCode : -1)}):\n{Stderr}");
        }

        public string Stderr { get { lock (Err) return Err.ToString(); } }

        public void Terminate()
        {
            using var kill = Process.Start("kill", ["-TERM", Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
            kill.WaitForExit();
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }

    [Test]
    public async Task ServeWithTheBatchedEngineAnswersTheOpenAIClientAndStopsOnSigterm()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) Assert.Ignore("SIGTERM is sent with kill(1)");
        using var server = new Server("serve", "--device", "emu", "--engine", "batched", "--port", "0", "--max-batch", "4",
                                      "--max-context", "256", "--model-id", "demo", "--shutdown-timeout", "2");
        var at = await server.ReadyAsync(TimeSpan.FromMinutes(5));
        Assert.That(server.Stderr, Does.Contain("engine: batched"));
        var client = new ChatClient("demo", new ApiKeyCredential("unused"),
                                    new OpenAIClientOptions { Endpoint = new Uri(at, "/v1"), NetworkTimeout = TimeSpan.FromSeconds(120) });

        // The demo model has Llama 4's 202K-entry vocabulary: ~1–2 s per step on the emulator, so few tokens each.
        var o = new ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0 };
        ChatCompletion done = await client.CompleteChatAsync([new UserChatMessage("Hello!")], o);
        Assert.That(done.Usage.OutputTokenCount, Is.InRange(1, 3));
        Assert.That(done.FinishReason, Is.AnyOf(ChatFinishReason.Stop, ChatFinishReason.Length));
        async Task<string> Stream(string prompt, ChatCompletionOptions options)
        {
            var sb = new StringBuilder();
            await foreach (var u in client.CompleteChatStreamingAsync([new UserChatMessage(prompt)], options))
                foreach (var p in u.ContentUpdate) sb.Append(p.Text);
            return sb.ToString();
        }
        Assert.That(await Stream("Hello!", new ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0 }),
                    Is.EqualTo(done.Content.Count == 0 ? "" : done.Content[0].Text), "streamed = not streamed");

        // Three streams at once, each with its own settings, each equal to the same request alone.
        var cases = Enumerable.Range(0, 3).Select(i => ($"question {i}: " + new string('x', 5 * i),
            new ChatCompletionOptions { MaxOutputTokenCount = 2 + i, Temperature = i % 2 == 0 ? 0 : 0.8f, Seed = 7 + i })).ToArray();
        var together = await Task.WhenAll(cases.Select(c => Stream(c.Item1, c.Item2)));
        for (int i = 0; i < cases.Length; i++)
            Assert.That(together[i], Is.EqualTo(await Stream(cases[i].Item1, cases[i].Item2)), $"stream {i}");

        // SIGTERM while a long stream runs: admission stops, the stream is finished or cancelled within
        // --shutdown-timeout, the process exits 0.
        var longOne = Stream("a long one", new ChatCompletionOptions { MaxOutputTokenCount = 200, Temperature = 0.7f, Seed = 3 });
        await Task.Delay(300);
        server.Terminate();
        try { await longOne.WaitAsync(TimeSpan.FromSeconds(60)); }
        catch (Exception e) when (e is ClientResultException or IOException or HttpRequestException or OperationCanceledException) { }
        Assert.That(server.Process.WaitForExit(TimeSpan.FromSeconds(60)), Is.True, "the server exits after SIGTERM");
        server.Process.WaitForExit(); // the timed wait does not drain the redirected stderr; this one does (the process is gone)
        Assert.That(server.Process.ExitCode, Is.Zero, server.Stderr);
        Assert.That(server.Stderr, Does.Contain("llama4 serve: stopped"));
    }

    [Test]
    public void BenchServeMeasuresTheBatchedEngineAtEachConcurrency()
    {
        var o = new StringWriter(); var e = new StringWriter();
        int rc = Llama4Native.Cli.Commands.Run(["bench-serve", "--model", Checkpoints.CkptTestUtil.FixtureModel("tiny-maverick"), "--device", "emu",
                                                "--concurrency", "1,3", "--prompt-tokens", "5", "--new-tokens", "3", "--rounds", "2"], o, e);
        Assert.That(rc, Is.Zero, e.ToString());
        var rows = o.ToString().Split('\n').Where(l => l.StartsWith("| 1 ", StringComparison.Ordinal) || l.StartsWith("| 3 ", StringComparison.Ordinal))
                    .Select(l => l.Split('|', StringSplitOptions.TrimEntries)).ToList();
        Assert.That(rows, Has.Count.EqualTo(2), o.ToString());
        Assert.That(rows.Select(r => int.Parse(r[2], System.Globalization.CultureInfo.InvariantCulture)), Is.EqualTo(new[] { 3, 9 }), "generated tokens = concurrency × new tokens");
        Assert.That(rows[0][5], Is.EqualTo("1.00"));
        Assert.That(rows.Select(r => r[7].Split(' ').Length), Is.All.EqualTo(2), "one rate per round");
        Assert.That(o.ToString(), Does.Contain("batched engine"));
    }
}
