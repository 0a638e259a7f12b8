using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Checkpoints;

/// <summary>Paths, temp dirs, seeds and safetensors surgery shared by the checkpoint tests.</summary>
internal static class CkptTestUtil
{
    public static string RepoRoot { get; } = FindRoot();

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (Directory.Exists(Path.Combine(d.FullName, "tests", "fixtures")) && File.Exists(Path.Combine(d.FullName, "Llama4Native.sln")))
                return d.FullName;
        throw new DirectoryNotFoundException("repository root (with tests/fixtures) not found above " + AppContext.BaseDirectory);
    }

    public static string Fixture(string name) => Path.Combine(RepoRoot, "tests", "fixtures", name);
    public static string FixtureModel(string name) => Path.Combine(Fixture(name), "model");

    /// <summary>A fresh seed per run, logged so a failure can be replayed with LLAMA4_TEST_SEED.</summary>
    public static ulong Seed(string what)
    {
        string? env = Environment.GetEnvironmentVariable("LLAMA4_TEST_SEED");
        ulong seed = env is not null ? ulong.Parse(env) : (ulong)Random.Shared.NextInt64(1, long.MaxValue);
        TestContext.Out.WriteLine($"{what}: seed {seed} (replay with LLAMA4_TEST_SEED={seed})");
        return seed;
    }

    static HostTestDevice? device;
    /// <summary>
    /// The device the loader tests upload to: a host-memory device (no compiler needed). The same upload
    /// path runs on the emulated device and CUDA; see LoadTests.EmulatedDeviceWhenAvailable.
    /// </summary>
    public static HostTestDevice Device => device ??= new HostTestDevice();

    public static string NewTempDir(string tag)
    {
        string d = Path.Combine(Path.GetTempPath(), $"l4ckpt-{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    public static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    // ---- safetensors surgery ----

    public sealed record RawTensor(string Name, string DType, long[] Shape, byte[] Data);

    public static (JsonObject Header, byte[] Data) ReadRaw(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = (JsonObject)JsonNode.Parse(bytes.AsSpan(8, (int)n))!;
        return (header, bytes[(8 + (int)n)..]);
    }

    public static void WriteRaw(string path, string headerJson, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(headerJson);
        int padded = (h.Length + 7) / 8 * 8;
        using var fs = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        fs.Write(len);
        fs.Write(h);
        for (int i = h.Length; i < padded; i++) fs.WriteByte((byte)' ');
        fs.Write(data);
    }

    /// <summary>Edits a shard's header JSON in place, keeping its data section.</summary>
    public static void EditHeader(string path, Action<JsonObject> edit)
    {
        var (h, data) = ReadRaw(path);
        edit(h);
        WriteRaw(path, h.ToJsonString(), data);
    }

    public static List<RawTensor> ReadTensors(string path)
    {
        var (h, data) = ReadRaw(path);
        var list = new List<RawTensor>();
        foreach (var (name, v) in h)
        {
            if (name == "__metadata__") continue;
            var o = (JsonObject)v!;
            long b = (long)o["data_offsets"]![0]!, e = (long)o["data_offsets"]![1]!;
            list.Add(new RawTensor(name, (string)o["dtype"]!, o["shape"]!.AsArray().Select(x => (long)x!).ToArray(), data[(int)b..(int)e]));
        }
        return list;
    }

    /// <summary>Rewrites a shard from a tensor list (offsets recomputed, data contiguous).</summary>
    public static void WriteTensors(string path, IEnumerable<RawTensor> tensors)
    {
        var h = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        var data = new MemoryStream();
        foreach (var t in tensors)
        {
            h[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(data.Length, data.Length + t.Data.Length),
            };
            data.Write(t.Data);
        }
        WriteRaw(path, h.ToJsonString(), data.ToArray());
    }

    public static void EditTensors(string path, Func<List<RawTensor>, IEnumerable<RawTensor>> edit) =>
        WriteTensors(path, edit(ReadTensors(path)).ToList());

    public static JsonObject ReadJson(string path) => (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;
    public static void EditJson(string path, Action<JsonObject> edit)
    {
        var o = ReadJson(path);
        edit(o);
        File.WriteAllText(path, o.ToJsonString());
    }

    /// <summary>The shard file (name) the index maps <paramref name="hf"/> to.</summary>
    public static string ShardOf(string dir, string hf) =>
        (string)ReadJson(Path.Combine(dir, Checkpoint.IndexFile))["weight_map"]![hf]!;

    public static int SizeOf(string dtype) => DTypeInfo.TryParseSafetensors(dtype, out var t) ? t.Size() : 1;
}
