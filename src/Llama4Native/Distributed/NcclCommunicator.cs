using Llama4Native.Devices;
using Llama4Native.Devices.Cuda;
using Llama4Native.Interop;
using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>
/// One rank's NCCL communicator on a CUDA device: every collective is one NCCL call on the rank's stream (all-to-all(v)
/// a group of ncclSend/ncclRecv, as NCCL documents it). Made by <see cref="NcclGroup"/>: one process driving all local
/// GPUs (ncclCommInitAll), or one rank of a multi-process group (ncclCommInitRank with an id from the rendezvous).
/// </summary>
internal sealed class NcclCommunicator : Communicator
{
    ncclComm_t comm;
    public override int Rank { get; }
    public override int Size { get; }
    public override Device Device { get; }
    public override string Backend => "nccl";
    public ncclComm_t Handle => comm;

    internal NcclCommunicator(ncclComm_t comm, int rank, int size, Device device) { this.comm = comm; Rank = rank; Size = size; Device = device; }

    /// <summary>The NCCL datatype of a tensor dtype.</summary>
    public static ncclDataType_t DataType(DType t) => NcclCommunicatorTypes.DataTypeOf(t);

    nint S(DeviceStream? s) => (s ?? Device.DefaultStream).Handle;

    public override void AllReduceSum(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("all-reduce", send, recv, send.Elements, send.Elements);
        Nccl.Check(Nccl.ncclAllReduce(send.Ptr.Value, recv.Ptr.Value, (nuint)send.Elements, DataType(send.DType), ncclRedOp_t.ncclSum, comm, S(stream)));
    }

    public override void AllGather(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("all-gather", send, recv, send.Elements, send.Elements * Size);
        Nccl.Check(Nccl.ncclAllGather(send.Ptr.Value, recv.Ptr.Value, (nuint)send.Elements, DataType(send.DType), comm, S(stream)));
    }

    public override void ReduceScatterSum(Tensor send, Tensor recv, DeviceStream? stream = null)
    {
        CheckPair("reduce-scatter", send, recv, recv.Elements * Size, recv.Elements);
        Nccl.Check(Nccl.ncclReduceScatter(send.Ptr.Value, recv.Ptr.Value, (nuint)recv.Elements, DataType(send.DType), ncclRedOp_t.ncclSum, comm, S(stream)));
    }

    public override void AllToAllV(Tensor send, ReadOnlySpan<long> sendCounts, Tensor recv, ReadOnlySpan<long> recvCounts, DeviceStream? stream = null)
    {
        CheckAllToAll(send, sendCounts, recv, recvCounts);
        var dt = DataType(send.DType);
        int es = send.DType.Size();
        long so = 0, ro = 0;
        Nccl.Check(Nccl.ncclGroupStart());
        try
        {
            for (int p = 0; p < Size; p++)
            {
                if (sendCounts[p] > 0) Nccl.Check(Nccl.ncclSend((send.Ptr + so * es).Value, (nuint)sendCounts[p], dt, p, comm, S(stream)));
                if (recvCounts[p] > 0) Nccl.Check(Nccl.ncclRecv((recv.Ptr + ro * es).Value, (nuint)recvCounts[p], dt, p, comm, S(stream)));
                so += sendCounts[p]; ro += recvCounts[p];
            }
        }
        finally { Nccl.Check(Nccl.ncclGroupEnd()); }
    }

    public override void Broadcast(Tensor send, Tensor recv, int root, DeviceStream? stream = null)
    {
        CheckPair("broadcast", send, recv, send.Elements, send.Elements);
        Nccl.Check(Nccl.ncclBroadcast(send.Ptr.Value, recv.Ptr.Value, (nuint)send.Elements, DataType(send.DType), root, comm, S(stream)));
    }

    public override void Dispose()
    {
        if (comm.IsNull) return;
        Nccl.ncclCommDestroy(comm);
        comm = default;
    }
}

/// <summary>NCCL communicators for CUDA devices of this process.</summary>
internal sealed class NcclGroup : CommunicatorGroup
{
    readonly NcclCommunicator[] ranks;
    public override IReadOnlyList<Communicator> Ranks => ranks;

    NcclGroup(NcclCommunicator[] ranks) => this.ranks = ranks;

    /// <summary>One process, all of <paramref name="devices"/> (CUDA, distinct ordinals): ncclCommInitAll.</summary>
    public static unsafe NcclGroup CreateLocal(IReadOnlyList<CudaDevice> devices)
    {
        NcclLocator.Load();
        int n = devices.Count;
        var ordinals = devices.Select(d => d.Info.Ordinal).ToArray();
        var comms = new ncclComm_t[n];
        fixed (ncclComm_t* c = comms)
        fixed (int* o = ordinals)
            Nccl.Check(Nccl.ncclCommInitAll(c, n, o));
        return new NcclGroup(comms.Select((c, r) => new NcclCommunicator(c, r, n, devices[r])).ToArray());
    }

    /// <summary>Rank <paramref name="rank"/> of a <paramref name="world"/>-rank group spanning processes (and nodes), on
    /// <paramref name="device"/>; <paramref name="id"/> comes from rank 0's <see cref="Nccl.ncclGetUniqueId"/> via the rendezvous.</summary>
    public static NcclGroup JoinRank(CudaDevice device, int rank, int world, ncclUniqueId id)
    {
        NcclLocator.Load();
        Nccl.Check(Nccl.ncclCommInitRank(out var comm, world, id, rank));
        return new NcclGroup([new NcclCommunicator(comm, rank, world, device)]);
    }

    public override void GroupStart() => Nccl.Check(Nccl.ncclGroupStart());
    public override void GroupEnd() => Nccl.Check(Nccl.ncclGroupEnd());
    public override void Dispose() { foreach (var r in ranks) r.Dispose(); }
}

/// <summary>Tensor dtypes as NCCL datatypes (no library needed).</summary>
internal static class NcclCommunicatorTypes
{
    public static ncclDataType_t DataTypeOf(DType t) => t switch
    {
        DType.F32 => ncclDataType_t.ncclFloat32,
        DType.BF16 => ncclDataType_t.ncclBfloat16,
        DType.F16 => ncclDataType_t.ncclFloat16,
        DType.I32 => ncclDataType_t.ncclInt32,
        DType.I64 => ncclDataType_t.ncclInt64,
        DType.U8 or DType.F8E4M3 => ncclDataType_t.ncclUint8,
        _ => throw new ArgumentException($"NCCL has no datatype for {t}"),
    };
}
