using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Graph;

/// <summary>A value in a graph: an input, a bound tensor (weights) or a node's output.</summary>
internal readonly record struct Value(int Id);

/// <summary>What a node's kernel sees: its device and stream, its inputs and its output, all resolved to tensors.</summary>
internal readonly ref struct NodeContext(Device device, DeviceStream? stream, ReadOnlySpan<Tensor> inputs, Tensor output)
{
    public Device Device { get; } = device;
    public DeviceStream? Stream { get; } = stream;
    public ReadOnlySpan<Tensor> Inputs { get; } = inputs;
    public Tensor Output { get; } = output;
    public Tensor this[int i] => Inputs[i];
}

/// <summary>Launches a node's kernels. Must not synchronise the host or allocate device memory.</summary>
internal delegate void NodeKernel(in NodeContext ctx);

/// <summary>
/// A computation described once as named nodes (`blk.3.attn_q`), in execution order. Values are planned
/// into one device arena by <see cref="Plan"/>, with storage reused once a value is dead; any node's output
/// can be dumped by name pattern while running. A node may write in place into one of its inputs
/// (<c>inPlaceOf</c>: residual adds, RoPE) — its output then shares that input's storage.
/// </summary>
internal sealed class ComputeGraph
{
    internal enum Kind { Input, Bound, Node }

    /// <param name="AliasOf">The value whose storage this one shares (in place, or a view), −1 for its own.</param>
    /// <param name="AliasOffset">Bytes into <paramref name="AliasOf"/>'s storage where this one starts (views; 0 in place).</param>
    internal sealed record ValueInfo(string Name, DType DType, Shape Shape, Kind Kind, Tensor Bound, int Producer, int AliasOf, long AliasOffset = 0)
    {
        public long Bytes => DType.BytesOf(Shape.Elements);
    }

    internal sealed record NodeInfo(string Name, Value[] Inputs, Value Output, NodeKernel Run);

    internal readonly List<ValueInfo> values = [];
    internal readonly List<NodeInfo> nodes = [];
    internal readonly HashSet<int> outputs = [];
    readonly HashSet<string> names = new(StringComparer.Ordinal);

    public int NodeCount => nodes.Count;
    public IEnumerable<string> NodeNames => nodes.Select(n => n.Name);

    Value Add(ValueInfo v)
    {
        if (!names.Add(v.Name)) throw new ArgumentException($"graph: the name '{v.Name}' is used twice");
        values.Add(v);
        return new Value(values.Count - 1);
    }

    /// <summary>A value the caller fills before each run (token ids, positions); it lives in the arena.</summary>
    public Value Input(string name, DType dtype, Shape shape) => Add(new(name, dtype, shape, Kind.Input, default, -1, -1));

    /// <summary>A tensor owned elsewhere (a weight in the model arena, a KV cache).</summary>
    public Value Bind(string name, Tensor tensor) => Add(new(name, tensor.DType, tensor.Shape, Kind.Bound, tensor, -1, -1));

    /// <summary>Adds a node computing a new value of <paramref name="dtype"/> and <paramref name="shape"/>.</summary>
    public Value Node(string name, DType dtype, Shape shape, Value[] inputs, NodeKernel run, Value? inPlaceOf = null)
    {
        foreach (var i in inputs) Check(i, name);
        int alias = -1;
        if (inPlaceOf is { } ip)
        {
            Check(ip, name);
            var src = values[ip.Id];
            if (src.Kind == Kind.Bound) throw new ArgumentException($"graph: node '{name}' cannot write in place into the bound tensor '{src.Name}'");
            if (src.Bytes < dtype.BytesOf(shape.Elements))
                throw new ArgumentException($"graph: node '{name}' ({dtype}{shape}) does not fit in place of '{src.Name}' ({src.DType}{src.Shape})");
            alias = ip.Id;
        }
        var v = Add(new(name, dtype, shape, Kind.Node, default, nodes.Count, alias));
        nodes.Add(new NodeInfo(name, inputs, v, run));
        return v;
    }

    /// <summary>
    /// A named view: elements [<paramref name="offsetElements"/>, +|<paramref name="shape"/>|) of <paramref name="of"/>'s
    /// storage, as a node that launches nothing — so a fused producer (q|k|v in one projection) still offers its parts
    /// under their own names to consumers and dumps. Writing a view in place writes <paramref name="of"/>.
    /// </summary>
    public Value View(string name, Value of, long offsetElements, Shape shape)
    {
        Check(of, name);
        var src = values[of.Id];
        if (src.Kind == Kind.Bound) throw new ArgumentException($"graph: view '{name}' of the bound tensor '{src.Name}': slice the tensor instead");
        long at = src.DType.BytesOf(offsetElements), bytes = src.DType.BytesOf(shape.Elements);
        if (offsetElements < 0 || at + bytes > src.Bytes)
            throw new ArgumentException($"graph: view '{name}' ({shape} at element {offsetElements}) lies outside '{src.Name}' ({src.DType}{src.Shape})");
        var v = Add(new(name, src.DType, shape, Kind.Node, default, nodes.Count, of.Id, at));
        nodes.Add(new NodeInfo(name, [of], v, static (in NodeContext _) => { }));
        return v;
    }

    /// <summary>Bytes from the storage root to value <paramref name="id"/> (views add up along an alias chain).</summary>
    internal long RootOffset(int id) { long o = 0; while (values[id].AliasOf >= 0) { o += values[id].AliasOffset; id = values[id].AliasOf; } return o; }

    /// <summary>Keeps a value alive to the end of the run (and never reuses its storage): a result to read.</summary>
    public void Output(Value v) { Check(v, "output"); outputs.Add(v.Id); }

    internal int Root(int id) { while (values[id].AliasOf >= 0) id = values[id].AliasOf; return id; }

    void Check(Value v, string node)
    {
        if ((uint)v.Id >= (uint)values.Count) throw new ArgumentException($"graph: node '{node}' uses a value from another graph");
    }

    public Value this[string name] =>
        values.FindIndex(v => v.Name == name) is var i and >= 0 ? new Value(i) : throw new KeyNotFoundException($"graph has no value named '{name}'");

    /// <summary>Plans the arena for this graph on <paramref name="device"/> and allocates it.</summary>
    public GraphPlan Plan(Device device) => new(this, device);
}
