using Llama4Native.Devices;
using Llama4Native.Devices.Cuda;
using Llama4Native.Devices.Emulated;

namespace Llama4Native.Distributed;

/// <summary>One rank's place in a group: the plan it follows, its index, and its communicator.</summary>
internal sealed record RankContext(ShardingPlan Plan, int Rank, Communicator Comm);

/// <summary>
/// The devices one process drives, each a rank with its own device, stream, arena and weights (there is no process-
/// global current device), and the communicators between them: NCCL for several CUDA devices, in-process host
/// collectives for emulated ones. Specs: <c>emu:N</c> (N emulated devices), <c>cuda:0-7</c>, <c>cuda:0,1,3</c>, and the
/// single-device specs <see cref="DeviceFactory"/> takes (<c>auto</c>, <c>cuda</c>, <c>cuda:N</c>, <c>emu</c>).
/// </summary>
internal sealed class DeviceGroup : IDisposable
{
    public string Spec { get; }
    public IReadOnlyList<Device> Devices { get; }
    public CommunicatorGroup Comms { get; }
    /// <summary>The devices (ranks) this process drives.</summary>
    public int Size => Devices.Count;
    /// <summary>Ranks in the whole group, over every process: <see cref="Size"/> when one process drives them all.</summary>
    public int World { get; }
    /// <summary>The global rank of this process's first device (its devices are ranks FirstRank..FirstRank+Size−1).</summary>
    public int FirstRank { get; }

    DeviceGroup(string spec, Device[] devices, CommunicatorGroup comms, int world = 0, int firstRank = 0)
    { Spec = spec; Devices = devices; Comms = comms; World = world == 0 ? devices.Length : world; FirstRank = firstRank; }

    /// <summary>The single-device specs a group spec names, checked without touching any device.</summary>
    public static IReadOnlyList<string> Parse(string spec)
    {
        ArgumentException Bad(string why) => new($"--devices '{spec}': {why}; use emu:N, cuda:0-7, cuda:0,1 or a single device (auto, cuda, cuda:N, emu)");
        if (spec is "auto" or "cuda" or "emu") return [spec];
        int colon = spec.IndexOf(':');
        if (colon < 0) throw Bad("unknown device kind");
        string kind = spec[..colon], rest = spec[(colon + 1)..];
        if (kind == "emu")
        {
            if (!int.TryParse(rest, System.Globalization.NumberStyles.None, null, out int n) || n < 1 || n > 64)
                throw Bad("emu:N takes a count from 1 to 64");
            return Enumerable.Repeat("emu", n).ToArray();
        }
        if (kind != "cuda") throw Bad($"unknown device kind '{kind}'");
        var ordinals = new List<int>();
        foreach (var part in rest.Split(','))
        {
            var range = part.Split('-');
            if (range.Length is < 1 or > 2 || range.Any(x => !int.TryParse(x, System.Globalization.NumberStyles.None, null, out _)))
                throw Bad($"'{part}' is not an ordinal or a range a-b");
            int a = int.Parse(range[0]), b = int.Parse(range[^1]);
            if (b < a) throw Bad($"the range {part} is empty");
            for (int i = a; i <= b; i++) ordinals.Add(i);
        }
        if (ordinals.Distinct().Count() != ordinals.Count) throw Bad("a device is named twice");
        return ordinals.Select(o => $"cuda:{o}").ToArray();
    }

    /// <summary>Opens every device of <paramref name="spec"/> and connects them (NCCL needs libnccl.so.2 for several CUDA devices).</summary>
    public static DeviceGroup Create(string spec)
    {
        var specs = Parse(spec);
        var devices = new List<Device>();
        try
        {
            foreach (var s in specs) devices.Add(DeviceFactory.Create(s));
            CommunicatorGroup comms = devices.Count > 1 && devices.All(d => d is CudaDevice)
                ? NcclGroup.CreateLocal(devices.Cast<CudaDevice>().ToList())
                : new InProcessGroup(devices);
            return new DeviceGroup(spec, [.. devices], comms);
        }
        catch
        {
            foreach (var d in devices) d.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Rank <paramref name="rank"/> of a <paramref name="world"/>-rank group spanning processes (and nodes): this process
    /// drives ONE device (<paramref name="deviceSpec"/>, a single-device spec) and meets the others at
    /// <paramref name="init"/> (tcp://HOST:PORT, rank 0's address; see <see cref="TcpRendezvous"/>). On a CUDA device rank 0
    /// makes NCCL's unique id, the rendezvous hands it out and every rank calls ncclCommInitRank; on an emulated device the
    /// collectives run over the rendezvous's sockets (<see cref="SocketCommunicator"/>). Every rank must give the same
    /// <paramref name="tag"/> (the model and options), else every rank fails naming both.
    /// </summary>
    public static DeviceGroup Join(string deviceSpec, int rank, int world, string init, TimeSpan timeout, string tag = "")
    {
        if (Parse(deviceSpec).Count != 1)
            throw new ArgumentException($"--devices '{deviceSpec}' with --rank: each process of a multi-process group drives one device (--device cuda:N or emu); " +
                                        "to drive several devices from one process, leave out --rank/--world-size/--init");
        var device = DeviceFactory.Create(deviceSpec);
        try
        {
            CommunicatorGroup comms;
            string kind = device is CudaDevice ? "cuda" : "emu";
            if (device is CudaDevice cuda)
            {
                using var rv = TcpRendezvous.Join(init, rank, world, timeout, $"{tag} on {kind}", RootNcclId, keep: false);
                comms = NcclGroup.JoinRank(cuda, rank, world, Interop.ncclUniqueId.FromBytes(rv.Blob));
            }
            else
            {
                var rv = TcpRendezvous.Join(init, rank, world, timeout, $"{tag} on {kind}");
                comms = new SingleRankGroup(new SocketCommunicator(rv, device) { Timeout = timeout });
            }
            return new DeviceGroup($"{deviceSpec} rank {rank}/{world}", [device], comms, world, rank);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>Rank 0 of an NCCL group: the unique id every rank's ncclCommInitRank takes.</summary>
    static byte[] RootNcclId()
    {
        Interop.NcclLocator.Load();
        Interop.Nccl.Check(Interop.Nccl.ncclGetUniqueId(out var id));
        return id.ToBytes();
    }

    /// <summary>A group over devices the caller made (and keeps owning).</summary>
    public static DeviceGroup Over(IReadOnlyList<Device> devices, string spec = "custom") => new(spec, [.. devices], new InProcessGroup(devices)) { owns = false };

    bool owns = true;

    public void Dispose()
    {
        Comms.Dispose();
        if (owns) foreach (var d in Devices) d.Dispose();
    }
}
