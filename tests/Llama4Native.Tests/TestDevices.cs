using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;

namespace Llama4Native.Tests;

/// <summary>Devices for tests: the emulator always; CUDA only where a driver and a GPU exist.</summary>
public static class TestDevices
{
    public static Device Emulated() => new EmuDevice();

    /// <summary>The emulator with every check on (race, memory, sync, init): a report fails the launch.</summary>
    public static Device EmulatedChecked(EmuCheck check = EmuCheck.All) => new EmuDevice(new EmuOptions(Check: check));

    public static Device CudaOrIgnore()
    {
        if (!DeviceFactory.TryCreateCuda(0, out var dev, out var reason)) Assert.Ignore($"no CUDA device: {reason}");
        return dev!;
    }
}

/// <summary>Per-test seeds: fresh each run, printed, and replayable with LLAMA4_TEST_SEED.</summary>
public static class TestSeed
{
    /// <summary>The run's seed: set LLAMA4_TEST_SEED to this to replay every test's inputs.</summary>
    public static int Run => runSeed;
    static readonly int runSeed = int.TryParse(Environment.GetEnvironmentVariable("LLAMA4_TEST_SEED"), out var s) ? s : Random.Shared.Next();
    public static int For(string name)
    {
        int seed = HashCode.Combine(runSeed, StableHash(name));
        return seed;
    }
    static int StableHash(string s) { unchecked { int h = 17; foreach (var c in s) h = h * 31 + c; return h; } }
}
