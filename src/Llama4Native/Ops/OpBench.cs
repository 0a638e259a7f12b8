using System.Diagnostics;
using Llama4Native.Devices;

namespace Llama4Native.Ops;

/// <summary>Times one op case on a device with device events: warm-up, then repetitions filling ~the budget.</summary>
internal static class OpBench
{
    public sealed record Result(OpCase Case, double Microseconds, int Reps, double GBps, double TFlops, string Check);

    public static Result Run(Device dev, OpCase c, int seed, double budgetMs = 50, bool check = true)
    {
        var spec = OpSpecs.For(c);
        using var inst = spec.Create(dev, c, new Random(seed));
        inst.Launch();
        dev.Synchronize();
        string verdict = "not checked";
        if (check && inst.Flops < 4e9)   // the C# reference is plain loops: skip it for the big GEMMs
        {
            var r = inst.Check();
            verdict = r.Passed ? "ok" : "FAILED: " + r;
        }
        using var start = dev.CreateEvent(timing: true);
        using var end = dev.CreateEvent(timing: true);
        // One timed launch sizes the batch so that each measurement is long enough for the event clock.
        start.Record(); inst.Launch(); end.Record(); end.Synchronize();
        double one = Math.Max(start.ElapsedMs(end), 1e-3);
        int reps = (int)Math.Clamp(budgetMs / one, 3, 1000);
        var samples = new List<double>();
        var wall = Stopwatch.StartNew();
        for (int round = 0; round < 5 && (round == 0 || wall.Elapsed.TotalMilliseconds < 4 * budgetMs); round++)
        {
            start.Record();
            for (int i = 0; i < reps; i++) inst.Launch();
            end.Record(); end.Synchronize();
            samples.Add(start.ElapsedMs(end) * 1000.0 / reps);
        }
        samples.Sort();
        double us = samples[samples.Count / 2];
        return new Result(c, us, reps, inst.Bytes / (us * 1e3), inst.Flops / (us * 1e6), verdict);
    }
}
