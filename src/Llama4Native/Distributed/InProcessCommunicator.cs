using System.Runtime.InteropServices;
using Llama4Native.Devices;
using Llama4Native.Tensors;
using BF16 = Llama4Native.Reference.BF16;

namespace Llama4Native.Distributed;

/// <summary>
/// Collectives between devices of one process through host memory: the emulator's implementation (and a fallback for any
/// <see cref="Device"/>). Same semantics as NCCL (see <see cref="Communicator"/>): every rank issues the same calls in
/// the same order; the call that completes a collective (the last rank to arrive) downloads every rank's input,
/// combines on the host — sums in f32 in rank order 0..n−1, bf16/f16 rounded once at the end — and uploads every
/// rank's output. Inside a <see cref="CommunicatorGroup.GroupStart"/> bracket (one thread driving every rank, as the
/// sharded runner does) an early rank's call returns at once and the bracket's end checks that every rank issued it;
/// outside one (a thread per rank) a call blocks until the others arrive, and a rank that never comes is an error
/// after <see cref="InProcessGroup.Timeout"/> naming it. Mismatched calls (kind, dtype, sizes, root) fail on every rank
/// with a message naming both.
/// </summary>
internal sealed class InProcessCommunicator : Communicator
{
    readonly InProcessGroup group;
    public override int Rank { get; }
    public override int Size => group.Size;
    public override Device Device { get; }
    public override string Backend => "in-process";

    internal InProcessCommunicator(InProcessGroup group, int rank, Device device) { this.group = group; Rank = rank; Device = device; }

    public override void AllReduceSum(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("all-reduce", send, recv, send.Elements, send.Elements);
        group.Arrive(new Call(CollectiveKind.AllReduce, Rank, Device, stream, send, recv, send.Elements, -1, null, null));
    }

    public override void AllGather(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("all-gather", send, recv, send.Elements, send.Elements * Size);
        group.Arrive(new Call(CollectiveKind.AllGather, Rank, Device, stream, send, recv, send.Elements, -1, null, null));
    }

    public override void ReduceScatterSum(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("reduce-scatter", send, recv, recv.Elements * Size, recv.Elements);
        group.Arrive(new Call(CollectiveKind.ReduceScatter, Rank, Device, stream, send, recv, recv.Elements, -1, null, null));
    }

    public override void AllToAllV(Tensor send, ReadOnlySpan<long> sendCounts, Tensor recv, ReadOnlySpan<long> recvCounts, DeviceStream? stream = null)
    {
        CheckAllToAll(send, sendCounts, recv, recvCounts);
        group.Arrive(new Call(CollectiveKind.AllToAll, Rank, Device, stream, send, recv, 0, -1, sendCounts.ToArray(), recvCounts.ToArray()));
    }

    public override void Broadcast(Tensor send, Tensor recv, int root, DeviceStream? stream = null)
    {
        if ((uint)root >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(root), $"broadcast root {root} is not a rank of this {Size}-rank group");
        CheckPair("broadcast", send, recv, send.Elements, send.Elements);
        group.Arrive(new Call(CollectiveKind.Broadcast, Rank, Device, stream, send, recv, send.Elements, root, null, null));
    }

    public override void Dispose() { }

    internal sealed record Call(CollectiveKind Kind, int Rank, Device Device, DeviceStream? Stream, Tensor Send, Tensor Recv, long Count, int Root,
                                long[]? SendCounts, long[]? RecvCounts)
    {
        public string Describe() => Kind switch
        {
            CollectiveKind.AllToAll => $"all-to-all {Send.DType} send [{string.Join(",", SendCounts!)}] recv [{string.Join(",", RecvCounts!)}]",
            CollectiveKind.Broadcast => $"broadcast {Send.DType}×{Count} from rank {Root}",
            _ => $"{Kind} {Send.DType}×{Count}",
        };
    }
}

/// <summary>The shared state of an in-process group: the collective being assembled and its arrivals.</summary>
internal sealed class InProcessGroup : CommunicatorGroup
{
    readonly InProcessCommunicator[] ranks;
    readonly object gate = new();
    InProcessCommunicator.Call?[] pending;
    long sequence;          // collectives completed
    Exception? failure;     // of the last completed collective, rethrown to its waiters
    int bracket;            // nesting depth of GroupStart on the driving thread
    /// <summary>How long a rank waits (outside a group bracket) for the others before failing.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(120);

    public InProcessGroup(IReadOnlyList<Device> devices)
    {
        if (devices.Count < 1) throw new ArgumentException("a group needs at least one device");
        ranks = devices.Select((d, r) => new InProcessCommunicator(this, r, d)).ToArray();
        pending = new InProcessCommunicator.Call?[devices.Count];
    }

    public override IReadOnlyList<Communicator> Ranks => ranks;

    public override void GroupStart() { lock (gate) bracket++; }

