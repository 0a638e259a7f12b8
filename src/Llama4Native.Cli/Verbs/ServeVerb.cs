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
public static class ServeVerb
{
    public const string Help = "OpenAI-compatible HTTP server: [--model DIR] [--host H] [--port P] [--api-key KEY | env LLAMA4_API_KEY] [--max-batch N] [--max-context N] [--max-queue N] [--step-tokens N] [--quantize none|int4|fp8] [--int4-group-size G] [--device auto|cuda|emu] [--compute fp32|bf16] [--tokenizer PATH] [--model-id NAME] [--shutdown-timeout S]";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "host", "port", "api-key", "max-batch", "max-context", "max-queue", "step-tokens", "quantize", "int4-group-size",
                                "device", "compute", "tokenizer", "model-id", "shutdown-timeout"]);
        int port = a.GetInt("port", 8000), batch = a.GetInt("max-batch", 8), context = a.GetInt("max-context", 8192);
        int queue = a.GetInt("max-queue", 64), stepTokens = a.GetInt("step-tokens", 512), group = a.GetInt("int4-group-size", 128);
        if (port is < 0 or > 65535) throw new UsageException($"--port {port} is not a TCP port (0..65535; 0 picks a free one)");
        if (batch < 1 || context < 2 || queue < 0 || stepTokens < 1)
            throw new UsageException("--max-batch and --step-tokens must be ≥ 1, --max-context ≥ 2, --max-queue ≥ 0");
        var quantize = a.Get("quantize", "none") switch
        {
            "none" => QuantizeMode.None,
            "int4" => QuantizeMode.Int4,
            "fp8" => QuantizeMode.Fp8,
            var q => throw new UsageException($"--quantize must be none, int4 or fp8, not '{q}'"),
        };
        var compute = a.Get("compute") switch
        {
            null => (ComputeMode?)null,
            "fp32" => ComputeMode.F32,
            "bf16" => ComputeMode.BF16,
            var c => throw new UsageException($"--compute must be fp32 or bf16, not '{c}'"),
        };
        var key = a.Get("api-key") ?? Environment.GetEnvironmentVariable("LLAMA4_API_KEY");
        if (key is { Length: 0 }) key = null;

        var dir = a.Get("model");
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
        using var model = Llama4Model.Load(dir, new Llama4ModelOptions(a.Get("device", "auto"), compute, context, 256,
                                                                     p => bar.Update(p.BytesDone, p.BytesTotal, p.Elapsed), codec, quantize, group));
        bar.Done();
        using var scheduler = new ServingScheduler(SequentialStepEngine.For(model, batch, context), codec,
                                                   new ServingOptions { MaxQueue = queue, StepTokenBudget = stepTokens });
        var images = config.Vision is { } v ? Vision.Llama4ImageProcessor.FromConfig(v) : null;
        var options = new Llama4ServerOptions
        {
            Host = a.Get("host", "127.0.0.1"), Port = port, ApiKey = key,
            ModelId = a.Get("model-id") ?? Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/', '\\')),
            ShutdownTimeout = TimeSpan.FromSeconds(a.GetDouble("shutdown-timeout", 30)),
            Log = line => { lock (stderr) stderr.WriteLine(line); },
        };
        var server = Llama4Server.StartAsync(scheduler, codec, images, options).GetAwaiter().GetResult();
        stderr.WriteLine($"model: {dir} on {model.Device.Name} ({model.Compute}); {batch} sequences × {context} tokens; queue {queue}");
        stderr.WriteLine("note: the kernels do not batch sequences yet — a step runs its sequences one after another (see README, Serving)");
        stdout.WriteLine($"serving '{options.ModelId}' at {server.BaseAddress} (OpenAI API under /v1{(key is null ? "" : ", API key required")}); Ctrl-C stops");
        stdout.Flush();
        server.WaitForShutdownAsync().GetAwaiter().GetResult();
        stderr.WriteLine("llama4 serve: stopped");
        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return 0;
    }
}
