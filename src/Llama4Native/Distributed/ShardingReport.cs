using System.Text;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>
/// What `inspect --devices N` and `plan --devices N` print: the <see cref="ShardingPlan"/> table, each rank's weight bytes
/// (from the loader's own placement plan with that rank's slices: <see cref="WeightLoader.Footprint"/>), its KV cache
/// for the context (its KV heads only), whether that fits the device memory, and the collectives of one decode step
/// with the bytes each rank sends — next to what the token exchange for the routed experts would move instead.
/// </summary>
internal static class ShardingReport
{
    public sealed record RankMemory(int Rank, long Weights, long KvCache)
    {
        public long Total => Weights + KvCache;
    }

    /// <summary>Each rank's weight and KV bytes (bf16 KV, or fp8 with <paramref name="kvBytes"/> 1).</summary>
    public static IReadOnlyList<RankMemory> Memory(ShardingPlan plan, LoadOptions options, long context, int kvBytes = 2)
    {
        var t = plan.Config.Text;
        long kv = ModelReport.KvCacheBytes(t, context, kvBytes) / t.NumKeyValueHeads * plan.KvHeads;
        return Enumerable.Range(0, plan.World).Select(r =>
            new RankMemory(r, WeightLoader.Footprint(plan.Config, options with { Shard = plan.World > 1 ? plan.ForRank(r) : null }).Total, kv)).ToList();
    }

    public static string Render(ShardingPlan plan, LoadOptions options, long context, long deviceMemory, string deviceName)
    {
        var t = plan.Config.Text;
        int n = plan.World;
        string G(long b) => Format.Bytes(b);
        var sb = new StringBuilder();
        sb.Append(plan.Describe());
        var mem = Memory(plan, options, context);
        var fp8Kv = Memory(plan, options, context, 1);
        long one = WeightLoader.Footprint(plan.Config, options).Total;
        var worst = mem.MaxBy(m => m.Total)!;
        sb.AppendLine($"per device    weights {G(mem.Min(m => m.Weights))}–{G(mem.Max(m => m.Weights))} (all on one device: {G(one)}), " +
                      $"kv cache {G(worst.KvCache)} for {context} tokens (fp8 kv {G(fp8Kv[0].KvCache)}); activations and workspaces not counted (≈ 1–3 GiB)");
        sb.AppendLine($"  need        {G(worst.Total)} on the fullest device (rank {worst.Rank}); each has {G(deviceMemory)} ({deviceName}): " +
                      (worst.Total <= deviceMemory ? $"fits ({G(deviceMemory - worst.Total)} left)" : $"does NOT fit (short by {G(worst.Total - deviceMemory)})"));
        if (n > 1)
        {
            var act = DType.BF16;
            var uses = plan.DecodeCollectives(1, act);
            sb.AppendLine($"collectives   one decode step (1 token, bf16 activations; bytes a device sends, ring algorithms):");
            foreach (var u in uses)
                sb.AppendLine($"  {u.Node,-28} {u.Kind,-10} ×{u.PerStep,-4} {u.DType.BytesOf(u.Elements),9:N0} B each, {u.BytesPerRank,9:N0} B sent per device each");
            long total = uses.Sum(u => u.PerStep * u.BytesPerRank);
            int calls = uses.Sum(u => u.PerStep);
            sb.AppendLine($"  total       {calls} collectives, {total:N0} B sent per device per token");
            if (t.NumMoeLayers > 0)
            {
                long ar = 2L * (n - 1) * act.BytesOf(t.HiddenSize) / n, ex = plan.ExchangeBytesPerMoeLayer(1, act);
                sb.AppendLine($"  moe choice  all-reduce of shared + routed partials: 1 collective, {ar:N0} B per layer; token exchange (k = {t.NumExpertsPerTok}): " +
                              $"2 all-to-alls, {ex:N0} B, plus the shared expert's all-reduce ({ar:N0} B) — the all-reduce moves {(ex + ar) / (double)ar:0.#}× fewer bytes in 3× fewer latency-bound calls");
            }
        }
        return sb.ToString();
    }
}
