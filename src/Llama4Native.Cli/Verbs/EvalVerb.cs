using System.Runtime.InteropServices;
using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 eval`: one teacher-forced forward pass of any checkpoint on any device, for tests and for diffing
/// against a reference. Reads `input_ids` (int64 [T]) from a safetensors file (the fixtures' golden files are
/// valid inputs) and writes `logits` [T, V] and `layer_out.{i}` [T, D] (float32), plus `router_topk.{i}` for
/// MoE layers and any node matched by --dump (as `dump.{node}`).
/// </summary>
public static class EvalVerb
{
    public const string Help = "one forward pass: --model DIR --inputs FILE.safetensors --out OUT.safetensors [--device] [--compute fp32|bf16] [--dump PATTERN] [--generate N]";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["model", "inputs", "out", "device", "compute", "dump", "generate"]);
        int generate = a.GetInt("generate", 0);
        if (generate < 0) throw new UsageException("--generate must be ≥ 0");
        string model = a.Get("model") ?? throw new UsageException("--model DIR is required");
        string inputs = a.Get("inputs") ?? throw new UsageException("--inputs FILE.safetensors is required");
        string outPath = a.Get("out") ?? throw new UsageException("--out FILE.safetensors is required");
        var mode = a.Get("compute", "fp32") switch
        {
            "fp32" => ComputeMode.F32,
            "bf16" => ComputeMode.BF16,
            var m => throw new UsageException($"--compute must be fp32 or bf16, not '{m}'"),
        };
        int[] ids = ReadInputIds(inputs, Llama4Config.Load(model));

        using var dev = DeviceFactory.Create(a.Get("device", "auto"));
        using var weights = WeightLoader.Load(model, dev);
        using var graph = new Llama4TextGraph(weights, ids.Length, mode);
        var dumpPattern = a.Get("dump");
        var outputs = new List<(string, DType, long[], ReadOnlyMemory<byte>)>();
        void Keep(string name, Tensor t, float[] data) =>
            outputs.Add((name, DType.F32, Dims(t.Shape), MemoryMarshal.AsBytes(data.AsSpan()).ToArray()));

        var sw = System.Diagnostics.Stopwatch.StartNew();
        var logits = graph.Forward(ids,
            n => IsLayerOut(n) || n.EndsWith(".moe.router", StringComparison.Ordinal) ||
                 (dumpPattern is not null && System.IO.Enumeration.FileSystemName.MatchesSimpleExpression(dumpPattern, n)),
            (name, t, data) =>
            {
                if (IsLayerOut(name)) Keep("layer_out." + name.Split('.')[1], t, data);
                if (name.EndsWith(".moe.router", StringComparison.Ordinal))
                {
                    var topk = graph.Plan.Download(graph.RouterTopK);
                    Keep("router_topk." + name.Split('.')[1], graph.RouterTopK, topk);
                    Keep("router_logits." + name.Split('.')[1], t, data);
                }
                if (dumpPattern is not null && System.IO.Enumeration.FileSystemName.MatchesSimpleExpression(dumpPattern, name))
                    Keep("dump." + name, t, data);
            });
        outputs.Insert(0, ("logits", DType.F32, [ids.Length, logits.Length / ids.Length], MemoryMarshal.AsBytes(logits.AsSpan()).ToArray()));
        if (generate > 0)
        {
            // Greedy through the KV cache, never stopping early: generated_ids [N] and the logits each came from.
            using var gen = new Generation.TokenGenerator(weights, mode, ids.Length + generate, maxPiece: Math.Min(ids.Length, 512));
            var tokens = new List<long>();
            var stepLogits = new List<float>();
            foreach (var tok in gen.Generate(ids, new Generation.GenerationOptions { MaxNewTokens = generate, StopAtModelStops = false }))
            {
                tokens.Add(tok);
                stepLogits.AddRange(gen.LastLogits);
            }
            outputs.Add(("generated_ids", DType.I64, [tokens.Count], MemoryMarshal.AsBytes(tokens.ToArray().AsSpan()).ToArray()));
            outputs.Add(("generated_step_logits", DType.F32, [tokens.Count, stepLogits.Count / Math.Max(1, tokens.Count)], MemoryMarshal.AsBytes(stepLogits.ToArray().AsSpan()).ToArray()));
            stderr.WriteLine($"eval: generated {tokens.Count} tokens ({gen.LastStats})");
        }
        SafetensorsWriter.Write(outPath, outputs);
        stderr.WriteLine($"eval: {ids.Length} tokens on {dev.Name} ({mode}) in {sw.Elapsed.TotalSeconds:0.00} s → {outPath} ({outputs.Count} tensors)");
        return 0;
    }

    static bool IsLayerOut(string node) => node.StartsWith("blk.", StringComparison.Ordinal) && node.EndsWith(".out", StringComparison.Ordinal);
    static long[] Dims(Shape s) { var d = new long[s.Rank]; for (int i = 0; i < d.Length; i++) d[i] = s[i]; return d; }

    /// <summary>input_ids from a safetensors file, checked: int64 [T], T ≥ 1, no image tokens until the vision path lands.</summary>
    public static int[] ReadInputIds(string path, Llama4Config config)
    {
        using var f = SafetensorsFile.Open(path);
        if (!f.Contains("input_ids")) throw new CheckpointException(path, "input_ids", "no tensor named 'input_ids' (expected int64 [T])");
        var e = f.Get("input_ids");
        if (e.DType != DType.I64 || e.Shape.Length != 1 || e.Shape[0] < 1)
            throw new CheckpointException(path, "input_ids", $"input_ids is {e.DType}[{string.Join(", ", e.Shape)}], expected I64 [T] with T ≥ 1");
        var ids = f.Span<long>(e).ToArray().Select(v => v is < int.MinValue or > int.MaxValue ? -1 : (int)v).ToArray();
        if (config.ImageTokenIndex > 0 && ids.Contains(config.ImageTokenIndex))
            throw new NotSupportedException($"{path}: the prompt has image tokens (<|patch|> = {config.ImageTokenIndex}); images need the vision encoder, which is not implemented yet. Use a text-only prompt.");
        return ids;
    }
}
