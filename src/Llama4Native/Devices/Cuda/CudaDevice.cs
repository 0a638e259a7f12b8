using Llama4Native.Interop;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Cuda;

/// <summary>
/// A CUDA GPU through the driver API. It owns its primary context and makes it current on the calling
/// thread before each call (there is no process-wide "current device"), and runs work on a non-blocking
/// stream of its own by default, so the decode step can be captured into a CUDA graph.
/// </summary>
internal sealed unsafe class CudaDevice : Device
{
    readonly CudaContext ctx;
    readonly CudaDeviceInfo info;
    readonly Stream defaultStream;
    readonly KernelLibrary kernels;
    bool disposed;

    public CudaDevice(int ordinal = 0)
    {
        CudaDriver.EnsureAvailable();
        info = CudaDriver.GetDeviceInfo(ordinal);
        ctx = CudaContext.RetainPrimary(ordinal);
        defaultStream = new Stream(ctx.CreateStream());
        // Hopper gets its arch-specific target (wgmma, TMA); others the plain SASS target.
        Arch = info.ComputeCapabilityMajor == 9 && info.ComputeCapabilityMinor == 0 ? "sm_90a" : info.SmArch;
        kernels = new KernelLibrary(this, new NvrtcKernelCompiler(Arch));
    }

    public CudaDeviceInfo Info => info;
    public override DeviceKind Kind => DeviceKind.Cuda;
    public override string Name => info.Name;
    public override string Arch { get; }
    public override long TotalMemory => info.TotalMemoryBytes;
    public override long FreeMemory => ctx.GetMemoryInfo().Free;
    public override DeviceStream DefaultStream => defaultStream;
    public override KernelLibrary Kernels => kernels;

    CUstream S(DeviceStream? s) => ((Stream)(s ?? defaultStream)).Native.Handle;

    public override DeviceStream CreateStream() => new Stream(ctx.CreateStream());
    public override DeviceEvent CreateEvent(bool timing = false) =>
        new Event(ctx.CreateEvent(timing ? CuEventFlags.Default : CuEventFlags.DisableTiming), defaultStream);

    public override DeviceBuffer Allocate(long bytes)
    {
        try { return new Buffer(this, ctx.Allocate(Math.Max(bytes, 1)), bytes); }
        catch (CudaException e) when (e.Result == CUresult.CUDA_ERROR_OUT_OF_MEMORY)
        {
            var (free, total) = ctx.GetMemoryInfo();
            throw new DeviceOutOfMemoryException(
                $"out of device memory on {info.Name}: asked for {Format.Bytes(bytes)}, {Format.Bytes(free)} free of {Format.Bytes(total)}. " +
                "Use a smaller model, a quantised format, or a shorter context.", bytes, free, e);
        }
    }

    public override HostBuffer AllocatePinned(long bytes) => new Pinned(ctx.AllocatePinned(Math.Max(bytes, 1)), bytes);

    public override void CopyHostToDevice(void* src, DevicePtr dst, long bytes, DeviceStream? stream = null) =>
        ctx.CopyHostToDeviceAsync(src, new CUdeviceptr(dst.Value), bytes, S(stream));
    public override void CopyDeviceToHost(DevicePtr src, void* dst, long bytes, DeviceStream? stream = null) =>
        ctx.CopyDeviceToHostAsync(new CUdeviceptr(src.Value), dst, bytes, S(stream));
    public override void CopyDeviceToDevice(DevicePtr src, DevicePtr dst, long bytes, DeviceStream? stream = null) =>
        ctx.CopyDeviceToDeviceAsync(new CUdeviceptr(src.Value), new CUdeviceptr(dst.Value), bytes, S(stream));
    public override void Memset(DevicePtr dst, byte value, long bytes, DeviceStream? stream = null) =>
        ctx.MemsetAsync(new CUdeviceptr(dst.Value), value, bytes, S(stream));

    public override KernelModule LoadModule(CompiledModule compiled) => new Module(ctx.LoadModule(compiled.Image), compiled);

