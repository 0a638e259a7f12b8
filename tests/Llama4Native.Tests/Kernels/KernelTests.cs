using Llama4Native.Devices;
using Llama4Native.Ops;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// Every case of the op table against the C# reference, written once and made concrete per device (the
/// ILGPU pattern): <see cref="EmulatedKernelTests"/> always runs; <see cref="CudaKernelTests"/> runs where
/// a GPU is present and is skipped, saying why, elsewhere. Inputs are fresh random values from a seed that
/// the test prints, so a failure can be replayed (LLAMA4_TEST_SEED=…).
/// </summary>
public abstract class KernelTests
{
    protected abstract Device CreateDevice();
    Device? device;

    [OneTimeSetUp] public void Open() => device = CreateDevice();
    [OneTimeTearDown] public void Close() => device?.Dispose();

    public static IEnumerable<TestCaseData> AllCases() =>
        OpSpecs.AllCases().Select(c => new TestCaseData(c).SetName(c.Id.Replace('/', '.').Replace(',', '+').Replace('>', '_')));

    [TestCaseSource(nameof(AllCases))]
    public void MatchesReference(OpCase c)
    {
        int seed = TestSeed.For(c.Id);
        using var inst = OpSpecs.For(c).Create(device!, c, new Random(seed));
        inst.Launch();
        var r = inst.Check();
        Assert.That(r.Passed, Is.True, $"{c.Id} (replay with LLAMA4_TEST_SEED={TestSeed.Run}): {r}");
    }
}

[TestFixture, Category("Emulator")]
public sealed class EmulatedKernelTests : KernelTests
{
    protected override Device CreateDevice() => TestDevices.Emulated();
}

[TestFixture, Category("Cuda")]
public sealed class CudaKernelTests : KernelTests
{
    protected override Device CreateDevice() => TestDevices.CudaOrIgnore();
}
