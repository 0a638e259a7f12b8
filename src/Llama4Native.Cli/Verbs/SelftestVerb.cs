using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Ops;

namespace Llama4Native.Cli.Verbs;

/// <summary>`llama4 selftest`: every op case on this machine's device against the C# reference — the test suite a user can run on their own GPU.</summary>
internal static class SelftestVerb
{
    public static readonly VerbSpec Spec = new("selftest", "check every kernel against the C# reference on a device",
        [Common.Device,
         new("filter", "TEXT", "only op cases whose id matches TEXT (a glob with * and ?, or a word found anywhere in the id, e.g. rmsnorm); matching nothing is an error"),
         new("seed", "S", "seed of the random inputs, an int (default: the clock; printed)"),
         new("check", "LIST", "run every kernel under the emulator's checker: race,memory,sync,init or all (needs --device emu)")]);

    /// <summary>The seed of one case: a fixed function of (run seed, case id), the same in every process
    /// (FNV-1a + splitmix64; HashCode.Combine is randomised per process and could not replay).</summary>
    public static int CaseSeed(int run, string id)
    {
        unchecked
        {
            ulong h = 14695981039346656037UL;
            foreach (var ch in id) { h ^= ch; h *= 1099511628211UL; }
            ulong z = h ^ ((ulong)(uint)run * 0x9E3779B97F4A7C15UL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return (int)(z ^ (z >> 31));
        }
    }

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int seed = a.GetInt("seed", Environment.TickCount);
        var filter = a.Get("filter") is { } f && f.IndexOfAny(['*', '?']) < 0 ? $"*{f}*" : a.Get("filter");   // a plain word matches anywhere in the id
        var cases = OpSpecs.AllCases().Where(c => OpSpecs.Matches(c, filter)).ToList();
        if (cases.Count == 0)
            throw new UsageException($"--filter '{a.Get("filter")}' matches no op case; ops: {string.Join(", ", OpSpecs.AllCases().Select(c => c.Op).Distinct().Order(StringComparer.Ordinal))}");
        var deviceSpec = Common.DeviceSpec(a);
        Device dev;
        if (a.Get("check") is { } check)
        {
            // The checker is the emulator's: every load/store of every kernel checked, a report fails the case.
            if (deviceSpec is not ("emu" or "auto"))
                throw new UsageException($"--check needs the emulated device (--device emu); '{deviceSpec}' was given");
            EmuCheck checks;
            try { checks = EmuChecks.Parse(check); }
            catch (ArgumentException e) { throw new UsageException($"--check: {e.Message}"); }
            dev = new EmuDevice(new EmuOptions(Check: checks));
        }
        else dev = DeviceFactory.Create(deviceSpec);
        using var _ = dev;
        var checkNote = dev is EmuDevice { Check: not EmuCheck.None } emu ? $"; checks {emu.Check}" : "";
        stdout.WriteLine($"device: {dev.Name} ({dev.Arch}); seed {seed}{checkNote}");
        int passed = 0, failed = 0;
        foreach (var c in cases)
        {
            string verdict;
            try
            {
                using var inst = OpSpecs.For(c).Create(dev, c, new Random(CaseSeed(seed, c.Id)));
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
