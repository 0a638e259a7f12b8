using System.Runtime.InteropServices;

namespace Llama4Native.Devices;

/// <summary>A device address. On CUDA a CUdeviceptr; on the emulator a host address.</summary>
internal readonly record struct DevicePtr(ulong Value)
{
    public static readonly DevicePtr Null = default;
    public bool IsNull => Value == 0;
    public static DevicePtr operator +(DevicePtr p, long bytes) => new(p.Value + (ulong)bytes);
    public override string ToString() => $"0x{Value:x}";
}

internal enum DeviceKind { Cuda, Emulated, Recording }

/// <summary>Grid or block extent, as cuLaunchKernel takes it.</summary>
internal readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public ulong Count => (ulong)X * Y * Z;
    public static implicit operator Dim3(uint x) => new(x);
    public static implicit operator Dim3(int x) => new(checked((uint)x));
}

/// <summary>
/// One compute device. Everything the runtime does to a device goes through here, so the CUDA device
/// and the emulated device run the same graph, the same kernel wrappers and the same kernel source.
/// There is no "current device": every call names its device, so several devices can coexist.
/// Copies and launches are ordered on a <see cref="DeviceStream"/> (null = the device's default stream)
/// and are asynchronous on CUDA; the emulator executes them in order, at once.
/// </summary>
internal abstract class Device : IDisposable
{
    public abstract DeviceKind Kind { get; }
    /// <summary>Human-readable name, e.g. "NVIDIA H100 80GB HBM3" or "emulated (2 host threads)".</summary>
    public abstract string Name { get; }
    /// <summary>The NVRTC target this device runs, e.g. "sm_90a"; the emulator reports "emu".</summary>
    public abstract string Arch { get; }
    public abstract long TotalMemory { get; }
    public abstract long FreeMemory { get; }
    public abstract DeviceStream DefaultStream { get; }

    public abstract DeviceStream CreateStream();
    public abstract DeviceEvent CreateEvent(bool timing = false);

    /// <summary>Allocates device memory; throws <see cref="DeviceOutOfMemoryException"/> naming the size and what is free.</summary>
    public abstract DeviceBuffer Allocate(long bytes);
    /// <summary>Page-locked host memory for fast asynchronous copies (plain aligned memory on the emulator).</summary>
    public abstract HostBuffer AllocatePinned(long bytes);

    public abstract unsafe void CopyHostToDevice(void* src, DevicePtr dst, long bytes, DeviceStream? stream = null);
    public abstract unsafe void CopyDeviceToHost(DevicePtr src, void* dst, long bytes, DeviceStream? stream = null);
    public abstract void CopyDeviceToDevice(DevicePtr src, DevicePtr dst, long bytes, DeviceStream? stream = null);
    public abstract void Memset(DevicePtr dst, byte value, long bytes, DeviceStream? stream = null);

    /// <summary>Loads a compiled module (CUBIN/PTX on CUDA, a shared object on the emulator).</summary>
    public abstract KernelModule LoadModule(CompiledModule compiled);

    /// <summary>
    /// Launches <paramref name="function"/>. <paramref name="args"/> is cuLaunchKernel's array: one pointer per
    /// kernel parameter, each pointing at the parameter's value.
    /// </summary>
    public abstract unsafe void Launch(KernelFunction function, Dim3 grid, Dim3 block, uint sharedBytes,
                                       void** args, DeviceStream? stream = null);

    /// <summary>Waits for all work on every stream of this device.</summary>
    public abstract void Synchronize();

    /// <summary>
    /// Declares what the NEXT <see cref="Launch"/> must move and compute (its operands' bytes, its FLOPs): every
    /// kernel wrapper calls this right before launching. Real devices ignore it; the recording device
    /// (<see cref="Recording.RecordingDevice"/>) attaches it to the launch, so `llama4 plan` models a step from the
    /// same wrappers a real run uses. A launch without a declaration is counted as such, never an error.
    /// </summary>
    public virtual void Cost(long bytes, double flops) { }

    /// <summary>Whether <see cref="BeginCapture"/> is supported (CUDA graphs; the emulator and the recording
    /// device record the launch list and replay it).</summary>
    public virtual bool CanCapture => false;

    /// <summary>
    /// Starts recording the launches and device-to-device copies issued on <paramref name="stream"/> into a graph
    /// instead of running them. Inside a capture nothing may allocate, copy from or to the host, or synchronise.
    /// </summary>
    public virtual void BeginCapture(DeviceStream? stream = null) =>
        throw new NotSupportedException($"{Name} cannot capture graphs");

    /// <summary>Ends the capture begun on <paramref name="stream"/>; the graph replays it with one launch.</summary>
    public virtual DeviceGraph EndCapture(DeviceStream? stream = null) =>
        throw new NotSupportedException($"{Name} cannot capture graphs");

