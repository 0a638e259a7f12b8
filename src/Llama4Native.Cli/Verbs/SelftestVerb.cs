using Llama4Native.Devices;
using Llama4Native.Ops;

namespace Llama4Native.Cli.Verbs;

/// <summary>`llama4 selftest`: every op case on this machine's device against the C# reference — the test suite a user can run on their own GPU.</summary>
public static class SelftestVerb
{
    public static readonly VerbSpec Spec = new("selftest", "check every kernel against the C# reference on a device",
        [Common.Device,
         new("filter", "TEXT", "only op cases whose id matches TEXT (a glob with * and ?, or a word found anywhere in the id, e.g. rmsnorm); matching nothing is an error"),
         new("seed", "S", "seed of the random inputs, an int (default: the clock; printed)")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int seed = a.GetInt("seed", Environment.TickCount);
        var filter = a.Get("filter") is { } f && f.IndexOfAny(['*', '?']) < 0 ? $"*{f}*" : a.Get("filter");   // a plain word matches anywhere in the id
        var cases = OpSpecs.AllCases().Where(c => OpSpecs.Matches(c, filter)).ToList();
        if (cases.Count == 0)
            throw new UsageException($"--filter '{a.Get("filter")}' matches no op case; ops: {string.Join(", ", OpSpecs.AllCases().Select(c => c.Op).Distinct().Order(StringComparer.Ordinal))}");
        using var dev = DeviceFactory.Create(Common.DeviceSpec(a));
        stdout.WriteLine($"device: {dev.Name} ({dev.Arch}); seed {seed}");
        int passed = 0, failed = 0;
        foreach (var c in cases)
        {
            string verdict;
            try
            {
                using var inst = OpSpecs.For(c).Create(dev, c, new Random(HashCode.Combine(seed, c.Id)));
                inst.Launch();
                var r = inst.Check();
                verdict = r.Passed ? "ok" : "FAILED " + r;
                if (r.Passed) passed++; else failed++;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                verdict = "ERROR " + e.Message;
                failed++;
            }
            stdout.WriteLine($"{c.Id,-58} {verdict}");
        }
        stdout.WriteLine($"selftest: {passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }
}
