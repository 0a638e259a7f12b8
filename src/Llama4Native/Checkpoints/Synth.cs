using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>Options of <see cref="Synth.Write"/>.</summary>
/// <param name="DType">Float dtype of the weights (BF16, F16 or F32). Routed experts become F8_E4M3 + scales when the config has an fbgemm_fp8 quantization_config.</param>
/// <param name="Seed">Everything written is a function of the seed and the config.</param>
/// <param name="MaxShardBytes">transformers' max_shard_size: a shard is closed before it would exceed this (a single larger tensor gets a shard of its own).</param>
/// <param name="Progress">(bytes written, bytes total), after each slice.</param>
internal sealed record SynthOptions(DType DType = DType.BF16, ulong Seed = 0, long MaxShardBytes = 5_000_000_000,
                                  Action<long, long>? Progress = null);

/// <summary>One tensor of a synthetic checkpoint: its checkpoint name, dtype, shape and initialisation.</summary>
internal sealed record SynthTensor(string Hf, DType DType, long[] Shape, double Mean, double Std)
{
    public long Bytes
    {
        get { long n = DType.Size(); foreach (long d in Shape) n = checked(n * d); return n; }
    }
}

/// <summary>
/// Writes deterministic random-weight checkpoints in the exact Hugging Face layout (names, shapes, dtypes,
/// sharding, index.json, config.json), for round-trip tests and for load benchmarks at full Scout/Maverick
/// width where no download is possible. Linear weights ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.1²), biases
/// ~ N(0, 0.05²), token embeddings ~ N(0, 1). Values come from a 65,536-entry table of normal quantiles
/// indexed by a counter-based random stream, so the output is fast to make, streamed in slices (never
/// whole in memory), and identical for a given seed whatever the thread count.
/// </summary>
internal static class Synth
{
    const long SliceElements = 1 << 20;

    /// <summary>The tensors <paramref name="cfg"/> implies, in writing order, with their dtypes and init.</summary>
    public static List<SynthTensor> Plan(Llama4Config cfg, DType dtype)
    {
        if (!TensorNames.IsFloat(dtype)) throw new ArgumentException($"synth writes BF16, F16 or F32 weights, not {dtype}");
        var list = new List<SynthTensor>();
        foreach (var e in TensorNames.Expected(cfg))
        {
            var (mean, std) = Init(e);
            bool fp8 = e.Rule.Kind == TensorKind.Experts && cfg.Quantization is { QuantMethod: "fbgemm_fp8" } q && !q.IsExcluded(e.Module);
            list.Add(new SynthTensor(e.Hf, fp8 ? DType.F8E4M3 : dtype, e.Shape, mean, std));
            if (fp8 && TensorNames.ScaleFor(cfg, e) is { } s)
                list.Add(new SynthTensor(s.Hf, DType.F32, s.Shape, std / Fp8Spread, 0)); // scale such that fp8 · scale ~ N(0, std²)
        }
        return list;
    }

    /// <summary>FP8 codes are drawn as N(0, Fp8Spread²) in e4m3 units; the scale brings them back to the target std.</summary>
    const double Fp8Spread = 64;

    internal static (double Mean, double Std) Init(ExpectedTensor e)
    {
        var s = e.Shape;
        return e.Rule.Kind switch
        {
            TensorKind.Norm => (1.0, 0.1),
            TensorKind.Linear => (0, 1 / Math.Sqrt(Math.Max(1, s[^1]))),
            TensorKind.Experts => (0, 1 / Math.Sqrt(Math.Max(1, s[1]))),
            _ when e.Ours == "tok_embd" => (0, 1.0),
            _ when e.Ours.EndsWith(".bias", StringComparison.Ordinal) => (0, 0.05),
            _ => (0, 1 / Math.Sqrt(Math.Max(1, s[^1]))),
        };
    }

    /// <summary>The bytes of tensor data <see cref="Write"/> would write for this config and dtype (headers aside).</summary>
    public static long PlannedBytes(string configJson, DType dtype = DType.BF16) =>
        Plan(Llama4Config.Parse(configJson, "synth config"), dtype).Sum(t => t.Bytes);

