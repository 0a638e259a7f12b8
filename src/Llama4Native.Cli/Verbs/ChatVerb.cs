using Llama4Native.Generation;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 chat`: an interactive conversation that keeps its history (and KV cache) across turns.
/// Ctrl-C stops the reply being written, not the program; /reset starts over; /exit (or end of input) quits.
/// </summary>
internal static class ChatVerb
{
    public static readonly VerbSpec Spec = new("chat", "interactive chat keeping the history (and KV cache) across turns; Ctrl-C stops a reply",
        [.. Common.ModelOptions, .. Common.SamplingOptions, new("system", "TEXT", "a system message for the conversation")],
        "In the chat: /image PATH attaches an image to the next message, /reset starts over, /help lists the commands,\n" +
        "/exit or /quit (or end of input) quits. Without --model: the tiny random-weight demo model.");

    const string Commands = "/image PATH attaches an image to the next message, /reset starts over, /help shows this, /exit or /quit quits. Ctrl-C stops a reply.";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr) => Run(argv, Console.In, stdout, stderr);

    public static int Run(string[] argv, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        var settings = RunVerb.Settings.From(a);
        var dir = a.Has("model") ? Common.ModelDir(a) : null;
        using var model = RunVerb.LoadModel(a, dir, settings, stderr, out var options);
        using var chat = model.CreateSession(model.Options.MaxContext);
        var history = new List<Message>();
        var attached = new List<ImageInput>();   // /image PATH: attached to the next message
        if (a.Get("system") is { } sys) history.Add(new Message(MessageRole.System, sys));
        CancellationTokenSource? reply = null;
        ConsoleCancelEventHandler onCancel = (_, e) => { if (reply is { } r) { e.Cancel = true; r.Cancel(); } };
        Console.CancelKeyPress += onCancel;
        try
        {
            stderr.WriteLine("chat: type a message; " + Commands);
            while (true)
            {
                stdout.Write("> ");
                stdout.Flush();
                var line = stdin.ReadLine();
                if (line is null) return 0;
                var cmd = line.Trim();
                if (cmd is "/exit" or "/quit" or "/q") return 0;
                if (cmd == "/reset") { history.RemoveAll(m => m.Role != MessageRole.System); chat.Reset(); attached.Clear(); stderr.WriteLine("[new conversation]"); continue; }
                if (cmd is "/help" or "/?") { stderr.WriteLine(Commands); continue; }
                if (cmd == "/image") { stderr.WriteLine("chat: /image needs a path: /image PATH (JPEG, PNG, BMP, GIF)"); continue; }
                if (cmd.StartsWith("/image ", StringComparison.Ordinal))
                {
                    var path = cmd["/image ".Length..].Trim();
                    if (path == "-") { stderr.WriteLine("chat: /image - is not available in chat (stdin holds the conversation); save the image to a file"); continue; }
                    try { attached.Add(RunVerb.ReadImage(path)); stderr.WriteLine($"[{path} goes with the next message]"); }
                    catch (Exception e) when (e is UsageException or Vision.ImageException) { stderr.WriteLine($"chat: {e.Message}"); }
                    continue;
                }
                if (cmd.Length == 0) continue;
                if (cmd.StartsWith('/') && !cmd.StartsWith("//", StringComparison.Ordinal) && cmd.Split(' ')[0].Length > 1 && cmd.Split(' ')[0].All(c => c == '/' || char.IsAsciiLetter(c)))
                {
                    stderr.WriteLine($"chat: unknown command {cmd.Split(' ')[0]}. {Commands} (Start a message with // to send a literal /.)");
                    continue;
                }
                if (cmd.StartsWith("//", StringComparison.Ordinal)) line = line.TrimStart()[1..];
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
