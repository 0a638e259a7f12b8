using System.Text;
using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>
/// The part of a checkpoint tensor a rank holds: along <paramref name="Axis"/>, elements [Start, Start + Count) of the
/// full tensor, stored as <paramref name="Padded"/> ≥ Count entries (the rest zero: vocab rows past V on the last rank).
/// </summary>
internal readonly record struct TensorSlice(int Axis, long Start, long Count, long Padded)
{
    /// <summary>The rank's shape of a tensor whose full shape is <paramref name="full"/>.</summary>
    public long[] Shape(long[] full) { var s = (long[])full.Clone(); s[Axis] = Padded; return s; }
}

/// <summary>Which slice of each tensor one rank loads (null: the whole tensor, replicated). The loader's only question.</summary>
internal interface ITensorSharding
{
    int Rank { get; }
    int World { get; }
    TensorSlice? SliceOf(ExpectedTensor tensor, long[] fullShape);
}

/// <summary>A device count that cannot split a dimension that must be split; the message names the dimension.</summary>
internal sealed class ShardingException(string message) : ArgumentException(message);

/// <summary>One collective of a step, as the graph issues it and `plan` prints it.</summary>
/// <param name="Node">The graph node ("blk.{i}.attn_o.allreduce" for every layer i, written once with its count).</param>
/// <param name="PerStep">How many of these one step issues.</param>
/// <param name="Elements">Elements of each call's buffer on one rank (all-gather: the rank's send).</param>
/// <param name="BytesPerRank">Bytes one rank sends per call (ring algorithms: all-reduce 2(n−1)/n·S, all-gather (n−1)·s).</param>
internal sealed record CollectiveUse(string Node, CollectiveKind Kind, int PerStep, long Elements, DType DType, long BytesPerRank);

/// <summary>
/// How Llama 4's text decoder is split over <see cref="World"/> devices — described ONCE here and read by the loader
/// (which slice of each tensor a rank loads: <see cref="ForRank"/>), the graph (each rank's local sizes and the
/// collectives it issues), and `inspect`/`plan` (<see cref="Describe"/>, <see cref="DecodeCollectives"/>):
/// <code>
///   tensor                      split                        rank r holds                     after it
///   tok_embd [V, D]             vocab rows                   rows [r·Vr, r·Vr+Vr) (zero-pad)  all-reduce (ids outside → 0 rows)
///   attn_q [H·d, D]             column-parallel by head      heads [r·H/n, …)
///   attn_k/v [Hkv·d, D]         by KV head, or replicated    Hkv/n heads; or head r/(n/Hkv) when Hkv &lt; n (vLLM)
///   attn_o [D, H·d]             row-parallel by head         columns of its heads             all-reduce
///   ffn_gate/up [Im, D]         column-parallel              Im/n rows
///   ffn_down [D, Im]            row-parallel                 Im/n columns                     all-reduce
///   moe.router [E, D]           replicated                   all (every rank routes every token identically)
///   moe.shexp_gate/up/down      like the dense FFN (I/n)
///   moe.gate_up/down_exps       expert-parallel              experts [r·E/n, …)               one all-reduce with the shared expert
///   norms, vision tower         replicated
///   output (lm_head) [V, D]     vocab rows                   logits [T, Vr]                   all-gather, then columns reordered
/// </code>
/// Routed experts: each rank runs ITS experts for every token routed to them and adds the result to its partial shared-
/// expert output; ONE all-reduce per MoE layer then completes both. The alternative — sending each token to its experts'
/// rank and back (two all-to-alls) — moves T·k·D per direction instead of the all-reduce's T·D each way of a ring, and still
/// needs the shared expert's all-reduce: for Llama 4 (k = 1) at decode it is three latency-bound collectives instead of one,
/// for no fewer bytes (see <see cref="DecodeCollectives"/>). A rank computes only the pairs routed to its experts, so the
/// compute is not replicated.
/// </summary>
internal sealed class ShardingPlan
{
    public Llama4Config Config { get; }
    public int World { get; }
    /// <summary>Query heads per rank (H/n).</summary>
    public int Heads { get; }
    /// <summary>KV heads per rank: Hkv/n, or 1 when Hkv &lt; n (each replicated on n/Hkv ranks).</summary>
    public int KvHeads { get; }
    /// <summary>Ranks holding each KV head: 1 when split, n/Hkv when replicated.</summary>
    public int KvReplicas { get; }
    /// <summary>The MoE layers' (shared expert) intermediate per rank, and the dense layers'.</summary>
    public int Inter { get; }
    public int InterMlp { get; }
    /// <summary>Routed experts per rank (E/n).</summary>
    public int Experts { get; }
    /// <summary>Vocab rows per rank, ⌈V/n⌉ (the last rank zero-padded).</summary>
    public int Vocab { get; }

