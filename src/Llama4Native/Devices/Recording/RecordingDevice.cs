using Llama4Native.Devices.Emulated;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Recording;

/// <summary>What a <see cref="RecordingDevice"/> saw.</summary>
internal enum RecordedKind : byte { Launch, GraphLaunch, CopyHostToDevice, CopyDeviceToHost, CopyDeviceToDevice, Memset, HostSync }

/// <summary>One recorded operation. For a launch: the kernel (entry point and file), its configuration and the cost its
/// wrapper declared (<see cref="HasCost"/> false when it declared none); for a copy or memset: its bytes.
/// <see cref="InGraph"/>: executed as part of a replayed <see cref="DeviceGraph"/> (not issued by the host one by one).</summary>
internal readonly record struct RecordedOp(RecordedKind Kind, string Kernel, string File, Dim3 Grid, Dim3 Block, uint Shared,
                                         long Bytes, double Flops, bool HasCost, bool InGraph)
{
    public override string ToString() => Kind switch
    {
        RecordedKind.Launch => $"{(InGraph ? "[graph] " : "")}{File}:{Kernel} grid ({Grid.X},{Grid.Y},{Grid.Z}) block ({Block.X},{Block.Y},{Block.Z}) smem {Shared}" +
                               (HasCost ? $" bytes {Bytes} flops {Flops:g4}" : " (no cost declared)"),
        RecordedKind.GraphLaunch => $"graph launch #{Shared} ({Bytes} nodes)",
        RecordedKind.HostSync => "host sync",
        _ => $"{(InGraph ? "[graph] " : "")}{Kind} {Bytes} B",
    };
}

/// <summary>
/// A device that allocates nothing and runs nothing, and records everything: every launch (kernel, grid, block,
/// shared memory, and the bytes/FLOPs its wrapper declared through <see cref="Device.Cost"/>), every copy and memset,
/// every host synchronisation that waits on outstanding work, every graph launch. Addresses are fake (aligned,
/// never reused, never overlapping) and bytes are only counted, so the REAL graphs of a full-size model can be
/// built and "run" here — `llama4 plan` is the same code path as a real run, not a spreadsheet.
/// <para>
/// Reads from the device return zeros: nothing host-side may depend on device data for the plan to hold (the MoE
/// wrappers size their grids for the worst case; sampled ids read back as 0). Allocation, host copies and
/// synchronisation inside a graph capture throw, as they would break a CUDA capture.
/// </para>
/// </summary>
internal sealed unsafe class RecordingDevice : Device
{
    readonly List<RecordedOp> ops = [];
    readonly RecStream defaultStream;
    readonly KernelLibrary kernels;
    ulong next = 1UL << 40;          // fake addresses start at 1 TiB: never null, never a host address in practice
    long used, peak, allocations;
    KernelCost? pending;
    bool dirty;                       // device work issued since the last counted host sync
    readonly GraphCapture<RecordedOp> capture = new();

    /// <param name="capacity">The memory the device reports (never enforced: a plan says whether it fits).</param>
    public RecordingDevice(long capacity = 80L << 30, string name = "recording device")
    {
        TotalMemory = capacity;
        Name = name;
        defaultStream = new RecStream(this);
        kernels = new KernelLibrary(this, new RecordingCompiler());
    }

    public override DeviceKind Kind => DeviceKind.Recording;
    public override string Name { get; }
    public override string Arch => "record";
    public override long TotalMemory { get; }
    public override long FreeMemory => Math.Max(0, TotalMemory - used);
    public override DeviceStream DefaultStream => defaultStream;
    public override KernelLibrary Kernels => kernels;

    /// <summary>Bytes allocated now, at most so far, and the number of allocations.</summary>
    public long AllocatedBytes => used;
    public long PeakBytes => peak;
    public long Allocations => allocations;
    public IReadOnlyList<RecordedOp> Ops => ops;
    /// <summary>The current end of the record: summarise from here with <see cref="Summarize"/>.</summary>
    public int Mark => ops.Count;
    /// <summary>Forgets the record (counters of memory stay).</summary>
    public void ClearRecord() { ops.Clear(); dirty = false; }

    /// <summary>Totals over ops [from, to); a graph launch counts as one and its nodes are expanded (as executed).</summary>
    public TraceSummary Summarize(int from = 0, int to = -1)
    {
        to = to < 0 ? ops.Count : to;
        var expanded = new List<RecordedOp>(to - from);
        for (int i = from; i < to; i++)
        {
            expanded.Add(ops[i]);
            if (ops[i].Kind == RecordedKind.GraphLaunch) expanded.AddRange(graphs[(int)ops[i].Shared]);
        }
        return TraceSummary.Of(expanded, 0, expanded.Count);
    }

    readonly List<RecordedOp[]> graphs = []; // captured node lists; a graph launch records its index (cheap: the host cost is measured)

