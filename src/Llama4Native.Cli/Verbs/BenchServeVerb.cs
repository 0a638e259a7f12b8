using System.Diagnostics;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-serve`: aggregate generated tokens/s of the serving scheduler at several concurrencies, in
/// process (no HTTP): C requests of P random prompt tokens each, N greedy tokens each, all submitted at once to a
/// scheduler with C slots; every level is run once to warm up (kernels, graphs per slot) and then measured.
/// </summary>
public static class BenchServeVerb
{
    public const string Help = "serving throughput: --model DIR [--concurrency 1,4,16] [--prompt-tokens P] [--new-tokens N] [--device] [--compute fp32|bf16] [--seed S]";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "concurrency", "prompt-tokens", "new-tokens", "device", "compute", "seed"]);
        string dir = a.Require("model", "DIR");
        var levels = a.Get("concurrency", "1,4,16").Split(',').Select(s => int.TryParse(s, out var c) && c >= 1 ? c : throw new UsageException($"--concurrency: '{s}' is not a count ≥ 1")).ToArray();
        int p = a.GetInt("prompt-tokens", 32), n = a.GetInt("new-tokens", 16);
        if (p < 1 || n < 1) throw new UsageException("--prompt-tokens and --new-tokens must be ≥ 1");
        var compute = a.Get("compute") switch { null => (ComputeMode?)null, "fp32" => ComputeMode.F32, "bf16" => ComputeMode.BF16, var c => throw new UsageException($"--compute must be fp32 or bf16, not '{c}'") };
        int context = p + n + 1;
        using var model = Llama4Model.Load(dir, new Llama4ModelOptions(a.Get("device", "auto"), compute, context, 256));
        using var scheduler = new ServingScheduler(SequentialStepEngine.For(model, levels.Max(), context), null,
                                                   new ServingOptions { MaxQueue = levels.Max(), StepTokenBudget = 512 });
        var rng = new Random(a.GetInt("seed", 1));
        int vocab = model.Config.Text.VocabSize;
        stdout.WriteLine($"device {model.Device.Name}, {model.Compute}; model {dir}; {p} prompt tokens, {n} new tokens per request (greedy)");
        stdout.WriteLine("| concurrency | generated tokens | wall s | aggregate tokens/s | × concurrency 1 | mean time to first token ms |");
        stdout.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: |");
        double? baseline = null;
        foreach (var c in levels)
        {
            Round(c);                                   // warm-up
            var (tokens, wall, ttft) = Round(c);
            double rate = tokens / wall.TotalSeconds;
            baseline ??= rate;
            stdout.WriteLine($"| {c} | {tokens} | {wall.TotalSeconds:0.000} | {rate:0.0} | {rate / baseline.Value:0.00} | {ttft.TotalMilliseconds:0} |");
        }
        stdout.WriteLine("(the step engine runs a step's sequences one after another: the kernels do not batch yet)");
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
