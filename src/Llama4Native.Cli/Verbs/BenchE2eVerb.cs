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
    public static readonly VerbSpec Spec = new("bench-e2e", "end-to-end load / prefill / decode speed on any checkpoint and device (after a warm-up run)",
        [Common.Model,
         new("prompt-tokens", "P", "random prompt tokens, 1 to 1048576 (default 128)"),
         new("new-tokens", "N", "greedy new tokens, 1 to 1048576 (default 32)"),
         Common.Device,
         new("compute", "MODE", "fp32 or bf16 (default bf16)"),
         new("max-piece", "N", "largest prefill piece, 1 to 65536 (default 256)"),
         new("seed", "S", "seed of the random prompt, an int (default 1)"),
         Common.Quantize, Common.Int4Group]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int p = a.GetInt("prompt-tokens", 128, 1, 1 << 20), n = a.GetInt("new-tokens", 32, 1, 1 << 20), piece = a.GetInt("max-piece", 256, 1, 1 << 16);
        var mode = Common.Compute(a, ComputeMode.BF16)!.Value;
        var spec = Common.DeviceSpec(a);
        var quantize = Common.Quantization(a);
        int seed = a.GetInt("seed", 1);
        string model = Common.ModelDir(a);
        var config = Llama4Config.Load(model);
        if (config.Text.MaxPositionEmbeddings > 0 && (long)p + n + 1 > config.Text.MaxPositionEmbeddings)
            throw new UsageException($"--prompt-tokens {p} + --new-tokens {n} exceed the model's max_position_embeddings ({config.Text.MaxPositionEmbeddings})");
        using var dev = DeviceFactory.Create(spec);
        var sw = Stopwatch.StartNew();
        using var w = WeightLoader.Load(model, dev, new LoadOptions(Quantize: quantize));
        var load = sw.Elapsed;
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
        using var gen = new TokenGenerator(w, mode, p + n + 1, Math.Min(piece, p));
        var o = new GenerationOptions { MaxNewTokens = n, StopAtModelStops = false };
        gen.Generate(prompt, o).ToList();               // warm-up: compiles every kernel, sizes every graph
        gen.Reset();
        gen.Generate(prompt, o).ToList();
        var s = gen.LastStats!;
        double ttft = Math.Max(1e-9, s.TimeToFirstToken.TotalSeconds);
        stdout.WriteLine($"device   {dev.Name} ({dev.Arch}), {mode}");
        stdout.WriteLine($"model    {model}: {Format.Bytes(w.Arena.Bytes)} loaded in {load.TotalSeconds:0.00} s");
        stdout.WriteLine($"prefill  {p} tokens in {s.TimeToFirstToken.TotalMilliseconds:0.0} ms = {p / ttft:0.0} tokens/s");
        stdout.WriteLine(s.NewTokens > 1
            ? $"decode   {s.NewTokens - 1} tokens at {s.DecodeTokensPerSecond:0.00} tokens/s ({1000 / Math.Max(1e-9, s.DecodeTokensPerSecond):0.0} ms/token)"
            : "decode   not measured (--new-tokens 1 produces only the prefill's token; pass 2 or more)");
        return 0;
    }
}
