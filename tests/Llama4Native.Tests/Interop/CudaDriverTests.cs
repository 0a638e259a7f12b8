using Llama4Native.Interop;
using NUnit.Framework;

namespace Llama4Native.Tests.Interop;

/// <summary>What must hold with or without a GPU: probing never throws, errors read well.</summary>
[TestFixture]
public class CudaDriverTests
{
    [Test]
    public void TryLoad_never_throws_and_always_gives_a_reason()
    {
        bool ok = CudaDriver.TryLoad(out var reason);
        TestContext.Out.WriteLine($"CUDA usable: {ok}: {reason}");
        Assert.That(reason, Is.Not.Empty);
        Assert.That(CudaDriver.TryLoad(out var again), Is.EqualTo(ok), "the outcome is cached");
        Assert.That(again, Is.EqualTo(reason));
    }

    [Test]
    public void Without_a_driver_library_the_reason_says_so()
    {
        if (CudaDriver.IsLibraryLoaded || CudaDriver.TryLoad(out _))
            Assert.Ignore("this machine has a CUDA driver library");
        CudaDriver.TryLoad(out var reason);
        Assert.That(reason, Is.EqualTo(OperatingSystem.IsWindows()
            ? "CUDA driver library nvcuda.dll not found: no NVIDIA driver on this machine"
            : "CUDA driver library libcuda.so.1 not found: no NVIDIA driver on this machine"));
        var e = Assert.Throws<CudaUnavailableException>(() => CudaContext.RetainPrimary(0))!;
        Assert.That(e.Message, Is.EqualTo(reason));
    }

    [Test]
    public void CudaException_message_names_call_code_and_text()
    {
        var e = new CudaException(CUresult.CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc_v2(out p, bytes)");
        Assert.That(e.Result, Is.EqualTo(CUresult.CUDA_ERROR_OUT_OF_MEMORY));
        Assert.That(e.ResultName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
        Assert.That(e.Expression, Is.EqualTo("cuMemAlloc_v2(out p, bytes)"));
        Assert.That(e.Message, Does.StartWith("cuMemAlloc_v2(out p, bytes) failed: CUDA_ERROR_OUT_OF_MEMORY"));
        if (CudaDriver.IsLibraryLoaded)
            Assert.That(e.Message, Is.EqualTo("cuMemAlloc_v2(out p, bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)"));
        Assert.That(e.IsSticky, Is.False);
        Assert.That(new CudaException(CUresult.CUDA_ERROR_ILLEGAL_ADDRESS, "x").IsSticky, Is.True);
    }

    [Test]
    public void Check_captures_the_expression_text()
    {
        static CUresult Fail(int bytes) => bytes > 0 ? CUresult.CUDA_ERROR_INVALID_VALUE : CUresult.CUDA_SUCCESS;
        Assert.DoesNotThrow(() => Cu.Check(Fail(0)));
        var e = Assert.Throws<CudaException>(() => Cu.Check(Fail(42)))!;
        Assert.That(e.Expression, Is.EqualTo("Fail(42)"));
        Assert.That(e.Message, Does.StartWith("Fail(42) failed: CUDA_ERROR_INVALID_VALUE"));
    }

    [Test]
    public void Unknown_result_codes_still_format()
    {
        // Unknown to our enum and to the driver (cuGetErrorName fails for it): the number, never an empty name.
        var e = new CudaException((CUresult)12345, "cuSomething()");
        Assert.That(e.ResultName, Is.EqualTo("CUresult(12345)"));
        Assert.That(e.Message, Does.StartWith("cuSomething() failed: CUresult(12345)"));
    }

    [Test]
    public void Handle_structs_are_exactly_their_c_types()
    {
        unsafe
        {
            Assert.That(sizeof(CUdevice), Is.EqualTo(4));
            Assert.That(sizeof(CUcontext), Is.EqualTo(IntPtr.Size));
            Assert.That(sizeof(CUstream), Is.EqualTo(IntPtr.Size));
            Assert.That(sizeof(CUfunction), Is.EqualTo(IntPtr.Size));
            Assert.That(sizeof(CUgraphExec), Is.EqualTo(IntPtr.Size));
            Assert.That(sizeof(CUresult), Is.EqualTo(4));
        }
    }

    [Test]
    public void Sync_after_launch_is_on_only_for_exactly_1()
    {
        Assert.That(CudaDebug.FromEnvironmentValue("1"), Is.True);
        Assert.That(CudaDebug.FromEnvironmentValue(null), Is.False);
        Assert.That(CudaDebug.FromEnvironmentValue(""), Is.False);
        Assert.That(CudaDebug.FromEnvironmentValue("0"), Is.False);
        bool saved = CudaDebug.SyncAfterLaunch;
        try { CudaDebug.SyncAfterLaunch = !saved; Assert.That(CudaDebug.SyncAfterLaunch, Is.EqualTo(!saved)); }
        finally { CudaDebug.SyncAfterLaunch = saved; }
    }
}
