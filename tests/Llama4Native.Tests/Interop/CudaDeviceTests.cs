using Llama4Native.Interop;
using NUnit.Framework;

namespace Llama4Native.Tests.Interop;

/// <summary>
/// Real device calls. Written to run on the GPU machine; everywhere else every test is ignored with
/// "no CUDA device: &lt;reason&gt;". Keep them free of sticky errors (no faulting kernels): they share one
/// context per process.
/// </summary>
[TestFixture]
[NonParallelizable]
public class CudaDeviceTests
{
    private CudaContext _ctx = null!;
    private CudaDeviceInfo _info = null!;
    private CudaModule _module = null!;

    [OneTimeSetUp]
    public void RequireDevice()
    {
        if (!CudaDriver.TryLoad(out var reason)) Assert.Ignore($"no CUDA device: {reason}");
        _info = CudaDriver.GetDeviceInfo(0);
        _ctx = CudaContext.RetainPrimary(0);
        _module = _ctx.LoadModule(CompileFor(_info, TestKernels.Saxpy, "saxpy.cu"));
        TestContext.Out.WriteLine($"{_info} driver {CudaDriver.Version}; NVRTC {NvrtcLocator.Chosen?.Describe()}");
    }

    [OneTimeTearDown]
    public void Release()
    {
        _module?.Dispose();
        _ctx?.Dispose();
    }

    /// <summary>CUBIN for the device's own arch when this NVRTC knows it, else PTX for compute_80 (driver JIT).</summary>
    private static byte[] CompileFor(CudaDeviceInfo info, string source, string name)
    {
        try
        {
            return NvrtcCompiler.Compile(source, name, [$"-arch={info.SmArch}"], wantCubin: true).Cubin!;
        }
        catch (NvrtcException e) when (e.Result == nvrtcResult.NVRTC_ERROR_INVALID_OPTION)
        {
            return NvrtcCompiler.Compile(source, name, ["--gpu-architecture=compute_80"], wantCubin: false).Ptx;
        }
    }

    [Test]
    public void Device_info_is_plausible()
    {
        Assert.That(_info.Name, Is.Not.Empty);
        Assert.That(_info.ComputeCapabilityMajor, Is.GreaterThanOrEqualTo(7));
        Assert.That(_info.MultiprocessorCount, Is.GreaterThan(0));
        Assert.That(_info.WarpSize, Is.EqualTo(32));
        Assert.That(_info.MaxSharedMemoryPerBlockOptinBytes, Is.GreaterThanOrEqualTo(_info.MaxSharedMemoryPerBlockBytes));
        Assert.That(_info.L2CacheBytes, Is.GreaterThan(0));
        Assert.That(_info.MemoryBusWidthBits, Is.GreaterThan(0));
        Assert.That(_info.PeakMemoryBandwidthBytesPerSecond, Is.GreaterThan(1e11));
        var (free, total) = _ctx.GetMemoryInfo();
        Assert.That(free, Is.GreaterThan(0).And.LessThanOrEqualTo(total));
        Assert.That(total, Is.EqualTo(_info.TotalMemoryBytes));
    }

    [Test]
    public unsafe void Copies_and_memset_round_trip()
    {
        const int n = 1 << 20;
        using var stream = _ctx.CreateStream();
        using var a = _ctx.Allocate(n * sizeof(float));
        using var b = _ctx.Allocate(n * sizeof(float));
        using var host = _ctx.AllocatePinned(n * sizeof(float));
        var span = host.AsSpan<float>();
        for (int i = 0; i < n; i++) span[i] = i;

        _ctx.CopyHostToDeviceAsync(host.Pointer, a.Ptr, a.Bytes, stream.Handle);
        _ctx.CopyDeviceToDeviceAsync(a.Ptr, b.Ptr, b.Bytes, stream.Handle);
        _ctx.MemsetAsync(b.Ptr, 0, 16 * sizeof(float), stream.Handle);     // first 16 floats → 0
        span.Clear();
        _ctx.CopyDeviceToHostAsync(b.Ptr, host.Pointer, b.Bytes, stream.Handle);
        stream.Synchronize();

        for (int i = 0; i < 16; i++) Assert.That(span[i], Is.Zero);
        for (int i = 16; i < n; i += 997) Assert.That(span[i], Is.EqualTo((float)i));
    }

