using Llama4Native.Generation;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 chat`: an interactive conversation that keeps its history (and KV cache) across turns.
/// Ctrl-C stops the reply being written, not the program; /reset starts over; /exit (or end of input) quits.
/// </summary>
public static class ChatVerb
{
    public const string Help = "interactive chat keeping the history: [--model DIR] [--system TEXT] [sampling options]; Ctrl-C stops a reply";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr) => Run(argv, Console.In, stdout, stderr);

    public static int Run(string[] argv, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, [.. RunVerb.ModelOptions, .. RunVerb.SamplingOptions, "system"]);
        using var model = RunVerb.LoadModel(a, stderr);
        using var chat = model.CreateSession();
        var options = RunVerb.Options(a);
        var history = new List<Message>();
        var attached = new List<ImageInput>();   // /image PATH: attached to the next message
        if (a.Get("system") is { } sys) history.Add(new Message(MessageRole.System, sys));
        CancellationTokenSource? reply = null;
        ConsoleCancelEventHandler onCancel = (_, e) => { if (reply is { } r) { e.Cancel = true; r.Cancel(); } };
        Console.CancelKeyPress += onCancel;
        try
        {
            stderr.WriteLine("chat: type a message; /image PATH attaches an image to the next one, /reset starts over, /exit quits. Ctrl-C stops a reply.");
            while (true)
            {
                stdout.Write("> ");
                stdout.Flush();
                var line = stdin.ReadLine();
                if (line is null || line.Trim() == "/exit") return 0;
                if (line.Trim() == "/reset") { history.RemoveAll(m => m.Role != MessageRole.System); chat.Reset(); attached.Clear(); continue; }
                if (line.TrimStart().StartsWith("/image ", StringComparison.Ordinal))
                {
                    var path = line.TrimStart()["/image ".Length..].Trim();
                    try { attached.Add(RunVerb.ReadImage(path)); stderr.WriteLine($"[{path} goes with the next message]"); }
                    catch (Exception e) when (e is UsageException or Vision.ImageException) { stderr.WriteLine($"chat: {e.Message}"); }
                    continue;
                }
                if (line.Trim().Length == 0) continue;
                history.Add(new Message(MessageRole.User, line, [.. attached]));
                attached.Clear();
                reply = new CancellationTokenSource();
                var text = new System.Text.StringBuilder();
                try
                {
                    foreach (var piece in RunVerb.Sync(chat.GenerateAsync(history, options, reply.Token)))
                    {
                        stdout.Write(piece.Text);
                        stdout.Flush();
                        text.Append(piece.Text);
                    }
                    stderr.WriteLine($"\n[{chat.LastStats}]");
                }
                catch (OperationCanceledException)
                {
                    stderr.WriteLine("\n[stopped]");
                }
                catch (Exception e) when (e is Vision.ImageException or NotSupportedException)
                {
                    // A broken image or a text-only model: nothing was fed; drop the message and carry on.
                    stderr.WriteLine($"\nchat: {e.Message}");
                    history.RemoveAt(history.Count - 1);
                    reply.Dispose();
                    reply = null;
                    continue;
                }
                catch (Model.ContextLengthException e)
                {
                    // The conversation outgrew the context: say so and keep the program (and the history) alive.
                    stderr.WriteLine($"\nchat: {e.Message}. Type /reset to start a new conversation.");
                    history.RemoveAt(history.Count - 1);
                    reply.Dispose();
                    reply = null;
                    continue;
                }
                history.Add(new Message(MessageRole.Assistant, text.ToString()));
                reply.Dispose();
                reply = null;
            }
        }
        finally { Console.CancelKeyPress -= onCancel; }
    }
}
