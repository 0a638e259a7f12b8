using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Graph;

/// <summary>
/// A graph with its buffers placed in one device arena. Placement is greedy best-fit over lifetimes:
/// values sorted by size, each put at the lowest offset that no value alive at the same time occupies.
/// Running it launches every node in order on one stream without a host synchronisation, so the same
/// plan can be captured into a CUDA graph (fixed addresses, no allocation per run).
/// </summary>
internal sealed class GraphPlan : IDisposable
{
    public const int Alignment = 256;
    readonly ComputeGraph g;
    readonly Device device;
    readonly DeviceBuffer? arena;
    readonly Tensor[] tensors;
    readonly Tensor[][] nodeInputs; // resolved once: a run allocates nothing

    /// <summary>Arena bytes; and what the values would take without reuse, for comparison.</summary>
    public long ArenaBytes { get; }
    public long UnplannedBytes { get; }

    internal GraphPlan(ComputeGraph graph, Device device)
    {
        g = graph;
        this.device = device;
        int n = g.values.Count;
        // Lifetime of each storage root: [first def, last use]; inputs from the start, outputs to the end.
        var first = new int[n]; var last = new int[n];
        Array.Fill(first, int.MaxValue); Array.Fill(last, -1);
        void Touch(int id, int at) { int r = g.Root(id); first[r] = Math.Min(first[r], at); last[r] = Math.Max(last[r], at); }
        for (int i = 0; i < n; i++)
            if (g.values[i].Kind == ComputeGraph.Kind.Input) Touch(i, -1);
        for (int k = 0; k < g.nodes.Count; k++)
        {
            foreach (var inp in g.nodes[k].Inputs) Touch(inp.Id, k);
            Touch(g.nodes[k].Output.Id, k);
        }
        foreach (var o in g.outputs) Touch(o, g.nodes.Count);

        var size = new long[n];
        for (int i = 0; i < n; i++)
        {
            int r = g.Root(i);
            if (g.values[r].Kind != ComputeGraph.Kind.Bound) size[r] = Math.Max(size[r], Align(g.RootOffset(i) + g.values[i].Bytes));
        }
        var roots = Enumerable.Range(0, n).Where(i => size[i] > 0 && last[i] >= first[i] || (size[i] > 0 && g.values[i].Kind == ComputeGraph.Kind.Input))
                                          .OrderByDescending(i => size[i]).ThenBy(i => i).ToList();
        var offset = new long[n];
        var placed = new List<int>();
        long top = 0;
        foreach (var r in roots)
        {
            // Occupied intervals of values whose lifetimes overlap r's, sorted by offset: take the first gap that fits.
            var busy = placed.Where(p => first[p] <= last[r] && first[r] <= last[p]).Select(p => (offset[p], offset[p] + size[p])).OrderBy(x => x.Item1);
            long at = 0;
            foreach (var (s, e) in busy)
            {
                if (at + size[r] <= s) break;
                at = Math.Max(at, e);
            }
            offset[r] = at;
            top = Math.Max(top, at + size[r]);
            placed.Add(r);
        }
        ArenaBytes = top;
        UnplannedBytes = roots.Sum(r => size[r]);
        arena = top > 0 ? device.Allocate(top) : null;
        tensors = new Tensor[n];
        for (int i = 0; i < n; i++)
        {
            var v = g.values[i];
            tensors[i] = v.Kind == ComputeGraph.Kind.Bound ? v.Bound
                : new Tensor(arena!.Ptr + offset[g.Root(i)] + g.RootOffset(i), v.DType, v.Shape);
        }
        nodeInputs = g.nodes.Select(nd => nd.Inputs.Select(x => tensors[x.Id]).ToArray()).ToArray();
    }

    static long Align(long b) => (b + Alignment - 1) / Alignment * Alignment;

    public Tensor this[Value v] => tensors[v.Id];
    public Tensor this[string name] => tensors[g[name].Id];

    /// <summary>
    /// Runs every node in order. With <paramref name="dumpPattern"/> (a glob over node names, e.g. "blk.3.*"),
    /// each matching node's output is copied to the host after it runs and handed to <paramref name="dump"/>
    /// — this synchronises, so it is for debugging and golden diffs, not for production runs.
    /// </summary>
    public void Run(DeviceStream? stream = null, string? dumpPattern = null, Action<string, Tensor, float[]>? dump = null) =>
        Run(stream, dumpPattern is null ? null : n => System.IO.Enumeration.FileSystemName.MatchesSimpleExpression(dumpPattern, n), dump);

    /// <summary>As above, with any predicate over node names choosing what to dump.</summary>
    public void Run(DeviceStream? stream, Func<string, bool>? dumpWhere, Action<string, Tensor, float[]>? dump)
    {
        for (int k = 0; k < g.nodes.Count; k++)
        {
            RunNode(k, stream);
            var node = g.nodes[k];
            if (dumpWhere is not null && dump is not null && dumpWhere(node.Name))
                dump(node.Name, tensors[node.Output.Id], Download(tensors[node.Output.Id]));
        }
    }

    /// <summary>Nodes, in execution order: for a runner that steps several ranks' plans in lockstep.</summary>
    public int NodeCount => g.nodes.Count;
    public string NodeName(int k) => g.nodes[k].Name;
    public Tensor NodeOutput(int k) => tensors[g.nodes[k].Output.Id];

    /// <summary>Runs node <paramref name="k"/> alone (what <see cref="Run(DeviceStream?, Func{string, bool}?, Action{string, Tensor, float[]}?)"/> does for each).</summary>
    public void RunNode(int k, DeviceStream? stream)
    {
        var node = g.nodes[k];
        try { node.Run(new NodeContext(device, stream, nodeInputs[k], tensors[node.Output.Id])); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new GraphExecutionException(node.Name, e);
        }
    }

    /// <summary>Any value as floats on the host (integer values converted exactly up to 2^24).</summary>
    public float[] Download(Tensor t)
    {
        if (t.DType is DType.F32 or DType.BF16) return Ops.DeviceData.Download(device, t.Ptr, t.Elements, t.DType);
        if (t.DType != DType.I32) throw new NotSupportedException($"dumping {t.DType} values");
        var ints = new int[t.Elements];
        device.Download(t.Ptr, ints.AsSpan());
        return ints.Select(v => (float)v).ToArray();
    }

    public void Dispose() => arena?.Dispose();
}

/// <summary>A node failed: the message names it, so a fault points at `blk.3.attn_q`, not at a kernel among hundreds.</summary>
internal sealed class GraphExecutionException(string node, Exception inner) : Exception($"graph node '{node}' failed: {inner.Message}", inner)
{
    public string Node { get; } = node;
}
