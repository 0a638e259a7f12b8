using System.Text.RegularExpressions;

namespace Llama4Native.Interop;

/// <summary>
/// Resource use of one kernel as ptxas reported it (<c>--ptxas-options=-v</c>). Sizes in bytes;
/// spill bytes are per thread and are the cheapest sign of register pressure we have without a GPU.
/// </summary>
internal sealed record PtxasKernelInfo(
    string Name, string Arch, int Registers,
    int SpillStoreBytes, int SpillLoadBytes, int StackFrameBytes,
    int SharedMemoryBytes, int ConstantMemoryBytes, int CumulativeStackBytes, int Barriers)
{
    public bool Spills => SpillStoreBytes > 0 || SpillLoadBytes > 0;
}

/// <summary>
/// Parses ptxas's verbose output. The format (NVRTC 12.4, sm_90a), one block per entry function:
/// <code>
/// ptxas info    : Compiling entry function 'spill' for 'sm_90a'
/// ptxas info    : Function properties for spill
/// ptxas         .     1056 bytes stack frame, 20 bytes spill stores, 20 bytes spill loads
/// ptxas info    : Used 24 registers, 1056 bytes cumulative stack size, 256 bytes smem
/// </code>
/// The "Used" line lists only non-zero extras: "N bytes smem", "N bytes cmem[k]" (summed over banks),
/// "N bytes cumulative stack size", and on newer ptxas "used N barriers". Non-entry (device) functions
/// get a "Function properties" block of their own, which is skipped.
/// </summary>
internal static partial class PtxasInfo
{
    [GeneratedRegex(@"Compiling entry function '(?<name>[^']+)' for '(?<arch>[^']+)'")]
    private static partial Regex EntryLine();

    [GeneratedRegex(@"Function properties for (?<name>\S+)")]
    private static partial Regex PropertiesLine();

    [GeneratedRegex(@"(?<stack>\d+) bytes stack frame, (?<stores>\d+) bytes spill stores, (?<loads>\d+) bytes spill loads")]
    private static partial Regex StackLine();

    [GeneratedRegex(@"Used (?<regs>\d+) registers(?<rest>.*)$")]
    private static partial Regex UsedLine();

    [GeneratedRegex(@"(?<n>\d+) bytes smem")]
    private static partial Regex Smem();

    [GeneratedRegex(@"(?<n>\d+) bytes cmem\[\d+\]")]
    private static partial Regex Cmem();

    [GeneratedRegex(@"(?<n>\d+) bytes cumulative stack size")]
    private static partial Regex CumulativeStack();

    [GeneratedRegex(@"(?<n>\d+) barriers")]
    private static partial Regex BarriersItem();

    /// <summary>One record per entry function, in log order. Lines that are not ptxas -v output are ignored.</summary>
    public static IReadOnlyList<PtxasKernelInfo> Parse(string log)
    {
        var result = new List<PtxasKernelInfo>();
        PtxasKernelInfo? current = null;
        string? propertiesOf = null;

        void Flush()
        {
            if (current is not null) result.Add(current);
            current = null;
        }

        foreach (var line in log.Split('\n'))
        {
            if (EntryLine().Match(line) is { Success: true } entry)
            {
                Flush();
                current = new PtxasKernelInfo(entry.Groups["name"].Value, entry.Groups["arch"].Value, 0, 0, 0, 0, 0, 0, 0, 0);
                propertiesOf = null;
            }
            else if (PropertiesLine().Match(line) is { Success: true } props)
            {
                propertiesOf = props.Groups["name"].Value;
            }
            else if (StackLine().Match(line) is { Success: true } stack)
            {
                if (current is not null && propertiesOf == current.Name)
                    current = current with
                    {
                        StackFrameBytes = Int(stack, "stack"),
                        SpillStoreBytes = Int(stack, "stores"),
                        SpillLoadBytes = Int(stack, "loads"),
                    };
            }
            else if (UsedLine().Match(line) is { Success: true } used && current is not null)
            {
                var rest = used.Groups["rest"].Value;
                current = current with
                {
                    Registers = Int(used, "regs"),
                    SharedMemoryBytes = Smem().Match(rest) is { Success: true } s ? Int(s, "n") : 0,
                    ConstantMemoryBytes = Cmem().Matches(rest).Sum(m => Int(m, "n")),
                    CumulativeStackBytes = CumulativeStack().Match(rest) is { Success: true } c ? Int(c, "n") : 0,
                    Barriers = BarriersItem().Match(rest) is { Success: true } b ? Int(b, "n") : 0,
                };
            }
        }
        Flush();
        return result;
    }

    private static int Int(Match m, string group) => int.Parse(m.Groups[group].ValueSpan, System.Globalization.CultureInfo.InvariantCulture);
}