    public override void GroupEnd()
    {
        lock (gate)
        {
            if (bracket == 0) throw new InvalidOperationException("GroupEnd without GroupStart");
            if (--bracket > 0) return;
            var came = pending.Where(c => c is not null).ToList();
            if (came.Count > 0)
            {
                var missing = Enumerable.Range(0, Size).Where(r => pending[r] is null).ToList();
                Array.Clear(pending);
                throw new InvalidOperationException($"collective #{sequence} ({came[0]!.Describe()}) was issued by rank(s) {string.Join(", ", came.Select(c => c!.Rank))} " +
                    $"but not by {string.Join(", ", missing)} before GroupEnd: every rank must issue the same collectives in the same order");
            }
        }
    }

    internal void Arrive(InProcessCommunicator.Call call)
    {
        lock (gate)
        {
            if (pending[call.Rank] is { } earlier)
                throw new InvalidOperationException($"rank {call.Rank} issued {call.Describe()} while its {earlier.Describe()} (collective #{sequence}) still waits for the other ranks");
            pending[call.Rank] = call;
            long mine = sequence;
            if (pending.All(c => c is not null))
            {
                var calls = pending.Select(c => c!).ToArray();
                Array.Clear(pending);
                sequence++;
                failure = null;
                try { Execute(calls); }
                catch (Exception e) { failure = e; }
                Monitor.PulseAll(gate);
                if (failure is not null) throw failure;
                return;
            }
            if (bracket > 0) return; // the driving thread issues the other ranks next; GroupEnd checks
            var deadline = DateTime.UtcNow + Timeout;
            while (sequence == mine)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !Monitor.Wait(gate, left) && sequence == mine)
                {
                    var missing = Enumerable.Range(0, Size).Where(r => pending[r] is null).ToList();
                    pending[call.Rank] = null;
                    throw new TimeoutException($"rank {call.Rank} waited {Timeout.TotalSeconds:0} s in {call.Describe()} for rank(s) {string.Join(", ", missing)}, which never issued it");
                }
            }
            if (failure is not null) throw failure;
        }
    }

    static void Execute(InProcessCommunicator.Call[] calls)
    {
        var first = calls[0];
        var arrivals = calls.Select(c => new HostCollectives.Arrival(c.Kind, c.Rank, c.Send.DType, c.Count, c.Root, c.SendCounts, c.RecvCounts, c.Describe())).ToArray();
        HostCollectives.CheckMatch(arrivals);
        int es = first.Send.DType.Size();
        // What each rank contributes (only the root's send for a broadcast); the host combines; every rank gets its output.
        var sends = calls.Select(c => Download(c, c.Send.Ptr, HostCollectives.SendElements(arrivals[c.Rank], calls.Length) * es)).ToArray();
        var outs = HostCollectives.Combine(arrivals, sends);
        foreach (var c in calls) Upload(c, outs[c.Rank], c.Recv.Ptr);
    }

    static byte[] Download(InProcessCommunicator.Call c, DevicePtr src, long bytes)
    {
        var b = new byte[bytes];
        if (bytes > 0) c.Device.Download<byte>(src, b, c.Stream);
        return b;
    }

    static void Upload(InProcessCommunicator.Call c, byte[] bytes, DevicePtr dst)
    {
        if (bytes.Length > 0) c.Device.Upload<byte>(bytes, dst, c.Stream);
    }

    internal static float[] ToFloats(ReadOnlySpan<byte> b, DType dt)
    {
        switch (dt)
        {
            case DType.F32: return MemoryMarshal.Cast<byte, float>(b).ToArray();
            case DType.I32: return MemoryMarshal.Cast<byte, int>(b).ToArray().Select(v => (float)v).ToArray();
            case DType.BF16: { var u = MemoryMarshal.Cast<byte, ushort>(b); var f = new float[u.Length]; for (int i = 0; i < f.Length; i++) f[i] = BF16.ToFloat(u[i]); return f; }
            case DType.F16: { var h = MemoryMarshal.Cast<byte, Half>(b); var f = new float[h.Length]; for (int i = 0; i < f.Length; i++) f[i] = (float)h[i]; return f; }
            default: throw new NotSupportedException($"sums over {dt}");
        }
    }

    internal static byte[] FromFloats(float[] f, DType dt)
    {
        switch (dt)
        {
            case DType.F32: return MemoryMarshal.AsBytes(f.AsSpan()).ToArray();
            case DType.I32: return MemoryMarshal.AsBytes(f.Select(v => (int)v).ToArray().AsSpan()).ToArray();
            case DType.BF16: return MemoryMarshal.AsBytes(f.Select(BF16.FromFloat).ToArray().AsSpan()).ToArray();
            case DType.F16: return MemoryMarshal.AsBytes(f.Select(v => (Half)v).ToArray().AsSpan()).ToArray();
            default: throw new NotSupportedException($"sums over {dt}");
        }
    }

    public override void Dispose() { }
}
