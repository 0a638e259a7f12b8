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
/// <param name="KvCache">How the KV cache stores keys and values (bf16, or FP8 e4m3 + a scale per token and kv head).</param>
/// <param name="Batch">B &gt; 0: also plan the server's batched decode step of B sequences at context N and the paged KV
/// capacity (<see cref="BatchPlanner"/>); 0: only the single-sequence plan.</param>
internal sealed record PlanOptions(int Context = 8192, long DeviceMemory = 80L << 30, double BytesPerSecond = 3.35e12,
                                 double FlopsPerSecond = 989e12, int Steps = 100, int MaxPiece = 256, LoadOptions? Load = null,
                                 bool Capture = false, KvCacheFormat KvCache = KvCacheFormat.Default, int Batch = 0)
{
    /// <summary>MaxPiece was chosen by the auto rule (reports say so).</summary>
    public bool PieceAuto { get; init; }
}

/// <summary>
/// The split-KV decode attention of one layer (the largest by bytes: a NoPE layer over the whole history), modelled on
/// <see cref="Plan.Sms"/> SMs at one block per SM (the worst case; more resident blocks only help): a grid of G blocks runs
/// in ceil(G / SMs) waves, so its own traffic moves at G / (waves · SMs) of the bandwidth. The combine kernel (one block
/// per (query, head)) and <see cref="Plan.MinKernelUs"/> per kernel are added in <see cref="FractionWithCombine"/>.
/// </summary>
internal sealed record SplitKvModel(long Keys, int Splits, long Blocks, long Waves, long Bytes, double Fraction, double FractionWithCombine)
{
    // the split-KV decode attention: the paged kernel (every single-sequence and batched cache) or attention.cu's
    static bool IsCombine(string? k) => k is not null && (k.StartsWith("paged_attn_combine", StringComparison.Ordinal) || k.StartsWith("attn_decode_combine", StringComparison.Ordinal));
    static bool IsSplit(string? k) => k is not null && !IsCombine(k) && (k.StartsWith("paged_attn_", StringComparison.Ordinal) || k.StartsWith("attn_decode_split", StringComparison.Ordinal));

    public static SplitKvModel? Of(TraceSummary t, long keys, double bytesPerSecond)
    {
        var items = t.Items.ToList();
        int at = -1;
        for (int i = 0; i < items.Count; i++)
            if (items[i].Kind == RecordedKind.Launch && IsSplit(items[i].Kernel) && items[i].Grid.X > 1 && (at < 0 || items[i].Bytes > items[at].Bytes)) at = i;
        if (at < 0) return null;
        var s = items[at];
        var combine = items.Skip(at + 1).FirstOrDefault(i => IsCombine(i.Kernel));
        long blocks = (long)s.Grid.Count, waves = (blocks + Plan.Sms - 1) / Plan.Sms;
        double fraction = (double)blocks / (waves * Plan.Sms);
        double tSplit = Math.Max(Plan.MinKernelUs * 1e-6, s.Bytes / bytesPerSecond / fraction);
        double tCombine = combine.Kernel is null ? 0 : Math.Max(Plan.MinKernelUs * 1e-6, combine.Bytes / bytesPerSecond / Math.Min(1.0, (double)combine.Grid.Count / Plan.Sms));
        long bytes = s.Bytes + (combine.Kernel is null ? 0 : combine.Bytes);
        return new SplitKvModel(keys, (int)s.Grid.X, blocks, waves, s.Bytes, fraction, bytes / bytesPerSecond / (tSplit + tCombine));
    }
}

