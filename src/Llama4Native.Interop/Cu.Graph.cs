using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>Flags of cuGraphInstantiateWithFlags (<c>CUgraphInstantiate_flags</c>).</summary>
[Flags]
internal enum CuGraphInstantiateFlags : ulong
{
    None = 0,
    /// <summary>Free graph-owned allocations at the end of each launch.</summary>
    AutoFreeOnLaunch = 1,
    /// <summary>Make the graph launchable from the device.</summary>
    DeviceLaunch = 4,
    /// <summary>Honour per-node priorities.</summary>
    UseNodePriority = 8,
}

internal static partial class Cu
{
    /// <summary>
    /// Turns a graph into an executable one: validates and preallocates everything a launch needs (ms for
    /// big graphs; do it once). The graph may be destroyed afterwards. Fails with
    /// CUDA_ERROR_INVALID_VALUE for unsupported node combinations.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGraphInstantiateWithFlags(out CUgraphExec phGraphExec, CUgraph hGraph, CuGraphInstantiateFlags flags);

    /// <summary>
    /// Queues one run of the whole graph on <paramref name="hStream"/> (one call instead of one per kernel).
    /// A graph exec runs at most once at a time: a second launch is ordered after the first.
    /// Kernel faults surface at the next synchronisation, as for plain launches.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream);

    /// <summary>Destroys an executable graph; queued launches still complete.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGraphExecDestroy(CUgraphExec hGraphExec);

    /// <summary>The nodes of a graph: with <paramref name="nodes"/> = 0, only their count in <paramref name="numNodes"/>.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGraphGetNodes(CUgraph hGraph, nint nodes, ref nuint numNodes);

    /// <summary>Destroys a graph (not the execs instantiated from it).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGraphDestroy(CUgraph hGraph);
}
