using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using CsCheck;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Checkpoints;

/// <summary>
/// Property tests: whatever bytes reach the safetensors header parser, it either returns a header whose
/// ranges tile the data exactly, or throws <see cref="CheckpointException"/> — never another exception,
/// never a hang (each parse is timed). Inputs are fresh each run; CsCheck prints the seed of any failure
/// (replay with the CsCheck_Seed environment variable).
/// </summary>
public class HeaderPropertyTests
{
    public const int FlipCases = 20_000, TruncationCases = 5_000, JsonCases = 20_000, BytesCases = 5_000, ValidCases = 3_000;
    public const int TotalCases = FlipCases + TruncationCases + JsonCases + BytesCases + ValidCases;
    static readonly TimeSpan Bound = TimeSpan.FromSeconds(2);
    static long slowest;

    static readonly string[] DTypes = ["BF16", "F16", "F32", "F8_E4M3", "I64", "I32", "U8"];

    /// <summary>A valid safetensors image with 1–8 random tensors.</summary>
    static readonly Gen<byte[]> ValidFile =
        Gen.Int[1, 8].SelectMany(n => Gen.Select(Gen.Int[0, DTypes.Length - 1], Gen.Int[0, 3], Gen.Int[0, 6], Gen.Int[0, 6], Gen.Int[0, 6]).Array[n])
           .Select(specs =>
           {
               var tensors = specs.Select((s, i) =>
               {
                   long[] shape = new[] { (long)s.Item3, s.Item4, s.Item5 }.Take(s.Item2).ToArray();
                   DTypeInfo.TryParseSafetensors(DTypes[s.Item1], out var dt);
                   long bytes = shape.Aggregate(1L, (a, b) => a * b) * dt.Size();
                   return ($"t{i}.weight", dt, shape, bytes);
               }).ToList();
               var header = SafetensorsWriter.Header(tensors);
               var data = new byte[tensors.Sum(t => t.bytes)];
               for (int i = 0; i < data.Length; i++) data[i] = (byte)(i * 31);
               return header.Concat(data).ToArray();
           });

    static long parses, accepted;

    static void MustNotCrash(byte[] file)
    {
        Interlocked.Increment(ref parses);
        var sw = Stopwatch.StartNew();
        try
        {
            var h = SafetensorsHeader.Parse(file, "fuzz.safetensors");
            // Accepted: the ranges tile the data section exactly, and each matches its shape.
            long cursor = 0;
            foreach (var t in h.Tensors)
            {
                Assert.That(t.Begin, Is.EqualTo(cursor));
                Assert.That(t.Bytes, Is.EqualTo(t.ElementCount * t.DType.Size()));
                cursor = t.End;
            }
            Assert.That(cursor, Is.EqualTo(h.DataLength));
            Interlocked.Increment(ref accepted);
        }
        catch (CheckpointException e)
        {
            Assert.That(e.Message, Does.StartWith("fuzz.safetensors"));
        }
        long ms = sw.ElapsedMilliseconds;
        Interlocked.Exchange(ref slowest, Math.Max(Interlocked.Read(ref slowest), ms));
        Assert.That(sw.Elapsed, Is.LessThan(Bound), "parse took too long");
    }

    [Test]
    public void ValidHeadersRoundTrip() =>
        ValidFile.Sample(f =>
        {
            var h = SafetensorsHeader.Parse(f, "valid.safetensors");
            Assert.That(h.Metadata["format"], Is.EqualTo("pt"));
            Assert.That(h.DataLength, Is.EqualTo(h.Tensors.Sum(t => t.Bytes)));
        }, iter: ValidCases);

    [Test]
    public void ByteFlipsNeverCrash() =>
        Gen.Select(ValidFile, Gen.Int[1, 8].SelectMany(k => Gen.Select(Gen.Int[0, int.MaxValue], Gen.Byte).Array[k]))
           .Sample(x =>
           {
               var (file, flips) = x;
               var f = (byte[])file.Clone();
               int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(f);
               foreach (var (pos, val) in flips)
               {
                   // Mostly inside the length prefix and the JSON, sometimes anywhere.
                   int limit = pos % 4 == 0 ? f.Length : headerEnd;
                   f[pos % limit] = val;
               }
               MustNotCrash(f);
           }, iter: FlipCases);

    [Test]
    public void TruncationsNeverCrash() =>
        Gen.Select(ValidFile, Gen.Double[0, 1]).Sample(x => MustNotCrash(x.Item1[..(int)(x.Item1.Length * x.Item2)]), iter: TruncationCases);

