namespace Llama4Native.Cli.Verbs;

/// <summary>A one-line progress bar on stderr: percent, bytes, GB/s and ETA; redrawn at most 10 times a second.</summary>
internal sealed class ProgressBar(TextWriter w, string label)
{
    long lastTicks;
    bool drawn;

    public void Update(long done, long total, TimeSpan elapsed)
    {
        long now = Environment.TickCount64;
        if (done < total && now - lastTicks < 100) return;
        lastTicks = now;
        double frac = total == 0 ? 1 : (double)done / total;
        int width = 30, fill = (int)(frac * width);
        double gbps = elapsed.TotalSeconds > 0 ? done / 1e9 / elapsed.TotalSeconds : 0;
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