    /// <summary>Captures what <paramref name="emit"/> issues into a graph (an invalid capture is ended and dropped
    /// when <paramref name="emit"/> throws; the first error is the one that propagates).</summary>
    public DeviceGraph Capture(Action emit, DeviceStream? stream = null)
    {
        BeginCapture(stream);
        try { emit(); }
        catch
        {
            try { EndCapture(stream).Dispose(); } catch { /* the capture is invalid anyway; the first error is the one to see */ }
            throw;
        }
        return EndCapture(stream);
    }

    /// <summary>The kernels of this device, compiled on first use and cached (in memory and on disk).</summary>
    public abstract Llama4Native.Kernels.KernelLibrary Kernels { get; }

    public void Upload<T>(ReadOnlySpan<T> src, DevicePtr dst, DeviceStream? stream = null) where T : unmanaged
    {
        unsafe { fixed (T* p = src) CopyHostToDevice(p, dst, (long)src.Length * sizeof(T), stream); }
        // A managed span may move or die after we return: make the copy complete before it can.
        (stream ?? DefaultStream).Synchronize();
    }

    public void Download<T>(DevicePtr src, Span<T> dst, DeviceStream? stream = null) where T : unmanaged
    {
        (stream ?? DefaultStream).Synchronize();
        unsafe { fixed (T* p = dst) CopyDeviceToHost(src, p, (long)dst.Length * sizeof(T), stream); }
        (stream ?? DefaultStream).Synchronize();
    }

    protected abstract void Dispose(bool disposing);
    public void Dispose() { Dispose(true); GC.SuppressFinalize(this); }
}

/// <summary>A captured sequence of launches (a CUDA graph exec, or a recorded launch list), replayed by <see cref="Launch"/>.</summary>
internal abstract class DeviceGraph : IDisposable
{
    /// <summary>Kernel launches (and copies) captured.</summary>
    public abstract int Nodes { get; }
    /// <summary>Queues one run of the whole graph on <paramref name="stream"/> (asynchronous, like a launch).</summary>
    public abstract void Launch(DeviceStream? stream = null);
    public abstract void Dispose();
}

/// <summary>An owned device allocation; freed on Dispose.</summary>
internal abstract class DeviceBuffer : IDisposable
{
    public abstract Device Device { get; }
    public abstract DevicePtr Ptr { get; }
    public abstract long Bytes { get; }
    public abstract void Dispose();
}

/// <summary>Owned host memory usable as a fast copy source/target for a device.</summary>
internal abstract class HostBuffer : IDisposable
{
    public abstract unsafe void* Pointer { get; }
    public abstract long Bytes { get; }
    public unsafe Span<T> AsSpan<T>() where T : unmanaged => new(Pointer, checked((int)(Bytes / sizeof(T))));
    public abstract void Dispose();
}

internal abstract class DeviceStream : IDisposable
{
    public abstract void Synchronize();
    /// <summary>The native handle (CUstream) or 0 on the emulator; for interop and graph capture.</summary>
    public abstract nint Handle { get; }
    public abstract void Dispose();
}

internal abstract class DeviceEvent : IDisposable
{
    public abstract void Record(DeviceStream? stream = null);
    public abstract void Synchronize();
    /// <summary>Milliseconds between two recorded events (both created with timing).</summary>
    public abstract float ElapsedMs(DeviceEvent end);
    public abstract void Dispose();
}

/// <summary>A loaded module; owns the native module and hands out its functions.</summary>
internal abstract class KernelModule : IDisposable
{
    public abstract KernelFunction GetFunction(string name);
    public abstract void Dispose();
}

/// <summary>A kernel entry point of a loaded module.</summary>
internal sealed class KernelFunction(string name, nint handle, KernelModule module)
{
    public string Name { get; } = name;
    /// <summary>CUfunction on CUDA; the emulator's function handle otherwise.</summary>
    public nint Handle { get; } = handle;
    public KernelModule Module { get; } = module;
    /// <summary>Dynamic shared memory this function was opted in to (above the 48 KiB default).</summary>
    internal uint MaxDynamicSharedOptIn { get; set; }
    public override string ToString() => Name;
}

/// <summary>Compiled code for one kernel file with one set of compile-time options.</summary>
/// <param name="Image">CUBIN or NUL-terminated PTX bytes (CUDA), or empty (emulator).</param>
/// <param name="LibraryPath">The emulator's shared object; null on CUDA.</param>
internal sealed record CompiledModule(string SourceName, string Key, byte[] Image, string? LibraryPath, string Log);

/// <summary>
/// A device allocation did not fit (model weights, a session's KV cache or its scratch memory). The message says
/// what was being allocated and how to make it fit (a smaller context, quantized weights, another device).
/// </summary>
public sealed class DeviceOutOfMemoryException : Exception
{
    internal DeviceOutOfMemoryException(string message, long requested, long free, Exception? inner = null) : base(message, inner)
    {
        RequestedBytes = requested; FreeBytes = free;
    }
    /// <summary>The size of the allocation that failed, in bytes.</summary>
    public long RequestedBytes { get; }
    /// <summary>The device's free memory when it failed, in bytes.</summary>
    public long FreeBytes { get; }
}