    /// <summary>
    /// Writes the checkpoint into <paramref name="outDir"/> (created if needed): config.json (the given text,
    /// verbatim), shards, and model.safetensors.index.json when there is more than one shard.
    /// Returns the shard paths.
    /// </summary>
    public static IReadOnlyList<string> Write(string configJson, string outDir, SynthOptions? options = null)
    {
        var o = options ?? new SynthOptions();
        var cfg = Llama4Config.Parse(configJson, "synth config");
        var plan = Plan(cfg, o.DType);
        Directory.CreateDirectory(outDir);

        // Greedy sharding in writing order, like transformers' save_pretrained.
        var shards = new List<List<SynthTensor>>();
        long cur = 0;
        foreach (var t in plan)
        {
            if (shards.Count == 0 || (cur > 0 && cur + t.Bytes > o.MaxShardBytes)) { shards.Add([]); cur = 0; }
            shards[^1].Add(t);
            cur += t.Bytes;
        }
        if (shards.Count == 0) shards.Add([]);
        int n = shards.Count;
        var names = shards.Select((_, k) => n == 1 ? Checkpoint.SingleFile : $"model-{k + 1:D5}-of-{n:D5}.safetensors").ToList();
        long total = plan.Sum(t => t.Bytes), done = 0;
        var paths = new List<string>();
        for (int k = 0; k < n; k++)
        {
            string path = Path.Combine(outDir, names[k]);
            WriteShard(path, shards[k], o, ref done, total);
            paths.Add(path);
        }
        File.WriteAllText(Path.Combine(outDir, "config.json"), configJson);
        string index = Path.Combine(outDir, Checkpoint.IndexFile);
        if (n > 1) WriteIndex(index, shards, names, total, plan);
        else if (File.Exists(index)) File.Delete(index);
        return paths;
    }

    static void WriteIndex(string path, List<List<SynthTensor>> shards, List<string> names, long total, List<SynthTensor> plan)
    {
        using var fs = File.Create(path);
        using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteStartObject("metadata");
        w.WriteNumber("total_parameters", plan.Where(t => t.DType != DType.F32 || !t.Hf.EndsWith("_scale", StringComparison.Ordinal))
                                              .Sum(t => t.Bytes / t.DType.Size()));
        w.WriteNumber("total_size", total);
        w.WriteEndObject();
        w.WriteStartObject("weight_map");
        var entries = shards.SelectMany((s, k) => s.Select(t => (t.Hf, names[k]))).OrderBy(x => x.Hf, StringComparer.Ordinal);
        foreach (var (hf, shard) in entries) w.WriteString(hf, shard);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    static void WriteShard(string path, List<SynthTensor> tensors, SynthOptions o, ref long done, long total)
    {
        var header = SafetensorsWriter.Header(tensors.Select(t => (t.Hf, t.DType, t.Shape, t.Bytes)).ToList());
        string tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            fs.Write(header);
            const int batchSlices = 8; // 8 × 1M elements per write
            var buf = new byte[batchSlices * SliceElements * 4];
            foreach (var t in tensors)
            {
                long elements = t.Bytes / t.DType.Size();
                var table = Table(t);
                ulong tensorSeed = Mix(o.Seed ^ Fnv(t.Hf));
                for (long start = 0; start < elements; start += batchSlices * SliceElements)
                {
                    long count = Math.Min(batchSlices * SliceElements, elements - start);
                    int slices = (int)((count + SliceElements - 1) / SliceElements);
                    int size = t.DType.Size();
                    Parallel.For(0, slices, s =>
                    {
                        long e0 = start + s * SliceElements;
                        long m = Math.Min(SliceElements, start + count - e0);
                        Fill(table, size, Mix(tensorSeed + (ulong)(e0 / SliceElements)), buf.AsSpan((int)((e0 - start) * size), (int)(m * size)));
                    });
                    fs.Write(buf, 0, (int)(count * size));
                    done += count * size;
                    o.Progress?.Invoke(done, total);
                }
            }
        }
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Fills <paramref name="dst"/> with table entries picked by a splitmix64 stream.</summary>
    static void Fill(byte[] table, int size, ulong state, Span<byte> dst)
    {
        int n = dst.Length / size;
        switch (size)
        {
            case 1:
                for (int i = 0; i < n; i++) dst[i] = table[(int)(Next(ref state) & 0xFFFF)];
                break;
            case 2:
                FillFromTable(MemoryMarshal.Cast<byte, ushort>(dst)[..n], MemoryMarshal.Cast<byte, ushort>(table.AsSpan()), ref state);
                break;
            default:
                FillFromTable(MemoryMarshal.Cast<byte, uint>(dst)[..n], MemoryMarshal.Cast<byte, uint>(table.AsSpan()), ref state);
                break;
        }
    }

    /// <summary>d[i] = tab[16 random bits]: four entries per 64-bit draw, then one draw per entry for the tail.</summary>
    static void FillFromTable<T>(Span<T> d, ReadOnlySpan<T> tab, ref ulong state)
    {
        int n = d.Length, i = 0;
        for (; i + 4 <= n; i += 4)
        {
            ulong r = Next(ref state);
            d[i] = tab[(int)(r & 0xFFFF)];
            d[i + 1] = tab[(int)((r >> 16) & 0xFFFF)];
            d[i + 2] = tab[(int)((r >> 32) & 0xFFFF)];
            d[i + 3] = tab[(int)(r >> 48)];
        }
        for (; i < n; i++) d[i] = tab[(int)(Next(ref state) & 0xFFFF)];
    }

    static readonly Dictionary<(DType, double, double), byte[]> tables = new();

    /// <summary>65,536 values: mean + std · Φ⁻¹((k + ½)/65536), encoded in the tensor's dtype (a constant for scales).</summary>
    static byte[] Table(SynthTensor t)
    {
        lock (tables)
        {
            var key = (t.DType, t.Mean, t.Std);
            if (tables.TryGetValue(key, out var tab)) return tab;
            int size = t.DType.Size();
            tab = new byte[65536 * size];
            for (int k = 0; k < 65536; k++)
            {
                double z = t.DType == DType.F8E4M3 ? Fp8Spread * InverseNormal((k + 0.5) / 65536) : t.Mean + t.Std * InverseNormal((k + 0.5) / 65536);
                var span = tab.AsSpan(k * size, size);
                switch (t.DType)
                {
                    case DType.F32: BinaryPrimitives.WriteSingleLittleEndian(span, (float)z); break;
                    case DType.F16: BinaryPrimitives.WriteHalfLittleEndian(span, (Half)z); break;
                    case DType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(span, FloatToBf16((float)z)); break;
                    case DType.F8E4M3: span[0] = FloatToE4M3(z); break;
                    default: throw new ArgumentException($"synth cannot write {t.DType}");
                }
            }
            if (tables.Count > 256) tables.Clear();
            tables[key] = tab;
            return tab;
        }
    }

    /// <summary>Round-to-nearest-even float → bf16.</summary>
    public static ushort FloatToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return 0x7FC0;
        u += 0x7FFF + ((u >> 16) & 1);
        return (ushort)(u >> 16);
    }

