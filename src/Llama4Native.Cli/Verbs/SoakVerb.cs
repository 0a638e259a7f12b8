using System.Diagnostics;
using Llama4Native.Generation;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 soak`: many short generations in one process on one model, recording host memory (RSS and the managed
/// heap after a full collection) and device memory in use at regular samples, then the least-squares slope of each
/// after the warm-up — a leak shows as a positive trend. Every <c>--new-session-every</c> generations the session is
/// disposed and a new one created, so allocation and release are soaked too.
/// </summary>
internal static class SoakVerb
{
    public static readonly VerbSpec Spec = new("soak", "many short generations in one process; host and device memory sampled, growth trend reported",
        [
            Common.Model, Common.Device,
            new("generations", "N", "generations to run, 1 to 10000000 (default 10000)"),
            new("new-tokens", "N", "tokens per generation, 1 to 1024 (default 4)"),
            new("sample-every", "N", "generations between memory samples, 1 to 100000 (default 100)"),
            new("new-session-every", "N", "generations between session replacements, 1 to 100000 (default 100)"),
            new("seed", "S", "seed of the prompts and the sampler, an int (default 1)"),
            new("csv", "FILE", "also write the samples as CSV (generation, seconds, rss_bytes, managed_bytes, device_bytes)"),
        ],
        "Without --model: the tiny-scout test fixture with a byte-level toy codec (no tokenizer needed).");

    public sealed record Sample(int Generation, double Seconds, long Rss, long Managed, long Device);
    public sealed record Result(IReadOnlyList<Sample> Samples, double RssSlope, double ManagedSlope, double DeviceSlope, int WarmupSamples);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int n = a.GetInt("generations", 10000, 1, 10_000_000), tokens = a.GetInt("new-tokens", 4, 1, 1024);
        int every = a.GetInt("sample-every", 100, 1, 100_000), sessionEvery = a.GetInt("new-session-every", 100, 1, 100_000);
        int seed = a.GetInt("seed", 1);
        var spec = Common.DeviceSpec(a);
        string? csv = a.Get("csv");
        if (csv is not null) OutputFile.Check(csv, "--csv");
        string dir = a.Has("model") ? Common.ModelDir(a) : FindFixture();
        var config = Model.Llama4Config.Load(dir);
        using var model = Llama4Model.Load(dir, new Llama4ModelOptions(spec, MaxContext: 256, MaxPrefillPiece: 32, Codec: new ToyCodec(config.Text.VocabSize)));
        var r = Soak(model, n, tokens, every, sessionEvery, seed, s =>
            stderr.WriteLine($"soak: {s.Generation,8} generations  {s.Seconds,8:0.0} s  rss {s.Rss / 1048576.0,8:0.0} MiB  managed {s.Managed / 1048576.0,7:0.00} MiB  device {s.Device / 1048576.0,7:0.00} MiB"));
        if (csv is not null)
            OutputFile.Write(csv, "--csv", tmp => File.WriteAllLines(tmp, ["generation,seconds,rss_bytes,managed_bytes,device_bytes",
                .. r.Samples.Select(s => FormattableString.Invariant($"{s.Generation},{s.Seconds:0.000},{s.Rss},{s.Managed},{s.Device}"))]));
        var first = r.Samples[r.WarmupSamples];
        var last = r.Samples[^1];
        stdout.WriteLine(FormattableString.Invariant(
            $"soak: {n} generations of {tokens} tokens on {model.Device.Name} in {last.Seconds:0.0} s ({n / Math.Max(1e-9, last.Seconds):0.0} generations/s)"));
        stdout.WriteLine(FormattableString.Invariant(
            $"rss      start {r.Samples[0].Rss / 1048576.0:0.0} MiB, after warm-up {first.Rss / 1048576.0:0.0} MiB, end {last.Rss / 1048576.0:0.0} MiB; slope after warm-up {r.RssSlope:0.0} B/generation"));
        stdout.WriteLine(FormattableString.Invariant(
            $"managed  after warm-up {first.Managed / 1048576.0:0.00} MiB, end {last.Managed / 1048576.0:0.00} MiB; slope {r.ManagedSlope:0.00} B/generation"));
        stdout.WriteLine(FormattableString.Invariant(
            $"device   after warm-up {first.Device / 1048576.0:0.00} MiB, end {last.Device / 1048576.0:0.00} MiB; slope {r.DeviceSlope:0.00} B/generation"));
        return 0;
    }

    /// <summary>The soak itself (also used by the test): samples at generation 0 and every <paramref name="every"/>.</summary>
    public static Result Soak(Llama4Model model, int n, int tokens, int every, int sessionEvery, int seed, Action<Sample>? progress = null, double warmup = 0.2)
    {
        var rng = new Random(seed);
        var sw = Stopwatch.StartNew();
        var samples = new List<Sample>();
        var chat = model.CreateSession();
        try
        {
            for (int g = 0; g <= n; g++)
            {
                if (g % every == 0 || g == n)
                {
                    long managed = GC.GetTotalMemory(forceFullCollection: true);
                    using var p = Process.GetCurrentProcess();
                    var s = new Sample(g, sw.Elapsed.TotalSeconds, p.WorkingSet64, managed, model.Device.TotalMemory - model.Device.FreeMemory);
                    samples.Add(s);
                    progress?.Invoke(s);
                }
                if (g == n) break;
                if (g > 0 && g % sessionEvery == 0) { chat.Dispose(); chat = model.CreateSession(); }
                var prompt = new string(Enumerable.Range(0, 3 + rng.Next(12)).Select(_ => (char)('a' + rng.Next(26))).ToArray());
                var o = new GenerationOptions { MaxNewTokens = tokens, Temperature = 1, Seed = (ulong)rng.NextInt64(), StopAtModelStops = false };
                foreach (var _ in RunVerb.Sync(chat.GenerateAsync([new Message(MessageRole.User, prompt)], o))) { }
            }
        }
        finally { chat.Dispose(); }
        int warm = Math.Min(samples.Count - 2, (int)(samples.Count * warmup));
        var tail = samples.Skip(warm).ToList();
        return new Result(samples, Slope(tail, s => s.Rss), Slope(tail, s => s.Managed), Slope(tail, s => s.Device), warm);
    }

    /// <summary>Least-squares slope of <paramref name="y"/> against the generation index (bytes per generation).</summary>
    public static double Slope(IReadOnlyList<Sample> s, Func<Sample, long> y)
    {
        if (s.Count < 2) return 0;
        double mx = s.Average(x => (double)x.Generation), my = s.Average(x => (double)y(x));
        double num = s.Sum(x => (x.Generation - mx) * (y(x) - my)), den = s.Sum(x => (x.Generation - mx) * (x.Generation - mx));
        return den == 0 ? 0 : num / den;
    }

    static string FindFixture()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", "tiny-scout", "model");
            if (File.Exists(Path.Combine(p, "config.json"))) return p;
        }
        throw new UsageException("no --model given and the tiny-scout fixture was not found above the program's folder; pass --model DIR");
    }

    /// <summary>Bytes as token ids (mod the vocabulary); no specials, no chat format: enough to drive generation.</summary>
    sealed class ToyCodec(int vocab) : ITextCodec
    {
        public int EndOfTurn => 0;
        public IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false, IReadOnlyList<(int Rows, int Cols)>? imageGrids = null) =>
            [.. messages.SelectMany(m => System.Text.Encoding.UTF8.GetBytes(m.Text + "\n")).Select(b => b % vocab), 1 % vocab];
        public ITokenStreamDecoder CreateStreamDecoder() => new Decoder();
        sealed class Decoder : ITokenStreamDecoder
        {
            public string Push(int id) => id is >= 32 and < 127 ? ((char)id).ToString() : "";
            public string Flush() => "";
        }
    }
}