    public override DeviceStream CreateStream() => new RecStream(this);
    public override DeviceEvent CreateEvent(bool timing = false) => new RecEvent(this);

    public override DeviceBuffer Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        capture.Refuse($"allocation of {Format.Bytes(bytes)}", "allocate before capturing");
        var p = new DevicePtr(next);
        next += (ulong)((Math.Max(bytes, 1) + 4095) / 4096 * 4096) + 4096; // a guard page between buffers
        used += bytes; allocations++;
        peak = Math.Max(peak, used);
        return new RecBuffer(this, p, bytes);
    }

    public override HostBuffer AllocatePinned(long bytes) => new AlignedHostBuffer(bytes);

    void Add(RecordedOp op)
    {
        if (capture.Active) capture.Add(op with { InGraph = true });
        else { ops.Add(op); dirty = true; }
    }

    void NoCapture(string what)
    {
        capture.Refuse(what, "a captured step may not touch the host");
    }

    public override void CopyHostToDevice(void* src, DevicePtr dst, long bytes, DeviceStream? stream = null)
    {
        NoCapture($"a host-to-device copy of {bytes} B");
        Add(new(RecordedKind.CopyHostToDevice, "", "", default, default, 0, bytes, 0, true, false));
    }

    public override void CopyDeviceToHost(DevicePtr src, void* dst, long bytes, DeviceStream? stream = null)
    {
        NoCapture($"a device-to-host copy of {bytes} B");
        new Span<byte>(dst, checked((int)bytes)).Clear(); // device memory reads as zeros
        Add(new(RecordedKind.CopyDeviceToHost, "", "", default, default, 0, bytes, 0, true, false));
    }

    public override void CopyDeviceToDevice(DevicePtr src, DevicePtr dst, long bytes, DeviceStream? stream = null) =>
        Add(new(RecordedKind.CopyDeviceToDevice, "", "", default, default, 0, 2 * bytes, 0, true, false)); // read + write

    public override void Memset(DevicePtr dst, byte value, long bytes, DeviceStream? stream = null) =>
        Add(new(RecordedKind.Memset, "", "", default, default, 0, bytes, 0, true, false));

    public override KernelModule LoadModule(CompiledModule compiled) => new RecModule(compiled.SourceName);

    public override void Cost(long bytes, double flops) => pending = new KernelCost(bytes, flops);

    public override void Launch(KernelFunction function, Dim3 grid, Dim3 block, uint sharedBytes, void** args, DeviceStream? stream = null)
    {
        // The emulator's and CUDA's launch limits, so a plan cannot hide a launch a real device refuses.
        if (grid.Count == 0 || block.Count == 0)
            throw new ArgumentException($"kernel {function.Name}: empty launch (grid {grid}, block {block})");
        if (block.Count > 1024 || grid.Y > 65535 || grid.Z > 65535 || grid.X > int.MaxValue)
            throw new ArgumentException($"kernel {function.Name}: grid {grid} / block {block} exceeds CUDA's limits");
        var c = pending;
        pending = null;
        Add(new(RecordedKind.Launch, function.Name, ((RecModule)function.Module).File, grid, block, sharedBytes,
                c?.Bytes ?? 0, c?.Flops ?? 0, c.HasValue, false));
    }

    /// <summary>Counts a host sync when device work is outstanding (several waits in a row are one stall).</summary>
    internal void HostSync()
    {
        NoCapture("a host synchronisation");
        if (!dirty) return;
        ops.Add(new(RecordedKind.HostSync, "", "", default, default, 0, 0, 0, true, false));
        dirty = false;
    }

    public override void Synchronize() => HostSync();

    public override bool CanCapture => true;

    public override void BeginCapture(DeviceStream? stream = null) => capture.Begin();

    public override DeviceGraph EndCapture(DeviceStream? stream = null)
    {
        graphs.Add(capture.End());
        return new RecGraph(this, graphs.Count - 1, graphs[^1].Length);
    }

    protected override void Dispose(bool disposing) => kernels.Dispose();

    sealed class RecGraph(RecordingDevice dev, int index, int nodes) : DeviceGraph
    {
        public override int Nodes => nodes;
        public override void Launch(DeviceStream? stream = null)
        {
            dev.NoCapture("a graph launch");
            dev.ops.Add(new(RecordedKind.GraphLaunch, "", "", default, default, (uint)index, nodes, 0, true, false));
            dev.dirty = true;
        }
        public override void Dispose() { }
    }

    sealed class RecBuffer(RecordingDevice dev, DevicePtr p, long bytes) : DeviceBuffer
    {
        bool freed;
        public override Device Device => dev;
        public override DevicePtr Ptr => p;
        public override long Bytes => bytes;
        public override void Dispose()
        {
            if (freed) return;
            freed = true;
            dev.used -= bytes;
        }
    }

    sealed class RecStream(RecordingDevice dev) : DeviceStream
    {
        public override void Synchronize() => dev.HostSync();
        public override nint Handle => 0;
        public override void Dispose() { }
    }

    sealed class RecEvent(RecordingDevice dev) : DeviceEvent
    {
        public override void Record(DeviceStream? stream = null) { }
        public override void Synchronize() => dev.HostSync();
        public override float ElapsedMs(DeviceEvent end) => 0;
        public override void Dispose() { }
    }

    /// <summary>"Compiles" nothing: the file must exist, and entry points are checked against its source.</summary>
    sealed class RecordingCompiler : IKernelCompiler
    {
        public string Target => "record";
        public CompiledModule Compile(string file, KernelDefines defines)
        {
            KernelSources.Get(file); // throws naming the file when it is not embedded
            return new CompiledModule(file, file + defines, [], null, "");
        }
    }

    sealed class RecModule(string file) : KernelModule
    {
        readonly HashSet<string> entries = [.. KernelSources.EntryPoints(file)];
        public string File => file;
        public override KernelFunction GetFunction(string name) =>
            entries.Contains(name) ? new KernelFunction(name, 0, this)
            : throw new ArgumentException($"kernels/{file} has no kernel named '{name}' (entry points: {string.Join(", ", entries)})");
        public override void Dispose() { }
    }
}