    [Test]
    public unsafe void Registered_host_memory_copies()
    {
        var managed = GC.AllocateArray<int>(4096, pinned: true);
        for (int i = 0; i < managed.Length; i++) managed[i] = i * 3;
        fixed (int* p = managed)
        {
            using var reg = _ctx.RegisterHostMemory(p, managed.Length * sizeof(int));
            using var d = _ctx.Allocate(managed.Length * sizeof(int));
            using var s = _ctx.CreateStream();
            _ctx.CopyHostToDeviceAsync(p, d.Ptr, d.Bytes, s.Handle);
            s.Synchronize();
            Array.Clear(managed);
            _ctx.CopyDeviceToHostAsync(d.Ptr, p, d.Bytes, s.Handle);
            s.Synchronize();
        }
        Assert.That(managed[4095], Is.EqualTo(4095 * 3));
    }

    [Test]
    public unsafe void Launch_saxpy_with_stackalloc_args()
    {
        const int n = 10_000;
        using var stream = _ctx.CreateStream();
        using var x = _ctx.Allocate(n * sizeof(float));
        using var y = _ctx.Allocate(n * sizeof(float));
        var hx = new float[n];
        var hy = new float[n];
        for (int i = 0; i < n; i++) { hx[i] = i; hy[i] = 1; }
        fixed (float* px = hx, py = hy)
        {
            _ctx.CopyHostToDeviceAsync(px, x.Ptr, x.Bytes, stream.Handle);
            _ctx.CopyHostToDeviceAsync(py, y.Ptr, y.Bytes, stream.Handle);

            var f = _module.GetFunction("saxpy");
            Assert.That(f.Registers, Is.GreaterThan(0));
            CUdeviceptr yp = y.Ptr, xp = x.Ptr;
            float a = 2f;
            int count = n;
            void** args = stackalloc void*[] { &yp, &xp, &a, &count };
            f.Launch(new LaunchDims((n + 255) / 256), 256, 0, stream.Handle, args);

            _ctx.CopyDeviceToHostAsync(y.Ptr, py, y.Bytes, stream.Handle);
            stream.Synchronize();
        }
        for (int i = 0; i < n; i += 101) Assert.That(hy[i], Is.EqualTo(2f * i + 1f));
    }

    [Test]
    public unsafe void Dynamic_shared_memory_above_48KiB_needs_and_gets_the_opt_in()
    {
        var f = _module.GetFunction("reverse_block");
        const int threads = 1024;
        uint shared = 64 * 1024;                       // more than the 48 KiB default, less than any opt-in maximum
        Assume.That(_info.MaxSharedMemoryPerBlockOptinBytes, Is.GreaterThanOrEqualTo((int)shared));
        using var y = _ctx.Allocate(threads * sizeof(float));
        using var s = _ctx.CreateStream();
        CUdeviceptr yp = y.Ptr;
        void** args = stackalloc void*[] { &yp };

        var refused = Assert.Throws<CudaException>(() => f.Launch(1, threads, shared, s.Handle, args))!;
        Assert.That(refused.Result, Is.EqualTo(CUresult.CUDA_ERROR_INVALID_VALUE));
        Assert.That(refused.Message, Does.Contain("reverse_block"));

        f.SetMaxDynamicSharedMemory((int)shared);
        Assert.That(f.GetAttribute(CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), Is.EqualTo((int)shared));
        var host = new float[threads];
        for (int i = 0; i < threads; i++) host[i] = i;
        fixed (float* p = host)
        {
            _ctx.CopyHostToDeviceAsync(p, yp, y.Bytes, s.Handle);
            f.Launch(1, threads, shared, s.Handle, args);
            _ctx.CopyDeviceToHostAsync(yp, p, y.Bytes, s.Handle);
            s.Synchronize();
        }
        Assert.That(host[0], Is.EqualTo(threads - 1f));
        Assert.That(host[threads - 1], Is.EqualTo(0f));
    }

    [Test]
    public unsafe void Graph_capture_round_trip()
    {
        const int n = 4096;
        using var stream = _ctx.CreateStream();
        using var y = _ctx.Allocate(n * sizeof(float));
        _ctx.MemsetAsync(y.Ptr, 0, y.Bytes, stream.Handle);
        stream.Synchronize();

        var f = _module.GetFunction("add_one");
        CUdeviceptr yp = y.Ptr;
        int count = n;
        void** args = stackalloc void*[] { &yp, &count };

        stream.BeginCapture();
        Assert.That(stream.CaptureStatus, Is.EqualTo(CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_ACTIVE));
        for (int i = 0; i < 3; i++) f.Launch(n / 256, 256, 0, stream.Handle, args);   // recorded, not run
        using var graph = stream.EndCapture();
        using var exec = graph.Instantiate();
        exec.Launch(stream.Handle);
        exec.Launch(stream.Handle);

        var host = new float[n];
        fixed (float* p = host) _ctx.CopyDeviceToHostAsync(yp, p, y.Bytes, stream.Handle);
        stream.Synchronize();
        Assert.That(host, Is.All.EqualTo(6f), "two graph launches of three +1 kernels");
    }