    public override void Launch(KernelFunction function, Dim3 grid, Dim3 block, uint sharedBytes, void** args, DeviceStream? stream = null)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var fn = ((Module)function.Module).Function(function.Name);
        // Above 48 KiB a kernel must opt in to dynamic shared memory, once per function.
        if (sharedBytes > 48 * 1024 && function.MaxDynamicSharedOptIn < sharedBytes)
        {
            if (sharedBytes > info.MaxSharedMemoryPerBlockOptinBytes)
                throw new ArgumentException($"kernel {function.Name} asks for {sharedBytes} B of shared memory; {info.Name} allows {info.MaxSharedMemoryPerBlockOptinBytes} B");
            fn.SetMaxDynamicSharedMemory((int)sharedBytes);
            function.MaxDynamicSharedOptIn = sharedBytes;
        }
        // CudaFunction.Launch checks the result and, with CudaDebug.SyncAfterLaunch, synchronises and names the kernel.
        fn.Launch(new LaunchDims(grid.X, grid.Y, grid.Z), new LaunchDims(block.X, block.Y, block.Z), sharedBytes, S(stream), args);
    }

    public override void Synchronize() => ctx.Synchronize();

    // --- graph capture: cuStreamBeginCapture (thread-local mode) → cuStreamEndCapture → cuGraphInstantiate; replay with cuGraphLaunch.
    public override bool CanCapture => true;

    public override void BeginCapture(DeviceStream? stream = null) =>
        ((Stream)(stream ?? defaultStream)).Native.BeginCapture();

    public override DeviceGraph EndCapture(DeviceStream? stream = null)
    {
        using var g = ((Stream)(stream ?? defaultStream)).Native.EndCapture();
        return new Graph(g.Instantiate(), this, CountNodes(g));
    }

    static int CountNodes(CudaGraph g)
    {
        nuint n = 0;
        return Cu.cuGraphGetNodes(g.Handle, 0, ref n) == CUresult.CUDA_SUCCESS ? (int)n : -1;
    }

    sealed class Graph(CudaGraphExec exec, CudaDevice dev, int nodes) : DeviceGraph
    {
        public override int Nodes => nodes;
        public override void Launch(DeviceStream? stream = null) => exec.Launch(dev.S(stream));
        public override void Dispose() => exec.Dispose();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposed) return;
        disposed = true;
        kernels.Dispose();
        defaultStream.Dispose();
        ctx.Dispose();
    }

    sealed class Buffer(CudaDevice dev, CudaDeviceMemory mem, long bytes) : DeviceBuffer
    {
        public override Device Device => dev;
        public override DevicePtr Ptr => new(mem.Ptr.Value);
        public override long Bytes => bytes;
        public override void Dispose() => mem.Dispose();
    }

    sealed class Pinned(CudaPinnedMemory mem, long bytes) : HostBuffer
    {
        public override void* Pointer => mem.Pointer;
        public override long Bytes => bytes;
        public override void Dispose() => mem.Dispose();
    }

    sealed class Stream(CudaStream s) : DeviceStream
    {
        public CudaStream Native => s;
        public override void Synchronize() => s.Synchronize();
        public override nint Handle => s.Handle.Value;
        public override void Dispose() => s.Dispose();
    }

    sealed class Event(CudaEvent e, Stream defaultStream) : DeviceEvent
    {
        public override void Record(DeviceStream? stream = null) => e.Record(((Stream)(stream ?? defaultStream)).Native.Handle);
        public override void Synchronize() => e.Synchronize();
        public override float ElapsedMs(DeviceEvent end) => e.ElapsedMilliseconds(((Event)end).Native);
        CudaEvent Native => e;
        public override void Dispose() => e.Dispose();
    }

    sealed class Module(CudaModule m, CompiledModule compiled) : KernelModule
    {
        readonly System.Collections.Concurrent.ConcurrentDictionary<string, CudaFunction> fns = new();
        public CompiledModule Compiled => compiled;
        public CudaFunction Function(string name) => fns.GetOrAdd(name, m.GetFunction);
        public override KernelFunction GetFunction(string name) => new(name, Function(name).Handle.Value, this);
        public override void Dispose() => m.Dispose();
    }
}
