using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;
using Llama4Native.Tensors;

namespace Llama4Native.Devices.Recording;

/// <summary>
/// `llama4 plan --batch B`: one decode step of B sequences, each at context N, as the server runs it —
/// <see cref="BatchedStepEngine"/> (one forward of B decode rows through <see cref="Llama4TextGraph.RunBatch"/> over a
/// <see cref="PagedKvCache"/>, then each row's sampling) on the recording device — and the KV capacity of the paged
/// cache beside everything else the engine holds.
/// </summary>
/// <param name="Batch">B: sequences (decode rows) per step</param>
/// <param name="Position">the position of the modelled step's rows (every sequence at the same length)</param>
/// <param name="Step">the recorded step</param>
/// <param name="ModelledSeconds">roofline time of the step</param>
/// <param name="HostMicroseconds">median host time per step on the recording device</param>
/// <param name="PageSize">token positions per KV page</param>
/// <param name="KvBytes">the paged cache's bytes for B sequences of context N</param>
/// <param name="PerSequenceKvBytes">what one more sequence of context N adds to the cache (NoPE pages, its RoPE ring, table rows)</param>
/// <param name="FixedBytes">everything but the cache: weights, the engine's graphs (arenas), workspaces, sampler state</param>
/// <param name="DeviceMemory">the device's bytes</param>
/// <param name="SequencesAtContext">how many sequences of context N fit beside <see cref="FixedBytes"/></param>
/// <param name="LargestContextAtBatch">the largest context each of B sequences can have</param>
internal sealed record BatchPlan(int Batch, int Position, TraceSummary Step, double ModelledSeconds, double HostMicroseconds, int PageSize,
                                 long KvBytes, long PerSequenceKvBytes, long FixedBytes, long DeviceMemory, long SequencesAtContext, long LargestContextAtBatch)
{
    /// <summary>Tokens per second of all sequences together: B per step.</summary>
    public double AggregateTokensPerSecond => ModelledSeconds > 0 ? Batch / ModelledSeconds : 0;
    /// <summary>Tokens per second one sequence sees.</summary>
    public double SequenceTokensPerSecond => ModelledSeconds > 0 ? 1 / ModelledSeconds : 0;
    /// <summary>Bytes left for KV once <see cref="FixedBytes"/> is placed.</summary>
    public long FreeBytes => DeviceMemory - FixedBytes;
    /// <summary>B sequences of context N fit.</summary>
    public bool Fits => FixedBytes + KvBytes <= DeviceMemory;

    public void RenderText(StringBuilder sb, PlanOptions o)
    {
        var d = Step;
        sb.AppendLine($"batched decode step: {Batch} sequences at position {Position} (BatchedStepEngine: one forward of {Batch} rows over a paged KV cache, pages of {PageSize}; then one sampling launch for its rows)");
        sb.AppendLine($"  launches {d.Launches} (host-issued {d.HostLaunches}), graph launches {d.GraphLaunches}, copies {d.Copies}, host syncs {d.HostSyncs}");
        sb.AppendLine($"  bytes {Format.Bytes(d.Bytes)} ({Format.Bytes(d.Bytes / Math.Max(1, Batch))} per token), FLOPs {d.Flops:0.###e+0}");
        sb.AppendLine($"  modelled {ModelledSeconds * 1e3:0.000} ms per step → {AggregateTokensPerSecond:0.0} tokens/s aggregate ({SequenceTokensPerSecond:0.0} per sequence)");
        foreach (var bw in new[] { 3.35e12, 4.8e12 })
            sb.AppendLine($"    at {bw / 1e12:0.00} TB/s: {Batch / d.ModelledSeconds(bw, o.FlopsPerSecond):0.0} tokens/s aggregate");
        sb.AppendLine($"  host time per step on the recording device: {HostMicroseconds:0} µs (median)");
        if (d.Uncosted > 0) sb.AppendLine($"  {d.Uncosted} launches without a cost: {string.Join(", ", d.UncostedKernels)}");
        sb.AppendLine($"KV capacity (paged; weights, the engine's arenas and workspaces {Format.Bytes(FixedBytes)}; free {(FreeBytes < 0 ? "-" : "")}{Format.Bytes(Math.Abs(FreeBytes))} of {Format.Bytes(DeviceMemory)})");
        sb.AppendLine($"  per sequence at context {o.Context}: {Format.Bytes(PerSequenceKvBytes)} → {SequencesAtContext} sequences of {o.Context} tokens fit");
        sb.AppendLine($"  {Batch} sequences × {o.Context} tokens: {Format.Bytes(KvBytes)}, fits: {(Fits ? "yes" : "NO")}; the largest context at {Batch} sequences: {LargestContextAtBatch} tokens");
    }

    public JsonObject Json() => new()
    {
        ["batch"] = Batch,
        ["position"] = Position,
        ["launches"] = Step.Launches,
        ["host_launches"] = Step.HostLaunches,
        ["graph_launches"] = Step.GraphLaunches,
        ["copies"] = Step.Copies,
        ["host_syncs"] = Step.HostSyncs,
        ["uncosted_launches"] = Step.Uncosted,
        ["bytes"] = Step.Bytes,
        ["flops"] = Step.Flops,
        ["modelled_s"] = ModelledSeconds,
        ["aggregate_tokens_per_s"] = AggregateTokensPerSecond,
        ["sequence_tokens_per_s"] = SequenceTokensPerSecond,
        ["host_us"] = HostMicroseconds,
    };

    public JsonObject KvJson(int context) => new()
    {
        ["page_tokens"] = PageSize,
        ["context"] = context,
        ["batch"] = Batch,
        ["bytes_at_batch"] = KvBytes,
        ["per_sequence_bytes"] = PerSequenceKvBytes,
        ["fixed_bytes"] = FixedBytes,
        ["free_bytes"] = FreeBytes,
        ["sequences_at_context"] = SequencesAtContext,
        ["largest_context_at_batch"] = LargestContextAtBatch,
        ["fits_at_batch"] = Fits,
    };
}

