using System.Diagnostics;
using System.Runtime.InteropServices;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Emulated;

/// <summary>Settings of the emulated device.</summary>
/// <param name="Threads">Worker threads that run blocks (0 = one per core).</param>
/// <param name="MemoryBytes">The "device memory" capacity it reports and enforces (0 = the host's available memory).</param>
/// <param name="Check">The checker (race, memory, sync, init; see <see cref="EmuCheck"/>): null = L4EMU_CHECK.
/// Any check makes the device compile the instrumented variant of each module and allocate with guard zones.</param>
internal sealed record EmuOptions(int Threads = 0, long MemoryBytes = 0, EmuCheck? Check = null);

/// <summary>
/// The emulated device: device memory is host memory, kernels are the same `.cu` files compiled by g++
/// against `kernels/emu/` (a fiber per CUDA thread). Work runs at once, in call order, on the calling
/// thread plus the emulator's worker pool, so streams are trivially ordered and events measure host time.
/// It enforces a memory capacity so out-of-memory paths can be exercised without a GPU.
/// </summary>
internal sealed unsafe class EmuDevice : Device
{
    readonly EmuRuntime rt;
    readonly long capacity;
    long used;
    readonly EmuStream defaultStream = new();
    readonly KernelLibrary kernels;
    readonly bool instrumented;
    EmuCheck check;
    bool disposed;

    /// <summary>Guard bytes on each side of a checked allocation (a multiple of the 256-byte alignment).</summary>
    public const long GuardBytes = 256;

    public EmuDevice(EmuOptions? options = null, EmuCompiler? compiler = null)
    {
        options ??= new EmuOptions();
        var check = options.Check ?? EmuChecks.FromEnvironment();
        var comp = compiler ?? new EmuCompiler(instrumented: check != EmuCheck.None);
        if (check != EmuCheck.None && !comp.Instrumented)
            throw new ArgumentException($"emulator checks ({check}) need the instrumented kernel variant: pass new EmuCompiler(instrumented: true) or no compiler");
        instrumented = comp.Instrumented;
        this.check = check;
        rt = EmuRuntime.Get(comp.RuntimePath);
        int threads = options.Threads > 0 ? options.Threads : Environment.ProcessorCount;
        rt.SetThreads(threads);
        Threads = threads;
        capacity = options.MemoryBytes > 0 ? options.MemoryBytes : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        kernels = new KernelLibrary(this, comp);
    }

    public int Threads { get; }

    /// <summary>The checks every launch runs (settable per launch on a device built with checks; a checked
    /// launch runs its blocks one at a time). A report fails the launch with an <see cref="EmulatorException"/>.</summary>
    public EmuCheck Check
    {
        get => check;
        set
        {
            if (value != EmuCheck.None && !instrumented)
                throw new InvalidOperationException("this emulated device was created without checks, so its kernels are not instrumented: create it with EmuOptions(Check: ...) or L4EMU_CHECK");
            check = value;
        }
    }
    /// <summary>The memory-efficiency analysis of the launches made with <see cref="EmuCheck.Analyze"/> since the
    /// last reset: one row per access site (see <see cref="EmuSiteStats"/>).</summary>
    public IReadOnlyList<EmuSiteStats> Analysis(bool reset = true) =>
        rt.AnalysisReport(reset).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(EmuSiteStats.Parse).ToList();

    /// <summary>True when kernels are the instrumented variant and allocations have guard zones.</summary>
    public bool Instrumented => instrumented;
    public override DeviceKind Kind => DeviceKind.Emulated;
    public override string Name => $"emulated device ({Threads} host threads, {rt.Version})";
    public override string Arch => "emu";
    public override long TotalMemory => capacity;
    public override long FreeMemory => capacity - Interlocked.Read(ref used);
    public override DeviceStream DefaultStream => defaultStream;
    public override KernelLibrary Kernels => kernels;

    public override DeviceStream CreateStream() => new EmuStream();
    public override DeviceEvent CreateEvent(bool timing = false) => new EmuEvent();

