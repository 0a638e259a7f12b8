using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Ops;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// Every case of the op table against the C# reference, written once and made concrete per device (the
/// ILGPU pattern): <see cref="EmulatedKernelTests"/> always runs; <see cref="CudaKernelTests"/> runs where
/// a GPU is present and is skipped, saying why, elsewhere. Inputs are fresh random values from a seed that
/// the test prints, so a failure can be replayed (LLAMA4_TEST_SEED=…).
/// </summary>
internal abstract class KernelTests
{
    protected abstract Device CreateDevice();
    Device? device;

    /// <summary>Product of a case's dims above which a checked fixture runs it unchecked (see MatchesReference).</summary>
    public const long CheckedElementsCap = 1L << 26;
    Device? plain;

    [OneTimeSetUp] public void Open() => device = CreateDevice();
    [OneTimeTearDown] public void Close() { device?.Dispose(); plain?.Dispose(); }

    public static IEnumerable<TestCaseData> AllCases() =>
        OpSpecs.AllCases().Select(c => new TestCaseData(c).SetName(c.Id.Replace('/', '.').Replace(',', '+').Replace('>', '_')));

    [TestCaseSource(nameof(AllCases))]
    public void MatchesReference(OpCase c)
    {
        int seed = TestSeed.For(c.Id);
        // Under the checker (instrumented code, 16 shadow bytes per byte touched), a case whose inputs exceed
        // CheckedBytesCap runs on a plain device instead: the one such case today is the 3x4096x8200 MoE
        // case (~270 MB of weights), which has the same kernels as the small checked MoE cases.
        var dev = device!;
        if (dev is EmuDevice { Check: not EmuCheck.None } && c.Dims.Aggregate(1L, (a, b) => a * b) > CheckedElementsCap)
            dev = plain ??= new EmuDevice(new EmuOptions(Check: EmuCheck.None));
        using var inst = OpSpecs.For(c).Create(dev, c, new Random(seed));
        inst.Launch();
        var r = inst.Check();
        Assert.That(r.Passed, Is.True, $"{c.Id} (replay with LLAMA4_TEST_SEED={TestSeed.Run}): {r}");
    }
}

/// <summary>Every op-table case on the emulator under the checker (race, memory, sync, init): a case passes
/// only when it matches the reference AND the checker reports nothing. New kernels in the op table are
/// picked up automatically (the instrumented variant is compiled from the same source).</summary>
[TestFixture, Category("Emulator")]
internal sealed class EmulatedKernelTests : KernelTests
{
    protected override Device CreateDevice() => TestDevices.EmulatedChecked();
}

[TestFixture, Category("Cuda")]
internal sealed class CudaKernelTests : KernelTests
{
    protected override Device CreateDevice() => TestDevices.CudaOrIgnore();
}
