namespace Llama4Native.Cli;

/// <summary>
/// Verb dispatch for the `llama4` CLI. Each verb lives in its own file under Verbs/ and registers here.
/// Errors surface as exceptions up to this one place, which prints them and returns an exit code.
/// </summary>
public static class Commands
{
    public delegate int Verb(string[] args, TextWriter stdout, TextWriter stderr);

    static readonly SortedDictionary<string, (string Help, Verb Run)> table = new(StringComparer.Ordinal);

    public static void Register(string name, string help, Verb run) => table[name] = (help, run);

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        RegisterAll();
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            stdout.WriteLine("usage: llama4 <verb> [options]\n");
            foreach (var (name, v) in table) stdout.WriteLine($"  {name,-10} {v.Help}");
            return args.Length == 0 ? 2 : 0;
        }
        if (!table.TryGetValue(args[0], out var verb))
        {
            stderr.WriteLine($"llama4: unknown verb '{args[0]}'. Run 'llama4 --help' for the list.");
            return 2;
        }
        try
        {
            return verb.Run(args[1..], stdout, stderr);
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"llama4 {args[0]}: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            stderr.WriteLine($"llama4 {args[0]}: error: {e.Message}");
            if (Environment.GetEnvironmentVariable("LLAMA4_TRACE") == "1") stderr.WriteLine(e);
            return 1;
        }
    }

    static bool registered;
    static void RegisterAll()
    {
        if (registered) return;
        registered = true;
        // Each verb file adds itself here (one line per verb).
        Register("kernels", Verbs.KernelsVerb.Help, Verbs.KernelsVerb.Run);
        Register("selftest", Verbs.SelftestVerb.Help, Verbs.SelftestVerb.Run);
        Register("bench-kernels", Verbs.BenchKernelsVerb.Help, Verbs.BenchKernelsVerb.Run);
        Register("bench-report", Verbs.BenchReportVerb.Help, Verbs.BenchReportVerb.Run);
        Register("chat", Verbs.ChatVerb.Help, Verbs.ChatVerb.Run);
        Register("run", Verbs.RunVerb.Help, Verbs.RunVerb.Run);
        Register("eval", Verbs.EvalVerb.Help, Verbs.EvalVerb.Run);
        Register("bench-e2e", Verbs.BenchE2eVerb.Help, Verbs.BenchE2eVerb.Run);
        Register("synth", Verbs.SynthVerb.Help, Verbs.SynthVerb.Run);
        Register("inspect", Verbs.InspectVerb.Help, Verbs.InspectVerb.Run);
        Register("bench-load", Verbs.BenchLoadVerb.Help, Verbs.BenchLoadVerb.Run);
        Register("tokenize", Verbs.TokenizeVerb.Help, Verbs.TokenizeVerb.Run);
        Register("serve", Verbs.ServeVerb.Help, Verbs.ServeVerb.Run);
        Register("bench-serve", Verbs.BenchServeVerb.Help, Verbs.BenchServeVerb.Run);
    }
}

/// <summary>Bad command-line usage: printed without a stack trace, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);
