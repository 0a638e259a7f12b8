using Llama4Native.Tensors;

namespace Llama4Native.Distributed;

/// <summary>
/// The host-side arithmetic of every collective, shared by the two host implementations so they cannot drift: the
/// in-process group (one process, every rank's bytes downloaded) and the socket group (rank 0 of a TCP star receives
/// every rank's bytes). Given each rank's contribution, <see cref="Combine"/> returns each rank's output — sums in f32
/// in rank order 0..n−1, bf16/f16 rounded once at the end (NCCL's semantics, see <see cref="Communicator"/>).
/// </summary>
internal static class HostCollectives
{
    /// <summary>One rank's call as the combiner sees it (the tensors stay with the caller).</summary>
    internal sealed record Arrival(CollectiveKind Kind, int Rank, DType DType, long Count, int Root, long[]? SendCounts, long[]? RecvCounts, string Description);

    /// <summary>Elements a rank contributes: its send, or nothing for a broadcast's non-root ranks.</summary>
    public static long SendElements(Arrival a, int size) => a.Kind switch
    {
        CollectiveKind.AllReduce or CollectiveKind.AllGather => a.Count,
        CollectiveKind.ReduceScatter => a.Count * size,
        CollectiveKind.Broadcast => a.Rank == a.Root ? a.Count : 0,
        CollectiveKind.AllToAll => a.SendCounts!.Sum(),
        _ => throw new ArgumentOutOfRangeException(nameof(a)),
    };

    /// <summary>Every rank issued the same collective (kind, dtype, count, root) and the all-to-all counts pair up; else
    /// an error naming both ranks' calls.</summary>
    public static void CheckMatch(IReadOnlyList<Arrival> calls)
    {
        var first = calls[0];
        foreach (var c in calls)
            if (c.Kind != first.Kind || c.DType != first.DType || c.Count != first.Count || c.Root != first.Root)
                throw new InvalidOperationException($"mismatched collective: rank {first.Rank} issued {first.Description} but rank {c.Rank} issued {c.Description}");
        if (first.Kind != CollectiveKind.AllToAll) return;
        int n = calls.Count;
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                if (calls[a].SendCounts![b] != calls[b].RecvCounts![a])
                    throw new InvalidOperationException($"all-to-all: rank {a} sends {calls[a].SendCounts![b]} elements to rank {b}, which expects {calls[b].RecvCounts![a]}");
    }

    /// <summary>Each rank's output bytes from each rank's contribution (<paramref name="sends"/>[r]: <see cref="SendElements"/>
    /// elements), indexed by rank; call <see cref="CheckMatch"/> first.</summary>
    public static byte[][] Combine(IReadOnlyList<Arrival> calls, IReadOnlyList<byte[]> sends)
    {
        var first = calls[0];
        int n = calls.Count;
        var dt = first.DType;
        int es = dt.Size();
        var outs = new byte[n][];
        switch (first.Kind)
        {
            case CollectiveKind.AllReduce:
            {
                var sum = new float[first.Count];
                for (int r = 0; r < n; r++)
                {
                    var part = InProcessGroup.ToFloats(sends[r], dt);
                    for (int i = 0; i < sum.Length; i++) sum[i] += part[i];
                }
                var bytes = InProcessGroup.FromFloats(sum, dt);
                for (int r = 0; r < n; r++) outs[r] = bytes;
                break;
            }
            case CollectiveKind.ReduceScatter:
            {
                for (int q = 0; q < n; q++)
                {
                    var sum = new float[first.Count];
                    for (int r = 0; r < n; r++)
                    {
                        var part = InProcessGroup.ToFloats(sends[r].AsSpan((int)(q * first.Count * es), (int)(first.Count * es)), dt);
                        for (int i = 0; i < sum.Length; i++) sum[i] += part[i];
                    }
                    outs[q] = InProcessGroup.FromFloats(sum, dt);
                }
                break;
            }
            case CollectiveKind.AllGather:
            {
                var joined = sends.SelectMany(a => a).ToArray();
                for (int r = 0; r < n; r++) outs[r] = joined;
                break;
            }
            case CollectiveKind.Broadcast:
                for (int r = 0; r < n; r++) outs[r] = sends[first.Root];
                break;
            case CollectiveKind.AllToAll:
                for (int q = 0; q < n; q++)
                {
                    var o = new byte[calls[q].RecvCounts!.Sum() * es];
                    long at = 0;
                    for (int p = 0; p < n; p++)
                    {
                        long off = calls[p].SendCounts!.Take(q).Sum() * es, len = calls[q].RecvCounts![p] * es;
                        sends[p].AsSpan((int)off, (int)len).CopyTo(o.AsSpan((int)at));
                        at += len;
                    }
                    outs[q] = o;
                }
                break;
        }
        return outs;
    }
}
