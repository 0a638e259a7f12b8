using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-e2e`: the end-to-end numbers a user feels, on any checkpoint and device — load time, prefill
/// tokens/s for a prompt of P random tokens, and greedy decode tokens/s for N new tokens (batch 1), each
/// measured after a warm-up run so kernel compilation is not counted. With <c>--preset NAME --synthetic</c> there is
/// no checkpoint: the weights are described (<see cref="WeightLoader.Describe"/>) and filled with random values by
/// a kernel on the device (a full-size model on a machine with little disk). On a device that can capture graphs,
/// decode is measured host-driven and with the captured step replayed.
/// </summary>
public static class BenchE2eVerb
{
    public const string Help = "end-to-end load / prefill / decode speed: --model DIR | --preset NAME --synthetic [--quantize none|int4|fp8] [--prompt-tokens P] [--new-tokens N] [--device] [--compute fp32|bf16]";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "preset", "quantize", "int4-group-size", "prompt-tokens", "new-tokens", "device", "compute", "max-piece", "seed"], ["synthetic"]);
        int p = a.GetInt("prompt-tokens", 128), n = a.GetInt("new-tokens", 32), piece = a.GetInt("max-piece", 256);
        if (p < 1 || n < 1) throw new UsageException("--prompt-tokens and --new-tokens must be ≥ 1");
        var mode = a.Get("compute", "bf16") == "fp32" ? ComputeMode.F32 : ComputeMode.BF16;
        if (!QuantizeOptions.TryParseMode(a.Get("quantize", "none"), out var quant))
            throw new UsageException($"--quantize must be none, int4 or fp8, not '{a.Get("quantize")}'");
        var load = new LoadOptions(Quantize: quant == QuantizeMode.None ? null : new QuantizeOptions(quant, a.GetInt("int4-group-size", 128)));
        string model;
        using var dev = DeviceFactory.Create(a.Get("device", "auto"));
        var sw = Stopwatch.StartNew();
        ModelWeights w;
        if (a.Get("preset") is { } preset)
        {
            if (!a.Flag("synthetic")) throw new UsageException("--preset needs --synthetic (random weights made on the device), or use --model DIR");
            if (a.Has("model")) throw new UsageException("give --model DIR or --preset NAME --synthetic, not both");
            Llama4Config config;
            try { config = Llama4Config.Parse(Presets.ConfigJson(preset), $"preset {preset}"); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            w = WeightLoader.Describe(config, dev, load with { Include = name => !name.StartsWith("v.", StringComparison.Ordinal) && !name.StartsWith("mm.", StringComparison.Ordinal) });
            DeviceSynth.Fill(w, (ulong)a.GetInt("seed", 1));
            model = $"{preset} (synthetic{(quant == QuantizeMode.None ? "" : ", " + quant.ToString().ToLowerInvariant())}, text only)";
        }
        else
        {
            model = a.Require("model", "DIR (or --preset NAME --synthetic)");
            w = WeightLoader.Load(model, dev, load);
        }
        using var _ = w;
        var loadTime = sw.Elapsed;
        var rng = new Random(a.GetInt("seed", 1));
        var prompt = Enumerable.Range(0, p).Select(_ => rng.Next(w.Config.Text.VocabSize)).ToArray();
        var o = new GenerationOptions { MaxNewTokens = n, StopAtModelStops = false };
        stdout.WriteLine($"device   {dev.Name} ({dev.Arch}), {mode}");
        stdout.WriteLine($"model    {model}: {Format.Bytes(w.Arena.Bytes)} {(a.Flag("synthetic") ? "generated" : "loaded")} in {loadTime.TotalSeconds:0.00} s");
        foreach (bool capture in dev.CanCapture && mode == ComputeMode.BF16 ? new[] { false, true } : [false])
        {
            using var gen = new TokenGenerator(w, mode, p + n + 1, Math.Min(piece, p), captureDecode: capture);
            gen.Generate(prompt, o).ToList();               // warm-up: compiles every kernel, sizes every graph, captures the step
            gen.Reset();
            gen.Generate(prompt, o).ToList();
            var s = gen.LastStats!;
            double prefill = p / s.TimeToFirstToken.TotalSeconds;
            if (!capture) stdout.WriteLine($"prefill  {p} tokens in {s.TimeToFirstToken.TotalMilliseconds:0.0} ms = {prefill:0.0} tokens/s");
            stdout.WriteLine($"decode   {s.NewTokens - 1} tokens at {s.DecodeTokensPerSecond:0.00} tokens/s ({1000 / Math.Max(1e-9, s.DecodeTokensPerSecond):0.0} ms/token)" +
                             (capture ? $", captured step replayed ({gen.CapturedSteps} graphs, {gen.GraphReplays} replays)" : ", host-driven"));
        }
        return 0;
    }
}