    public override DeviceBuffer Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        NoCapture($"an allocation of {bytes} B");
        if (Interlocked.Add(ref used, bytes) > capacity)
        {
            Interlocked.Add(ref used, -bytes);
            throw new DeviceOutOfMemoryException(
                $"out of device memory on the emulated device: asked for {Format.Bytes(bytes)}, {Format.Bytes(FreeMemory)} free of {Format.Bytes(capacity)}. " +
                "Use a smaller model or context, or raise EmuOptions.MemoryBytes.", bytes, FreeMemory);
        }
        long guard = instrumented ? GuardBytes : 0;
        void* p = bytes == 0 ? null : NativeMemory.AlignedAlloc((nuint)(Math.Max(bytes, 1) + 2 * guard), 256);
        if (p == null && bytes != 0)
        {
            Interlocked.Add(ref used, -bytes);
            throw new DeviceOutOfMemoryException($"out of host memory backing the emulated device: asked for {Format.Bytes(bytes)}", bytes, FreeMemory);
        }
        if (p != null && instrumented)
        {
            // Poisoned (0xff: NaN in f32/bf16) so a read of never-written memory shows even unchecked; the
            // checker's init shadow says "never written" until an upload, memset or kernel store.
            NativeMemory.Fill(p, (nuint)(bytes + 2 * guard), 0xff);
            p = (byte*)p + guard;
            if (!rt.RegisterMemory(p, bytes, guard))
            {
                NativeMemory.AlignedFree((byte*)p - guard);
                Interlocked.Add(ref used, -bytes);
                throw new DeviceOutOfMemoryException($"out of host memory for the checker's shadow of {Format.Bytes(bytes)}", bytes, FreeMemory);
            }
        }
        return new EmuBuffer(this, p, bytes, guard);
    }

    public override HostBuffer AllocatePinned(long bytes) => new AlignedHostBuffer(bytes);

    public override void CopyHostToDevice(void* src, DevicePtr dst, long bytes, DeviceStream? stream = null)
    {
        NoCapture("a host-to-device copy");
        Buffer.MemoryCopy(src, (void*)dst.Value, bytes, bytes);
        if (instrumented) rt.MarkWritten((void*)dst.Value, bytes);
    }
    public override void CopyDeviceToHost(DevicePtr src, void* dst, long bytes, DeviceStream? stream = null)
    {
        NoCapture("a device-to-host copy");
        Buffer.MemoryCopy((void*)src.Value, dst, bytes, bytes);
    }
    public override void CopyDeviceToDevice(DevicePtr src, DevicePtr dst, long bytes, DeviceStream? stream = null)
    {
        if (capture.Active) { capture.Add(EmuGraph.Node.Copy(src, dst, bytes)); return; }
        Buffer.MemoryCopy((void*)src.Value, (void*)dst.Value, bytes, bytes);
        if (instrumented) rt.MarkWritten((void*)dst.Value, bytes);
    }
    public override void Memset(DevicePtr dst, byte value, long bytes, DeviceStream? stream = null)
    {
        if (capture.Active) { capture.Add(EmuGraph.Node.Fill(dst, value, bytes)); return; }
        NativeMemory.Fill((void*)dst.Value, (nuint)bytes, value);
        if (instrumented) rt.MarkWritten((void*)dst.Value, bytes);
    }

    public override KernelModule LoadModule(CompiledModule compiled) =>
        new EmuModule(compiled, rt);

    public override void Launch(KernelFunction function, Dim3 grid, Dim3 block, uint sharedBytes, void** args, DeviceStream? stream = null)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (capture.Active) { capture.Add(EmuGraph.Node.Launch(function, grid, block, sharedBytes, args)); return; }
        LaunchObserver?.Invoke(function, grid, block, sharedBytes);
        rt.Launch(function, grid, block, sharedBytes, args, check);
    }

    public override void Synchronize() => NoCapture("a host synchronisation");

    // --- graph capture: the launch list (argument values copied) replayed in order, as a CUDA graph would run it.
    readonly GraphCapture<EmuGraph.Node> capture = new();

    void NoCapture(string what)
    {
        capture.Refuse(what, "a captured step may not allocate, touch the host or synchronise");
    }

    public override bool CanCapture => true;

    public override void BeginCapture(DeviceStream? stream = null) => capture.Begin();

    public override DeviceGraph EndCapture(DeviceStream? stream = null) => new EmuGraph(this, capture.End());

    /// <summary>Marks bytes written for the checker's init check (a replayed copy or fill).</summary>
    internal void Written(DevicePtr dst, long bytes) { if (instrumented) rt.MarkWritten((void*)dst.Value, bytes); }

    internal void Replay(EmuGraph.Node n)
    {
        NoCapture("a graph launch");
        n.Run(this, rt);
    }

    /// <summary>Called with every launch before it runs (tests compare the launch list with the recording device's).</summary>
    public Action<KernelFunction, Dim3, Dim3, uint>? LaunchObserver { get; set; }

    protected override void Dispose(bool disposing)
    {
        if (disposed) return;
        disposed = true;
        kernels.Dispose();
    }

    internal void Release(long bytes) => Interlocked.Add(ref used, -bytes);

    sealed class EmuBuffer(EmuDevice dev, void* p, long bytes, long guard) : DeviceBuffer
    {
        void* ptr = p;
        public override Device Device => dev;
        public override DevicePtr Ptr => new((ulong)ptr);
        public override long Bytes => bytes;
        public override void Dispose()
        {
            var q = ptr;
            ptr = null;
            if (q == null) return;
            if (guard != 0) dev.rt.UnregisterMemory(q);
            NativeMemory.AlignedFree((byte*)q - guard);
            dev.Release(bytes);
        }
    }

    sealed class EmuStream : DeviceStream
    {
        public override void Synchronize() { }
        public override nint Handle => 0;
        public override void Dispose() { }
    }

    sealed class EmuEvent : DeviceEvent
    {
        long stamp;
        public override void Record(DeviceStream? stream = null) => stamp = Stopwatch.GetTimestamp();
        public override void Synchronize() { }
        public override float ElapsedMs(DeviceEvent end) =>
            (float)Stopwatch.GetElapsedTime(stamp, ((EmuEvent)end).stamp).TotalMilliseconds;
        public override void Dispose() { }
    }
}