    [Test]
    public unsafe void Events_time_work()
    {
        using var s = _ctx.CreateStream();
        using var start = _ctx.CreateEvent(CuEventFlags.Default);
        using var end = _ctx.CreateEvent(CuEventFlags.Default);
        using var y = _ctx.Allocate(1 << 24);
        start.Record(s.Handle);
        _ctx.MemsetAsync(y.Ptr, 1, y.Bytes, s.Handle);
        end.Record(s.Handle);
        end.Synchronize();
        Assert.That(start.ElapsedMilliseconds(end), Is.GreaterThanOrEqualTo(0f));
    }

    [Test]
    public unsafe void Sync_after_launch_passes_a_good_kernel()
    {
        bool saved = CudaDebug.SyncAfterLaunch;
        CudaDebug.SyncAfterLaunch = true;
        try
        {
            using var s = _ctx.CreateStream();
            using var y = _ctx.Allocate(256 * sizeof(float));
            CUdeviceptr yp = y.Ptr;
            int n = 256;
            void** args = stackalloc void*[] { &yp, &n };
            Assert.DoesNotThrow(() => _module.GetFunction("add_one").Launch(1, 256, 0, s.Handle, args));
        }
        finally
        {
            CudaDebug.SyncAfterLaunch = saved;
        }
    }

    [Test]
    public void Bad_ptx_fails_with_the_jit_log()
    {
        const string ptx = ".version 7.0\n.target sm_80\n.address_size 64\n.visible .entry bad()\n{\n  not_an_instruction;\n}\n";
        var e = Assert.Throws<CudaException>(() => _ctx.LoadModule(System.Text.Encoding.ASCII.GetBytes(ptx)))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Result, Is.EqualTo(CUresult.CUDA_ERROR_INVALID_PTX));
        Assert.That(e.Detail, Does.Contain("JIT error log"));
    }

    [Test]
    public void Missing_kernel_is_not_found()
    {
        var e = Assert.Throws<CudaException>(() => _module.GetFunction("no_such_kernel"))!;
        Assert.That(e.Result, Is.EqualTo(CUresult.CUDA_ERROR_NOT_FOUND));
        Assert.That(e.Message, Does.Contain("no_such_kernel"));
    }

    [Test]
    public void Resources_outlive_a_disposed_context_wrapper()
    {
        var ctx2 = CudaContext.RetainPrimary(0);
        var mem = ctx2.Allocate(1024);
        var s = ctx2.CreateStream();
        ctx2.Dispose();                                  // our count is dropped; mem and s still hold theirs
        Assert.Throws<ObjectDisposedException>(ctx2.MakeCurrent);
        ctx2.Dispose();                                  // idempotent
        ctx2 = null!;
        Assert.DoesNotThrow(() =>
        {
            _ctx.MemsetAsync(mem.Ptr, 7, mem.Bytes, s.Handle);
            s.Synchronize();
        });
        s.Dispose();
        mem.Dispose();                                   // last count: the retain is released now
    }

    [Test]
    public void Any_thread_may_use_the_context_without_setting_it_first()
    {
        // Each operation binds its context itself: a fresh thread with nothing current works.
        Exception? error = null;
        var worker = new Thread(() =>
        {
            try
            {
                Cu.Check(Cu.cuCtxSetCurrent(default));
                using var s = _ctx.CreateStream();
                using var m = _ctx.Allocate(4096);
                _ctx.MemsetAsync(m.Ptr, 1, m.Bytes, s.Handle);
                s.Synchronize();
            }
            catch (Exception e) { error = e; }
        });
        worker.Start();
        worker.Join();
        Assert.That(error, Is.Null);
    }

    [Test]
    public void Stream_capture_mode_blocks_sync_inside_capture()
    {
        using var s = _ctx.CreateStream();
        s.BeginCapture();
        var e = Assert.Throws<CudaException>(s.Synchronize)!;
        Assert.That(e.Result, Is.AnyOf(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED));
        // The failed sync invalidated the capture; ending it reports that and leaves the stream usable.
        var end = Assert.Throws<CudaException>(() => s.EndCapture())!;
        Assert.That(end.Result, Is.EqualTo(CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED));
        Assert.That(s.CaptureStatus, Is.EqualTo(CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE));
    }
}