/// <summary>Builds a <see cref="BatchPlan"/>: the real <see cref="BatchedStepEngine"/> over described weights on a
/// <see cref="RecordingDevice"/>; B sequences are prefilled (one piece of one sequence per step, as the scheduler's
/// token budget would) to N − steps − 1 tokens, then decoded together up to context N; the last step is modelled.</summary>
internal static class BatchPlanner
{
    public static BatchPlan Run(Llama4Config config, PlanOptions o, int piece)
    {
        int batch = o.Batch, context = o.Context;
        if (batch < 1) throw new ArgumentException($"plan: the batch ({batch}) must be ≥ 1");
        int steps = Math.Max(1, Math.Min(o.Steps, context - 1));
        using var dev = new RecordingDevice(o.DeviceMemory);
        using var weights = WeightLoader.Describe(config, dev, o.Load);
        var cfg = config.Text;
        int vocab = config.ImageTokenIndex > 0 ? Math.Min(cfg.VocabSize, config.ImageTokenIndex - 64) : cfg.VocabSize;
        piece = Math.Min(piece, context);
        using var engine = new BatchedStepEngine(weights, ComputeMode.BF16, batch, context, piece, kvFormat: o.KvCache);
        var greedy = new GenerationOptions { Temperature = 0, StopAtModelStops = false };
        var results = new StepResult[batch];
        var last = new int[batch];
        int promptLen = Math.Max(1, context - steps - 1);
        var prompt = Planner.Prompt(promptLen, vocab);
        for (int s = 0; s < batch; s++)
        {
            engine.Begin(s, greedy, null);
            for (int at = 0; at < promptLen; at += piece)
            {
                int n = Math.Min(piece, promptLen - at);
                engine.Step([new StepPiece(s, prompt.AsMemory(at, n), Sample: at + n == promptLen, Decode: false)], results);
                Throw(results[0]);
            }
            last[s] = results[0].Token;
        }
        var pieces = new StepPiece[batch];
        var times = new List<double>();
        int mark = 0, position = 0;
        for (int k = 0; k < steps && engine.Position(0) < context; k++)
        {
            for (int s = 0; s < batch; s++) pieces[s] = new StepPiece(s, new[] { last[s] }, Sample: true, Decode: true);
            position = engine.Position(0);
            mark = dev.Mark;
            long t0 = Stopwatch.GetTimestamp();
            engine.Step(pieces, results);
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            for (int s = 0; s < batch; s++) { Throw(results[s]); last[s] = results[s].Token; }
        }
        var trace = dev.Summarize(mark);
        times.Sort();
        long kvBytes = engine.Cache.Bytes;
        long fixedBytes = dev.PeakBytes - kvBytes;
        int stepTokens = engine.Cache.MaxStepTokens, pageSize = engine.Cache.PageSize;
        var kvType = o.KvCache == KvCacheFormat.Fp8 ? DType.F8E4M3 : (DType?)null;
        long PerSequence(long ctx) => PerSequenceBytes(cfg, ctx, stepTokens, kvType, pageSize);
        long free = o.DeviceMemory - fixedBytes, perSeq = PerSequence(context);
        long sequences = free > 0 ? free / perSeq : 0;
        // The largest context at B sequences: B × per-sequence(N') ≤ free (monotone in N').
        long cap = cfg.MaxPositionEmbeddings > 0 ? cfg.MaxPositionEmbeddings : int.MaxValue / 2;
        long lo = 0, hi = cap;
        while (lo < hi)
        {
            long mid = lo + (hi - lo + 1) / 2;
            if ((double)batch * PerSequence(mid) <= free) lo = mid; else hi = mid - 1;
        }
        return new BatchPlan(batch, position, trace, trace.ModelledSeconds(o.BytesPerSecond, o.FlopsPerSecond), times.Count == 0 ? 0 : times[times.Count / 2],
                             pageSize, kvBytes, perSeq, fixedBytes, o.DeviceMemory, sequences, lo);
    }

    static void Throw(StepResult r)
    {
        if (r.Error is { } e) throw new InvalidOperationException($"plan: the batched step failed: {e.Message}", e);
    }

    /// <summary>What one more sequence of <paramref name="context"/> tokens adds to a <see cref="PagedKvCache"/> (its NoPE
    /// pages at that context, its RoPE ring, its table rows): measured on the cache itself, built for 1 and 2 slots on a
    /// scratch recording device. 0 for a context below 1.</summary>
    public static long PerSequenceBytes(TextConfig cfg, long context, int maxStepTokens, DType? kvType, int pageSize = PagedKvCache.DefaultPageSize)
    {
        if (context < 1) return 0;
        using var scratch = new RecordingDevice(long.MaxValue / 4, "kv sizing");
        int ctx = (int)Math.Min(context, int.MaxValue);
        using var one = new PagedKvCache(scratch, cfg, DType.BF16, 1, ctx, maxStepTokens, kvDType: kvType, pageSize: pageSize);
        using var two = new PagedKvCache(scratch, cfg, DType.BF16, 2, ctx, maxStepTokens, kvDType: kvType, pageSize: pageSize);
        return two.Bytes - one.Bytes;
    }
}