/// <summary>Totals over a stretch of a <see cref="RecordingDevice"/>'s record.</summary>
/// <param name="Launches">kernels executed (issued one by one or inside a replayed graph)</param>
/// <param name="HostLaunches">kernel launches the host issued one by one</param>
/// <param name="GraphLaunches">graph launches</param>
/// <param name="Uncosted">launches whose wrapper declared no cost (their bytes and FLOPs count as 0)</param>
/// <param name="Bytes">declared kernel bytes plus device-to-device copy (read + write) and memset bytes</param>
/// <param name="HostBytes">bytes copied between host and device</param>
internal sealed record TraceSummary(int Launches, int HostLaunches, int GraphLaunches, int Copies, int HostSyncs, int Uncosted,
                                  long Bytes, long HostBytes, double Flops, IReadOnlyList<string> UncostedKernels,
                                  IReadOnlyList<RecordedOp> Items)
{
    public static TraceSummary Of(IReadOnlyList<RecordedOp> ops, int from, int to)
    {
        int launches = 0, host = 0, graphs = 0, copies = 0, syncs = 0, uncosted = 0;
        long bytes = 0, hostBytes = 0; double flops = 0;
        var missing = new SortedSet<string>(StringComparer.Ordinal);
        var items = new List<RecordedOp>(to - from);
        for (int i = from; i < to; i++)
        {
            var o = ops[i];
            items.Add(o);
            switch (o.Kind)
            {
                case RecordedKind.Launch:
                    launches++;
                    if (!o.InGraph) host++;
                    if (!o.HasCost) { uncosted++; missing.Add($"{o.File}:{o.Kernel}"); }
                    bytes += o.Bytes; flops += o.Flops;
                    break;
                case RecordedKind.GraphLaunch: graphs++; break;
                case RecordedKind.HostSync: syncs++; break;
                case RecordedKind.CopyHostToDevice or RecordedKind.CopyDeviceToHost: copies++; hostBytes += o.Bytes; break;
                default: copies++; bytes += o.Bytes; break;
            }
        }
        return new(launches, host, graphs, copies, syncs, uncosted, bytes, hostBytes, flops, [.. missing], items);
    }

    /// <summary>
    /// Roofline time: each launch takes max(bytes / bandwidth, FLOPs / peak), device copies bytes / bandwidth, host
    /// copies bytes / <paramref name="hostBytesPerSecond"/>. No launch latency and no overlap: a lower bound for the
    /// work as issued (with graphs and enough work per kernel, the gap to it is each kernel's efficiency).
    /// </summary>
    /// <param name="sms">when &gt; 0, a launch of fewer blocks than SMs gets only that fraction of the bandwidth and FLOPs
    /// (a grid that does not fill the chip cannot reach the roofline)</param>
    /// <param name="minKernelSeconds">the least any kernel takes (launch and tail latency, inside a graph too)</param>
    public double ModelledSeconds(double bytesPerSecond, double flopsPerSecond, double hostBytesPerSecond = 25e9, int sms = 0, double minKernelSeconds = 0)
    {
        double s = 0;
        foreach (var o in Items)
            s += o.Kind switch
            {
                RecordedKind.Launch => Math.Max(minKernelSeconds, Math.Max(o.Bytes / bytesPerSecond, o.Flops / flopsPerSecond)
                                                                  / (sms > 0 ? Math.Min(1.0, (double)o.Grid.Count / sms) : 1.0)),
                RecordedKind.CopyDeviceToDevice or RecordedKind.Memset => o.Bytes / bytesPerSecond,
                RecordedKind.CopyHostToDevice or RecordedKind.CopyDeviceToHost => o.Bytes / hostBytesPerSecond,
                _ => 0,
            };
        return s;
    }
}
