namespace Llama4Native.Interop;

/// <summary>
/// Debug switches for the CUDA path. Kernel faults are asynchronous: without help they surface at some
/// later synchronising call with no hint of which kernel caused them.
/// </summary>
internal static class CudaDebug
{
    /// <summary>
    /// When true, every launch made through <see cref="CudaFunction.Launch"/> (and the runtime's launch
    /// wrapper) synchronises its stream right after and rethrows a failure naming the kernel. Slow: for
    /// debugging only. Initialised from the environment variable <c>LLAMA4_CUDA_SYNC=1</c>; settable.
    /// Ignored while the stream is being captured into a graph (synchronising would break the capture).
    /// </summary>
    public static bool SyncAfterLaunch { get; set; } = FromEnvironmentValue(Environment.GetEnvironmentVariable("LLAMA4_CUDA_SYNC"));

    /// <summary>How a LLAMA4_CUDA_SYNC value is read: on only for "1".</summary>
    public static bool FromEnvironmentValue(string? value) => value == "1";

    /// <summary>
    /// Synchronises <paramref name="stream"/> (context already current) and throws a
    /// <see cref="CudaException"/> blaming <paramref name="kernelName"/> if the kernel — or any earlier work
    /// on the stream — failed. Does nothing while the stream is capturing.
    /// </summary>
    public static void SynchronizeAfterLaunch(CUstream stream, string kernelName)
    {
        if (Cu.cuStreamIsCapturing(stream, out var status) == CUresult.CUDA_SUCCESS
            && status != CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE)
            return;
        var r = Cu.cuStreamSynchronize(stream);
        if (r != CUresult.CUDA_SUCCESS)
            throw new CudaException(r, $"cuStreamSynchronize after launching kernel '{kernelName}'",
                $"{nameof(CudaDebug)}.{nameof(SyncAfterLaunch)} is on: the failure happened in '{kernelName}' or in work queued before it on the same stream.");
    }
}
