using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Devices.Recording;

/// <summary>What to plan.</summary>
/// <param name="Context">N: the KV cache holds N tokens; the decode step is measured at context ≈ N and the prefill is N tokens.</param>
/// <param name="DeviceMemory">Bytes of the target device (fits / headroom).</param>
/// <param name="BytesPerSecond">HBM bandwidth of the roofline model.</param>
/// <param name="FlopsPerSecond">Dense bf16 tensor-core peak of the roofline model.</param>
/// <param name="Steps">Decode steps measured (host time is their median).</param>
/// <param name="MaxPiece">Largest prefill piece (as Llama4ModelOptions.MaxPrefillPiece); 0 = auto: the largest of
/// <see cref="Planner.AutoPieces"/> whose plan fits the device memory.</param>
/// <param name="Capture">Decode steps captured and replayed as graphs (TokenGenerator.CaptureDecode).</param>
internal sealed record PlanOptions(int Context = 8192, long DeviceMemory = 80L << 30, double BytesPerSecond = 3.35e12,
                                 double FlopsPerSecond = 989e12, int Steps = 100, int MaxPiece = 256, LoadOptions? Load = null,
                                 bool Capture = false)
{
    /// <summary>MaxPiece was chosen by the auto rule (reports say so).</summary>
    public bool PieceAuto { get; init; }
}

/// <summary>A memory line of the plan.</summary>
internal sealed record MemoryLine(string What, long Bytes);

/// <summary>One modelled phase (a decode step or a prefill).</summary>
internal sealed record PhasePlan(TraceSummary Trace, double ModelledSeconds, long MinBytes, double HostMicroseconds, int Position);

