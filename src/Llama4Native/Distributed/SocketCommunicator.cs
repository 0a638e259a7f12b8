using System.Net.Sockets;
using System.Text;
using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>
/// One process's rank of a group spanning processes (and nodes) on emulated devices — or any device without NCCL —
/// over the <see cref="TcpRendezvous"/>'s star around rank 0: each collective, every rank sends rank 0 what it
/// issued (the call and its bytes); rank 0 checks the calls match, combines them with <see cref="HostCollectives"/>
/// (the arithmetic the in-process group uses: the same sums in the same rank order, so the same bits) and sends every
/// rank its output. A call returns when its output is on the device (one rank per process: no bracket is needed, and
/// <see cref="CommunicatorGroup.GroupStart"/> does nothing). A rank that stops answering is a
/// <see cref="TimeoutException"/> after <see cref="Timeout"/> naming it; a mismatch fails every rank with rank 0's message.
/// This is how the multi-process path (<c>--rank --world-size --init</c>) is tested without a GPU; on GPUs NCCL
/// carries the collectives and the rendezvous only hands out its unique id.
/// </summary>
internal sealed class SocketCommunicator : Communicator
{
    readonly TcpRendezvous net;
    long sequence;
    public override int Rank => net.Rank;
    public override int Size => net.World;
    public override Device Device { get; }
    public override string Backend => "tcp";
    /// <summary>How long a rank waits for the others in one collective.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(120);

    public SocketCommunicator(TcpRendezvous net, Device device) { this.net = net; Device = device; }

    public override void AllReduceSum(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("all-reduce", send, recv, send.Elements, send.Elements);
        Exchange(CollectiveKind.AllReduce, send, recv, send.Elements, -1, null, null, stream);
    }

    public override void AllGather(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("all-gather", send, recv, send.Elements, send.Elements * Size);
        Exchange(CollectiveKind.AllGather, send, recv, send.Elements, -1, null, null, stream);
    }

    public override void ReduceScatterSum(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("reduce-scatter", send, recv, recv.Elements * Size, recv.Elements);
        Exchange(CollectiveKind.ReduceScatter, send, recv, recv.Elements, -1, null, null, stream);
    }

    public override void AllToAllV(Tensor send, ReadOnlySpan<long> sendCounts, Tensor recv, ReadOnlySpan<long> recvCounts, DeviceStream? stream = null)
    {
        CheckAllToAll(send, sendCounts, recv, recvCounts);
        Exchange(CollectiveKind.AllToAll, send, recv, 0, -1, sendCounts.ToArray(), recvCounts.ToArray(), stream);
    }

    public override void Broadcast(Tensor send, Tensor recv, int root, DeviceStream? stream = null)
    {
        if ((uint)root >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(root), $"broadcast root {root} is not a rank of this {Size}-rank group");
        CheckPair("broadcast", send, recv, send.Elements, send.Elements);
        Exchange(CollectiveKind.Broadcast, send, recv, send.Elements, root, null, null, stream);
    }

    static string Describe(CollectiveKind kind, DType dt, long count, int root, long[]? sc, long[]? rc) => kind switch
    {
        CollectiveKind.AllToAll => $"all-to-all {dt} send [{string.Join(",", sc!)}] recv [{string.Join(",", rc!)}]",
        CollectiveKind.Broadcast => $"broadcast {dt}×{count} from rank {root}",
        _ => $"{kind} {dt}×{count}",
    };

    void Exchange(CollectiveKind kind, Tensor send, Tensor recv, long count, int root, long[]? sc, long[]? rc, DeviceStream? stream)
    {
        var dt = send.DType;
        var me = new HostCollectives.Arrival(kind, Rank, dt, count, root, sc, rc, Describe(kind, dt, count, root, sc, rc));
        long n = HostCollectives.SendElements(me, Size) * dt.Size();
        var mine = new byte[n];
        if (n > 0) Device.Download<byte>(send.Ptr, mine, stream);
        long seq = sequence++;
        byte[] output = Rank == 0 ? Combine(me, mine, seq) : AskRoot(me, mine, seq);
        if (output.Length > 0) Device.Upload<byte>(output, recv.Ptr, stream);
    }

