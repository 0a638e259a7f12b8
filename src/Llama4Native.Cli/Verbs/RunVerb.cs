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
internal static class RunVerb
{
    public static readonly VerbSpec Spec = new("run", "generate a reply to a prompt: the reply streams to stdout, the stats to stderr",
        [
            .. Common.ModelOptions,
            .. Common.SamplingOptions,
            new("prompt", "TEXT", "the user message (required with --model; the demo has a default)"),
            new("system", "TEXT", "a system message before it"),
            new("image", "PATH", "an image (JPEG, PNG, BMP, GIF) to go with the prompt; '-' reads one from stdin", Many: true),
        ],
        "With no --model, a tiny random-weight Llama 4 with the real vocabulary (synthesised on first use) shows the\n" +
        "whole pipeline; its output is gibberish. Defaults for sampling come from the checkpoint's generation_config.json\n" +
        "(as Hugging Face's generate()); options given here win.");

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        // Everything on the command line is checked before anything is read from disk.
        var settings = Settings.From(a);
        var prompt = a.Get("prompt");
        if (prompt is null && a.Has("model")) throw new UsageException("--prompt TEXT is required (with --model)");
        var model0 = a.Has("model") ? Common.ModelDir(a) : null;
        // Images are read before the model loads: a missing file costs nothing.
        if (a.All("image").Count(x => x == "-") > 1) throw new UsageException("--image - was given twice: stdin holds one image; save the others to files");
        var images = a.All("image").Select(ReadImage).ToArray();
        using var model = LoadModel(a, model0, settings, stderr, out var options);
        if (model0 is null && model.Device.Kind == Devices.DeviceKind.Emulated && !a.Has("max-new-tokens"))
        {
            // The demo on the emulator: every kernel runs on the CPU (the 202,048-token output layer dominates), so a
            // short reply shows the whole pipeline in seconds instead of minutes.
            options = options with { MaxNewTokens = DemoEmulatedTokens };
            stderr.WriteLine($"            Emulated device: {DemoEmulatedTokens} new tokens (pass --max-new-tokens N for more; a GPU runs the default {settings.Sampling(new GenerationOptions()).MaxNewTokens}).");
        }
        using var chat = model.CreateSession(model.Options.MaxContext);
        var messages = new List<Message>();
        if (a.Get("system") is { } sys) messages.Add(new Message(MessageRole.System, sys));
        prompt ??= images.Length > 0 ? "Describe the images." : "Hello, Llama 4!";
        messages.Add(new Message(MessageRole.User, prompt, images));
        foreach (var piece in Sync(chat.GenerateAsync(messages, options)))
        {
            stdout.Write(piece.Text);
            stdout.Flush();
        }
        stdout.WriteLine();
        stderr.WriteLine($"[{chat.LastStats}]");
        return 0;
    }

    /// <summary>New tokens of the demo (no --model) on the emulated device unless --max-new-tokens says otherwise.</summary>
    public const int DemoEmulatedTokens = 12;

    /// <summary>The parsed model and sampling options: every value range-checked, nothing read from disk yet.</summary>
    public sealed record Settings(string Device, ComputeMode? Compute, int? MaxContext, QuantizeOptions Quantize, string? Tokenizer,
                                    Func<GenerationOptions, GenerationOptions> Sampling, IReadOnlyList<int> StopTokens,
                                    KvCacheFormat KvCache = KvCacheFormat.Default, int MaxPiece = 0, string? Devices = null, Common.Multi? Multi = null)
    {
        public static Settings From(Args a)
        {
            var device = Common.DeviceSpec(a);
            var devices = Common.DevicesSpec(a);
            if (devices is not null && a.Has("device")) throw new UsageException("give --device (one device) or --devices (several), not both");
            var multi = Common.MultiProcess(a);
            var compute = Common.Compute(a);
            int? ctx = a.Has("max-context") ? a.GetInt("max-context", 8192, 1, int.MaxValue) : null;
            var q = Common.Quantization(a);
            var kv = Common.KvFormat(a);
            int piece = Common.MaxPieceValue(a);
            var tok = a.Get("tokenizer");
            if (tok is not null && !File.Exists(tok) && !Directory.Exists(tok)) throw new UsageException($"--tokenizer {tok}: no such file or folder");
            var stopTokens = a.All("stop-token").Select(s => (int)Args.ParseLong("--stop-token", s, 0, int.MaxValue)).ToArray();
            // Explicit options over the checkpoint's defaults; checked now against an all-default base so a bad value
            // fails before the load.
            GenerationOptions Apply(GenerationOptions d) => d with
            {
                MaxNewTokens = a.GetInt("max-new-tokens", d.MaxNewTokens, 0, int.MaxValue),
                Temperature = a.GetFloat("temperature", d.Temperature),
                TopP = a.GetFloat("top-p", d.TopP),
                TopK = a.GetInt("top-k", d.TopK, 0, int.MaxValue),
                MinP = a.GetFloat("min-p", d.MinP),
                RepetitionPenalty = a.GetFloat("repetition-penalty", d.RepetitionPenalty),
                FrequencyPenalty = a.GetFloat("frequency-penalty", d.FrequencyPenalty),
                PresencePenalty = a.GetFloat("presence-penalty", d.PresencePenalty),
                Seed = a.ULong("seed", d.Seed),
                StopStrings = a.Has("stop") ? [.. a.All("stop")] : d.StopStrings,
                StopTokens = [.. d.StopTokens, .. stopTokens],
            };
            try { Apply(new GenerationOptions()).Validate(); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            return new Settings(device, compute, ctx, q, tok, Apply, stopTokens, kv, piece, devices, multi);
        }
    }

    /// <summary>An --image argument: a path, or "-" for the bytes on stdin.</summary>
    internal static ImageInput ReadImage(string arg)
    {
        if (arg == "-")
        {
            if (!Console.IsInputRedirected) throw new UsageException("--image -: stdin is a terminal; pipe an image in (llama4 run --image - < photo.jpg)");
            using var stdin = Console.OpenStandardInput();
            var piped = ImageInput.FromStream(stdin, "stdin");
            if (piped.Data.Length == 0) throw new UsageException("--image -: stdin is empty; pipe an image in");
            Vision.ImageDecoder.Decode(piped.Data.ToArray(), "stdin");
            return piped;
        }
        if (Directory.Exists(arg)) throw new UsageException($"--image {arg} is a folder; pass an image file (JPEG, PNG, BMP, GIF)");
        if (!File.Exists(arg)) throw new UsageException($"--image {arg}: no such file");
        var input = ImageInput.FromFile(arg);
        Vision.ImageDecoder.Decode(input.Data.ToArray(), arg);   // a broken image fails here, before the model loads
        return input;
    }

    /// <summary>
    /// The model from --model (already resolved in <paramref name="dir"/>), or the demo model (synthesised once into
    /// the cache) when there is none. Config, generation_config.json, tokenizer and stop ids are checked before
    /// the weights load; <paramref name="options"/> = the checkpoint's defaults overridden by the command line.
    /// </summary>
    internal static Llama4Model LoadModel(Args a, string? dir, Settings s, TextWriter stderr, out GenerationOptions options)
    {
        bool demo = dir is null;
        if (dir is null)
        {
            dir = Path.GetFullPath(Path.Combine(Kernels.KernelCache.DefaultRoot(), "..", "demo", "tiny-demo"));
            if (!File.Exists(Path.Combine(dir, "config.json")))
                Synth.Write(Presets.ConfigJson("tiny-demo"), dir, new SynthOptions(Seed: 42));
            stderr.WriteLine("llama4 run: no --model given — running a TINY RANDOM-WEIGHT Llama 4 (Scout architecture, real vocabulary).");
            stderr.WriteLine("            It shows the pipeline end to end; its output is gibberish. Pass --model DIR for a real checkpoint.");
        }
        var config = Llama4Config.Load(dir);
        foreach (var t in s.StopTokens)
            if (t >= config.Text.VocabSize) throw new UsageException($"--stop-token {t} is out of range: the model's vocabulary has {config.Text.VocabSize} tokens (0 to {config.Text.VocabSize - 1})");
        var defaults = GenerationConfig.Load(dir) ?? new GenerationOptions();
        foreach (var t in defaults.StopTokens)
            if (t >= config.Text.VocabSize) throw new InvalidDataException($"{Path.Combine(dir, GenerationConfig.FileName)}: eos_token_id {t} is out of range: the model's vocabulary has {config.Text.VocabSize} tokens");
        options = s.Sampling(defaults);
        try { options.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        // A device count (or world size) the model cannot be split over fails here, naming the dimension.
        int ranks = s.Multi?.World ?? (s.Devices is { } spec ? Distributed.DeviceGroup.Parse(spec).Count : 1);
        if (ranks > 1) Common.Sharding(config, ranks);
        var codec = Codec(dir, s.Tokenizer, config, demo, stderr); // before the (long) weight load
        var bar = new ProgressBar(stderr, "load");
        var modelOptions = new Llama4ModelOptions(s.Device, s.Compute, s.MaxContext ?? 8192, s.MaxPiece,
                                                  p => bar.Update(p.BytesDone, p.BytesTotal, p.Elapsed), codec,
                                                  s.Quantize.Mode, s.Quantize.Int4GroupSize, s.KvCache, s.Devices);
        Llama4Model model;
        if (s.Multi is { } m)
        {
            stderr.WriteLine($"rank {m.Rank} of {m.World}: meeting the others at {m.Init} (waiting up to {m.Timeout.TotalSeconds:0} s)");
            // What every rank must agree on: the model (its name and shape) and how it is computed.
            string tag = $"{Path.GetFileName(dir.TrimEnd('/'))} L{config.Text.NumHiddenLayers} V{config.Text.VocabSize} {s.Compute} {s.Quantize.Mode} {s.KvCache}";
            var group = Distributed.DeviceGroup.Join(s.Device, m.Rank, m.World, m.Init, m.Timeout, tag);
            model = Llama4Model.Load(dir, modelOptions, group, ownsGroup: true);
        }
        else model = Llama4Model.Load(dir, modelOptions);
        bar.Done();
        stderr.WriteLine($"model: {dir} on {model.DeviceName} ({model.Compute})");
        if (s.MaxContext is null)
        {
            // --max-context not given: what fits now that the weights are loaded (a model with other options is cheap to
            // make: the options only size the sessions' caches).
            int fit = ContextFit.Default(model);
            if (fit < 1)
            {
                model.Dispose();
                throw new InsufficientMemoryException($"no room for a KV cache: {Format.Bytes(model.Device.FreeMemory)} free after the weights, " +
                                                      $"{Format.Bytes(ContextFit.ReserveBytes)} kept for activations; pass --kv-cache fp8, --quantize int4, or a smaller model");
            }
            model = model.WithMaxContext(fit);
            stderr.WriteLine($"max context: {fit} tokens (default: what fits in {Format.Bytes(model.Device.FreeMemory)} free with " +
                             $"{(s.KvCache == KvCacheFormat.Fp8 ? "fp8" : "bf16")} KV, less {Format.Bytes(ContextFit.ReserveBytes)}" +
                             $"{(fit == model.Config.Text.MaxPositionEmbeddings ? ", capped at max_position_embeddings" : "")}; pass --max-context N to choose)");
        }
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
        catch (ArgumentException e) { throw new UsageException($"{(tokenizer is null ? "the checkpoint's tokenizer" : "--tokenizer " + tokenizer)} does not fit this model: {e.Message}"); }
    }

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
