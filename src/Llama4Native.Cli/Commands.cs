using System.Reflection;
using Llama4Native.Cli.Verbs;

namespace Llama4Native.Cli;

/// <summary>
/// Verb dispatch for the `llama4` CLI. Each verb lives in its own file under Verbs/ with a <see cref="VerbSpec"/>
/// (every option and its help) and registers here. Errors surface as exceptions up to this one place, which prints
/// them and returns an exit code: 0 done, 1 error, 2 usage (a bad command line; nothing was loaded).
/// `llama4 --help`, `llama4 help VERB`, `llama4 VERB --help` (or -h) and `llama4 --version` print to stdout.
/// </summary>
internal static class Commands
{
    public delegate int Verb(string[] args, TextWriter stdout, TextWriter stderr);

    static readonly SortedDictionary<string, (VerbSpec Spec, Verb Run)> table = new(StringComparer.Ordinal);

    public static void Register(VerbSpec spec, Verb run) => table[spec.Name] = (spec, run);

    /// <summary>The spec of a registered verb (tests, docs).</summary>
    public static VerbSpec SpecOf(string verb) { RegisterAll(); return table[verb].Spec; }
    public static IReadOnlyCollection<string> Verbs { get { RegisterAll(); return table.Keys; } }

    public static string Version =>
        typeof(Commands).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        RegisterAll();
        if (args.Length == 0 || args[0] is "-h" or "--help" or "-?" || (args[0] == "help" && args.Length == 1))
        {
            stdout.WriteLine("usage: llama4 <verb> [options]      llama4 <verb> --help for the verb's options\n");
            foreach (var (name, v) in table) stdout.WriteLine($"  {name,-13} {v.Spec.Summary}");
            stdout.WriteLine("\n  --version     print the version\nExit codes: 0 done, 1 error, 2 bad command line.");
            return args.Length == 0 ? 2 : 0;
        }
        if (args[0] is "--version" or "-V" or "version")
        {
            if (args.Length > 1) { stderr.WriteLine($"llama4: {args[0]} takes no arguments"); return 2; }
            stdout.WriteLine($"llama4 {Version} (Llama4Native; .NET {Environment.Version}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription.Trim()}, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture})");
            return 0;
        }
        if (args[0] == "help")
        {
            if (args.Length == 2 && table.TryGetValue(args[1], out var h)) { stdout.Write(h.Spec.Help()); return 0; }
            stderr.WriteLine($"llama4 help: unknown verb '{string.Join(' ', args[1..])}'. Run 'llama4 --help' for the list.");
            return 2;
        }
        if (!table.TryGetValue(args[0], out var verb))
        {
            var near = Args.Nearest(args[0], table.Keys);
            stderr.WriteLine($"llama4: unknown verb '{args[0]}'{(near is null ? "" : $" (did you mean '{near}'?)")}. Run 'llama4 --help' for the list.");
            return 2;
        }
        try
        {
            return verb.Run(args[1..], stdout, stderr);
        }
        catch (HelpRequested h)
        {
            stdout.Write(h.Spec.Help());
            return 0;
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
    static readonly Lock gate = new();
    static void RegisterAll()
    {
        lock (gate)
        {
            if (registered) return;
            registered = true;
            // Each verb file adds itself here (one line per verb).
            Register(KernelsVerb.Spec, KernelsVerb.Run);
            Register(SelftestVerb.Spec, SelftestVerb.Run);
            Register(BenchKernelsVerb.Spec, BenchKernelsVerb.Run);
            Register(BenchReportVerb.Spec, BenchReportVerb.Run);
            Register(ChatVerb.Spec, ChatVerb.Run);
            Register(RunVerb.Spec, RunVerb.Run);
            Register(EvalVerb.Spec, EvalVerb.Run);
            Register(BenchE2eVerb.Spec, BenchE2eVerb.Run);
            Register(SynthVerb.Spec, SynthVerb.Run);
            Register(PlanVerb.Spec, PlanVerb.Run);
            Register(InspectVerb.Spec, InspectVerb.Run);
            Register(BenchLoadVerb.Spec, BenchLoadVerb.Run);
            Register(TokenizeVerb.Spec, TokenizeVerb.Run);
            Register(DevicesVerb.Spec, DevicesVerb.Run);
            Register(PreprocessVerb.Spec, PreprocessVerb.Run);
            Register(ServeVerb.Spec, ServeVerb.Run);
            Register(BenchServeVerb.Spec, BenchServeVerb.Run);
            Register(SoakVerb.Spec, SoakVerb.Run);
        }
    }
}

/// <summary>Bad command-line usage: printed without a stack trace, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
