namespace Llama4Native.Interop;

/// <summary>An owned device allocation (cuMemAlloc_v2 / cuMemFree_v2). Freeing synchronises the device.</summary>
internal sealed class CudaDeviceMemory : CudaContextResource
{
    internal CudaDeviceMemory(CudaContext context, CUdeviceptr ptr, long bytes) : base(context, (nint)ptr.Value) => Bytes = bytes;

    public CUdeviceptr Ptr => new((ulong)Raw);
    /// <summary>Size in bytes as requested.</summary>
    public long Bytes { get; }

    protected override CUresult Destroy(nint h) => Cu.cuMemFree_v2(new CUdeviceptr((ulong)h));
    public override string ToString() => $"CudaDeviceMemory(0x{handle:x}, {Bytes} B)";
}

/// <summary>Owned page-locked host memory (cuMemHostAlloc / cuMemFreeHost).</summary>
internal sealed unsafe class CudaPinnedMemory : CudaContextResource
{
    internal CudaPinnedMemory(CudaContext context, void* p, long bytes) : base(context, (nint)p) => Bytes = bytes;

    public void* Pointer => (void*)Raw;
    public long Bytes { get; }
    /// <summary>The memory as a span of <typeparamref name="T"/>; must not outlive this object.</summary>
    public Span<T> AsSpan<T>() where T : unmanaged => new(Pointer, checked((int)(Bytes / sizeof(T))));

    protected override CUresult Destroy(nint h) => Cu.cuMemFreeHost((void*)h);
}

/// <summary>A page-locked registration of host memory we do not own (cuMemHostRegister_v2 / cuMemHostUnregister).</summary>
internal sealed unsafe class CudaHostRegistration : CudaContextResource
{
    internal CudaHostRegistration(CudaContext context, void* p, long bytes) : base(context, (nint)p) => Bytes = bytes;

    public void* Pointer => (void*)Raw;
    public long Bytes { get; }

    protected override CUresult Destroy(nint h) => Cu.cuMemHostUnregister((void*)h);
}
