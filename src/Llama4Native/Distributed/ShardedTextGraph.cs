using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>
/// A model's weights over a <see cref="DeviceGroup"/>: rank r's arena holds exactly the slices the <see cref="ShardingPlan"/>
/// gives it. Each rank is loaded by the ordinary <see cref="WeightLoader"/> with <see cref="LoadOptions.Shard"/>: the loader
/// reads only that rank's slice of each tensor from the memory-mapped checkpoint, through its staging buffers, so neither
/// one device nor the host ever holds the full model.
/// </summary>
internal sealed class ShardedWeights : IDisposable
{
    public DeviceGroup Group { get; }
    public ShardingPlan Plan { get; }
    public IReadOnlyList<ModelWeights> Ranks { get; }
    public Llama4Config Config => Plan.Config;

    ShardedWeights(DeviceGroup group, ShardingPlan plan, ModelWeights[] ranks) { Group = group; Plan = plan; Ranks = ranks; }

    public static ShardedWeights Load(Checkpoint ckpt, DeviceGroup group, LoadOptions? options = null)
    {
        var plan = ShardingPlan.Create(ckpt.Config, group.World);
        var o = options ?? new LoadOptions();
        var loaded = new List<ModelWeights>();
        try
        {
            for (int r = 0; r < group.Size; r++)
                loaded.Add(WeightLoader.Load(ckpt, group.Devices[r], o with { Shard = group.World > 1 ? plan.ForRank(group.FirstRank + r) : null }));
            return new ShardedWeights(group, plan, [.. loaded]);
        }
        catch
        {
            foreach (var w in loaded) w.Dispose();
            throw;
        }
    }

    /// <summary>Local rank <paramref name="rank"/>'s context (its global rank is <see cref="DeviceGroup.FirstRank"/> + rank).</summary>
    public RankContext Context(int rank) => new(Plan, Group.FirstRank + rank, Group.Comms.Ranks[rank]);

    /// <summary>One KV cache per rank, each with the rank's query and KV heads.</summary>
    public KvCache[] CreateCaches(DType dtype, int maxContext, int maxPiece, DType? kvDType = null) =>
        Enumerable.Range(0, Group.Size).Select(r => new KvCache(Group.Devices[r], Config.Text, dtype, maxContext, maxPiece, kvDType,
                                                                 Group.World > 1 ? (Plan.Heads, Plan.KvHeads) : null)).ToArray();

    public void Dispose() { foreach (var w in Ranks) w.Dispose(); }
}

/// <summary>
/// The decoder over several devices: one <see cref="Llama4TextGraph"/> per rank (built once from the config and the plan),
/// run in lockstep by one thread — node k on every rank, then node k+1 — with each collective node's per-rank calls
/// bracketed by the communicator group (NCCL's rule for one thread driving several devices; the in-process group
/// completes the collective when its last rank arrives). On CUDA every call is asynchronous on its device's stream, so
/// the devices run concurrently; the host only queues. Results and dumps are read from rank 0 (after each all-reduce
/// every rank holds the same activations; the logits are gathered on every rank).
/// </summary>
internal sealed class ShardedTextGraph : IDisposable
{
    readonly Llama4TextGraph[] ranks;
    readonly ShardedWeights weights;

    public int Tokens => ranks[0].Tokens;
    public IReadOnlyList<Llama4TextGraph> Ranks => ranks;

    public ShardedTextGraph(ShardedWeights w, int tokens, ComputeMode mode, KvCache[]? caches = null, bool lastLogitsOnly = false)
    {
        weights = w;
        if (caches is not null && caches.Length != w.Group.Size) throw new ArgumentException($"{caches.Length} kv caches for {w.Group.Size} ranks");
        var list = new List<Llama4TextGraph>();
        try
        {
            for (int r = 0; r < w.Group.Size; r++)
                list.Add(new Llama4TextGraph(w.Ranks[r], tokens, mode, caches?[r], lastLogitsOnly, w.Group.World > 1 ? w.Context(r) : null));
        }
        catch
        {
            foreach (var g in list) g.Dispose();
            throw;
        }
        ranks = [.. list];
        int nodes = ranks[0].Plan.NodeCount;
        if (ranks.Any(g => g.Plan.NodeCount != nodes)) throw new InvalidOperationException("the ranks' graphs differ in node count: they must be built from one plan");
    }

