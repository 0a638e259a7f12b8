using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

internal static partial class Cu
{
    /// <summary>
    /// Retains the device's primary context (the one the runtime API shares), creating it on first retain;
    /// every retain needs one cuDevicePrimaryCtxRelease_v2. Creating it reserves ~300-500 MiB of device
    /// memory. Fails with CUDA_ERROR_OUT_OF_MEMORY, CUDA_ERROR_INVALID_DEVICE, or
    /// CUDA_ERROR_DEVICE_UNAVAILABLE when the GPU is in exclusive-process mode and taken.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDevicePrimaryCtxRetain(out CUcontext pctx, CUdevice dev);

    /// <summary>
    /// Drops one retain; at zero the context and everything in it (memory, modules, streams) is destroyed.
    /// The _v2 entry point (CUDA 11+) is the one cuda.h maps the name to.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev);

    /// <summary>
    /// Binds <paramref name="ctx"/> to the calling thread (thread-local, replaces whatever was bound).
    /// Cheap: no synchronisation. CUDA_ERROR_INVALID_CONTEXT for a destroyed context;
    /// CUDA_ERROR_DEINITIALIZED during process exit.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuCtxSetCurrent(CUcontext ctx);

    /// <summary>The context bound to the calling thread (null if none).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuCtxGetCurrent(out CUcontext pctx);

    /// <summary>
    /// Blocks until all work in the current context is done; returns the first asynchronous error of
    /// that work (e.g. CUDA_ERROR_ILLEGAL_ADDRESS from a kernel launched earlier).
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuCtxSynchronize();
}
