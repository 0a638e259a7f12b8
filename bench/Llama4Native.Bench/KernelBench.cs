using BenchmarkDotNet.Attributes;
using Llama4Native.Devices;
using Llama4Native.Ops;

namespace Llama4Native.Bench;

/// <summary>
/// The op table in perf mode under BenchmarkDotNet: one benchmark per op case on the chosen device
/// (LLAMA4_BENCH_DEVICE = auto|cuda|emu, default auto). On CUDA the perf cases (real Llama 4 shapes) run,
/// each launch followed by a stream sync; on the emulator the correctness cases run, which measures the
/// emulator itself. For GPU kernel timings with device events (no host sync per launch) use
/// `llama4 bench-kernels`, which bench/gpu-check.sh runs.
/// </summary>
[ShortRunJob]
public class KernelBench
{
    static readonly Lazy<Device> device = new(() => DeviceFactory.Create(Environment.GetEnvironmentVariable("LLAMA4_BENCH_DEVICE") ?? "auto"));
    OpInstance? inst;

    public static IEnumerable<string> CaseIds()
    {
        var dev = device.Value;
        var cases = dev.Kind == DeviceKind.Cuda ? OpSpecs.AllPerfCases() : OpSpecs.AllCases().Where(c => c.Dims.Aggregate(1L, (a, b) => a * b) >= 4096);
        return cases.Select(c => c.Id);
    }

    [ParamsSource(nameof(CaseIds))]
    public string Case { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        var c = OpSpecs.AllCases().Concat(OpSpecs.AllPerfCases()).First(x => x.Id == Case);
        inst = OpSpecs.For(c).Create(device.Value, c, new Random(1));
        inst.Launch();
        device.Value.Synchronize();
    }

    [Benchmark]
    public void Launch()
    {
        inst!.Launch();
        device.Value.DefaultStream.Synchronize();
    }

    [GlobalCleanup] public void Cleanup() => inst?.Dispose();
}
