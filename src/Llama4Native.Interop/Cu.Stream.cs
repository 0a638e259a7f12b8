using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>Flags of cuStreamCreate (<c>CU_STREAM_*</c>).</summary>
[Flags]
internal enum CuStreamFlags : uint
{
    /// <summary>Synchronises with the legacy NULL stream.</summary>
    Default = 0x0,
    /// <summary>Does not synchronise with the legacy NULL stream: what we always want.</summary>
    NonBlocking = 0x1,
}

/// <summary>How a capture restricts "unsafe" calls (cuMemAlloc, sync calls) made meanwhile (<c>CUstreamCaptureMode</c>).</summary>
internal enum CUstreamCaptureMode
{
    /// <summary>Unsafe calls from ANY thread fail while any thread captures in global mode.</summary>
    CU_STREAM_CAPTURE_MODE_GLOBAL = 0,
    /// <summary>Only the capturing thread's unsafe calls fail: the mode for several devices on several threads.</summary>
    CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1,
    /// <summary>No call is refused; the caller answers for correctness.</summary>
    CU_STREAM_CAPTURE_MODE_RELAXED = 2,
}

/// <summary>Capture state of a stream (<c>CUstreamCaptureStatus</c>).</summary>
internal enum CUstreamCaptureStatus
{
    CU_STREAM_CAPTURE_STATUS_NONE = 0,
    CU_STREAM_CAPTURE_STATUS_ACTIVE = 1,
    /// <summary>Capture failed part way; cuStreamEndCapture will return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.</summary>
    CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2,
}

internal static partial class Cu
{
    /// <summary>Creates a stream in the current context. Fails with CUDA_ERROR_OUT_OF_MEMORY (rare) or INVALID_CONTEXT.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuStreamCreate(out CUstream phStream, CuStreamFlags flags);

    /// <summary>
    /// Destroys a stream. Returns at once; work already queued still completes, then resources go.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuStreamDestroy_v2(CUstream hStream);

    /// <summary>
    /// Blocks until all work on the stream is done; returns the first asynchronous error of that work
    /// (how a faulting kernel is noticed). CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED while capturing.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuStreamSynchronize(CUstream hStream);

    /// <summary>
    /// Starts recording the stream's work into a graph instead of running it. Fails with
    /// CUDA_ERROR_STREAM_CAPTURE_IMPLICIT for the legacy NULL stream; CUDA_ERROR_ILLEGAL_STATE if the
    /// stream is already capturing. The _v2 entry point takes the mode.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode);

    /// <summary>
    /// Ends the capture and returns the graph (the caller owns it: cuGraphDestroy). If anything went
    /// wrong meanwhile the result is CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and the graph is null;
    /// CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD when ended from another thread in a non-relaxed mode.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuStreamEndCapture(CUstream hStream, out CUgraph phGraph);

    /// <summary>Whether the stream is capturing (no error while capturing, unlike synchronise calls).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuStreamIsCapturing(CUstream hStream, out CUstreamCaptureStatus captureStatus);
}
