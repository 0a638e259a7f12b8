using System.Buffers.Binary;
using System.Diagnostics;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;
using SharpFuzz;

namespace Llama4Native.Fuzz;

/// <summary>
/// Fuzz target: <see cref="SafetensorsHeader.Parse(ReadOnlySpan{byte}, string)"/> on arbitrary bytes.
/// The only acceptable failure is <see cref="CheckpointException"/>; anything else escapes and is a crash.
///
///   llama4-fuzz --libfuzzer          libFuzzer entry (run under libfuzzer-dotnet after `sharpfuzz` instrumentation)
///   llama4-fuzz --afl                AFL entry (afl-fuzz … -- dotnet Llama4Native.Fuzz.dll --afl)
///   llama4-fuzz --write-corpus DIR   seed inputs (valid headers) for either fuzzer
///   llama4-fuzz [--seconds N] [--seed S] [--corpus DIR]
///                                    built-in mode: random mutations of the seed corpus, no external tool needed
///   llama4-fuzz --replay FILE…       run the target on saved inputs (reproduce a crash)
/// </summary>
public static class Program
{
    public static void Target(ReadOnlySpan<byte> data)
    {
        try { SafetensorsHeader.Parse(data, "fuzz.safetensors"); }
        catch (CheckpointException) { }
    }

    public static int Main(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "";
        switch (mode)
        {
            case "--libfuzzer":
                Fuzzer.LibFuzzer.Run(span => Target(span));
                return 0;
            case "--afl":
                Fuzzer.Run(stream =>
                {
                    using var ms = new MemoryStream();
                    stream.CopyTo(ms);
                    Target(ms.ToArray());
                });
                return 0;
            case "--write-corpus":
            {
                string dir = args.Length > 1 ? args[1] : "corpus";
                Directory.CreateDirectory(dir);
                int i = 0;
                foreach (var seed in Seeds()) File.WriteAllBytes(Path.Combine(dir, $"seed-{i++:D3}.safetensors"), seed);
                Console.WriteLine($"wrote {i} seed inputs to {dir}");
                return 0;
            }
            case "--replay":
                foreach (var f in args.Skip(1)) { Target(File.ReadAllBytes(f)); Console.WriteLine($"{f}: ok"); }
                return 0;
            default:
                return BuiltIn(args);
        }
    }

    /// <summary>Valid headers of assorted shapes: the starting points for mutation.</summary>
    static IEnumerable<byte[]> Seeds()
    {
        var dtypes = new[] { DType.BF16, DType.F16, DType.F32, DType.F8E4M3, DType.I64, DType.I32, DType.U8 };
        var rng = new Random(1234);
        for (int k = 0; k < 24; k++)
        {
            var list = new List<(string, DType, long[], long)>();
            for (int t = 0, n = rng.Next(1, 6); t < n; t++)
            {
                var dt = dtypes[rng.Next(dtypes.Length)];
                long[] shape = Enumerable.Range(0, rng.Next(0, 4)).Select(_ => (long)rng.Next(0, 5)).ToArray();
                list.Add(($"model.layers.{t}.w", dt, shape, shape.Aggregate(1L, (a, b) => a * b) * dt.Size()));
            }
            var header = SafetensorsWriter.Header(list);
            yield return header.Concat(new byte[list.Sum(x => x.Item4)]).ToArray();
        }
    }

    static int BuiltIn(string[] args)
    {
        double seconds = 30;
        int seed = Environment.TickCount;
        string? corpusDir = null;
        for (int i = 0; i < args.Length; i++)
            switch (args[i])
            {
                case "--seconds": seconds = double.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture); break;
                case "--seed": seed = int.Parse(args[++i]); break;
                case "--corpus": corpusDir = args[++i]; break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        var corpus = Seeds().ToList();
        if (corpusDir is not null) corpus.AddRange(Directory.GetFiles(corpusDir).Select(File.ReadAllBytes));
        Console.WriteLine($"built-in fuzzing for {seconds} s, seed {seed} (replay with --seed {seed}), {corpus.Count} seed inputs");
        var rng = new Random(seed);
        var sw = Stopwatch.StartNew();
        long runs = 0, slowestTicks = 0;
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            var input = Mutate(corpus[rng.Next(corpus.Count)], rng);
            long t0 = Stopwatch.GetTimestamp();
            try { Target(input); }
            catch (Exception e)
            {
                string path = $"crash-{seed}-{runs}.bin";
                File.WriteAllBytes(path, input);
                Console.Error.WriteLine($"CRASH after {runs} runs: {e}\ninput saved to {path}");
                return 1;
            }
            long dt = Stopwatch.GetTimestamp() - t0;
            slowestTicks = Math.Max(slowestTicks, dt);
            if (Stopwatch.GetElapsedTime(t0) > TimeSpan.FromSeconds(1))
            {
                File.WriteAllBytes($"slow-{seed}-{runs}.bin", input);
                Console.Error.WriteLine($"SLOW input after {runs} runs ({Stopwatch.GetElapsedTime(t0).TotalMilliseconds:0} ms), saved");
                return 1;
            }
            runs++;
        }
        Console.WriteLine($"{runs} runs, {runs / sw.Elapsed.TotalSeconds:0} runs/s, 0 crashes, slowest {slowestTicks * 1000.0 / Stopwatch.Frequency:0.000} ms");
        return 0;
    }

    /// <summary>libFuzzer-style mutations: bit/byte flips, interesting values, JSON-aware splices, truncation, length edits.</summary>
    static byte[] Mutate(byte[] src, Random r)
    {
        var b = new List<byte>(src);
        int ops = r.Next(1, 6);
        string[] tokens = ["\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "[", "]", "{", "}", ",", ":", "-1",
                           "18446744073709551615", "9223372036854775807", "1e309", "\"F8_E4M3\"", "\"X\"", "null", "\"\\u0000\"", "\xff"];
        for (int o = 0; o < ops && b.Count > 0; o++)
        {
            int pos = r.Next(b.Count);
            switch (r.Next(8))
            {
                case 0: b[pos] ^= (byte)(1 << r.Next(8)); break;
                case 1: b[pos] = (byte)r.Next(256); break;
                case 2: b.RemoveRange(pos, Math.Min(b.Count - pos, r.Next(1, 16))); break;
                case 3: b.InsertRange(pos, System.Text.Encoding.Latin1.GetBytes(tokens[r.Next(tokens.Length)])); break;
                case 4: b.RemoveRange(pos, b.Count - pos); break; // truncate
                case 5: // rewrite the length prefix
                    if (b.Count >= 8)
                    {
                        var len = new byte[8];
                        BinaryPrimitives.WriteUInt64LittleEndian(len, r.Next(3) switch { 0 => (ulong)r.Next(0, b.Count + 16), 1 => ulong.MaxValue - (ulong)r.Next(16), _ => (ulong)r.NextInt64() });
                        for (int i = 0; i < 8; i++) b[i] = len[i];
                    }
                    break;
                case 6: // digit bump inside the JSON
                    if (b[pos] is >= (byte)'0' and <= (byte)'9') b[pos] = (byte)('0' + r.Next(10));
                    break;
                default: // duplicate a chunk
                    int n = Math.Min(b.Count - pos, r.Next(1, 64));
                    b.InsertRange(r.Next(b.Count), b.GetRange(pos, n));
                    break;
            }
        }
        return b.ToArray();
    }
}
