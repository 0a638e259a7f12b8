using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>Flags of cuEventCreate (<c>CU_EVENT_*</c>).</summary>
[Flags]
internal enum CuEventFlags : uint
{
    /// <summary>Records timestamps (needed for cuEventElapsedTime); slightly slower to record.</summary>
    Default = 0x0,
    /// <summary>cuEventSynchronize sleeps instead of spinning.</summary>
    BlockingSync = 0x1,
    /// <summary>No timestamps: the cheapest event, for ordering between streams only.</summary>
    DisableTiming = 0x2,
    Interprocess = 0x4,
}

internal static partial class Cu
{
    /// <summary>Creates an event in the current context.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuEventCreate(out CUevent phEvent, CuEventFlags flags);

    /// <summary>
    /// Captures the stream's current tail: the event completes when the work queued before it does.
    /// Re-recording overwrites. CUDA_ERROR_INVALID_HANDLE if event and stream are in different contexts.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuEventRecord(CUevent hEvent, CUstream hStream);

    /// <summary>Blocks until the event completes (immediately if never recorded); returns async errors like stream sync.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuEventSynchronize(CUevent hEvent);

    /// <summary>
    /// Milliseconds (resolution ~0.5 µs) between two completed events. CUDA_ERROR_NOT_READY if either has
    /// not completed; CUDA_ERROR_INVALID_HANDLE if either was created with DisableTiming or never recorded.
    /// (CUDA 12.8+ headers map the name to cuEventElapsedTime_v2; drivers keep exporting this one.)
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuEventElapsedTime(out float milliseconds, CUevent hStart, CUevent hEnd);

    /// <summary>Destroys an event; safe while a record of it is still pending (resources go after it completes).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuEventDestroy_v2(CUevent hEvent);
}