    [Test]
    public void RandomBytesNeverCrash() =>
        Gen.Select(Gen.Byte.Array[0, 300], Gen.Int[0, 400]).Sample(x =>
        {
            var (bytes, n) = x;
            // A plausible length prefix followed by random bytes.
            var f = new byte[8 + bytes.Length];
            BinaryPrimitives.WriteUInt64LittleEndian(f, (ulong)n);
            bytes.CopyTo(f, 8);
            MustNotCrash(f);
            MustNotCrash(bytes);
        }, iter: BytesCases);

    /// <summary>Random JSON, biased towards header-like objects so the parser's deeper checks are reached.</summary>
    [Test]
    public void RandomJsonHeadersNeverCrash() =>
        Gen.Select(Gen.Int, Gen.Int[0, 4096]).Sample(x =>
        {
            var (seed, dataLen) = x;
            var rng = new Random(seed);
            var json = rng.Next(4) == 0 ? RandomValue(rng, 0) : HeaderLike(rng);
            var h = Encoding.UTF8.GetBytes(json);
            var f = new byte[8 + h.Length + dataLen];
            BinaryPrimitives.WriteUInt64LittleEndian(f, (ulong)h.Length);
            h.CopyTo(f, 8);
            MustNotCrash(f);
        }, iter: JsonCases);

    static string HeaderLike(Random r)
    {
        var sb = new StringBuilder("{");
        int n = r.Next(0, 6);
        long off = 0;
        for (int i = 0; i < n; i++)
        {
            if (i > 0) sb.Append(',');
            if (r.Next(8) == 0) { sb.Append($"\"__metadata__\":{(r.Next(2) == 0 ? "{\"format\":\"pt\"}" : RandomValue(r, 1))}"); continue; }
            sb.Append($"\"{(r.Next(10) == 0 ? "" : "t" + r.Next(4))}\":{{");
            var fields = new List<string>();
            if (r.Next(10) > 0) fields.Add($"\"dtype\":{(r.Next(5) > 0 ? $"\"{DTypes[r.Next(DTypes.Length)]}\"" : RandomValue(r, 2))}");
            long elems = 1;
            if (r.Next(10) > 0)
            {
                var dims = Enumerable.Range(0, r.Next(0, 4)).Select(_ => r.Next(6) switch
                {
                    0 => "-1", 1 => "1e30", 2 => long.MaxValue.ToString(), 3 => "2.5", _ => r.Next(0, 9).ToString(),
                }).ToList();
                foreach (var d in dims) elems = long.TryParse(d, out long v) && v >= 0 ? elems * Math.Min(v, 1 << 20) : elems;
                fields.Add($"\"shape\":[{string.Join(',', dims)}]");
            }
            if (r.Next(10) > 0)
            {
                long len = r.Next(3) == 0 ? r.Next(0, 64) : elems * 2;
                long b = r.Next(4) == 0 ? r.Next(-2, 100) : off;
                fields.Add(r.Next(8) == 0 ? $"\"data_offsets\":{RandomValue(r, 2)}" : $"\"data_offsets\":[{b},{b + len}]");
                off = b + len;
            }
            if (r.Next(12) == 0) fields.Add($"\"extra\":{RandomValue(r, 2)}");
            sb.Append(string.Join(',', fields.OrderBy(_ => r.Next())));
            sb.Append('}');
        }
        sb.Append('}');
        if (r.Next(10) == 0) sb.Append(new string(' ', r.Next(0, 9)));
        return sb.ToString();
    }

    static string RandomValue(Random r, int depth) => (depth > 12 ? r.Next(4) : r.Next(7)) switch
    {
        0 => r.Next(-1000, 1000).ToString(),
        1 => $"\"{new string((char)r.Next('a', 'z'), r.Next(0, 5))}\"",
        2 => r.Next(2) == 0 ? "true" : "null",
        3 => (r.NextDouble() * 1e20).ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        4 or 5 => "[" + string.Join(',', Enumerable.Range(0, r.Next(0, 4)).Select(_ => RandomValue(r, depth + 1))) + "]",
        _ => "{" + string.Join(',', Enumerable.Range(0, r.Next(0, 4)).Select(i => $"\"k{i}\":{RandomValue(r, depth + 1)}")) + "}",
    };

    [TearDown]
    public void Report() =>
        TestContext.Out.WriteLine($"so far: {Interlocked.Read(ref parses)} hostile parses ({Interlocked.Read(ref accepted)} accepted as valid), slowest {Interlocked.Read(ref slowest)} ms; planned total {TotalCases} cases");
}
