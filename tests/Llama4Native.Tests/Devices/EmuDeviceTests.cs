using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Kernels;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Devices;

[Category("Emulator")]
public class EmuDeviceTests
{
    [Test]
    public unsafe void BadLaunchBecomesAnExceptionNamingTheKernel_AndTheDeviceStaysUsable()
    {
        using var dev = new EmuDevice();
        var fn = dev.Kernels.Get(RmsNorm.File, "rmsnorm_f32_f32_f32");
        ulong p = 0; int rows = 1, cols = 1; float eps = 1e-5f;
        void** args = stackalloc void*[] { &p, &p, &p, &rows, &cols, &eps };
        // 2048 threads exceed both CUDA's 1024 and the kernel's __launch_bounds__(256).
        var e = Assert.Throws<EmulatorException>(() => dev.Launch(fn, 1, 2048, 0, args));
        Assert.That(e!.Message, Does.Contain("rmsnorm_f32_f32_f32"));

        // A correct launch right after works.
        var rng = new Random(TestSeed.For(nameof(BadLaunchBecomesAnExceptionNamingTheKernel_AndTheDeviceStaysUsable)));
        var x = Ops.DeviceData.Normal(rng, 3 * 40);
        using var bx = Ops.DeviceData.Upload(dev, x, DType.F32);
        using var by = Ops.DeviceData.Poisoned(dev, x.Length, DType.F32);
        RmsNorm.Run(dev, new Tensor(bx.Ptr, DType.F32, new Shape(3, 40)), null, new Tensor(by.Ptr, DType.F32, new Shape(3, 40)), 1e-5f);
        var y = Ops.DeviceData.Download(dev, by.Ptr, x.Length, DType.F32);
        var want = new float[x.Length];
        Reference.RmsNorm.NoWeight(x, want, 3, 40, 1e-5f);
        Assert.That(Ops.OpCheck.Compare("y", y, want, Ops.Tolerances.For("rmsnorm", DType.F32)).Passed);
    }

    [Test]
    public void OutOfMemoryNamesTheSizesAndLosesNothing()
    {
        using var dev = new EmuDevice(new EmuOptions(MemoryBytes: 1 << 20));
        using var a = dev.Allocate(600 << 10);
        var e = Assert.Throws<DeviceOutOfMemoryException>(() => dev.Allocate(600 << 10));
        Assert.That(e!.Message, Does.Contain("600 KiB").And.Contain("free"));
        Assert.That(e.RequestedBytes, Is.EqualTo(600 << 10));
        Assert.That(dev.FreeMemory, Is.EqualTo((1 << 20) - (600 << 10)));
        a.Dispose();
        using var b = dev.Allocate(900 << 10); // the failed request leaked nothing
        Assert.That(dev.FreeMemory, Is.EqualTo((1 << 20) - (900 << 10)));
    }

    [Test]
    public void UnknownKernelNameListsTheEntryPoints()
    {
        using var dev = new EmuDevice();
        var e = Assert.Throws<EmulatorException>(() => dev.Kernels.Get(Softmax.File, "softmax_nope"));
        Assert.That(e!.Message, Does.Contain("softmax_warp_f32"));
    }
}
