using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Text;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 run`: the prompt runner — streams the reply to stdout, the stats to stderr. With no --model it runs a
/// tiny random-weight Llama 4 with the real vocabulary (synthesised on first use), so a fresh clone shows the
/// whole pipeline — clearly labelled: its output is gibberish.
/// </summary>
public static class RunVerb
{
    public const string Help = "generate from a prompt: [--model DIR] --prompt TEXT [--system TEXT] [--image PATH|-]… [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--repetition-penalty R] [--frequency-penalty F] [--presence-penalty P] [--seed S] [--stop TEXT]… [--device auto|cuda|emu] [--compute fp32|bf16] [--tokenizer PATH] [--max-context N]";

    internal static readonly string[] ModelOptions = ["model", "device", "compute", "tokenizer", "max-context"];
    internal static readonly string[] SamplingOptions = ["max-new-tokens", "temperature", "top-p", "top-k", "min-p", "repetition-penalty",
                                                         "frequency-penalty", "presence-penalty", "seed", "stop"];

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, [.. ModelOptions, .. SamplingOptions, "prompt", "system", "image"]);
        // Images are read before the model loads: a missing file costs nothing.
        var images = a.All("image").Select(ReadImage).ToArray();
        using var model = LoadModel(a, stderr);
        using var chat = model.CreateSession();
        var messages = new List<Message>();
        if (a.Get("system") is { } sys) messages.Add(new Message(MessageRole.System, sys));
        var prompt = a.Get("prompt") ?? (a.Get("model") is null ? (images.Length > 0 ? "Describe the images." : "Hello, Llama 4!")
                                                                : throw new UsageException("--prompt TEXT is required"));
        messages.Add(new Message(MessageRole.User, prompt, images));
        var options = Options(a);
        foreach (var piece in Sync(chat.GenerateAsync(messages, options)))
        {
            stdout.Write(piece.Text);
            stdout.Flush();
        }
        stdout.WriteLine();
        stderr.WriteLine($"[{chat.LastStats}]");
        return 0;
    }

    /// <summary>An --image argument: a path, or "-" for the bytes on stdin.</summary>
    internal static ImageInput ReadImage(string arg)
    {
        if (arg == "-")
        {
            using var stdin = Console.OpenStandardInput();
            var piped = ImageInput.FromStream(stdin, "stdin");
            Vision.ImageDecoder.Decode(piped.Data.ToArray(), "stdin");
            return piped;
        }
        if (!File.Exists(arg)) throw new UsageException($"--image {arg}: no such file");
        var input = ImageInput.FromFile(arg);
        Vision.ImageDecoder.Decode(input.Data.ToArray(), arg);   // a broken image fails here, before the model loads
        return input;
    }

    /// <summary>The model from --model, or the demo model (synthesised once into the cache) when there is none.</summary>
    internal static Llama4Model LoadModel(Args a, TextWriter stderr)
    {
        var dir = a.Get("model");
        if (dir is null)
        {
            dir = Path.GetFullPath(Path.Combine(Kernels.KernelCache.DefaultRoot(), "..", "demo", "tiny-demo"));
            if (!File.Exists(Path.Combine(dir, "config.json")))
                Synth.Write(Presets.ConfigJson("tiny-demo"), dir, new SynthOptions(Seed: 42));
            stderr.WriteLine("llama4 run: no --model given — running a TINY RANDOM-WEIGHT Llama 4 (Scout architecture, real vocabulary).");
            stderr.WriteLine("            It shows the pipeline end to end; its output is gibberish. Pass --model DIR for a real checkpoint.");
        }
        var config = Llama4Config.Load(dir);
        var codec = Codec(dir, a.Get("tokenizer"), config, demo: a.Get("model") is null, stderr); // before the (long) weight load
        var compute = a.Get("compute") switch { null => (ComputeMode?)null, "fp32" => ComputeMode.F32, "bf16" => ComputeMode.BF16, var c => throw new UsageException($"--compute must be fp32 or bf16, not '{c}'") };
        var bar = new ProgressBar(stderr, "load");
        var model = Llama4Model.Load(dir, new Llama4ModelOptions(a.Get("device", "auto"), compute, (int)a.Long("max-context", 8192), 256,
                                                                 p => bar.Update(p.BytesDone, p.BytesTotal, p.Elapsed), codec));
        bar.Done();
        stderr.WriteLine($"model: {dir} on {model.Device.Name} ({model.Compute})");
        return model;
    }

    /// <summary>The tokenizer: --tokenizer, else the checkpoint's own; the demo model uses o200k_base + Llama 4's specials.</summary>
    static Llama4TextCodec Codec(string dir, string? tokenizer, Llama4Config config, bool demo, TextWriter stderr)
    {
        if (tokenizer is null && demo)
        {
            stderr.WriteLine("            Tokenizer: the o200k_base vocabulary + Llama 4's 2,048 special tokens (the demo stand-in for tokenizer.model).");
            return Llama4TextCodec.Create(Llama4Tokenizer.CreateDemo(), config);
        }
        try { return Llama4TextCodec.Load(dir, config, tokenizer); }
        catch (FileNotFoundException e)
        {
            throw new UsageException($"{e.Message}. Pass --tokenizer PATH (the release's original/tokenizer.model or an HF tokenizer.json), " +
                                     "or copy it next to config.json");
        }
    }

    internal static GenerationOptions Options(Args a) => new()
    {
        MaxNewTokens = a.GetInt("max-new-tokens", 256),
        Temperature = (float)a.GetDouble("temperature", 0),
        TopP = (float)a.GetDouble("top-p", 1),
        TopK = a.GetInt("top-k", 0),
        MinP = (float)a.GetDouble("min-p", 0),
        RepetitionPenalty = (float)a.GetDouble("repetition-penalty", 1),
        FrequencyPenalty = (float)a.GetDouble("frequency-penalty", 0),
        PresencePenalty = (float)a.GetDouble("presence-penalty", 0),
        Seed = (ulong)a.Long("seed", 0),
        StopStrings = [.. a.All("stop")],
    };

    internal static IEnumerable<T> Sync<T>(IAsyncEnumerable<T> source)
    {
        var e = source.GetAsyncEnumerator();
        try
        {
            while (e.MoveNextAsync().AsTask().GetAwaiter().GetResult()) yield return e.Current;
        }
        finally { e.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }
}