/// <summary>
/// Decode attention at a long history (issue #15): one captured-style decode step's attention (every layer: the paged append, the
/// split-KV attention and its combine) recorded through the same <see cref="KvCache"/> and kernel wrappers a run uses, at context
/// <see cref="Context"/> (position Context − 1; the KV is assumed written, not prefilled). <see cref="KvBytes"/> = the keys and
/// values the step must read (NoPE layers every position, chunked layers their chunk so far; FP8 codes + scales);
/// <see cref="KernelBytes"/> = what the attention kernels declare they move (split + combine: KV, Q, partials, O, tables);
/// <see cref="ModelledSeconds"/> = each kernel at its bytes ÷ (bandwidth × the SM share its grid fills, at 1 block/SM) and at
/// least <see cref="Plan.MinKernelUs"/>; <see cref="FractionOfBandwidth"/> = KvBytes ÷ bandwidth ÷ ModelledSeconds.
/// </summary>
internal sealed record DecodeAttentionModel(long Context, string KvCache, long KvBytes, long KernelBytes, long AppendBytes, int Launches,
                                           int Splits, double ModelledSeconds, double BytesPerSecond)
{
    /// <summary>KV bytes the step must read ÷ bytes its attention kernels move (≤ 1).</summary>
    public double BytesEfficiency => KernelBytes > 0 ? (double)KvBytes / KernelBytes : 0;
    /// <summary>The modelled fraction of bandwidth: reading KvBytes at the full bandwidth ÷ the modelled time.</summary>
    public double FractionOfBandwidth => ModelledSeconds > 0 ? KvBytes / BytesPerSecond / ModelledSeconds : 0;

    public static DecodeAttentionModel Of(TextConfig c, int context, KvCacheFormat format, double bytesPerSecond)
    {
        using var dev = new RecordingDevice(1L << 50);
        DType? kvType = format == KvCacheFormat.Fp8 ? DType.F8E4M3 : null;
        using var kv = new KvCache(dev, c, DType.BF16, context, 1, kvType);
        kv.Paged.AssumeLength(0, context - 1);
        int h = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, d = c.HeadDim;
        using var qb = dev.Allocate(2L * h * d); using var kb = dev.Allocate(2L * hkv * d); using var vb = dev.Allocate(2L * hkv * d); using var ob = dev.Allocate(2L * h * d);
        var q = new Tensor(qb.Ptr, DType.BF16, new Shape(1, h, d)); var o = new Tensor(ob.Ptr, DType.BF16, new Shape(1, h, d));
        var k = new Tensor(kb.Ptr, DType.BF16, new Shape(1, hkv, d)); var v = new Tensor(vb.Ptr, DType.BF16, new Shape(1, hkv, d));
        int mark = dev.Mark;
        kv.BeginDeviceStep();
        for (int i = 0; i < c.NumHiddenLayers; i++) kv.StoreAndAttend(i, q, k, v, o, 1f / MathF.Sqrt(d), null);
        kv.EndPiece();
        long row = format == KvCacheFormat.Fp8 ? 2L * hkv * (d + 4) : 2L * hkv * d * 2, must = 0;
        for (int i = 0; i < c.NumHiddenLayers; i++)
            must += (c.UsesRope[i] && c.AttentionChunkSize > 0 ? (context - 1) % c.AttentionChunkSize + 1 : context) * row;
        long kernelBytes = 0, append = 0;
        int launches = 0, splits = 0;
        double seconds = 0;
        foreach (var it in dev.Summarize(mark).Items.Where(i => i.Kind == RecordedKind.Launch))
        {
            if (it.Kernel.StartsWith("paged_kv_append", StringComparison.Ordinal)) { append += it.Bytes; continue; }
            launches++;
            kernelBytes += it.Bytes;
            long blocks = (long)it.Grid.Count, waves = (blocks + Plan.Sms - 1) / Plan.Sms;
            double fill = (double)blocks / (waves * Plan.Sms);
            if (!it.Kernel.Contains("combine", StringComparison.Ordinal)) splits = Math.Max(splits, (int)it.Grid.X);
            seconds += Math.Max(Plan.MinKernelUs * 1e-6, it.Bytes / bytesPerSecond / fill);
        }
        return new DecodeAttentionModel(context, format == KvCacheFormat.Fp8 ? "fp8" : "bf16", must, kernelBytes, append, launches, splits, seconds, bytesPerSecond);
    }
}

/// <summary>A memory line of the plan.</summary>
internal sealed record MemoryLine(string What, long Bytes);

/// <summary>One modelled phase (a decode step or a prefill).</summary>
internal sealed record PhasePlan(TraceSummary Trace, double ModelledSeconds, long MinBytes, double HostMicroseconds, int Position);