    static readonly float[] e4m3Values = Enumerable.Range(0, 127).Select(E4M3ToFloat).ToArray(); // positive codes 0..126, ascending

    public static float E4M3ToFloat(int code)
    {
        int s = (code >> 7) & 1, e = (code >> 3) & 0xF, m = code & 7;
        if (e == 0xF && m == 7) return float.NaN;
        float v = e == 0 ? m / 8f * MathF.Pow(2, -6) : (1 + m / 8f) * MathF.Pow(2, e - 7);
        return s == 1 ? -v : v;
    }

    /// <summary>Nearest e4m3fn code (ties to even), saturating at ±448.</summary>
    public static byte FloatToE4M3(double x)
    {
        double a = Math.Min(Math.Abs(x), 448);
        int lo = Array.BinarySearch(e4m3Values, (float)a);
        int code;
        if (lo >= 0) code = lo;
        else
        {
            int hi = ~lo;
            if (hi >= e4m3Values.Length) code = e4m3Values.Length - 1;
            else if (hi == 0) code = 0;
            else
            {
                double dl = a - e4m3Values[hi - 1], dh = e4m3Values[hi] - a;
                code = dl < dh ? hi - 1 : dh < dl ? hi : ((hi - 1) % 2 == 0 ? hi - 1 : hi);
            }
        }
        return (byte)(code | (x < 0 && code != 0 ? 0x80 : 0));
    }

    /// <summary>Acklam's rational approximation of the standard normal quantile (relative error &lt; 1.2e-9).</summary>
    public static double InverseNormal(double p)
    {
        double[] a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
        double[] b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
        double[] c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
        double[] d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
        const double pl = 0.02425;
        if (p < pl)
        {
            double q = Math.Sqrt(-2 * Math.Log(p));
            return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        if (p > 1 - pl)
        {
            double q = Math.Sqrt(-2 * Math.Log(1 - p));
            return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        double r = p - 0.5, s = r * r;
        return (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5]) * r / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1);
    }

    static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    static ulong Mix(ulong x)
    {
        ulong s = x;
        return Next(ref s);
    }

    static ulong Fnv(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in s) { h ^= c; h *= 1099511628211UL; }
        return h;
    }

    /// <summary>Parses "5GB", "400KB", "1.5GiB", "1000000" (transformers' spelling: KB/MB/GB are powers of 10).</summary>
    public static long ParseSize(string s)
    {
        s = s.Trim();
        int i = 0;
        while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '.')) i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
            throw new FormatException($"'{s}' is not a size; expected e.g. 5GB, 400KB, 2GiB");
        double mult = s[i..].Trim().ToUpperInvariant() switch
        {
            "" or "B" => 1, "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1 << 10, "MIB" => 1 << 20, "GIB" => 1L << 30, "TIB" => 1L << 40,
            var u => throw new FormatException($"'{s}': unknown unit '{u}'; expected B, KB, MB, GB, KiB, MiB, GiB"),
        };
        return checked((long)(v * mult));
    }
}