    /// <summary>Runs <paramref name="ids"/> on every rank; returns the logits [T, V] (from rank 0). Dumps come from rank 0.</summary>
    public float[] Forward(ReadOnlySpan<int> ids, Func<string, bool>? dumpWhere = null, Action<string, Tensor, float[]>? dump = null,
                           Func<int, Tensor?>? imageRows = null)
    {
        if (ranks[0].Shard is null) return ranks[0].Forward(ids, dumpWhere, dump, imageRows?.Invoke(0));
        var logits = Run(ids, dumpWhere, dump, imageRows);
        return Ops.DeviceData.Download(weights.Group.Devices[0], logits.Ptr, logits.Elements, DType.F32);
    }

    /// <summary>Like <see cref="Forward"/>, leaving the logits on (local) rank 0's device. <paramref name="imageRows"/>: each local
    /// rank's projected image rows for this piece's &lt;|patch|&gt; tokens on its own device (the vision tower is replicated).</summary>
    public Tensor Run(ReadOnlySpan<int> ids, Func<string, bool>? dumpWhere = null, Action<string, Tensor, float[]>? dump = null,
                      Func<int, Tensor?>? imageRows = null)
    {
        if (ranks[0].Shard is null) return ranks[0].Run(ids, dumpWhere, dump, imageRows?.Invoke(0));
        for (int r = 0; r < ranks.Length; r++) ranks[r].BeginRank(ids, imageRows?.Invoke(r)); // uploads this rank's ids and positions (and image rows), begins the kv piece
        var comms = weights.Group.Comms;
        var collectives = ranks[0].CollectiveNodes;
        bool ok = false;
        try
        {
            var plan0 = ranks[0].Plan;
            for (int k = 0; k < plan0.NodeCount; k++)
            {
                string name = plan0.NodeName(k);
                bool collective = collectives.Contains(name);
                if (collective) comms.GroupStart();
                try
                {
                    foreach (var g in ranks) g.Plan.RunNode(k, null);
                }
                finally { if (collective) comms.GroupEnd(); }
                if (dumpWhere is not null && dump is not null && dumpWhere(name))
                {
                    var t = plan0.NodeOutput(k);
                    dump(name, t, plan0.Download(t));
                }
            }
            ok = true;
        }
        finally
        {
            foreach (var g in ranks) g.EndRun(ok);
        }
        return ranks[0].Plan[ranks[0].Logits];
    }

    public void Dispose() { foreach (var g in ranks) g.Dispose(); }

    /// <summary>
    /// Greedy generation with a KV cache on every rank: the prompt as one piece, then one-token steps (each rank's
    /// cache holds its KV heads). Returns the generated ids and each step's logits [V] (step 0: the prompt's last).
    /// The same code runs one device (a group of one), so several devices are compared against it.
    /// </summary>
    public static (int[] Ids, float[][] StepLogits) Greedy(ShardedWeights w, ReadOnlySpan<int> prompt, int newTokens, ComputeMode mode, int? maxContext = null)
    {
        var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
        int context = maxContext ?? prompt.Length + newTokens;
        var caches = w.CreateCaches(act, context, prompt.Length);
        try
        {
            using var prefill = new ShardedTextGraph(w, prompt.Length, mode, caches, lastLogitsOnly: true);
            using var step = new ShardedTextGraph(w, 1, mode, caches, lastLogitsOnly: true);
            var ids = new int[newTokens];
            var logits = new float[newTokens][];
            var last = prefill.Forward(prompt);
            for (int i = 0; i < newTokens; i++)
            {
                logits[i] = last;
                ids[i] = Argmax(last);
                if (i + 1 < newTokens) last = step.Forward([ids[i]]);
            }
            return (ids, logits);
        }
        finally { foreach (var c in caches) c.Dispose(); }
    }

    static int Argmax(float[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
