using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Server;
using Llama4Native.Serving;
using Llama4Native.Text;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 serve`: the OpenAI-compatible HTTP server (src/Llama4Native.Server) over the continuous-batching
/// scheduler (src/Llama4Native/Serving). Runs until SIGTERM or Ctrl-C, then stops admitting, gives running
/// requests --shutdown-timeout seconds and cancels the rest. Self-contained (its own option parsing and model
/// loading) so it ports to another CLI parser as one piece.
/// </summary>
internal static class ServeVerb
{
    public static readonly VerbSpec Spec = new("serve", "OpenAI-compatible HTTP server (POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics) " +
                                               "over the continuous-batching scheduler; no --model serves the tiny random-weight demo",
        [Common.Model,
         new("host", "H", "address to listen on (default 127.0.0.1)"),
         new("port", "P", "TCP port, 0 to 65535 (0 picks a free one; default 8000)"),
         new("api-key", "KEY", "require 'Authorization: Bearer KEY' (or set LLAMA4_API_KEY)"),
         new("max-batch", "N", "sequences running at once, 1 to 4096 (default 8)"),
         new("max-context", "N", "tokens per sequence, 2 to 2^31-1 (default: what fits — the device's free memory after the weights, less 1 GiB, " +
                                 "over --max-batch caches in the --kv-cache format, at most max_position_embeddings)"),
         new("max-queue", "N", "requests waiting beyond the batch before 429, 0 to 1000000 (default 64)"),
         new("step-tokens", "N", "prompt tokens fed per scheduler step, 1 to 1048576 (default 512)"),
         new("engine", "KIND", "batched (a step's sequences, text and images, in one forward over a paged KV cache), sequential (one " +
                               "after another) or auto (default: batched on one device, sequential on several --devices)"),
         Common.Quantize, Common.Int4Group, Common.KvCache, Common.Device, Common.Devices, Common.ComputeOpt, Common.MaxPiece,
         new("tokenizer", "PATH", "the tokenizer (default: the checkpoint's original/tokenizer.model, tokenizer.model or tokenizer.json)"),
         new("model-id", "NAME", "the model id clients use (default: the folder name)"),
         new("shutdown-timeout", "S", "seconds running requests get after SIGTERM/Ctrl-C, 0 to 3600 (default 30)")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int port = a.GetInt("port", 8000, 0, 65535), batch = a.GetInt("max-batch", 8, 1, 4096), context = a.GetInt("max-context", 8192, 2, int.MaxValue);
        bool contextGiven = a.Has("max-context");
        int maxPiece = Common.MaxPieceValue(a);
        int queue = a.GetInt("max-queue", 64, 0, 1_000_000), stepTokens = a.GetInt("step-tokens", 512, 1, 1 << 20);
        string engineKind = a.Get("engine", "auto");
        if (engineKind is not ("auto" or "batched" or "sequential")) throw new UsageException($"--engine must be auto, batched or sequential, not '{engineKind}'");
        var q = Common.Quantization(a);
        var quantize = q.Mode; int group = q.Int4GroupSize;
        var compute = Common.Compute(a);
        var kvCache = Common.KvFormat(a);
        double shutdown = a.GetDouble("shutdown-timeout", 30);
        if (shutdown is < 0 or > 3600) throw new UsageException("--shutdown-timeout must be 0 to 3600 seconds");
        var key = a.Get("api-key") ?? Environment.GetEnvironmentVariable("LLAMA4_API_KEY");
        if (key is { Length: 0 }) key = null;

        var dir = a.Has("model") ? Common.ModelDir(a) : null;
        bool demo = dir is null;
        if (dir is null)
        {
            dir = Path.GetFullPath(Path.Combine(Kernels.KernelCache.DefaultRoot(), "..", "demo", "tiny-demo"));
            if (!File.Exists(Path.Combine(dir, "config.json")))
                Synth.Write(Presets.ConfigJson("tiny-demo"), dir, new SynthOptions(Seed: 42));
            stderr.WriteLine("llama4 serve: no --model given — serving a TINY RANDOM-WEIGHT Llama 4 with the demo vocabulary (gibberish replies).");
        }
        var config = Llama4Config.Load(dir);
        Llama4TextCodec codec;
        if (demo && a.Get("tokenizer") is null) codec = Llama4TextCodec.Create(Llama4Tokenizer.CreateDemo(), config);
        else
        {
            try { codec = Llama4TextCodec.Load(dir, config, a.Get("tokenizer")); }
            catch (FileNotFoundException e)
            {
                throw new UsageException($"{e.Message}. Pass --tokenizer PATH (the release's original/tokenizer.model or an HF tokenizer.json), or copy it next to config.json");
            }
        }
        var bar = new ProgressBar(stderr, "load");
        var devices = Common.DevicesSpec(a);
        if (devices is not null && a.Has("device")) throw new UsageException("give --device or --devices, not both");
        bool several = devices is not null && Distributed.DeviceGroup.Parse(devices).Count > 1;
        if (several)
        {
            Common.Sharding(config, Distributed.DeviceGroup.Parse(devices!).Count);
            if (engineKind == "batched") throw new UsageException("--engine batched on several --devices is not implemented (its paged graph is one device's); use --engine sequential or auto");
        }
        using var model = Llama4Model.Load(dir, new Llama4ModelOptions(Common.DeviceSpec(a), compute, context, maxPiece,
                                                                     p => bar.Update(p.BytesDone, p.BytesTotal, p.Elapsed), codec, quantize, group, kvCache, devices));
        bar.Done();
        if (!contextGiven)
        {
            context = ContextFit.Default(model, batch);
            if (context < 2) throw new InsufficientMemoryException($"no room for {batch} KV caches: {Format.Bytes(model.Device.FreeMemory)} free after the weights; " +
                                                                   "lower --max-batch, pass --kv-cache fp8 or --quantize int4");
            stderr.WriteLine($"max context: {context} tokens per sequence (default: what fits {batch} caches in {Format.Bytes(model.Device.FreeMemory)} free, " +
                             $"less {Format.Bytes(ContextFit.ReserveBytes)}; pass --max-context N to choose)");
        }
        bool batched = engineKind == "batched" || (engineKind == "auto" && !several);
        IStepEngine engine = batched
            ? new BatchedStepEngine(model.Weights, model.Compute, batch, context, Math.Min(model.Options.ServingPrefillPiece, context), maxStepTokens: batch + stepTokens, kvFormat: model.Options.KvCache)
            : SequentialStepEngine.For(model, batch, context);
        using var scheduler = new ServingScheduler(engine, codec,
                                                   new ServingOptions { MaxQueue = queue, StepTokenBudget = stepTokens });
        var images = config.Vision is { } v ? Vision.Llama4ImageProcessor.FromConfig(v) : null;
        var options = new Llama4ServerOptions
        {
            Host = a.Get("host", "127.0.0.1"), Port = port, ApiKey = key,
            ModelId = a.Get("model-id") ?? Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/', '\\')),
            ShutdownTimeout = TimeSpan.FromSeconds(shutdown),
            Log = line => { lock (stderr) stderr.WriteLine(line); },
        };
        var server = Llama4Server.StartAsync(scheduler, codec, images, options).GetAwaiter().GetResult();
        stderr.WriteLine($"model: {dir} on {model.DeviceName} ({model.Compute}); {batch} sequences × {context} tokens; queue {queue}");
        stderr.WriteLine(batched ? $"engine: batched (one forward per step, paged KV: {((BatchedStepEngine)engine).Cache.NopePages} pages of {engine.KvBlockTokens} tokens)"
                                 : "engine: sequential — a step runs its sequences one after another");
        stdout.WriteLine($"serving '{options.ModelId}' at {server.BaseAddress} (OpenAI API under /v1{(key is null ? "" : ", API key required")}); Ctrl-C stops");
        stdout.Flush();
        server.WaitForShutdownAsync().GetAwaiter().GetResult();
        stderr.WriteLine("llama4 serve: stopped");
        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return 0;
    }
}