    ShardingPlan(Llama4Config config, int world)
    {
        Config = config; World = world;
        var t = config.Text;
        Heads = t.NumAttentionHeads / world;
        KvReplicas = t.NumKeyValueHeads >= world ? 1 : world / t.NumKeyValueHeads;
        KvHeads = t.NumKeyValueHeads >= world ? t.NumKeyValueHeads / world : 1;
        Inter = t.NumMoeLayers > 0 ? t.IntermediateSize / world : 0;
        InterMlp = t.NumMoeLayers < t.NumHiddenLayers ? t.IntermediateSizeMlp / world : 0;
        Experts = t.NumMoeLayers > 0 ? t.NumLocalExperts / world : 0;
        Vocab = (t.VocabSize + world - 1) / world;
    }

    /// <summary>The plan for <paramref name="world"/> devices; throws <see cref="ShardingException"/> naming every dimension
    /// that count cannot split, and the device counts that would work.</summary>
    public static ShardingPlan Create(Llama4Config config, int world)
    {
        if (world < 1) throw new ShardingException($"the device count must be at least 1, got {world}");
        var problems = Problems(config, world);
        if (problems.Count > 0)
        {
            var ok = Enumerable.Range(1, 64).Where(n => Problems(config, n).Count == 0);
            throw new ShardingException($"{world} devices cannot split this model: {string.Join("; ", problems)}. " +
                                        $"Device counts that work for it: {string.Join(", ", ok)}.");
        }
        return new ShardingPlan(config, world);
    }

    static List<string> Problems(Llama4Config c, int n)
    {
        var t = c.Text;
        var p = new List<string>();
        if (t.NumAttentionHeads % n != 0)
            p.Add($"num_attention_heads ({t.NumAttentionHeads}) is not divisible by {n} (attention is split by query head)");
        if (t.NumKeyValueHeads >= n ? t.NumKeyValueHeads % n != 0 : n % t.NumKeyValueHeads != 0)
            p.Add($"num_key_value_heads ({t.NumKeyValueHeads}) must be divisible by {n}, or {n} by it (KV heads are split, or replicated when fewer than devices)");
        if (t.NumMoeLayers > 0 && t.IntermediateSize % n != 0)
            p.Add($"intermediate_size ({t.IntermediateSize}) is not divisible by {n} (the shared expert is column/row-parallel)");
        if (t.NumMoeLayers > 0 && t.NumLocalExperts % n != 0)
            p.Add($"num_local_experts ({t.NumLocalExperts}) is not divisible by {n} (routed experts are expert-parallel)");
        if (t.NumMoeLayers < t.NumHiddenLayers && t.IntermediateSizeMlp % n != 0)
            p.Add($"intermediate_size_mlp ({t.IntermediateSizeMlp}) is not divisible by {n} (the dense FFN is column/row-parallel)");
        return p;
    }

    public int HeadStart(int rank) => rank * Heads;
    public int KvHeadStart(int rank) => KvReplicas > 1 ? rank / KvReplicas : rank * KvHeads;
    public int ExpertStart(int rank) => rank * Experts;
    public long VocabStart(int rank) => (long)rank * Vocab;
    /// <summary>Real (unpadded) vocab rows of <paramref name="rank"/>.</summary>
    public long VocabCount(int rank) => Math.Clamp(Config.Text.VocabSize - VocabStart(rank), 0, Vocab);

