using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

internal static partial class Cu
{
    /// <summary>
    /// Queues a kernel on <paramref name="hStream"/>. Returns as soon as it is queued: a fault inside the
    /// kernel surfaces later, from whichever call next synchronises (that is what
    /// <see cref="CudaDebug.SyncAfterLaunch"/> is for). Fails immediately with
    /// CUDA_ERROR_INVALID_VALUE (grid/block out of range, dynamic shared memory above the kernel's
    /// MAX_DYNAMIC_SHARED_SIZE_BYTES), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (block too big for its
    /// registers) or CUDA_ERROR_INVALID_HANDLE.
    /// <para>
    /// <paramref name="kernelParams"/>: one pointer per kernel parameter, in order, each pointing at the
    /// parameter's value, which the driver copies at the call — so the values may live in the caller's
    /// stack frame. The idiom (no boxing, no allocation):
    /// <code>
    /// CUdeviceptr x = ..., y = ...; int n = ...; float alpha = ...;
    /// void** args = stackalloc void*[] { &amp;x, &amp;y, &amp;n, &amp;alpha };
    /// Cu.Check(Cu.cuLaunchKernel(f, gx, 1, 1, 256, 1, 1, 0, stream, args, null));
    /// </code>
    /// Each local must have exactly the kernel parameter's C type and size: CUdeviceptr for a
    /// <c>T*</c> (8 bytes), <c>int</c> for <c>int</c>, <c>uint</c> for <c>unsigned</c>, <c>long</c> for
    /// <c>long long</c>/<c>int64_t</c>, <c>float</c>. A wrong size is not detected: the kernel reads garbage.
    /// <paramref name="extra"/> is the alternative packed-buffer convention; we pass null.
    /// </para>
    /// </summary>
    /// <param name="f">The kernel, from cuModuleGetFunction.</param>
    /// <param name="gridDimX">Blocks along x.</param>
    /// <param name="gridDimY">Blocks along y.</param>
    /// <param name="gridDimZ">Blocks along z.</param>
    /// <param name="blockDimX">Threads per block along x.</param>
    /// <param name="blockDimY">Threads per block along y.</param>
    /// <param name="blockDimZ">Threads per block along z.</param>
    /// <param name="sharedMemBytes">Dynamic shared memory per block, bytes.</param>
    /// <param name="hStream">The stream the launch is queued on (default stream: zero).</param>
    /// <param name="kernelParams">One pointer per kernel parameter, each to a local holding its value.</param>
    /// <param name="extra">The packed-buffer alternative to <paramref name="kernelParams"/>; we pass null.</param>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuLaunchKernel(CUfunction f,
        uint gridDimX, uint gridDimY, uint gridDimZ,
        uint blockDimX, uint blockDimY, uint blockDimZ,
        uint sharedMemBytes, CUstream hStream, void** kernelParams, void** extra);
}

/// <summary>A grid or block extent as cuLaunchKernel takes it.</summary>
internal readonly record struct LaunchDims(uint X, uint Y = 1, uint Z = 1)
{
    public ulong Count => (ulong)X * Y * Z;
    public static implicit operator LaunchDims(uint x) => new(x);
    /// <summary>From an int count; throws <see cref="OverflowException"/> when negative.</summary>
    public static implicit operator LaunchDims(int x) => new(checked((uint)x));
    public override string ToString() => $"({X},{Y},{Z})";
}
