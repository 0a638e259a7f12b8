using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>The collectives a sharded graph uses (the names its nodes carry and `plan` counts).</summary>
internal enum CollectiveKind { AllReduce, AllGather, ReduceScatter, AllToAll, Broadcast }

/// <summary>
/// One rank's membership of a group of devices: the ONE interface the sharded graph calls for communication (never
/// NCCL directly). Two implementations with the same semantics: <see cref="InProcessCommunicator"/> (emulated devices,
/// or any devices in one process, through host copies) and <see cref="NcclCommunicator"/> (CUDA devices, NCCL).
/// <para>
/// Semantics (NCCL's): every rank of the group issues the same collectives in the same order with matching sizes;
/// a call is ordered on its stream like a kernel launch and its output is valid for the work queued
/// after it. Counts are elements of the tensors' dtype (f32, bf16, i32; sums in f32 for bf16, rounded once). One
/// thread driving several ranks brackets each collective's per-rank calls with <see cref="CommunicatorGroup.GroupStart"/>
/// and <see cref="CommunicatorGroup.GroupEnd"/>, as NCCL requires.
/// </para>
/// </summary>
internal abstract class Communicator : IDisposable
{
    public abstract int Rank { get; }
    public abstract int Size { get; }
    public abstract Device Device { get; }
    /// <summary>"in-process" or "nccl".</summary>
    public abstract string Backend { get; }

    /// <summary>recv = Σ over ranks of send (same shape; recv may be send: in place).</summary>
    public abstract void AllReduceSum(Tensor send, Tensor recv, DeviceStream? stream = null);
    /// <summary>recv [Size·n] = every rank's send [n], rank r's at r·n.</summary>
    public abstract void AllGather(Tensor send, Tensor recv, DeviceStream? stream = null);
    /// <summary>send [Size·n]; rank r receives recv [n] = Σ over ranks of their block r.</summary>
    public abstract void ReduceScatterSum(Tensor send, Tensor recv, DeviceStream? stream = null);
    /// <summary>
    /// All-to-all(v): this rank sends <paramref name="sendCounts"/>[p] elements to rank p (consecutive blocks of send, in
    /// rank order) and receives <paramref name="recvCounts"/>[p] from rank p (consecutive blocks of recv). Counts may be
    /// uneven and zero; what rank a sends to b must equal what b expects from a.
    /// </summary>
    public abstract void AllToAllV(Tensor send, ReadOnlySpan<long> sendCounts, Tensor recv, ReadOnlySpan<long> recvCounts, DeviceStream? stream = null);
    /// <summary>recv = root's send on every rank (send is read on the root only).</summary>
    public abstract void Broadcast(Tensor send, Tensor recv, int root, DeviceStream? stream = null);

    /// <summary>All-to-all with equal blocks: send and recv hold Size blocks of the same size.</summary>
    public void AllToAll(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        if (send.Elements % Size != 0 || recv.Elements != send.Elements)
            throw new ArgumentException($"all-to-all: send ({send.Elements}) and recv ({recv.Elements}) must be equal and divisible by the {Size} ranks");
        var counts = new long[Size];
        Array.Fill(counts, send.Elements / Size);
        AllToAllV(send, counts, recv, counts, stream);
    }

    /// <summary>Checks shared by both implementations (so the emulator refuses what NCCL would).</summary>
    protected void CheckPair(string op, Tensor send, Tensor recv, long sendElements, long recvElements)
    {
        if (send.DType != recv.DType) throw new ArgumentException($"{op}: send is {send.DType} but recv is {recv.DType}; they must match");
        bool sums = op is "all-reduce" or "reduce-scatter";
        if (sums ? send.DType is not (DType.F32 or DType.BF16 or DType.F16 or DType.I32) : send.DType == DType.I4)
            throw new ArgumentException($"{op}: {send.DType} is not a {(sums ? "summable dtype (f32, bf16, f16, i32)" : "byte-addressable dtype")}");
        if (send.Elements != sendElements || recv.Elements != recvElements)
            throw new ArgumentException($"{op} on rank {Rank} of {Size}: send has {send.Elements} and recv {recv.Elements} elements; expected {sendElements} and {recvElements}");
    }

    /// <summary>The all-to-all(v) counts checked against the tensors (both implementations for the emulator).</summary>
    protected void CheckAllToAll(Tensor send, ReadOnlySpan<long> sendCounts, Tensor recv, ReadOnlySpan<long> recvCounts)
    {
        if (sendCounts.Length != Size || recvCounts.Length != Size)
            throw new ArgumentException($"all-to-all: {sendCounts.Length} send and {recvCounts.Length} receive counts for {Size} ranks");
        long s = 0, r = 0;
        foreach (var c in sendCounts) s += c >= 0 ? c : throw new ArgumentException("all-to-all: a negative count");
        foreach (var c in recvCounts) r += c >= 0 ? c : throw new ArgumentException("all-to-all: a negative count");
        if (s > send.Elements || r > recv.Elements)
            throw new ArgumentException($"all-to-all on rank {Rank}: counts need {s} send / {r} recv elements; the tensors hold {send.Elements} / {recv.Elements}");
        if (send.DType != recv.DType) throw new ArgumentException($"all-to-all: send is {send.DType} but recv is {recv.DType}");
    }

    public abstract void Dispose();
}

/// <summary>Every rank of a group that this process drives, with the group brackets one driving thread needs.</summary>
internal abstract class CommunicatorGroup : IDisposable
{
    public abstract IReadOnlyList<Communicator> Ranks { get; }
    public int Size => Ranks.Count;
    /// <summary>Opens a bracket: the collectives issued until <see cref="GroupEnd"/> (one per rank) form one operation.</summary>
    public abstract void GroupStart();
    /// <summary>Closes the bracket; the in-process group checks that every rank issued every collective in it.</summary>
    public abstract void GroupEnd();
    public abstract void Dispose();
}