/// <summary>One access site's memory efficiency (kernels/emu/runtime.cpp, "analysis"): warp instructions, bytes
/// the lanes asked for, 32-byte sectors touched (global), wavefronts over phases (shared; 1.0 = no conflict).</summary>
internal sealed record EmuSiteStats(string Kernel, string Site, bool Shared, bool Store, long Instructions, long Bytes, long Sectors,
                                  long Wavefronts, long Phases, long MaxWays)
{
    /// <summary>Global: requested bytes ÷ (sectors × 32), as Nsight's load/store efficiency.</summary>
    public double Efficiency => Sectors == 0 ? 1 : (double)Bytes / (Sectors * 32.0);
    /// <summary>Shared: average bank-conflict ways per phase (1 = conflict-free).</summary>
    public double Ways => Phases == 0 ? 1 : (double)Wavefronts / Phases;

    internal static EmuSiteStats Parse(string line)
    {
        var f = line.Split('\t');
        return new(f[0], f[1].StartsWith("at ", StringComparison.Ordinal) ? f[1][3..] : f[1], f[2] == "shared", f[3] == "store",
                   long.Parse(f[4]), long.Parse(f[5]), long.Parse(f[6]), long.Parse(f[7]), long.Parse(f[8]), long.Parse(f[9]));
    }
}

/// <summary>Host memory aligned for vector copies; the emulator's (and a fallback) "pinned" buffer.</summary>
internal sealed unsafe class AlignedHostBuffer : HostBuffer
{
    void* p;
    readonly long bytes;
    public AlignedHostBuffer(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        this.bytes = bytes;
        p = NativeMemory.AlignedAlloc((nuint)Math.Max(1, bytes), 4096);
    }
    public override void* Pointer => p;
    public override long Bytes => bytes;
    public override void Dispose() { if (p != null) { NativeMemory.AlignedFree(p); p = null; } }
}