    /// <summary>The loader's view for one rank.</summary>
    public ITensorSharding ForRank(int rank)
    {
        if ((uint)rank >= (uint)World) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} of a {World}-device plan");
        return new RankView(this, rank);
    }

    sealed class RankView(ShardingPlan plan, int rank) : ITensorSharding
    {
        public int Rank => rank;
        public int World => plan.World;
        public TensorSlice? SliceOf(ExpectedTensor tensor, long[] fullShape) => plan.Slice(tensor, fullShape, rank);
    }

    /// <summary>How a tensor is split (by our name, without "blk.{i}." and ".scale"): axis and what is counted along it.</summary>
    internal enum Split { Replicated, Vocab, QHeads, KvHeads, QHeadColumns, Inter, InterColumns, InterMlp, InterMlpColumns, Experts }

    internal static Split SplitOf(string ours)
    {
        string name = ours.EndsWith(".scale", StringComparison.Ordinal) ? ours[..^6] : ours;
        if (name.StartsWith("v.", StringComparison.Ordinal) || name.StartsWith("mm.", StringComparison.Ordinal)) return Split.Replicated;
        if (name is "tok_embd" or "output") return Split.Vocab;
        string s = name.StartsWith("blk.", StringComparison.Ordinal) ? name[(name.IndexOf('.', 4) + 1)..] : name;
        return s switch
        {
            "attn_q" or "attn_q.bias" => Split.QHeads,
            "attn_k" or "attn_v" or "attn_k.bias" or "attn_v.bias" => Split.KvHeads,
            "attn_o" => Split.QHeadColumns,
            "moe.shexp_gate" or "moe.shexp_up" => Split.Inter,
            "moe.shexp_down" => Split.InterColumns,
            "ffn_gate" or "ffn_up" => Split.InterMlp,
            "ffn_down" => Split.InterMlpColumns,
            "moe.gate_up_exps" or "moe.down_exps" => Split.Experts,
            _ => Split.Replicated, // norms, router, attn_o.bias (added once, after the all-reduce)
        };
    }

    internal TensorSlice? Slice(ExpectedTensor e, long[] full, int rank)
    {
        if (World == 1) return null;
        var split = SplitOf(e.Ours);
        int hd = Config.Text.HeadDim;
        (int axis, long start, long count, long padded) = split switch
        {
            Split.Vocab => (0, VocabStart(rank), VocabCount(rank), (long)Vocab),
            Split.QHeads => (0, (long)HeadStart(rank) * hd, (long)Heads * hd, (long)Heads * hd),
            Split.KvHeads => (0, (long)KvHeadStart(rank) * hd, (long)KvHeads * hd, (long)KvHeads * hd),
            Split.QHeadColumns => (1, (long)HeadStart(rank) * hd, (long)Heads * hd, (long)Heads * hd),
            Split.Inter => (0, (long)rank * Inter, Inter, Inter),
            Split.InterColumns => (1, (long)rank * Inter, Inter, Inter),
            Split.InterMlp => (0, (long)rank * InterMlp, InterMlp, InterMlp),
            Split.InterMlpColumns => (1, (long)rank * InterMlp, InterMlp, InterMlp),
            Split.Experts => (0, ExpertStart(rank), Experts, Experts),
            _ => (-1, 0L, 0L, 0L),
        };
        if (axis < 0) return null;
        // Scales follow their weight along the output axis (FP8 row-wise [N, 1], experts [E, …]); a weight split along
        // its input axis (row-parallel) keeps all its per-output-row scales.
        if (e.IsScale && axis == 1) return null;
        if (axis >= full.Length)
            throw new InvalidOperationException($"{e.Ours}: shape [{string.Join(", ", full)}] has no axis {axis} to split");
        // HF stores bf16 routed experts input-major; splitting them is along E (axis 0) either way.
        return new TensorSlice(axis, start, count, padded);
    }

    /// <summary>The table `inspect` and `plan` print: one line per kind of tensor, with rank 0's shape.</summary>
    public string Describe()
    {
        var t = Config.Text;
        int n = World, hd = t.HeadDim;
        var sb = new StringBuilder();
        sb.AppendLine($"sharding      {n} devices: tensor-parallel attention and FFN, expert-parallel routed experts, vocab-parallel embedding and lm_head");
        void Row(string tensor, string how, string local) => sb.AppendLine($"  {tensor,-24} {how,-34} {local}");
        Row("tok_embd / output", "vocab rows", $"[{Vocab}, {t.HiddenSize}] per device (V={t.VocabSize}{(Vocab * n != t.VocabSize ? $", last zero-padded" : "")})");
        Row("attn_q", "column-parallel by query head", $"{Heads} of {t.NumAttentionHeads} heads: [{Heads * hd}, {t.HiddenSize}]");
        Row("attn_k / attn_v", KvReplicas > 1 ? $"replicated ×{KvReplicas} (Hkv {t.NumKeyValueHeads} < {n})" : "column-parallel by KV head",
            $"{KvHeads} of {t.NumKeyValueHeads} KV heads: [{KvHeads * hd}, {t.HiddenSize}]");
        Row("attn_o", "row-parallel + all-reduce", $"[{t.HiddenSize}, {Heads * hd}]");
        if (InterMlp > 0) Row("ffn_gate/up | ffn_down", "column | row-parallel + all-reduce", $"[{InterMlp}, {t.HiddenSize}] | [{t.HiddenSize}, {InterMlp}]");
        if (Experts > 0)
        {
            Row("moe.shexp_gate/up | down", "column | row-parallel", $"[{Inter}, {t.HiddenSize}] | [{t.HiddenSize}, {Inter}]");
            Row("moe.*_exps", "expert-parallel", $"{Experts} of {t.NumLocalExperts} experts (from r·{Experts}); one all-reduce with the shared expert");
            Row("moe.router", "replicated", $"[{t.NumLocalExperts}, {t.HiddenSize}]");
        }
        Row("norms, vision tower", "replicated", "");
        return sb.ToString();
    }

    /// <summary>The collectives of one step of <paramref name="tokens"/> tokens (decode: 1) and the bytes a rank sends.</summary>
    public IReadOnlyList<CollectiveUse> DecodeCollectives(int tokens, DType act)
    {
        var t = Config.Text;
        int n = World;
        if (n == 1) return [];
        long d = t.HiddenSize;
        long Ring(long elems, DType dt) => 2L * (n - 1) * dt.BytesOf(elems) / n;
        int dense = t.NumHiddenLayers - t.NumMoeLayers;
        var list = new List<CollectiveUse>
        {
            new("embed.allreduce", CollectiveKind.AllReduce, 1, tokens * d, act, Ring(tokens * d, act)),
            new("blk.{i}.attn_o.allreduce", CollectiveKind.AllReduce, t.NumHiddenLayers, tokens * d, act, Ring(tokens * d, act)),
        };
        if (dense > 0) list.Add(new("blk.{i}.ffn_down.allreduce", CollectiveKind.AllReduce, dense, tokens * d, act, Ring(tokens * d, act)));
        if (t.NumMoeLayers > 0) list.Add(new("blk.{i}.moe.allreduce", CollectiveKind.AllReduce, t.NumMoeLayers, tokens * d, act, Ring(tokens * d, act)));
        list.Add(new("output.allgather", CollectiveKind.AllGather, 1, (long)tokens * Vocab, DType.F32, (n - 1) * DType.F32.BytesOf((long)tokens * Vocab)));
        return list;
    }

    /// <summary>What the token exchange (all-to-all dispatch and combine) would move per MoE layer for a rank, to compare
    /// with the all-reduce chosen: T·k rows of D leave for other ranks' experts ((n−1)/n of them on average) and come back.</summary>
    public long ExchangeBytesPerMoeLayer(int tokens, DType act) =>
        2 * act.BytesOf((long)tokens * Config.Text.NumExpertsPerTok * Config.Text.HiddenSize) * (World - 1) / World;
}
