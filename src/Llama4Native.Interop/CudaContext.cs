using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>
/// One retain of a device's primary context: the hub every other CUDA resource is created from.
/// <para>
/// There is no "current device" in our design: several devices coexist and any thread may call. So every
/// operation here and on the resources below first binds its context to the calling thread
/// (cuCtxSetCurrent — a thread-local store, nanoseconds) instead of trusting whatever is bound.
/// </para>
/// <para>
/// Ownership: each resource created from a context holds a reference count on it (SafeHandle
/// AddRef/Release), so the context is released only after its last resource, whatever order Dispose
/// calls or finalizers run in. Disposing the context while resources live only drops our own count.
/// </para>
/// </summary>
internal sealed class CudaContext : SafeHandle
{
    private CudaContext(CUdevice device, CUcontext context) : base(0, ownsHandle: true)
    {
        Device = device;
        SetHandle(context.Value);
    }

    /// <summary>Retains device <paramref name="ordinal"/>'s primary context. Throws <see cref="CudaUnavailableException"/> without a driver.</summary>
    public static CudaContext RetainPrimary(int ordinal)
    {
        CudaDriver.EnsureAvailable();
        Cu.Check(Cu.cuDeviceGet(out var dev, ordinal));
        Cu.Check(Cu.cuDevicePrimaryCtxRetain(out var ctx, dev));
        return new CudaContext(dev, ctx);
    }

    public CUdevice Device { get; }

    /// <summary>The raw context; throws <see cref="ObjectDisposedException"/> once released.</summary>
    public CUcontext Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return new CUcontext(handle);
        }
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>Binds this context to the calling thread.</summary>
    public void MakeCurrent() => Cu.Check(Cu.cuCtxSetCurrent(Handle));

    /// <summary>
    /// For resources, which hold a count on this context: the native context stays alive until they are
    /// released even after <see cref="SafeHandle.Dispose()"/> marked this wrapper closed.
    /// </summary>
    internal void MakeCurrentForResource() => Cu.Check(Cu.cuCtxSetCurrent(new CUcontext(handle)), "cuCtxSetCurrent(ctx)");

    /// <summary>Waits for all work of this context on every stream; throws the first asynchronous error.</summary>
    public void Synchronize()
    {
        MakeCurrent();
        Cu.Check(Cu.cuCtxSynchronize());
    }

    /// <summary>Free and total device memory in bytes right now (other processes' use included).</summary>
    public (long Free, long Total) GetMemoryInfo()
    {
        MakeCurrent();
        Cu.Check(Cu.cuMemGetInfo_v2(out var free, out var total));
        return ((long)free, (long)total);
    }

    /// <summary>Allocates device memory (uninitialised, ≥256-byte aligned). Throws CUDA_ERROR_OUT_OF_MEMORY as a CudaException.</summary>
    public CudaDeviceMemory Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        MakeCurrent();
        Cu.Check(Cu.cuMemAlloc_v2(out var p, (nuint)bytes));
        return new CudaDeviceMemory(this, p, bytes);
    }

    /// <summary>Allocates page-locked host memory, portable across contexts by default.</summary>
    public unsafe CudaPinnedMemory AllocatePinned(long bytes, CuMemHostAllocFlags flags = CuMemHostAllocFlags.Portable)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        MakeCurrent();
        void* p;
        Cu.Check(Cu.cuMemHostAlloc(&p, (nuint)bytes, flags));
        return new CudaPinnedMemory(this, p, bytes);
    }

    /// <summary>
    /// Page-locks existing host memory until the returned registration is disposed. The caller keeps the
    /// memory alive (and unmoved) for at least that long.
    /// </summary>
    public unsafe CudaHostRegistration RegisterHostMemory(void* pointer, long bytes,
                                                         CuMemHostRegisterFlags flags = CuMemHostRegisterFlags.Portable)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        MakeCurrent();
        Cu.Check(Cu.cuMemHostRegister_v2(pointer, (nuint)bytes, flags));
        return new CudaHostRegistration(this, pointer, bytes);
    }

    /// <summary>Creates a stream; non-blocking (no implicit sync with the legacy NULL stream) by default.</summary>
    public CudaStream CreateStream(CuStreamFlags flags = CuStreamFlags.NonBlocking)
    {
        MakeCurrent();
        Cu.Check(Cu.cuStreamCreate(out var s, flags));
        return new CudaStream(this, s);
    }

    /// <summary>Creates an event; pass <see cref="CuEventFlags.Default"/> for one that can time.</summary>
    public CudaEvent CreateEvent(CuEventFlags flags = CuEventFlags.DisableTiming)
    {
        MakeCurrent();
        Cu.Check(Cu.cuEventCreate(out var e, flags));
        return new CudaEvent(this, e, flags);
    }

    /// <summary>Loads a CUBIN or PTX image; see <see cref="CudaModule.Load"/>.</summary>
    public CudaModule LoadModule(ReadOnlySpan<byte> image) => CudaModule.Load(this, image);

    // Copies and memset. Argument order is (source, destination) like the runtime's Device; sizes in bytes.
    // All are asynchronous on `stream` (CUstream.Null = the legacy default stream): keep host buffers alive
    // and unchanged until the stream is synchronised.

    public unsafe void CopyHostToDeviceAsync(void* src, CUdeviceptr dst, long bytes, CUstream stream)
    {
        MakeCurrent();
        Cu.Check(Cu.cuMemcpyHtoDAsync_v2(dst, src, (nuint)bytes, stream));
    }

    public unsafe void CopyDeviceToHostAsync(CUdeviceptr src, void* dst, long bytes, CUstream stream)
    {
        MakeCurrent();
        Cu.Check(Cu.cuMemcpyDtoHAsync_v2(dst, src, (nuint)bytes, stream));
    }

    public void CopyDeviceToDeviceAsync(CUdeviceptr src, CUdeviceptr dst, long bytes, CUstream stream)
    {
        MakeCurrent();
        Cu.Check(Cu.cuMemcpyDtoDAsync_v2(dst, src, (nuint)bytes, stream));
    }

    public void MemsetAsync(CUdeviceptr dst, byte value, long bytes, CUstream stream)
    {
        MakeCurrent();
        Cu.Check(Cu.cuMemsetD8Async(dst, value, (nuint)bytes, stream));
    }

    /// <summary>Drops our retain; the driver destroys the context when the last retain in the process goes.</summary>
    protected override bool ReleaseHandle()
    {
        var r = Cu.cuDevicePrimaryCtxRelease_v2(Device);
        return r is CUresult.CUDA_SUCCESS or CUresult.CUDA_ERROR_DEINITIALIZED;
    }

    public override string ToString() => $"CudaContext(device {Device.Value}, 0x{handle:x})";
}

