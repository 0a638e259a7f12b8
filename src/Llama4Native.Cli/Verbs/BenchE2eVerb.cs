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
internal static class BenchE2eVerb
{
    public static readonly VerbSpec Spec = new("bench-e2e", "end-to-end load / prefill / decode speed on any checkpoint and device (after a warm-up run); " +
                                               "--preset NAME --synthetic runs a full-size model with random weights made on the device",
        [Common.Model,
         new("preset", "NAME", $"with --synthetic: a built-in config ({string.Join(", ", Presets.Names)}) instead of a checkpoint"),
         new("synthetic", null, "random weights generated on the device (no checkpoint; text only)"),
         new("prompt-tokens", "P", "random prompt tokens, 1 to 1048576 (default 128)"),
         new("new-tokens", "N", "greedy new tokens, 1 to 1048576 (default 32)"),
         Common.Device,
         new("compute", "MODE", "fp32 or bf16 (default bf16)"),
         new("max-piece", "N", "largest prefill piece, 1 to 65536 (default 256)"),
         new("seed", "S", "seed of the random prompt (and synthetic weights), an int (default 1)"),
         Common.Quantize, Common.Int4Group, Common.KvCache]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int p = a.GetInt("prompt-tokens", 128, 1, 1 << 20), n = a.GetInt("new-tokens", 32, 1, 1 << 20), piece = a.GetInt("max-piece", 256, 1, 1 << 16);
        var mode = Common.Compute(a, ComputeMode.BF16)!.Value;
        var spec = Common.DeviceSpec(a);
        var quantize = Common.Quantization(a);
        var kvCache = Common.KvFormat(a);
        int seed = a.GetInt("seed", 1);
        var load = new LoadOptions(Quantize: quantize.Mode == QuantizeMode.None ? null : quantize);
        Llama4Config config;
        string? model = null, preset = a.Get("preset");
        if (preset is not null)
        {
            if (!a.Flag("synthetic")) throw new UsageException("--preset needs --synthetic (random weights made on the device), or use --model DIR");
            if (a.Has("model")) throw new UsageException("give --model DIR or --preset NAME --synthetic, not both");
            if (!Presets.Names.Contains(preset)) throw new UsageException($"--preset '{preset}' is not one of {string.Join(", ", Presets.Names)}");
            config = Llama4Config.Parse(Presets.ConfigJson(preset), $"preset {preset}");
        }
        else
        {
            if (a.Flag("synthetic")) throw new UsageException("--synthetic needs --preset NAME");
            model = Common.ModelDir(a);
            config = Llama4Config.Load(model);
        }
        if (config.Text.MaxPositionEmbeddings > 0 && (long)p + n + 1 > config.Text.MaxPositionEmbeddings)
            throw new UsageException($"--prompt-tokens {p} + --new-tokens {n} exceed the model's max_position_embeddings ({config.Text.MaxPositionEmbeddings})");
        using var dev = DeviceFactory.Create(spec);
        var sw = Stopwatch.StartNew();
        ModelWeights w;
        string what;
        if (preset is not null)
        {
            w = WeightLoader.Describe(config, dev, load with { Include = name => !name.StartsWith("v.", StringComparison.Ordinal) && !name.StartsWith("mm.", StringComparison.Ordinal) });
            DeviceSynth.Fill(w, (ulong)seed);
            what = $"{preset} (synthetic{(quantize.Mode == QuantizeMode.None ? "" : ", " + quantize.Mode.ToString().ToLowerInvariant())}, text only)";
        }
        else
        {
            w = WeightLoader.Load(model!, dev, load);
            what = model!;
        }
        using var _ = w;
        var loadTime = sw.Elapsed;
        // Random prompt ids that are plain text: never the image placeholder tokens (<|patch|> etc. need pixels) nor specials.
        var rng = new Random(seed);
        int imageToken = w.Config.ImageTokenIndex;
        int top = Math.Min(w.Config.Text.VocabSize, imageToken > 0 ? imageToken : w.Config.Text.VocabSize);
        var banned = new HashSet<int>(w.Config.Text.EosTokenIds) { imageToken };
        var prompt = new int[p];
        for (int i = 0; i < p; i++)
        {
            int id;
            do id = rng.Next(top); while (banned.Contains(id));
            prompt[i] = id;
        }
        var o = new GenerationOptions { MaxNewTokens = n, StopAtModelStops = false };
        stdout.WriteLine($"device   {dev.Name} ({dev.Arch}), {mode}, KV cache {(kvCache == KvCacheFormat.Fp8 ? "fp8" : "bf16")}");
        stdout.WriteLine($"model    {what}: {Format.Bytes(w.Arena.Bytes)} {(preset is not null ? "generated" : "loaded")} in {loadTime.TotalSeconds:0.00} s");
        foreach (bool capture in dev.CanCapture && mode == ComputeMode.BF16 ? new[] { false, true } : [false])
        {
            using var gen = new TokenGenerator(w, mode, p + n + 1, Math.Min(piece, p), captureDecode: capture, kvCache: kvCache);
            gen.Generate(prompt, o).ToList();               // warm-up: compiles every kernel, sizes every graph, captures the step
            gen.Reset();
            gen.Generate(prompt, o).ToList();
            var s = gen.LastStats!;
            double ttft = Math.Max(1e-9, s.TimeToFirstToken.TotalSeconds);
            if (!capture) stdout.WriteLine($"prefill  {p} tokens in {s.TimeToFirstToken.TotalMilliseconds:0.0} ms = {p / ttft:0.0} tokens/s");
            stdout.WriteLine(s.NewTokens > 1
                ? $"decode   {s.NewTokens - 1} tokens at {s.DecodeTokensPerSecond:0.00} tokens/s ({1000 / Math.Max(1e-9, s.DecodeTokensPerSecond):0.0} ms/token)" +
                  (capture ? $", captured step replayed ({gen.CapturedSteps} graphs, {gen.GraphReplays} replays)" : ", host-driven")
                : "decode   not measured (--new-tokens 1 produces only the prefill's token; pass 2 or more)");
        }
        return 0;
    }
}
