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
/// MoE layers and any node matched by --dump (as `dump.{node}`; vision nodes `v.*`, `mm.proj` too). When the
/// inputs hold `pixel_values` [tiles, C, S, S] (f32 or bf16), the vision graph encodes them, the projected rows
/// replace the &lt;|patch|&gt; embeddings, and the output also gets `image_features` [tiles, n, Vo] and
/// `image_features_projected` [tiles·n, D].
/// </summary>
internal static class EvalVerb
{
    public static readonly VerbSpec Spec = new("eval", "one teacher-forced forward pass (input_ids, and pixel_values when present) → logits and per-layer outputs",
        [Common.Model,
         new("inputs", "FILE", "a safetensors file with input_ids (int64 [T]) and optionally pixel_values [tiles, 3, S, S] (required)"),
         new("out", "FILE", "the safetensors file to write (required; a regular file: never a symlink, FIFO or device)"),
         Common.Device, Common.Devices,
         new("compute", "MODE", "fp32 or bf16 (default fp32)"),
         new("dump", "PATTERN", "also write every node whose name matches PATTERN (glob), e.g. 'blk.3.*'"),
         new("generate", "N", "also generate N greedy tokens through the KV cache, 0 to 1048576, T + N ≤ max_position_embeddings (default 0)"),
         Common.Quantize, Common.Int4Group, Common.KvCache,
         new("max-piece", "N|auto", "with --generate: largest prefill piece, 1 to 1048576, or auto (the largest of 2048/1024/512/256 that fits; default: the prompt, at most 512)")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int generate = a.GetInt("generate", 0, 0, 1 << 20);
        int piece = a.Has("max-piece") ? Common.MaxPieceValue(a) : -1; // checked before anything loads
        var mode = Common.Compute(a, ComputeMode.F32)!.Value;
        var deviceSpec = Common.DeviceSpec(a);
        var quantize = Common.Quantization(a);
        var kvCache = Common.KvFormat(a);
        _ = a.Require("model", "DIR");
        string inputs = a.Require("inputs", "FILE.safetensors");
        string outPath = a.Require("out", "FILE.safetensors");
        OutputFile.Check(outPath, "--out");
        if (!File.Exists(inputs)) throw new UsageException(Directory.Exists(inputs) ? $"--inputs {inputs} is a folder; pass a .safetensors file" : $"--inputs {inputs}: no such file");
        string model = Common.ModelDir(a);
        var config = Llama4Config.Load(model);
        int[] ids = ReadInputIds(inputs, config);
        if (generate > 0 && config.Text.MaxPositionEmbeddings > 0 && (long)ids.Length + generate > config.Text.MaxPositionEmbeddings)
            throw new UsageException($"--generate {generate}: the {ids.Length} input tokens + {generate} exceed the model's max_position_embeddings ({config.Text.MaxPositionEmbeddings})");
        var images = ReadPixelValues(inputs, config);
        EarlyFusion.CheckPrompt(ids, config, images?.Count);

        if (Common.DevicesSpec(a) is { } group && Distributed.DeviceGroup.Parse(group).Count > 1)
        {
            if (a.Has("device")) throw new UsageException("give --device or --devices, not both");
            if (images is not null) throw new UsageException("--devices: images on several devices are not implemented yet (the vision tower would be replicated); run the image inputs on one --device");
            return RunSharded(group, model, ids, mode, quantize, generate, a.Get("dump"), outPath, stderr);
        }
        using var dev = DeviceFactory.Create(deviceSpec);
        using var weights = WeightLoader.Load(model, dev, new LoadOptions(Quantize: quantize));
        // --kv-cache fp8: the teacher-forced pass attends through an FP8 cache (keys and values quantized as written),
        // so its logits show the FP8 KV error; the default attends over the float keys directly.
        using var kv = kvCache == KvCacheFormat.Fp8
            ? new KvCache(dev, config.Text, mode == ComputeMode.F32 ? DType.F32 : DType.BF16, ids.Length, ids.Length, DType.F8E4M3) : null;
        using var graph = new Llama4TextGraph(weights, ids.Length, mode, kv);
        var dumpPattern = a.Get("dump");
        var outputs = new List<(string, DType, long[], ReadOnlyMemory<byte>)>();
        void Keep(string name, Tensor t, float[] data) =>
            outputs.Add((name, DType.F32, Dims(t.Shape), MemoryMarshal.AsBytes(data.AsSpan()).ToArray()));
        bool Dumped(string node) => dumpPattern is not null && System.IO.Enumeration.FileSystemName.MatchesSimpleExpression(dumpPattern, node);

        var sw = System.Diagnostics.Stopwatch.StartNew();
        // Early fusion: every tile of every image at once; the projected rows stay on the device for the text graph.
        using var vision = images is null ? null : new Llama4VisionGraph(weights, images.Count, mode);
        Tensor? imageRows = null;
        if (images is not null && vision is not null)
        {
            imageRows = vision.Forward(images.Pixels, images.Count, Dumped, (name, t, data) => Keep("dump." + name, t, data));
            var vc = config.Vision!;
            var feats = vision.DownloadFeatures();
            var proj = vision.DownloadProjected();
            outputs.Add(("image_features", DType.F32, [images.Count, vc.TokensPerTile, vc.VisionOutputDim], MemoryMarshal.AsBytes(feats.AsSpan()).ToArray()));
            outputs.Add(("image_features_projected", DType.F32, [(long)images.Count * vc.TokensPerTile, config.Text.HiddenSize], MemoryMarshal.AsBytes(proj.AsSpan()).ToArray()));
            stderr.WriteLine($"eval: {images.Count} image tiles encoded in {sw.Elapsed.TotalSeconds:0.00} s");
        }
        var logits = graph.Forward(ids,
            n => IsLayerOut(n) || n.EndsWith(".moe.router", StringComparison.Ordinal) || Dumped(n),
            (name, t, data) =>
            {
                if (IsLayerOut(name)) Keep("layer_out." + name.Split('.')[1], t, data);
                if (name.EndsWith(".moe.router", StringComparison.Ordinal))
                {
                    var topk = graph.Plan.Download(graph.RouterTopK);
                    Keep("router_topk." + name.Split('.')[1], graph.RouterTopK, topk);
                    Keep("router_logits." + name.Split('.')[1], t, data);
                }
                if (Dumped(name)) Keep("dump." + name, t, data);
            }, imageRows);
        // NaN weights or pixels: name the first node that produced non-finite values and exit 1 (as generation does),
        // never write NaN logits with exit 0. Nothing is written.
        if (!float.IsFinite(System.Numerics.Tensors.TensorPrimitives.Sum(logits)) && logits.Any(v => !float.IsFinite(v)))
            throw Generation.NonFinite.Diagnose(weights, mode, ids, images);
        outputs.Insert(0, ("logits", DType.F32, [ids.Length, logits.Length / ids.Length], MemoryMarshal.AsBytes(logits.AsSpan()).ToArray()));
        if (generate > 0)
        {
            // Greedy through the KV cache, never stopping early: generated_ids [N] and the logits each came from.
            using var gen = new Generation.TokenGenerator(weights, mode, ids.Length + generate, maxPiece: piece >= 0 ? piece : Math.Min(ids.Length, 512), kvCache: kvCache);
            var tokens = new List<long>();
            var stepLogits = new List<float>();
            foreach (var tok in gen.Generate(ids, new Generation.GenerationOptions { MaxNewTokens = generate, StopAtModelStops = false }, images))
            {
                tokens.Add(tok);
                stepLogits.AddRange(gen.LastLogits);
            }
            outputs.Add(("generated_ids", DType.I64, [tokens.Count], MemoryMarshal.AsBytes(tokens.ToArray().AsSpan()).ToArray()));
            outputs.Add(("generated_step_logits", DType.F32, [tokens.Count, stepLogits.Count / Math.Max(1, tokens.Count)], MemoryMarshal.AsBytes(stepLogits.ToArray().AsSpan()).ToArray()));
            stderr.WriteLine($"eval: generated {tokens.Count} tokens ({gen.LastStats})");
        }
        OutputFile.Write(outPath, "--out", tmp => SafetensorsWriter.Write(tmp, outputs));
        stderr.WriteLine($"eval: {ids.Length} tokens on {dev.Name} ({mode}) in {sw.Elapsed.TotalSeconds:0.00} s → {outPath} ({outputs.Count} tensors)");
        return 0;
    }

    /// <summary>eval on several devices: each rank loads its slices, the ranks' graphs run in lockstep; the outputs are
    /// the same tensors as on one device (read from rank 0), generated_ids from greedy steps through every rank's KV cache.</summary>
    static int RunSharded(string spec, string model, int[] ids, ComputeMode mode, QuantizeOptions quantize, int generate, string? dumpPattern, string outPath, TextWriter stderr)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var ckpt = Checkpoint.Open(model);
        var plan = Common.Sharding(ckpt.Config, Distributed.DeviceGroup.Parse(spec).Count);
        using var group = Distributed.DeviceGroup.Create(spec);
        using var weights = Distributed.ShardedWeights.Load(ckpt, group, new LoadOptions(Quantize: quantize));
        using var graph = new Distributed.ShardedTextGraph(weights, ids.Length, mode);
        var outputs = new List<(string, DType, long[], ReadOnlyMemory<byte>)>();
        void Keep(string name, Tensor t, float[] data) => outputs.Add((name, DType.F32, Dims(t.Shape), MemoryMarshal.AsBytes(data.AsSpan()).ToArray()));
        bool Dumped(string node) => dumpPattern is not null && System.IO.Enumeration.FileSystemName.MatchesSimpleExpression(dumpPattern, node);
        var rank0 = graph.Ranks[0];
        var logits = graph.Forward(ids, n => IsLayerOut(n) || n.EndsWith(".moe.router", StringComparison.Ordinal) || Dumped(n), (name, t, data) =>
        {
            if (IsLayerOut(name)) Keep("layer_out." + name.Split('.')[1], t, data);
            if (name.EndsWith(".moe.router", StringComparison.Ordinal))
            {
                Keep("router_topk." + name.Split('.')[1], rank0.RouterTopK, rank0.Plan.Download(rank0.RouterTopK));
                Keep("router_logits." + name.Split('.')[1], t, data);
            }
            if (Dumped(name)) Keep("dump." + name, t, data);
        });
        outputs.Insert(0, ("logits", DType.F32, [ids.Length, logits.Length / ids.Length], MemoryMarshal.AsBytes(logits.AsSpan()).ToArray()));
        if (generate > 0)
        {
            var (tokens, steps) = Distributed.ShardedTextGraph.Greedy(weights, ids, generate, mode);
            outputs.Add(("generated_ids", DType.I64, [tokens.Length], MemoryMarshal.AsBytes(tokens.Select(v => (long)v).ToArray().AsSpan()).ToArray()));
            var flat = steps.SelectMany(x => x).ToArray();
            outputs.Add(("generated_step_logits", DType.F32, [tokens.Length, flat.Length / Math.Max(1, tokens.Length)], MemoryMarshal.AsBytes(flat.AsSpan()).ToArray()));
        }
        OutputFile.Write(outPath, "--out", tmp => SafetensorsWriter.Write(tmp, outputs));
        stderr.WriteLine($"eval: {ids.Length} tokens on {group.Size} devices ({group.Devices[0].Name}; {plan.Heads} heads, {plan.KvHeads} kv heads ×{plan.KvReplicas}, " +
                         $"{plan.Experts} experts, {plan.Vocab} vocab rows per device; {group.Comms.Ranks[0].Backend} collectives; {mode}) in {sw.Elapsed.TotalSeconds:0.00} s → {outPath} ({outputs.Count} tensors)");
        return 0;
    }