/// <summary>The plan: memory, one decode step at the context, one prefill of the context.</summary>
internal sealed record Plan(string Model, PlanOptions Options, IReadOnlyList<MemoryLine> Memory, long TotalBytes, long DeviceMemory,
                          PhasePlan Decode, PhasePlan Prefill, string RoutingModel)
{
    /// <summary>The largest context that fits <see cref="DeviceMemory"/> per KV format ("bf16", "fp8"), everything but the
    /// KV cache held as planned (weights, activation arenas, workspaces).</summary>
    public IReadOnlyDictionary<string, long> LargestContext { get; init; } = new Dictionary<string, long>();
    /// <summary>The decode step's split-KV attention over the longest history (a NoPE layer), modelled; null when the step has none.</summary>
    public SplitKvModel? SplitKv { get; init; }
    /// <summary>The batched decode step and the paged KV capacity (with <see cref="PlanOptions.Batch"/> &gt; 0).</summary>
    public BatchPlan? Batched { get; init; }
    /// <summary>Decode attention at <see cref="Planner.AttentionContexts"/> (128K and 1M keys) for bf16 and FP8 KV, modelled.</summary>
    public IReadOnlyList<DecodeAttentionModel> DecodeAttention { get; init; } = [];

    public bool Fits => TotalBytes <= DeviceMemory;
    public double DecodeTokensPerSecond => Decode.ModelledSeconds > 0 ? 1 / Decode.ModelledSeconds : 0;
    public double BytesRatio => Decode.MinBytes > 0 ? (double)Decode.Trace.Bytes / Decode.MinBytes : 0;

    public string RenderText()
    {
        var sb = new StringBuilder();
        var o = Options;
        sb.AppendLine($"plan: {Model}, context {o.Context}, batch 1, bf16 activations, {(o.KvCache == KvCacheFormat.Fp8 ? "fp8" : "bf16")} KV cache, decode {(o.Capture ? "captured (graph replay)" : "host-driven")}; roofline at {o.BytesPerSecond / 1e12:0.##} TB/s, {o.FlopsPerSecond / 1e12:0} TFLOPS");
        sb.AppendLine();
        sb.AppendLine("memory");
        foreach (var m in Memory) sb.AppendLine($"  {m.What,-34} {Format.Bytes(m.Bytes),12}");
        sb.AppendLine($"  {"total",-34} {Format.Bytes(TotalBytes),12}");
        sb.AppendLine($"  fits {Format.Bytes(DeviceMemory)}: {(Fits ? "yes" : "NO")}, headroom {(Fits ? "" : "-")}{Format.Bytes(Math.Abs(DeviceMemory - TotalBytes))}");
        if (LargestContext.Count > 0)
            sb.AppendLine($"  largest context in {Format.Bytes(DeviceMemory)} (the rest of this plan as is): " +
                          string.Join(", ", LargestContext.Select(kv => $"{kv.Key} KV {kv.Value} tokens")));
        sb.AppendLine();
        var d = Decode.Trace;
        sb.AppendLine($"decode step at position {Decode.Position} (routing: {RoutingModel})");
        sb.AppendLine($"  launches {d.Launches} (host-issued {d.HostLaunches}), graph launches {d.GraphLaunches}, copies {d.Copies}, host syncs {d.HostSyncs}");
        sb.AppendLine($"  bytes {Format.Bytes(d.Bytes)} / minimum {Format.Bytes(Decode.MinBytes)} = {BytesRatio:0.000}");
        sb.AppendLine($"  modelled {Decode.ModelledSeconds * 1e3:0.000} ms → {DecodeTokensPerSecond:0.0} tokens/s" +
                      $" (floor {Decode.MinBytes / o.BytesPerSecond * 1e3:0.000} ms → {o.BytesPerSecond / Math.Max(1, Decode.MinBytes):0.0} tokens/s)");
        foreach (var bw in new[] { 3.35e12, 4.8e12 })
            sb.AppendLine($"    at {bw / 1e12:0.00} TB/s: {1 / d.ModelledSeconds(bw, o.FlopsPerSecond):0.0} tokens/s (floor {bw / Math.Max(1, Decode.MinBytes):0.0})");
        sb.AppendLine($"  decode bytes per token {Format.Bytes(d.Bytes)} (KV read by attention {Format.Bytes(AttentionBytes(d))})");
        if (SplitKv is { } sk)
            sb.AppendLine($"  split-KV attention over {sk.Keys} keys: {sk.Splits} splits × {sk.Blocks / sk.Splits} = {sk.Blocks} blocks on {Sms} SMs " +
                          $"({sk.Waves} wave{(sk.Waves == 1 ? "" : "s")} at 1 block/SM), its own traffic {Format.Bytes(sk.Bytes)} at {sk.Fraction:P0} of bandwidth " +
                          $"({sk.FractionWithCombine:P0} with the combine and {MinKernelUs} µs per kernel)");
        foreach (var da in DecodeAttention)
            sb.AppendLine($"  decode attention at {da.Context} keys, {da.KvCache} KV: must read {Format.Bytes(da.KvBytes)} per token step; kernels move " +
                          $"{Format.Bytes(da.KernelBytes)} ({da.BytesEfficiency:P1} of it KV) in {da.Launches} launches, ≤ {da.Splits} splits; " +
                          $"modelled {da.ModelledSeconds * 1e3:0.000} ms = {da.FractionOfBandwidth:P0} of bandwidth");
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
        foreach (var bw in new[] { 3.35e12, 4.8e12 })
            sb.AppendLine($"    at {bw / 1e12:0.00} TB/s: {p.ModelledSeconds(bw, o.FlopsPerSecond):0.000} s");
        if (p.Uncosted > 0) sb.AppendLine($"  {p.Uncosted} launches without a cost: {string.Join(", ", p.UncostedKernels)}");
        if (Batched is { } bp)
        {
            sb.AppendLine();
            bp.RenderText(sb, o);
        }
        return sb.ToString();
    }

    static long AttentionBytes(TraceSummary t) => t.Items.Where(i => i.Kind == RecordedKind.Launch && (i.Kernel.StartsWith("attn_", StringComparison.Ordinal) || i.Kernel.StartsWith("paged_attn_", StringComparison.Ordinal))).Sum(i => i.Bytes);

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
            ["kv_cache"] = o.KvCache == KvCacheFormat.Fp8 ? "fp8" : "bf16",
            ["device_memory"] = DeviceMemory,
            ["bandwidth_tbps"] = o.BytesPerSecond / 1e12,
            ["tflops"] = o.FlopsPerSecond / 1e12,
            ["fits"] = Fits,
            ["total_bytes"] = TotalBytes,
            ["headroom_bytes"] = DeviceMemory - TotalBytes,
            ["memory"] = new JsonObject(Memory.Select(m => KeyValuePair.Create(m.What, (JsonNode?)m.Bytes))),
            ["routing_model"] = RoutingModel,
            ["largest_context"] = new JsonObject(LargestContext.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["split_kv"] = SplitKv is { } sk ? new JsonObject
            {
                ["keys"] = sk.Keys, ["splits"] = sk.Splits, ["blocks"] = sk.Blocks, ["waves"] = sk.Waves, ["bytes"] = sk.Bytes,
                ["fraction_of_bandwidth"] = sk.Fraction, ["fraction_with_combine"] = sk.FractionWithCombine,
            } : null,
            ["decode_attention"] = new JsonArray(DecodeAttention.Select(da => (JsonNode?)new JsonObject
            {
                ["context"] = da.Context, ["kv_cache"] = da.KvCache, ["kv_bytes_per_step"] = da.KvBytes, ["kernel_bytes"] = da.KernelBytes,
                ["append_bytes"] = da.AppendBytes, ["launches"] = da.Launches, ["splits"] = da.Splits,
                ["bytes_efficiency"] = da.BytesEfficiency, ["modelled_s"] = da.ModelledSeconds, ["fraction_of_bandwidth"] = da.FractionOfBandwidth,
            }).ToArray()),
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
                ["attention_bytes"] = AttentionBytes(Decode.Trace),
                ["min_bytes"] = Decode.MinBytes,
                ["bytes_ratio"] = BytesRatio,
                ["flops"] = Decode.Trace.Flops,
                ["modelled_s"] = Decode.ModelledSeconds,
                ["modelled_tokens_per_s"] = DecodeTokensPerSecond,
                ["modelled_filled_tokens_per_s"] = 1 / FilledSeconds(Decode.Trace),
                ["host_us"] = Decode.HostMicroseconds,
                ["batch"] = Batched?.Batch ?? 1,
                ["aggregate_tokens_per_s"] = Batched?.AggregateTokensPerSecond ?? DecodeTokensPerSecond,
                ["batched"] = Batched?.Json(),
            },
            ["kv"] = Batched?.KvJson(o.Context),
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
    public static int[] AutoPieces => TokenGenerator.AutoPieces;

    /// <summary>The long histories the decode attention is modelled at: 128K and 1M keys (issue #15).</summary>
    public static readonly int[] AttentionContexts = [131072, 1048576];

    public static Plan Run(Llama4Config config, PlanOptions? options = null, string? name = null)
    {
        var o = options ?? new PlanOptions();
        if (o.MaxPiece == 0)
        {
            // Auto: the largest piece whose whole plan (weights, KV, activation arenas, workspaces) fits the device.
            Plan? plan = null;
            foreach (int c in AutoPieces.Where(c => c <= Math.Max(o.Context, AutoPieces[^1])))
            {
                plan = Run(config, o with { MaxPiece = c, PieceAuto = true, Batch = 0 }, name);
                if (plan.Fits) break;
            }
            return o.Batch > 0 ? plan! with { Options = plan!.Options with { Batch = o.Batch }, Batched = BatchPlanner.Run(config, o, plan.Options.MaxPiece) } : plan!;
        }
        if (o.Context < 2) throw new ArgumentException("plan: the context must be at least 2 tokens");
        int steps = Math.Max(1, Math.Min(o.Steps, o.Context - 1));
        using var dev = new RecordingDevice(o.DeviceMemory);
        using var weights = WeightLoader.Describe(config, dev, o.Load);
        var cfg = config.Text;
        // prompt ids below the image placeholders (<|patch|> etc. need pixels): matters for tiny vocabularies only
        int vocab = config.ImageTokenIndex > 0 ? Math.Min(cfg.VocabSize, config.ImageTokenIndex - 64) : cfg.VocabSize;
        var greedy = new GenerationOptions { Temperature = 0, StopAtModelStops = false };
        int piece = Math.Min(o.MaxPiece, o.Context);

        // Prefill of N tokens (and the first token's sampling): one fresh generator, as a new conversation.
        PhasePlan prefill;
        using (var gen = new TokenGenerator(weights, ComputeMode.BF16, o.Context, piece, kvCache: o.KvCache))
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
        using (var gen = new TokenGenerator(weights, ComputeMode.BF16, o.Context, piece, captureDecode: o.Capture, kvCache: o.KvCache))
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
            decode = new PhasePlan(tr, tr.ModelledSeconds(o.BytesPerSecond, o.FlopsPerSecond), MinDecodeBytes(weights, lastPos, o.KvCache), median, lastPos);
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
        long fixedBytes = total - kvBytes;
        var largest = new Dictionary<string, long>();
        foreach (var f in new[] { KvCacheFormat.Default, KvCacheFormat.Fp8 })
            largest[f == KvCacheFormat.Fp8 ? "fp8" : "bf16"] = ContextFit.Largest(cfg, o.DeviceMemory - fixedBytes, piece, DType.BF16, f);
        return new Plan(name ?? config.Text.ToString() ?? "model", o, memory, total, o.DeviceMemory, decode, prefill, Routing)
        {
            LargestContext = largest,
            SplitKv = SplitKvModel.Of(decode.Trace, decode.Position + 1, o.BytesPerSecond),
            Batched = o.Batch > 0 ? BatchPlanner.Run(config, o, piece) : null,
            DecodeAttention = [.. from n in AttentionContexts from f in new[] { KvCacheFormat.Default, KvCacheFormat.Fp8 }
                                  select DecodeAttentionModel.Of(cfg, n, f, o.BytesPerSecond)],
        };
    }

    /// <summary>Token ids that are valid for any vocabulary and never a stop or image token (the recording device reads back
    /// 0s anyway): the lowest quarter of the vocabulary, at most ids 1..1000 (the tiny models' specials sit above).</summary>
    internal static int[] Prompt(int n, int vocab) => Enumerable.Range(0, n).Select(i => 1 + i % Math.Max(1, Math.Min(vocab / 4, 1000))).ToArray();

    /// <summary>
    /// The least a decode step at <paramref name="position"/> must read: every text weight except the routed experts
    /// (those: k/E of them) and the embedding table (one row), plus each layer's keys and values up to the position
    /// (a chunked layer only its chunk).
    /// </summary>
    public static long MinDecodeBytes(ModelWeights w, int position, KvCacheFormat kvCache = KvCacheFormat.Default)
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
        long kvRow = kvCache == KvCacheFormat.Fp8 ? 2L * c.NumKeyValueHeads * (c.HeadDim + 4)  // K and V, e4m3 + an f32 scale per kv head
                                                  : 2L * c.NumKeyValueHeads * c.HeadDim * 2; // K and V, bf16
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            long len = position + 1;
            if (c.UsesRope[i] && c.AttentionChunkSize > 0) len = position % c.AttentionChunkSize + 1;
            bytes += (double)len * kvRow;
        }
        return (long)bytes;
    }
}
