namespace Llama4Native.Cli.Verbs;

/// <summary>
/// Progress on stderr: percent, bytes, GB/s and ETA. On a terminal, one line redrawn in place (`\r`) at most 10
/// times a second; otherwise (a log, a pipe, a test's writer) plain lines, one per 25 % and the last, so logs hold
/// no carriage returns. <see cref="Interactive"/> overrides the detection.
/// </summary>
internal sealed class ProgressBar(TextWriter w, string label, bool? interactive = null)
{
    long lastTicks;
    bool drawn;
    int lastQuarter = -1;

    /// <summary>Whether this writer is the process's stderr and stderr is a terminal.</summary>
    public bool Interactive { get; } = interactive ?? (ReferenceEquals(w, Console.Error) && !Console.IsErrorRedirected);

    public void Update(long done, long total, TimeSpan elapsed)
    {
        double frac = total == 0 ? 1 : (double)done / total;
        double gbps = elapsed.TotalSeconds > 0 ? done / 1e9 / elapsed.TotalSeconds : 0;
        if (!Interactive)
        {
            int quarter = (int)(frac * 4);
            if (quarter == lastQuarter || (quarter < 4 && done >= total)) return;
            lastQuarter = quarter;
            w.WriteLine($"{label}: {frac * 100:0}%  {Format.Bytes(done)} / {Format.Bytes(total)}  {gbps:0.00} GB/s  {elapsed.TotalSeconds:0.0} s");
            return;
        }
        long now = Environment.TickCount64;
        if (done < total && now - lastTicks < 100) return;
        lastTicks = now;
        int width = 30, fill = (int)(frac * width);
        string eta = done > 0 && done < total && gbps > 0 ? $"ETA {TimeSpan.FromSeconds((total - done) / 1e9 / gbps):mm\\:ss}" : "";
        w.Write($"\r{label} [{new string('#', fill)}{new string('.', width - fill)}] {frac * 100,5:0.0}%  " +
                $"{Format.Bytes(done)} / {Format.Bytes(total)}  {gbps:0.00} GB/s  {eta}   ");
        drawn = true;
        if (done >= total) Done();
    }

    public void Done()
    {
        if (drawn) w.WriteLine();
        drawn = false;
    }
}
