using System.Text.Json;
using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Ops;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-kernels`: the op table in perf mode. Times every perf case (real Llama 4 shapes) on a device
/// with device events and prints µs, GB/s and TFLOP/s; `--shapes` writes the cases for torch_compare.py.
/// On the emulator the correctness cases are timed instead (real shapes would take hours there).
/// </summary>
internal static class BenchKernelsVerb
{
    public static readonly VerbSpec Spec = new("bench-kernels", "time every kernel's perf cases on a device (GB/s, TFLOP/s); --json/--shapes for reports; " +
                                               "--device emu --analyze: coalescing and bank conflicts per access site instead",
        [Common.Device,
         new("filter", "TEXT", "only cases whose id contains TEXT"),
         new("json", "FILE", "also write the results as JSON"),
         new("shapes", "FILE", "write the cases' shapes as JSON (for bench/torch_compare.py)"),
         new("seed", "S", "seed of the random inputs (default: the clock)"),
         new("budget-ms", "MS", "time budget per case in ms"),
         new("memory-gb", "GB", "with --analyze: emulated device memory in GB"),
         new("cases", "KIND", "with --analyze: perf, correctness or both"),
         new("no-check", null, "skip the correctness check of each timed case"),
         new("analyze", null, "emulator only: global load/store efficiency and shared bank conflicts per access site")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        if (a.Flag("analyze")) return Analyze(a, stdout, stderr);
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

    /// <summary>
    /// `--analyze` (emulator only): each perf case (or `--cases correctness`) is launched once on a checked
    /// emulator with the analysis on; per kernel, the global load/store efficiency (requested bytes ÷ 32-byte
    /// sectors, per warp instruction), the shared-memory bank conflicts (wavefronts per phase) and the sites
    /// below 80% / above 2-way. Only the first 4 blocks of each launch run (the sample), so the real shapes
    /// stay affordable; a case needing more than --memory-gb (default 6) of device memory is skipped.
    /// </summary>
    static int Analyze(Args a, TextWriter stdout, TextWriter stderr)
    {
        var spec = a.Get("device", "emu");
        if (spec != "emu") throw new ArgumentException($"--analyze runs on the emulated device (--device emu), not '{spec}'");
        long mem = (long)(a.GetDouble("memory-gb", 6) * (1L << 30));
        using var dev = new EmuDevice(new EmuOptions(MemoryBytes: mem, Check: EmuCheck.Analyze | EmuCheck.Memory));
        var cases = (a.Get("cases", "perf") == "correctness" ? OpSpecs.AllCases() : OpSpecs.AllPerfCases())
            .Where(c => OpSpecs.Matches(c, a.Get("filter"))).ToList();
        int seed = a.GetInt("seed", 1);
        stdout.WriteLine($"device: {dev.Name}; analysis of the first 4 blocks of every launch");
        foreach (var c in cases)
        {
            try
            {
                using var inst = OpSpecs.For(c).Create(dev, c, new Random(seed));
                dev.Analysis(reset: true);
                inst.Launch();
            }
            catch (Exception e) when (e is DeviceOutOfMemoryException or OutOfMemoryException)
            {
                stdout.WriteLine($"{c.Id}: skipped (needs more than {a.GetDouble("memory-gb", 6)} GB of emulated device memory; --memory-gb)");
                dev.Analysis(reset: true);
                continue;
            }
            catch (Exception e)
            {
                stderr.WriteLine($"{c.Id}: failed: {e.Message}");
                dev.Analysis(reset: true);
                continue;
            }
            var sites = dev.Analysis(reset: true);
            stdout.WriteLine($"{c.Id}");
            foreach (var k in sites.GroupBy(s => s.Kernel))
            {
                string Eff(bool store)
                {
                    var g = k.Where(s => !s.Shared && s.Store == store).ToList();
                    long b = g.Sum(s => s.Bytes), sec = g.Sum(s => s.Sectors);
                    return sec == 0 ? "   -  " : $"{100.0 * b / (sec * 32.0),5:0.0}%";
                }
                var sh = k.Where(s => s.Shared).ToList();
                long wf = sh.Sum(s => s.Wavefronts), ph = sh.Sum(s => s.Phases);
                string ways = ph == 0 ? "  -  " : $"{(double)wf / ph,4:0.00}";
                stdout.WriteLine($"  {k.Key,-34} global load {Eff(false)}  store {Eff(true)}  shared ways {ways} (max {(sh.Count == 0 ? 0 : sh.Max(s => s.MaxWays))})");
                foreach (var s in k.Where(s => s.Shared ? s.Ways > 2 : s.Efficiency < 0.8).OrderByDescending(s => s.Shared ? s.Wavefronts : s.Sectors).Take(4))
                    stdout.WriteLine($"      {(s.Shared ? "shared" : "global")} {(s.Store ? "store" : "load "),-5} {(s.Shared ? $"{s.Ways:0.00}-way" : $"{100 * s.Efficiency:0.0}%"),7}  {s.Instructions,8} instr  {s.Site}");
            }
        }
        return 0;
    }
}
