using System.Globalization;
using System.Text;

namespace Llama4Native.Serving;

/// <summary>
/// Counters of a <see cref="ServingScheduler"/>, rendered in the Prometheus text format by <see cref="Render"/>
/// together with the scheduler's gauges (queue depth, running sequences, KV blocks). Token rates are the
/// counters' rates (PromQL <c>rate(llama4_generation_tokens_total[1m])</c>); for a reader without Prometheus the
/// prompt and generated tokens/s over the last <see cref="RateWindowSeconds"/> seconds are gauges too.
/// </summary>
internal sealed class ServingMetrics
{
    long submitted, admitted, rejected429, rejected503, stop, length, cancelled, errors;
    long promptTokens, generatedTokens, steps, stepPieces, stepTicks, queueTicks, ttftCount;
    double ttftSum;
    static readonly double[] TtftBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    readonly long[] ttftBuckets = new long[TtftBuckets.Length];
    readonly object ttftGate = new();
    /// <summary>The window of the tokens/s gauges.</summary>
    public const int RateWindowSeconds = 10;
    // Tokens per whole second of Environment.TickCount64, in a ring of RateWindowSeconds entries (stamp = the second).
    readonly long[] rateStamp = new long[RateWindowSeconds], ratePrompt = new long[RateWindowSeconds], rateGenerated = new long[RateWindowSeconds];
    readonly object rateGate = new();

    void Rate(long prompt, long generated)
    {
        long now = Environment.TickCount64 / 1000;
        int i = (int)(now % RateWindowSeconds);
        lock (rateGate)
        {
            if (rateStamp[i] != now) { rateStamp[i] = now; ratePrompt[i] = 0; rateGenerated[i] = 0; }
            ratePrompt[i] += prompt; rateGenerated[i] += generated;
        }
    }

    /// <summary>Prompt and generated tokens per second over the last <see cref="RateWindowSeconds"/> seconds (this one included).</summary>
    public (double Prompt, double Generated) TokensPerSecond()
    {
        long now = Environment.TickCount64 / 1000, p = 0, g = 0;
        lock (rateGate)
            for (int i = 0; i < RateWindowSeconds; i++)
                if (now - rateStamp[i] < RateWindowSeconds) { p += ratePrompt[i]; g += rateGenerated[i]; }
        return ((double)p / RateWindowSeconds, (double)g / RateWindowSeconds);
    }

    public long GeneratedTokens => Interlocked.Read(ref generatedTokens);
    public long PromptTokensTotal => Interlocked.Read(ref promptTokens);
    public long Cancelled => Interlocked.Read(ref cancelled);
    public long RejectedOverload => Interlocked.Read(ref rejected429);

    internal void Submitted() => Interlocked.Increment(ref submitted);
    internal void Admitted(TimeSpan queued) { Interlocked.Increment(ref admitted); Interlocked.Add(ref queueTicks, queued.Ticks); }
    internal void Rejected(int status)
    {
        if (status == 429) Interlocked.Increment(ref rejected429);
        else Interlocked.Increment(ref rejected503);
    }
    internal void PromptTokens(int n) { Interlocked.Add(ref promptTokens, n); Rate(n, 0); }
    internal void GeneratedToken() { Interlocked.Increment(ref generatedTokens); Rate(0, 1); }
    internal void Step(int pieces, TimeSpan took)
    {
        Interlocked.Increment(ref steps); Interlocked.Add(ref stepPieces, pieces); Interlocked.Add(ref stepTicks, took.Ticks);
    }

    /// <summary>Time to first token as a client sees it: from submission (queue wait included).</summary>
    internal void FirstToken(TimeSpan afterAdmission, TimeSpan fromSubmit)
    {
        double s = fromSubmit.TotalSeconds;
        lock (ttftGate)
        {
            ttftCount++; ttftSum += s;
            for (int i = 0; i < TtftBuckets.Length; i++) if (s <= TtftBuckets[i]) ttftBuckets[i]++;
        }
    }

    internal void Finished(ServingResult r)
    {
        switch (r.Reason)
        {
            case FinishReason.Stop: Interlocked.Increment(ref stop); break;
            case FinishReason.Length: Interlocked.Increment(ref length); break;
            case FinishReason.Cancelled: Interlocked.Increment(ref cancelled); break;
            default: Interlocked.Increment(ref errors); break;
        }
    }