    static bool IsLayerOut(string node) => node.StartsWith("blk.", StringComparison.Ordinal) && node.EndsWith(".out", StringComparison.Ordinal);
    static long[] Dims(Shape s) { var d = new long[s.Rank]; for (int i = 0; i < d.Length; i++) d[i] = s[i]; return d; }

    /// <summary>input_ids from a safetensors file, checked: int64 [T], T ≥ 1.</summary>
    public static int[] ReadInputIds(string path, Llama4Config config)
    {
        using var f = SafetensorsFile.Open(path);
        if (!f.Contains("input_ids")) throw new CheckpointException(path, "input_ids", "no tensor named 'input_ids' (expected int64 [T])");
        var e = f.Get("input_ids");
        if (e.DType != DType.I64 || e.Shape.Length != 1 || e.Shape[0] < 1)
            throw new CheckpointException(path, "input_ids", $"input_ids is {e.DType}[{string.Join(", ", e.Shape)}], expected I64 [T] with T ≥ 1");
        var raw = f.Span<long>(e).ToArray();
        var ids = new int[raw.Length];
        for (int i = 0; i < raw.Length; i++)
            ids[i] = raw[i] >= 0 && raw[i] < config.Text.VocabSize ? (int)raw[i]
                : throw new CheckpointException(path, "input_ids", $"input_ids[{i}] = {raw[i]} is out of range: the model's vocabulary has {config.Text.VocabSize} tokens (0 to {config.Text.VocabSize - 1})");
        return ids;
    }

