using System.Diagnostics;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-serve`: aggregate generated tokens/s of the serving scheduler at several concurrencies, in
/// process (no HTTP): C requests of P random prompt tokens each, N greedy tokens each, all submitted at once to a
/// scheduler with C slots; every level is run once to warm up (kernels, graphs per step shape) and then measured
/// --rounds times (the median round is reported: one slow round — a graph built for a new step shape, a busy host —
/// does not make the level's number).
/// </summary>
internal static class BenchServeVerb
{
    public static readonly VerbSpec Spec = new("bench-serve", "serving throughput in process: aggregate generated tokens/s of the scheduler at several concurrencies",
        [Common.Model,
         new("concurrency", "LIST", "comma-separated concurrency levels (default 1,4,16)"),
         new("prompt-tokens", "P", "random prompt tokens per request, 1 to 65536 (default 32)"),
         new("new-tokens", "N", "greedy new tokens per request, 1 to 65536 (default 16)"),
         Common.Device, Common.ComputeOpt, Common.KvCache,
         new("seed", "S", "seed of the random prompts, an int (default 1)"),
         new("rounds", "R", "measured rounds per level, 1 to 100; the median round is reported (default 3)"),
         new("engine", "KIND", "batched (one forward per step over a paged KV cache) or sequential (default batched)")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        var levels = a.Get("concurrency", "1,4,16").Split(',').Select(s => int.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var c) && c is >= 1 and <= 4096 ? c : throw new UsageException($"--concurrency: '{s}' is not a count from 1 to 4096")).ToArray();
        int p = a.GetInt("prompt-tokens", 32, 1, 1 << 16), n = a.GetInt("new-tokens", 16, 1, 1 << 16), rounds = a.GetInt("rounds", 3, 1, 100);
        string engineKind = a.Get("engine", "batched");
        if (engineKind is not ("batched" or "sequential")) throw new UsageException($"--engine must be batched or sequential, not '{engineKind}'");
        var compute = Common.Compute(a);
        var kvCache = Common.KvFormat(a);
        string dir = Common.ModelDir(a);
        int context = p + n + 1;
        using var model = Llama4Model.Load(dir, new Llama4ModelOptions(Common.DeviceSpec(a), compute, context, 256, KvCache: kvCache));
        IStepEngine engine = engineKind == "batched"
            ? new BatchedStepEngine(model.Weights, model.Compute, levels.Max(), context, Math.Min(256, context), maxStepTokens: levels.Max() + 512, kvFormat: kvCache)
            : SequentialStepEngine.For(model, levels.Max(), context);
        using var scheduler = new ServingScheduler(engine, null,
                                                   new ServingOptions { MaxQueue = levels.Max(), StepTokenBudget = 512 });
        var rng = new Random(a.GetInt("seed", 1));
        int vocab = model.Config.Text.VocabSize;
        stdout.WriteLine($"device {model.Device.Name}, {model.Compute}; model {dir}; {p} prompt tokens, {n} new tokens per request (greedy); " +
                         $"median of {rounds} round{(rounds == 1 ? "" : "s")} per level after one warm-up");
        stdout.WriteLine("| concurrency | generated tokens | wall s | aggregate tokens/s | × concurrency 1 | mean time to first token ms | rounds tokens/s |");
        stdout.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        double? baseline = null;
        foreach (var c in levels)
        {
            Round(c);                                   // warm-up
            var all = Enumerable.Range(0, rounds).Select(_ => Round(c)).OrderBy(r => r.Tokens / r.Wall.TotalSeconds).ToList();
            var (tokens, wall, ttft) = all[all.Count / 2];
            double rate = tokens / wall.TotalSeconds;
            baseline ??= rate;
            stdout.WriteLine($"| {c} | {tokens} | {wall.TotalSeconds:0.000} | {rate:0.0} | {rate / baseline.Value:0.00} | {ttft.TotalMilliseconds:0} | " +
                             $"{string.Join(" ", all.Select(r => (r.Tokens / r.Wall.TotalSeconds).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)))} |");
        }
        stdout.WriteLine(engineKind == "batched" ? "(batched engine: a step's sequences in one forward over a paged KV cache)"
                                                 : "(sequential engine: a step's sequences one after another)");
        return 0;

        // Random ids, never the image placeholder (a text-only request).
        int Token()
        {
            int t;
            do t = rng.Next(vocab); while (t == scheduler.Engine.ImageToken);
            return t;
        }

        (int Tokens, TimeSpan Wall, TimeSpan MeanTtft) Round(int c)
        {
            var sw = Stopwatch.StartNew();
            var seqs = Enumerable.Range(0, c).Select(_ => scheduler.Submit(new ServingRequest
            {
                Prompt = Enumerable.Range(0, p).Select(_ => Token()).ToArray(),
                Options = new GenerationOptions { MaxNewTokens = n, StopAtModelStops = false },
            })).ToList();
            var results = seqs.Select(s => s.Completion.GetAwaiter().GetResult()).ToList();
            var wall = sw.Elapsed;
            if (results.FirstOrDefault(r => r.Reason == FinishReason.Error) is { } bad) throw new InvalidOperationException("a request failed: " + bad.Detail, bad.Error);
            return (results.Sum(r => r.CompletionTokens), wall, TimeSpan.FromTicks((long)results.Average(r => r.TimeToFirstToken.Ticks)));
        }
    }
}
