using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-e2e`: the end-to-end numbers a user feels, on any checkpoint and device — load time, prefill
/// tokens/s for a prompt of P random tokens, and greedy decode tokens/s for N new tokens (batch 1), each
/// measured after a warm-up run so kernel compilation is not counted.
/// </summary>
public static class BenchE2eVerb
{
    public const string Help = "end-to-end load / prefill / decode speed: --model DIR [--prompt-tokens P] [--new-tokens N] [--device] [--compute fp32|bf16]";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "prompt-tokens", "new-tokens", "device", "compute", "max-piece", "seed"]);
        string model = a.Require("model", "DIR");
        int p = a.GetInt("prompt-tokens", 128), n = a.GetInt("new-tokens", 32), piece = a.GetInt("max-piece", 256);
        if (p < 1 || n < 1) throw new UsageException("--prompt-tokens and --new-tokens must be ≥ 1");
        var mode = a.Get("compute", "bf16") == "fp32" ? ComputeMode.F32 : ComputeMode.BF16;
        using var dev = DeviceFactory.Create(a.Get("device", "auto"));
        var sw = Stopwatch.StartNew();
        using var w = WeightLoader.Load(model, dev);
        var load = sw.Elapsed;
        var rng = new Random(a.GetInt("seed", 1));
        var prompt = Enumerable.Range(0, p).Select(_ => rng.Next(w.Config.Text.VocabSize)).ToArray();
        using var gen = new TokenGenerator(w, mode, p + n + 1, Math.Min(piece, p));
        var o = new GenerationOptions { MaxNewTokens = n, StopAtModelStops = false };
        gen.Generate(prompt, o).ToList();               // warm-up: compiles every kernel, sizes every graph
        gen.Reset();
        gen.Generate(prompt, o).ToList();
        var s = gen.LastStats!;
        double prefill = p / s.TimeToFirstToken.TotalSeconds;
        stdout.WriteLine($"device   {dev.Name} ({dev.Arch}), {mode}");
        stdout.WriteLine($"model    {model}: {Format.Bytes(w.Arena.Bytes)} loaded in {load.TotalSeconds:0.00} s");
        stdout.WriteLine($"prefill  {p} tokens in {s.TimeToFirstToken.TotalMilliseconds:0.0} ms = {prefill:0.0} tokens/s");
        stdout.WriteLine($"decode   {s.NewTokens - 1} tokens at {s.DecodeTokensPerSecond:0.00} tokens/s ({1000 / Math.Max(1e-9, s.DecodeTokensPerSecond):0.0} ms/token)");
        return 0;
    }
}