/// <summary>The plan: memory, one decode step at the context, one prefill of the context.</summary>
internal sealed record Plan(string Model, PlanOptions Options, IReadOnlyList<MemoryLine> Memory, long TotalBytes, long DeviceMemory,
                          PhasePlan Decode, PhasePlan Prefill, string RoutingModel)
{
    public bool Fits => TotalBytes <= DeviceMemory;
    public double DecodeTokensPerSecond => Decode.ModelledSeconds > 0 ? 1 / Decode.ModelledSeconds : 0;
    public double BytesRatio => Decode.MinBytes > 0 ? (double)Decode.Trace.Bytes / Decode.MinBytes : 0;

    public string RenderText()
    {
        var sb = new StringBuilder();
        var o = Options;
        sb.AppendLine($"plan: {Model}, context {o.Context}, batch 1, bf16 activations, decode {(o.Capture ? "captured (graph replay)" : "host-driven")}; roofline at {o.BytesPerSecond / 1e12:0.##} TB/s, {o.FlopsPerSecond / 1e12:0} TFLOPS");
        sb.AppendLine();
        sb.AppendLine("memory");
        foreach (var m in Memory) sb.AppendLine($"  {m.What,-34} {Format.Bytes(m.Bytes),12}");
        sb.AppendLine($"  {"total",-34} {Format.Bytes(TotalBytes),12}");
        sb.AppendLine($"  fits {Format.Bytes(DeviceMemory)}: {(Fits ? "yes" : "NO")}, headroom {(Fits ? "" : "-")}{Format.Bytes(Math.Abs(DeviceMemory - TotalBytes))}");
        sb.AppendLine();
        var d = Decode.Trace;
        sb.AppendLine($"decode step at position {Decode.Position} (routing: {RoutingModel})");
        sb.AppendLine($"  launches {d.Launches} (host-issued {d.HostLaunches}), graph launches {d.GraphLaunches}, copies {d.Copies}, host syncs {d.HostSyncs}");
        sb.AppendLine($"  bytes {Format.Bytes(d.Bytes)} / minimum {Format.Bytes(Decode.MinBytes)} = {BytesRatio:0.000}");
        sb.AppendLine($"  modelled {Decode.ModelledSeconds * 1e3:0.000} ms → {DecodeTokensPerSecond:0.0} tokens/s" +
                      $" (floor {Decode.MinBytes / o.BytesPerSecond * 1e3:0.000} ms → {o.BytesPerSecond / Math.Max(1, Decode.MinBytes):0.0} tokens/s)");
        foreach (var bw in new[] { 3.35e12, 4.8e12 })
            sb.AppendLine($"    at {bw / 1e12:0.00} TB/s: {1 / d.ModelledSeconds(bw, o.FlopsPerSecond):0.0} tokens/s (floor {bw / Math.Max(1, Decode.MinBytes):0.0})");
        double filled = FilledSeconds(d);
        sb.AppendLine($"  with SM fill ({Sms} SMs: a grid of fewer blocks gets that share) and {MinKernelUs} µs per kernel: {filled * 1e3:0.000} ms → {1 / filled:0.0} tokens/s");
        sb.AppendLine($"  host time per step on the recording device: {Decode.HostMicroseconds:0} µs (median of {o.Steps})");
        if (d.Uncosted > 0) sb.AppendLine($"  {d.Uncosted} launches without a cost: {string.Join(", ", d.UncostedKernels)}");
        sb.AppendLine("  top kernels by modelled time:");
        foreach (var (k, n, s, b) in TopKernels(d, o, 8))
            sb.AppendLine($"    {k,-40} ×{n,-5} {s * 1e3,8:0.000} ms {Format.Bytes(b),12}");
        sb.AppendLine();
        var p = Prefill.Trace;
        sb.AppendLine($"prefill of {o.Context} tokens (pieces of ≤ {o.MaxPiece}{(o.PieceAuto ? ", auto: the largest of " + string.Join("/", Planner.AutoPieces) + " that fits" : "")}; lm_head on the last piece only)");
        sb.AppendLine($"  launches {p.Launches}, host syncs {p.HostSyncs}, FLOPs {p.Flops:0.###e+0}, bytes {Format.Bytes(p.Bytes)}");
        sb.AppendLine($"  modelled {Prefill.ModelledSeconds:0.000} s → {o.Context / Math.Max(1e-12, Prefill.ModelledSeconds):0} tokens/s; host {Prefill.HostMicroseconds / 1e3:0.0} ms");
        if (p.Uncosted > 0) sb.AppendLine($"  {p.Uncosted} launches without a cost: {string.Join(", ", p.UncostedKernels)}");
        return sb.ToString();
    }

    /// <summary>H100/H200 SXM streaming multiprocessors, and the least a kernel takes: the second, latency-aware model.</summary>
    public const int Sms = 132;
    public const double MinKernelUs = 2;
    double FilledSeconds(TraceSummary t) => t.ModelledSeconds(Options.BytesPerSecond, Options.FlopsPerSecond, sms: Sms, minKernelSeconds: MinKernelUs * 1e-6);

    static IEnumerable<(string Kernel, int Count, double Seconds, long Bytes)> TopKernels(TraceSummary t, PlanOptions o, int n) =>
        t.Items.Where(i => i.Kind == RecordedKind.Launch)
               .GroupBy(i => i.Kernel)
               .Select(g => (g.Key, g.Count(), g.Sum(i => Math.Max(i.Bytes / o.BytesPerSecond, i.Flops / o.FlopsPerSecond)), g.Sum(i => i.Bytes)))
               .OrderByDescending(x => x.Item3).Take(n);

    public string RenderJson()
    {
        var o = Options;
        var j = new JsonObject
        {
            ["model"] = Model,
            ["context"] = o.Context,
            ["capture"] = o.Capture,
            ["device_memory"] = DeviceMemory,
            ["bandwidth_tbps"] = o.BytesPerSecond / 1e12,
            ["tflops"] = o.FlopsPerSecond / 1e12,
            ["fits"] = Fits,
            ["total_bytes"] = TotalBytes,
            ["headroom_bytes"] = DeviceMemory - TotalBytes,
            ["memory"] = new JsonObject(Memory.Select(m => KeyValuePair.Create(m.What, (JsonNode?)m.Bytes))),
            ["routing_model"] = RoutingModel,
            ["decode"] = new JsonObject
            {
                ["position"] = Decode.Position,
                ["launches"] = Decode.Trace.Launches,
                ["host_launches"] = Decode.Trace.HostLaunches,
                ["graph_launches"] = Decode.Trace.GraphLaunches,
                ["copies"] = Decode.Trace.Copies,
                ["host_syncs"] = Decode.Trace.HostSyncs,
                ["uncosted_launches"] = Decode.Trace.Uncosted,
                ["bytes"] = Decode.Trace.Bytes,
                ["min_bytes"] = Decode.MinBytes,
                ["bytes_ratio"] = BytesRatio,
                ["flops"] = Decode.Trace.Flops,
                ["modelled_s"] = Decode.ModelledSeconds,
                ["modelled_tokens_per_s"] = DecodeTokensPerSecond,
                ["modelled_filled_tokens_per_s"] = 1 / FilledSeconds(Decode.Trace),
                ["host_us"] = Decode.HostMicroseconds,
            },
            ["prefill"] = new JsonObject
            {
                ["tokens"] = o.Context,
                ["piece"] = o.MaxPiece,
                ["launches"] = Prefill.Trace.Launches,
                ["host_syncs"] = Prefill.Trace.HostSyncs,
                ["uncosted_launches"] = Prefill.Trace.Uncosted,
                ["flops"] = Prefill.Trace.Flops,
                ["bytes"] = Prefill.Trace.Bytes,
                ["modelled_s"] = Prefill.ModelledSeconds,
                ["host_us"] = Prefill.HostMicroseconds,
            },
        };
        return j.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}

/// <summary>
/// Builds the REAL text graphs, KV cache and generator of a model on a <see cref="RecordingDevice"/> — the weights
/// described (<see cref="WeightLoader.Describe"/>), not loaded — and "runs" a prefill of N tokens and decode steps up
/// to context N through <see cref="TokenGenerator"/>, exactly as `llama4 run` would; then models the recorded
/// launches with a roofline. Nothing here restates the model's shapes: launches, bytes and FLOPs are what the
/// kernel wrappers declared for the operands the graph handed them.
/// </summary>
internal static class Planner
{
    public const string Routing = "uniform: each token picks k of E experts at random; a piece of T tokens touches E·(1−(1−k/E)^T) experts";

    /// <summary>The prefill piece sizes <see cref="PlanOptions.MaxPiece"/> = 0 (auto) tries, largest first: at ≥ 2,048 tokens
    /// a piece reads every expert once per 2,048 tokens instead of 8× (256-token pieces).</summary>
    public static readonly int[] AutoPieces = [2048, 1024, 512, 256];

    public static Plan Run(Llama4Config config, PlanOptions? options = null, string? name = null)
    {
        var o = options ?? new PlanOptions();
        if (o.MaxPiece == 0)
        {
            // Auto: the largest piece whose whole plan (weights, KV, activation arenas, workspaces) fits the device.
            Plan? plan = null;
            foreach (int c in AutoPieces.Where(c => c <= Math.Max(o.Context, AutoPieces[^1])))
            {
                plan = Run(config, o with { MaxPiece = c, PieceAuto = true }, name);
                if (plan.Fits) return plan;
            }
            return plan!;
        }
        if (o.Context < 2) throw new ArgumentException("plan: the context must be at least 2 tokens");
        int steps = Math.Max(1, Math.Min(o.Steps, o.Context - 1));
        using var dev = new RecordingDevice(o.DeviceMemory);
        using var weights = WeightLoader.Describe(config, dev, o.Load);
        var cfg = config.Text;
        int vocab = cfg.VocabSize;
        var greedy = new GenerationOptions { Temperature = 0, StopAtModelStops = false };
        int piece = Math.Min(o.MaxPiece, o.Context);

        // Prefill of N tokens (and the first token's sampling): one fresh generator, as a new conversation.
        PhasePlan prefill;
        using (var gen = new TokenGenerator(weights, ComputeMode.BF16, o.Context, piece))
        {
            var prompt = Prompt(o.Context, vocab);
            int at = dev.Mark;
            var sw = Stopwatch.StartNew();
            foreach (var _ in gen.Generate(prompt, greedy with { MaxNewTokens = 1 })) { }
            double us = sw.Elapsed.TotalMicroseconds;
            var tr = dev.Summarize(at);
            prefill = new PhasePlan(tr, tr.ModelledSeconds(o.BytesPerSecond, o.FlopsPerSecond), 0, us, 0);
        }

        // Decode: prefill N − steps − 1 tokens, then steps + 1 tokens, the last steps fed one at a time up to context N.
        PhasePlan decode;
        long kvBytes, actBytes;
        using (var gen = new TokenGenerator(weights, ComputeMode.BF16, o.Context, piece, captureDecode: o.Capture))
        {
            var prompt = Prompt(o.Context - steps - 1 > 0 ? o.Context - steps - 1 : 1, vocab);
            var times = new List<double>();
            int lastMark = 0, lastPos = 0;
            using var e = gen.Generate(prompt, greedy with { MaxNewTokens = steps + 1 }).GetEnumerator();
            e.MoveNext(); // prefill + first token
            while (true)
            {
                int pos = gen.Cache.Position, mark = dev.Mark;
                long t0 = Stopwatch.GetTimestamp();
                if (!e.MoveNext()) break;
                times.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
                lastMark = mark; lastPos = pos;
            }
            var tr = dev.Summarize(lastMark);
            times.Sort();
            double median = times.Count == 0 ? 0 : times[times.Count / 2];
            decode = new PhasePlan(tr, tr.ModelledSeconds(o.BytesPerSecond, o.FlopsPerSecond), MinDecodeBytes(weights, lastPos), median, lastPos);
            kvBytes = gen.Cache.Bytes;
            actBytes = gen.Graphs.Sum(g => g.Plan.ArenaBytes);
        }

        var memory = new List<MemoryLine>();
        foreach (var grp in weights.Tensors.Values.GroupBy(w => (Vision: w.Name.StartsWith("v.", StringComparison.Ordinal) || w.Name.StartsWith("mm.", StringComparison.Ordinal),
                                                                 Scale: w.Name.EndsWith(".scale", StringComparison.Ordinal), w.DType))
                                                  .OrderBy(g => g.Key.Vision).ThenBy(g => g.Key.Scale).ThenBy(g => g.Key.DType))
            memory.Add(new MemoryLine($"weights {(grp.Key.Vision ? "vision " : "")}{(grp.Key.Scale ? "scales " : "")}{grp.Key.DType}", grp.Sum(w => w.Bytes)));
        // Scales made at load (int4, FP8 quantized on the fly) live beside their weight, not as weights of their own.
        long madeScales = weights.Tensors.Values.Where(w => w.DType.IsQuantized() && !weights.Tensors.ContainsKey(w.Name + ".scale")).Sum(w => w.Tensor.ScaleBytes);
        if (madeScales > 0) memory.Add(new MemoryLine("weights scales F32 (made at load)", madeScales));
        long weightBytes = weights.Arena.Bytes;
        long alignPad = weightBytes - memory.Sum(m => m.Bytes);
        if (alignPad > 0) memory.Add(new MemoryLine("weights alignment", alignPad));
        memory.Add(new MemoryLine($"KV cache at {o.Context}", kvBytes));
        memory.Add(new MemoryLine("activation arenas (all piece sizes)", actBytes));
        long total = dev.PeakBytes;
        memory.Add(new MemoryLine("workspaces (MoE, attention, sampler)", total - weightBytes - kvBytes - actBytes));
        return new Plan(name ?? config.Text.ToString() ?? "model", o, memory, total, o.DeviceMemory, decode, prefill, Routing);
    }

    /// <summary>Token ids that are valid for any vocabulary and never a stop or image token (the recording device reads back
    /// 0s anyway): the lowest quarter of the vocabulary, at most ids 1..1000 (the tiny models' specials sit above).</summary>
    static int[] Prompt(int n, int vocab) => Enumerable.Range(0, n).Select(i => 1 + i % Math.Max(1, Math.Min(vocab / 4, 1000))).ToArray();

    /// <summary>
    /// The least a decode step at <paramref name="position"/> must read: every text weight except the routed experts
    /// (those: k/E of them) and the embedding table (one row), plus each layer's keys and values up to the position
    /// (a chunked layer only its chunk).
    /// </summary>
    public static long MinDecodeBytes(ModelWeights w, int position)
    {
        var c = w.Config.Text;
        double bytes = 0;
        bool tied = !w.TryGet("output", out _);
        foreach (var t in w.Tensors.Values)
        {
            if (t.Name.StartsWith("v.", StringComparison.Ordinal) || t.Name.StartsWith("mm.", StringComparison.Ordinal)) continue;
            if (t.Name.Contains("_exps", StringComparison.Ordinal)) bytes += (double)t.Bytes * c.NumExpertsPerTok / c.NumLocalExperts;
            else if (t.Name == "tok_embd" && !tied) bytes += (double)t.Bytes / t.Shape[0];
            else bytes += t.Bytes;
        }
        long kvRow = 2L * c.NumKeyValueHeads * c.HeadDim * 2; // K and V, bf16
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            long len = position + 1;
            if (c.UsesRope[i] && c.AttentionChunkSize > 0) len = position % c.AttentionChunkSize + 1;
            bytes += (double)len * kvRow;
        }
        return (long)bytes;
    }
}