    /// <summary>Rank 0: every rank's call and bytes in, each rank's output out.</summary>
    byte[] Combine(HostCollectives.Arrival me, byte[] mine, long seq)
    {
        var calls = new HostCollectives.Arrival[Size];
        var sends = new byte[Size][];
        calls[0] = me; sends[0] = mine;
        try
        {
            for (int r = 1; r < Size; r++)
            {
                var s = Stream(r);
                var rd = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
                long theirs = rd.ReadInt64();
                calls[r] = ReadArrival(rd, r);
                sends[r] = rd.ReadBytes(checked((int)rd.ReadInt64()));
                if (theirs != seq)
                    throw new InvalidOperationException($"rank {r} is at collective #{theirs} ({calls[r].Description}) but rank 0 at #{seq} ({me.Description}): " +
                                                        "every rank must issue the same collectives in the same order");
            }
            HostCollectives.CheckMatch(calls);
        }
        catch (Exception e)
        {
            var err = e is IOException io ? Lost(io, seq, me) : e;
            for (int r = 1; r < Size; r++) TrySend(r, err.Message, []);
            throw err;
        }
        var outs = HostCollectives.Combine(calls, sends);
        for (int r = 1; r < Size; r++) TrySend(r, null, outs[r]);
        return outs[0];
    }

    /// <summary>Other ranks: send the call to rank 0, wait for this rank's output.</summary>
    byte[] AskRoot(HostCollectives.Arrival me, byte[] mine, long seq)
    {
        var s = Stream(0);
        try
        {
            var wr = new BinaryWriter(s, Encoding.UTF8, leaveOpen: true);
            wr.Write(seq);
            WriteArrival(wr, me);
            wr.Write((long)mine.Length); wr.Write(mine); wr.Flush();
            var rd = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
            bool ok = rd.ReadBoolean();
            string message = rd.ReadString();
            var output = rd.ReadBytes(checked((int)rd.ReadInt64()));
            if (!ok) throw new InvalidOperationException($"rank {Rank}: {message}");
            return output;
        }
        catch (IOException e) { throw Lost(e, seq, me); }
    }

    NetworkStream Stream(int peer)
    {
        var s = net.Peers[peer] ?? throw new InvalidOperationException($"rank {Rank} has no connection to rank {peer}");
        s.ReadTimeout = (int)Timeout.TotalMilliseconds;
        return s;
    }

    Exception Lost(IOException e, long seq, HostCollectives.Arrival me)
    {
        bool timedOut = e.InnerException is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock };
        string who = Rank == 0 ? "a rank" : "rank 0";
        return timedOut
            ? new TimeoutException($"rank {Rank} of {Size} waited {Timeout.TotalSeconds:0.#} s in collective #{seq} ({me.Description}) at tcp://{net.Endpoint}: {who} never issued it (stopped or stuck; see its output)", e)
            : new IOException($"rank {Rank} of {Size} lost its connection in collective #{seq} ({me.Description}) at tcp://{net.Endpoint}: {who} exited or failed (see its output): {e.Message}", e);
    }

    void TrySend(int r, string? error, byte[] output)
    {
        try
        {
            var wr = new BinaryWriter(Stream(r), Encoding.UTF8, leaveOpen: true);
            wr.Write(error is null); wr.Write(error ?? ""); wr.Write((long)output.Length); wr.Write(output); wr.Flush();
        }
        catch (IOException) when (error is not null) { } // telling a rank that is gone about a failure
    }

    static void WriteArrival(BinaryWriter wr, HostCollectives.Arrival a)
    {
        wr.Write((int)a.Kind); wr.Write((int)a.DType); wr.Write(a.Count); wr.Write(a.Root); wr.Write(a.Description);
        wr.Write(a.SendCounts?.Length ?? -1);
        foreach (var c in a.SendCounts ?? []) wr.Write(c);
        foreach (var c in a.RecvCounts ?? []) wr.Write(c);
    }

    static HostCollectives.Arrival ReadArrival(BinaryReader rd, int rank)
    {
        var kind = (CollectiveKind)rd.ReadInt32();
        var dt = (DType)rd.ReadInt32();
        long count = rd.ReadInt64();
        int root = rd.ReadInt32();
        string desc = rd.ReadString();
        int n = rd.ReadInt32();
        long[]? sc = null, rc = null;
        if (n >= 0)
        {
            sc = new long[n]; rc = new long[n];
            for (int i = 0; i < n; i++) sc[i] = rd.ReadInt64();
            for (int i = 0; i < n; i++) rc[i] = rd.ReadInt64();
        }
        return new HostCollectives.Arrival(kind, rank, dt, count, root, sc, rc, desc);
    }

    public override void Dispose() => net.Dispose();
}

/// <summary>The one rank of a multi-process group this process drives (a socket or NCCL communicator).</summary>
internal sealed class SingleRankGroup(Communicator rank) : CommunicatorGroup
{
    public override IReadOnlyList<Communicator> Ranks { get; } = [rank];
    public override void GroupStart() { }
    public override void GroupEnd() { }
    public override void Dispose() => rank.Dispose();
}