    /// <summary>The Prometheus text exposition (version 0.0.4) of these counters and the scheduler's gauges.</summary>
    public string Render(ServingSnapshot g)
    {
        var sb = new StringBuilder(2048);
        void Metric(string name, string type, string help, params (string Labels, double Value)[] values)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var (labels, v) in values)
                sb.Append(name).Append(labels).Append(' ').Append(v.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        Metric("llama4_requests_total", "counter", "Requests by outcome (admitted, rejected with 429 or 503, finished by stop/length, cancelled, error).",
               ("{outcome=\"submitted\"}", Interlocked.Read(ref submitted)), ("{outcome=\"admitted\"}", Interlocked.Read(ref admitted)),
               ("{outcome=\"rejected_overload\"}", Interlocked.Read(ref rejected429)), ("{outcome=\"rejected_shutdown\"}", Interlocked.Read(ref rejected503)),
               ("{outcome=\"stop\"}", Interlocked.Read(ref stop)), ("{outcome=\"length\"}", Interlocked.Read(ref length)),
               ("{outcome=\"cancelled\"}", Interlocked.Read(ref cancelled)), ("{outcome=\"error\"}", Interlocked.Read(ref errors)));
        Metric("llama4_queue_depth", "gauge", "Requests waiting for a sequence slot.", ("", g.Waiting));
        Metric("llama4_batch_size", "gauge", "Sequences running (the active batch).", ("", g.Running));
        Metric("llama4_batch_slots", "gauge", "Sequences that can run at once (--max-batch).", ("", g.Slots));
        Metric("llama4_kv_blocks_used", "gauge", "KV blocks reserved by running sequences.", ("", g.KvBlocksUsed));
        Metric("llama4_kv_blocks_free", "gauge", "KV blocks free.", ("", g.KvBlocks - g.KvBlocksUsed));
        Metric("llama4_kv_block_tokens", "gauge", "Token positions per KV block.", ("", g.KvBlockTokens));
        Metric("llama4_kv_tokens_used", "gauge", "Token positions held in the KV cache by running sequences.", ("", g.KvPositions));
        Metric("llama4_kv_tokens_capacity", "gauge", "Token positions the KV cache holds in all.", ("", (double)g.KvBlocks * g.KvBlockTokens));
        Metric("llama4_prompt_tokens_total", "counter", "Prompt tokens prefilled.", ("", Interlocked.Read(ref promptTokens)));
        Metric("llama4_generation_tokens_total", "counter", "Tokens generated.", ("", Interlocked.Read(ref generatedTokens)));
        var (promptRate, generatedRate) = TokensPerSecond();
        Metric("llama4_prompt_tokens_per_second", "gauge", $"Prompt tokens prefilled per second over the last {RateWindowSeconds} s.", ("", promptRate));
        Metric("llama4_generation_tokens_per_second", "gauge", $"Tokens generated per second over the last {RateWindowSeconds} s (all sequences).", ("", generatedRate));
        Metric("llama4_steps_total", "counter", "Engine steps run.", ("", Interlocked.Read(ref steps)));
        Metric("llama4_step_pieces_total", "counter", "Sequence pieces (prefill pieces and decodes) run in steps.", ("", Interlocked.Read(ref stepPieces)));
        Metric("llama4_step_seconds_total", "counter", "Time spent in engine steps.", ("", TimeSpan.FromTicks(Interlocked.Read(ref stepTicks)).TotalSeconds));
        Metric("llama4_queue_wait_seconds_total", "counter", "Time admitted requests waited in the queue.", ("", TimeSpan.FromTicks(Interlocked.Read(ref queueTicks)).TotalSeconds));
        lock (ttftGate)
        {
            var buckets = new List<(string, double)>();
            for (int i = 0; i < TtftBuckets.Length; i++)
                buckets.Add(($"_bucket{{le=\"{TtftBuckets[i].ToString(CultureInfo.InvariantCulture)}\"}}", ttftBuckets[i]));
            buckets.Add(("_bucket{le=\"+Inf\"}", ttftCount));
            sb.Append("# HELP llama4_time_to_first_token_seconds Time from submission to the first generated token.\n");
            sb.Append("# TYPE llama4_time_to_first_token_seconds histogram\n");
            foreach (var (l, v) in buckets) sb.Append("llama4_time_to_first_token_seconds").Append(l).Append(' ').Append(v.ToString(CultureInfo.InvariantCulture)).Append('\n');
            sb.Append("llama4_time_to_first_token_seconds_sum ").Append(ttftSum.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
            sb.Append("llama4_time_to_first_token_seconds_count ").Append(ttftCount.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        Metric("llama4_admitting", "gauge", "1 while new requests are admitted, 0 while shutting down.", ("", g.Admitting ? 1 : 0));
        return sb.ToString();
    }
}
