using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 bench-report`: joins what bench/gpu-check.sh gathered on the GPU machine — our kernel timings
/// (bench-kernels --json), PyTorch's on the same shapes (torch_compare.py) and the test summary — into one
/// markdown report, and prints the short table last (the device tool shows the end of the output).
/// </summary>
internal static class BenchReportVerb
{
    public static readonly VerbSpec Spec = new("bench-report", "join bench-kernels/torch_compare/test results into a markdown report (used by bench/gpu-check.sh)",
        [new("kernels", "FILE", "bench-kernels --json output (required)"),
         new("torch", "FILE", "torch_compare.py output"),
         new("tests", "FILE", "the test run's output"),
         new("out", "FILE", "the markdown report to write")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        var kernelsPath = a.Get("kernels") ?? throw new UsageException("--kernels FILE is required");
        using var kdoc = JsonDocument.Parse(File.ReadAllText(kernelsPath));
        var torch = new Dictionary<string, double>(StringComparer.Ordinal);
        string torchInfo = "PyTorch: not run";
        if (a.Get("torch") is { } tp && File.Exists(tp))
        {
            using var tdoc = JsonDocument.Parse(File.ReadAllText(tp));
            foreach (var p in tdoc.RootElement.GetProperty("ms").EnumerateObject()) torch[p.Name] = p.Value.GetDouble();
            torchInfo = $"PyTorch {tdoc.RootElement.GetProperty("torch").GetString()} on {tdoc.RootElement.GetProperty("device").GetString()}";
        }
        var sb = new StringBuilder();
        var root = kdoc.RootElement;
        sb.AppendLine($"# GPU check: {root.GetProperty("device").GetString()} ({root.GetProperty("arch").GetString()})\n");
        if (a.Get("tests") is { } testsPath && File.Exists(testsPath))
        {
            var lines = File.ReadAllLines(testsPath).Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\s*(total|failed|succeeded|skipped):")).Select(l => l.Trim());
            sb.AppendLine("Tests: " + string.Join(", ", lines) + "\n");
        }
        sb.AppendLine(torchInfo + "\n");
        sb.AppendLine("| case | ours µs | GB/s | TFLOP/s | torch µs | torch / ours | check |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
        var shortTable = new StringBuilder();
        shortTable.AppendLine($"{"case",-52} {"ours µs",9} {"torch µs",9} {"speedup",8}");
        foreach (var r in root.GetProperty("results").EnumerateArray())
        {
            var id = r.GetProperty("id").GetString()!;
            double us = r.GetProperty("us").GetDouble();
            string t = "", ratio = "";
            if (torch.TryGetValue(id, out var ms)) { t = (ms * 1000).ToString("0.0", CultureInfo.InvariantCulture); ratio = (ms * 1000 / us).ToString("0.00", CultureInfo.InvariantCulture) + "×"; }
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {id} | {us:0.0} | {r.GetProperty("gbps").GetDouble():0} | {r.GetProperty("tflops").GetDouble():0.00} | {t} | {ratio} | {r.GetProperty("check").GetString()} |"));
            shortTable.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{id,-52} {us,9:0.0} {t,9} {ratio,8}"));
        }
        if (a.Get("out") is { } outPath) File.WriteAllText(outPath, sb.ToString());
        stdout.Write(shortTable.ToString());
        return 0;
    }
}
