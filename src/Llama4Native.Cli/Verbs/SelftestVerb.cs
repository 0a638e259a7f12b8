using Llama4Native.Devices;
using Llama4Native.Ops;

namespace Llama4Native.Cli.Verbs;

/// <summary>`llama4 selftest`: every op case on this machine's device against the C# reference — the test suite a user can run on their own GPU.</summary>
public static class SelftestVerb
{
    public const string Help = "check every kernel against the C# reference on a device (--device, --filter)";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, ["device", "filter", "seed"]);
        using var dev = DeviceFactory.Create(a.Get("device", "auto"));
        int seed = a.GetInt("seed", Environment.TickCount);
        stdout.WriteLine($"device: {dev.Name} ({dev.Arch}); seed {seed}");
        int passed = 0, failed = 0;
        foreach (var c in OpSpecs.AllCases().Where(c => OpSpecs.Matches(c, a.Get("filter"))))
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
