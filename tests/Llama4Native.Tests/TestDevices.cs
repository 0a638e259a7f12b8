using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;

namespace Llama4Native.Tests;

/// <summary>Devices for tests: the emulator always; CUDA only where a driver and a GPU exist.</summary>
internal static class TestDevices
{
    public static Device Emulated() => new EmuDevice();

    /// <summary>The emulator with every check on (race, memory, sync, init): a report fails the launch. L4EMU_CHECK, when
    /// set, overrides (e.g. L4EMU_CHECK=none runs the kernel cases unchecked, to measure the checker's overhead).</summary>
    public static Device EmulatedChecked(EmuCheck check = EmuCheck.All) =>
        new EmuDevice(new EmuOptions(Check: Environment.GetEnvironmentVariable("L4EMU_CHECK") is { Length: > 0 } ? EmuChecks.FromEnvironment() : check));

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
    /// <summary>The seed of one test: a fixed function of (run seed, name), the same in every process
    /// (HashCode.Combine is randomised per process, so it cannot replay).</summary>
    public static int For(string name) => For(runSeed, name);
    public static int For(int run, string name)
    {
        unchecked
        {   // FNV-1a over the name, mixed with the run seed (splitmix64 finaliser)
            ulong h = 14695981039346656037UL;
            foreach (var c in name) { h ^= c; h *= 1099511628211UL; }
            ulong z = h ^ ((ulong)(uint)run * 0x9E3779B97F4A7C15UL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return (int)(z ^ (z >> 31));
        }
    }
}