/// <summary>
/// Base of every resource that lives in a context: holds a count on the context (released after the
/// resource), and binds the context before destroying the resource. During process exit the driver may
/// already be gone (CUDA_ERROR_DEINITIALIZED): that counts as released.
/// </summary>
internal abstract class CudaContextResource : SafeHandle
{
    private readonly bool _contextRefAdded;

    /// <remarks>Created after the native object exists; if <paramref name="context"/> was disposed meanwhile,
    /// AddRef throws ObjectDisposedException and the native object leaks (a use-after-dispose bug anyway).</remarks>
    protected CudaContextResource(CudaContext context, nint nativeHandle) : base(0, ownsHandle: true)
    {
        context.DangerousAddRef(ref _contextRefAdded);
        Context = context;
        SetHandle(nativeHandle);
    }

    public CudaContext Context { get; }

    public override bool IsInvalid => handle == 0;

    /// <summary>The raw handle value; throws <see cref="ObjectDisposedException"/> once released.</summary>
    protected nint Raw
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return handle;
        }
    }

    /// <summary>Destroys the native object; the context is current when this runs.</summary>
    protected abstract CUresult Destroy(nint nativeHandle);

    protected sealed override bool ReleaseHandle()
    {
        try
        {
            var r = Cu.cuCtxSetCurrent(new CUcontext(Context.DangerousGetHandle()));
            if (r == CUresult.CUDA_SUCCESS) r = Destroy(handle);
            return r is CUresult.CUDA_SUCCESS or CUresult.CUDA_ERROR_DEINITIALIZED;
        }
        finally
        {
            if (_contextRefAdded) Context.DangerousRelease();
        }
    }
}
