namespace Llama4Native.Interop;

// Blittable mirrors of cuda.h's handle types: one field each, so they cross the native boundary as the
// C type itself (an int, a 64-bit address or an opaque pointer). They own nothing; the owning wrappers
// (CudaContext, CudaStream, ...) are SafeHandles that hand these out.

/// <summary>A device address (<c>CUdeviceptr</c>, 64-bit on every platform we support).</summary>
internal readonly record struct CUdeviceptr(ulong Value)
{
    public static readonly CUdeviceptr Null = default;
    public bool IsNull => Value == 0;
    /// <summary>Byte offset; no bounds are known here, the owner checks them.</summary>
    public static CUdeviceptr operator +(CUdeviceptr p, ulong bytes) => new(p.Value + bytes);
    public override string ToString() => $"0x{Value:x}";
}

/// <summary>A device ordinal as the driver numbers them (<c>CUdevice</c>, an int).</summary>
internal readonly record struct CUdevice(int Value)
{
    public override string ToString() => $"CUdevice({Value})";
}

/// <summary>A context (<c>CUcontext</c>). We only ever use a device's primary context.</summary>
internal readonly record struct CUcontext(nint Value)
{
    public bool IsNull => Value == 0;
}

/// <summary>A stream (<c>CUstream</c>). <see cref="Null"/> is the legacy default stream of the current context.</summary>
internal readonly record struct CUstream(nint Value)
{
    public static readonly CUstream Null = default;
    public bool IsNull => Value == 0;
}

/// <summary>An event (<c>CUevent</c>).</summary>
internal readonly record struct CUevent(nint Value);

/// <summary>A loaded module (<c>CUmodule</c>).</summary>
internal readonly record struct CUmodule(nint Value);

/// <summary>A kernel entry point inside a module (<c>CUfunction</c>); valid while its module is loaded.</summary>
internal readonly record struct CUfunction(nint Value);

/// <summary>A graph (<c>CUgraph</c>): a recorded DAG of work, not yet executable.</summary>
internal readonly record struct CUgraph(nint Value);

/// <summary>An instantiated, launchable graph (<c>CUgraphExec</c>).</summary>
internal readonly record struct CUgraphExec(nint Value);

/// <summary>An NVRTC program (<c>nvrtcProgram</c>).</summary>
internal readonly record struct nvrtcProgram(nint Value);
