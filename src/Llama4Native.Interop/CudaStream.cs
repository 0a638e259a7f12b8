namespace Llama4Native.Interop;

/// <summary>An owned stream (cuStreamCreate / cuStreamDestroy_v2), and stream capture into graphs.</summary>
internal sealed class CudaStream : CudaContextResource
{
    internal CudaStream(CudaContext context, CUstream s) : base(context, s.Value) { }

    public CUstream Handle => new(Raw);

    /// <summary>Waits for all work queued on this stream; throws its first asynchronous error.</summary>
    public void Synchronize()
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuStreamSynchronize(Handle));
    }

    /// <summary>
    /// Starts recording this stream's work into a graph. Thread-local mode by default: other threads (and
    /// other devices) may keep allocating and synchronising meanwhile.
    /// </summary>
    public void BeginCapture(CUstreamCaptureMode mode = CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuStreamBeginCapture_v2(Handle, mode));
    }

    /// <summary>Ends the capture and returns the recorded graph (throws CUDA_ERROR_STREAM_CAPTURE_INVALIDATED if it broke).</summary>
    public CudaGraph EndCapture()
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuStreamEndCapture(Handle, out var g));
        return new CudaGraph(Context, g);
    }

    public CUstreamCaptureStatus CaptureStatus
    {
        get
        {
            Context.MakeCurrentForResource();
            Cu.Check(Cu.cuStreamIsCapturing(Handle, out var status));
            return status;
        }
    }

    protected override CUresult Destroy(nint h) => Cu.cuStreamDestroy_v2(new CUstream(h));
}

/// <summary>An owned event (cuEventCreate / cuEventDestroy_v2).</summary>
internal sealed class CudaEvent : CudaContextResource
{
    internal CudaEvent(CudaContext context, CUevent e, CuEventFlags flags) : base(context, e.Value) => Flags = flags;

    public CUevent Handle => new(Raw);
    public CuEventFlags Flags { get; }

    /// <summary>Marks the current tail of <paramref name="stream"/>.</summary>
    public void Record(CUstream stream)
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuEventRecord(Handle, stream));
    }

    /// <summary>Waits until the recorded work is done.</summary>
    public void Synchronize()
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuEventSynchronize(Handle));
    }

    /// <summary>Milliseconds from this (start) event to <paramref name="end"/>; both recorded, completed and timing-enabled.</summary>
    public float ElapsedMilliseconds(CudaEvent end)
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuEventElapsedTime(out float ms, Handle, end.Handle));
        return ms;
    }

    protected override CUresult Destroy(nint h) => Cu.cuEventDestroy_v2(new CUevent(h));
}

/// <summary>An owned graph from stream capture (cuGraphDestroy).</summary>
internal sealed class CudaGraph : CudaContextResource
{
    internal CudaGraph(CudaContext context, CUgraph g) : base(context, g.Value) { }

    public CUgraph Handle => new(Raw);

    /// <summary>Makes it launchable. The returned exec is independent: this graph may be disposed right after.</summary>
    public CudaGraphExec Instantiate(CuGraphInstantiateFlags flags = CuGraphInstantiateFlags.None)
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuGraphInstantiateWithFlags(out var exec, Handle, flags));
        return new CudaGraphExec(Context, exec);
    }

    protected override CUresult Destroy(nint h) => Cu.cuGraphDestroy(new CUgraph(h));
}

/// <summary>An owned executable graph (cuGraphExecDestroy).</summary>
internal sealed class CudaGraphExec : CudaContextResource
{
    internal CudaGraphExec(CudaContext context, CUgraphExec g) : base(context, g.Value) { }

    public CUgraphExec Handle => new(Raw);

    /// <summary>Queues one run of the whole graph on <paramref name="stream"/>.</summary>
    public void Launch(CUstream stream)
    {
        Context.MakeCurrentForResource();
        Cu.Check(Cu.cuGraphLaunch(Handle, stream));
        if (CudaDebug.SyncAfterLaunch) CudaDebug.SynchronizeAfterLaunch(stream, "<graph>");
    }

    protected override CUresult Destroy(nint h) => Cu.cuGraphExecDestroy(new CUgraphExec(h));
}
