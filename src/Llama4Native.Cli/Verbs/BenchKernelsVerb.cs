using System.Text.Json;
using Llama4Native.Devices;
using Llama4Native.Ops;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-kernels`: the op table in perf mode. Times every perf case (real Llama 4 shapes) on a device
/// with device events and prints µs, GB/s and TFLOP/s; `--shapes` writes the cases for torch_compare.py.
/// On the emulator the correctness cases are timed instead (real shapes would take hours there).
/// </summary>
public static class BenchKernelsVerb
{
    public static readonly VerbSpec Spec = new("bench-kernels", "time every kernel's perf cases on a device (GB/s, TFLOP/s); --json/--shapes for reports",
        [Common.Device,
         new("filter", "TEXT", "only cases whose id contains TEXT"),
         new("json", "FILE", "also write the results as JSON"),
         new("shapes", "FILE", "write the cases' shapes as JSON (for bench/torch_compare.py)"),
         new("seed", "S", "seed of the random inputs (default: the clock)"),
         new("budget-ms", "MS", "time budget per case in ms"),
         new("no-check", null, "skip the correctness check of each timed case")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        using var dev = DeviceFactory.Create(Common.DeviceSpec(a));
        var filter = a.Get("filter");
        var cases = (dev.Kind == DeviceKind.Cuda ? OpSpecs.AllPerfCases() : OpSpecs.AllCases())
            .Where(c => OpSpecs.Matches(c, filter)).ToList();
        if (a.Get("shapes") is { } shapesPath)
            File.WriteAllText(shapesPath, JsonSerializer.Serialize(cases.Select(c => new { id = c.Id, op = c.Op, variant = c.Variant, types = c.Types, dims = c.Dims }),
                new JsonSerializerOptions { WriteIndented = true }));
        stdout.WriteLine($"device: {dev.Name} ({dev.Arch})");
        stdout.WriteLine($"{"case",-58} {"µs",10} {"GB/s",8} {"TFLOP/s",8}  check");
        int seed = a.GetInt("seed", Environment.TickCount);
        var results = new List<OpBench.Result>();
        foreach (var c in cases)
        {
            try
            {
                var r = OpBench.Run(dev, c, seed, a.GetDouble("budget-ms", 50), check: !a.Flag("no-check"));
                results.Add(r);
                stdout.WriteLine($"{c.Id,-58} {r.Microseconds,10:0.0} {r.GBps,8:0.0} {r.TFlops,8:0.00}  {r.Check}");
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                stderr.WriteLine($"{c.Id,-58} failed: {e.Message}");
            }
        }
        if (a.Get("json") is { } jsonPath)
            File.WriteAllText(jsonPath, JsonSerializer.Serialize(new
            {
                device = dev.Name, arch = dev.Arch, seed,
                results = results.Select(r => new { id = r.Case.Id, op = r.Case.Op, us = r.Microseconds, gbps = r.GBps, tflops = r.TFlops, reps = r.Reps, check = r.Check }),
            }, new JsonSerializerOptions { WriteIndented = true }));
        return results.Any(r => r.Check.StartsWith("FAILED", StringComparison.Ordinal)) ? 1 : 0;
    }
}