    /// <summary>pixel_values [tiles, C, S, S] (f32 or bf16) from a safetensors file, checked against the vision config; null when absent.</summary>
    public static ImageTiles? ReadPixelValues(string path, Llama4Config config)
    {
        using var f = SafetensorsFile.Open(path);
        if (!f.Contains("pixel_values")) return null;
        var e = f.Get("pixel_values");
        var vc = config.Vision ?? throw new CheckpointException(path, "pixel_values", $"the inputs have pixel_values but the model ({config.Architecture}) has no vision tower");
        if (e.DType is not (DType.F32 or DType.BF16) || e.Shape.Length != 4 || e.Shape[0] < 1 ||
            e.Shape[1] != vc.NumChannels || e.Shape[2] != vc.ImageSize || e.Shape[3] != vc.ImageSize)
            throw new CheckpointException(path, "pixel_values",
                $"pixel_values is {e.DType}[{string.Join(", ", e.Shape)}], expected F32 or BF16 [tiles, {vc.NumChannels}, {vc.ImageSize}, {vc.ImageSize}]");
        int tiles = checked((int)e.Shape[0]);
        return e.DType == DType.F32 ? new ImageTiles(f.Span<float>(e).ToArray(), tiles) : ImageTiles.FromBf16(f.Span<ushort>(e), tiles);
    }
}
