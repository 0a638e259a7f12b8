using Llama4Native.Checkpoints;
using Llama4Native.Devices.Emulated;
using Llama4Native.Model;
using Llama4Native.Tensors;
using static Llama4Native.Tests.Checkpoints.CkptTestUtil;

namespace Llama4Native.Tests.Checkpoints;

/// <summary>Fixtures and synthetic checkpoints load onto the emulated device bit for bit.</summary>
[NonParallelizable]
public class LoadTests
{
    static readonly string[] Fixtures = ["tiny-scout", "tiny-maverick", "tiny-maverick-fp8"];

    static string DTypeName(string torch) => torch switch
    {
        "bfloat16" => "BF16", "float32" => "F32", "float8_e4m3fn" => "F8_E4M3", "float16" => "F16",
        _ => throw new ArgumentException(torch),
    };

    /// <summary>The file bytes of every tensor, read with plain file I/O (not through the mapping).</summary>
    static Dictionary<string, (string DType, long[] Shape, byte[] Bytes)> ReadAllFromFiles(string dir)
    {
        var all = new Dictionary<string, (string, long[], byte[])>();
        foreach (var f in Directory.GetFiles(dir, "*.safetensors"))
            foreach (var t in ReadTensors(f)) all[t.Name] = (t.DType, t.Shape, t.Data);
        return all;
    }

    /// <summary>The device bytes a weight must have: the file's, except FP8 routed experts, which are stored input-major
    /// [E, K, N] and loaded output-major [E, N, K] with their scale companion attached.</summary>
    static byte[] ExpectedBytes(ModelWeights w, string ours, DeviceWeight dw, Dictionary<string, (string DType, long[] Shape, byte[] Bytes)> files)
    {
        var want = files[dw.HfName].Bytes;
        if (dw.DType != DType.F8E4M3 || dw.Shape.Rank != 3) return want;
        long e = dw.Shape[0], n = dw.Shape[1], k = dw.Shape[2];
        Assert.That(files[dw.HfName].Shape, Is.EqualTo(new[] { e, k, n }), ours);
        var t = new byte[want.Length];
        for (long x = 0; x < e; x++)
            for (long i = 0; i < k; i++)
                for (long j = 0; j < n; j++)
                    t[(x * n + j) * k + i] = want[(x * k + i) * n + j];
        Assert.That(dw.Tensor.Scale, Is.EqualTo(w[ours + ".scale"].Ptr), $"{ours}: the scales are its companion's");
        Assert.That(dw.Tensor.Group, Is.EqualTo(k));
        return t;
    }

    [TestCaseSource(nameof(Fixtures))]
    public void FixtureTensorsMatchFixtureJsonAndLoadBitExact(string name)
    {
        string dir = FixtureModel(name);
        var listing = ReadJson(Path.Combine(Fixture(name), "fixture.json"))["checkpoint_tensors"]!.AsObject();
        using var ck = Checkpoint.Open(dir);
        // The name table binds exactly the checkpoint's tensors, with fixture.json's shapes and dtypes.
        Assert.That(ck.Tensors.Select(t => t.Expected.Hf).Order(), Is.EqualTo(listing.Select(kv => kv.Key).Order()));
        foreach (var t in ck.Tensors)
        {
            var spec = listing[t.Expected.Hf]!.AsArray();
            Assert.That(t.Shape, Is.EqualTo(spec[0]!.AsArray().Select(x => (long)x!)), t.Name);
            Assert.That(t.DType.SafetensorsName(), Is.EqualTo(DTypeName((string)spec[1]!)), t.Name);
        }
        var files = ReadAllFromFiles(dir);
        // The FP8 experts' relayout is a kernel: that fixture loads on the emulator, the others on the host test device.
        using var emu = name == "tiny-maverick-fp8" ? new EmuDevice() : null;
        Llama4Native.Devices.Device dev = emu is null ? Device : emu;
        using var w = WeightLoader.Load(ck, dev, new LoadOptions(StagingBytes: 4096, StagingBuffers: 2));
        Assert.That(w.Tensors.Count, Is.EqualTo(listing.Count));
        foreach (var (ours, dw) in w.Tensors)
        {
            var bytes = new byte[dw.Bytes];
            dev.Download(dw.Ptr, bytes.AsSpan());
            var want = ExpectedBytes(w, ours, dw, files);
            Assert.That(bytes, Is.EqualTo(want), $"{ours} ({dw.HfName})");
            // Aligned, except a concatenation's later members, which follow their predecessor directly.
            bool tail = WeightLoader.Concatenations.Any(c => c.Members.Skip(1).Any(m => ours.EndsWith("." + m, StringComparison.Ordinal) || ours.EndsWith("." + m + ".scale", StringComparison.Ordinal)));
            if (!tail) Assert.That(dw.Offset % WeightLoader.Alignment, Is.Zero, ours);
        }
        // The projections that share an input are placed back to back: one [ΣN, K] weight each (WeightLoader.Concatenations).
        foreach (var (fused, members) in WeightLoader.Concatenations)
            for (int i = 0; i < ck.Config.Text.NumHiddenLayers; i++)
            {
                var names = members.Select(m => $"blk.{i}.{m}").ToArray();
                if (!names.All(w.Tensors.ContainsKey)) continue;
                var c = w.Concat(names);
                Assert.That(c, Is.Not.Null, $"blk.{i}.{fused}");
                Assert.That(c!.Value.Shape[0], Is.EqualTo(names.Sum(n => w[n].Shape[0])), $"blk.{i}.{fused}");
                Assert.That(c.Value.Ptr, Is.EqualTo(w[names[0]].Ptr));
            }
        if (name == "tiny-maverick-fp8")
        {
            Assert.That(w["blk.1.moe.gate_up_exps"].DType, Is.EqualTo(DType.F8E4M3));
            Assert.That(w["blk.1.moe.gate_up_exps.scale"].Shape.ToString(), Is.EqualTo("[8, 1, 80]"));
            Assert.That(w["blk.1.moe.down_exps.scale"].Shape.ToString(), Is.EqualTo("[8, 64, 1]"));
            Assert.That(w["blk.5.moe.gate_up_exps"].DType, Is.EqualTo(DType.BF16), "layer 5 is in modules_to_not_convert");
        }
    }

    [Test]
    public void UpcastGivesExactF32()
    {
        string dir = FixtureModel("tiny-scout");
        var files = ReadAllFromFiles(dir);
        using var w = WeightLoader.Load(dir, Device, new LoadOptions(UpcastToF32: true, StagingBytes: 1024));
        foreach (var (ours, dw) in w.Tensors)
        {
            Assert.That(dw.DType, Is.EqualTo(DType.F32));
            Assert.That(dw.SourceDType, Is.EqualTo(DType.BF16));
            var got = new float[dw.Tensor.Elements];
            Device.Download(dw.Ptr, got.AsSpan());
            var src = files[dw.HfName].Bytes;
            for (int i = 0; i < got.Length; i++)
            {
                uint want = (uint)(src[2 * i] | src[2 * i + 1] << 8) << 16;
                if (BitConverter.SingleToUInt32Bits(got[i]) != want) Assert.Fail($"{ours}[{i}]: {got[i]} vs bits {want:x8}");
            }
        }
    }

    [Test]
    public void SynthRoundTripIsDeterministicAndLoadsExactly()
    {
        ulong seed = Seed("synth round trip");
        string a = NewTempDir("synth-a"), b = NewTempDir("synth-b"), c = NewTempDir("synth-c");
        try
        {
            string json = Presets.ConfigJson("tiny-scout");
            var shards = Synth.Write(json, a, new SynthOptions(Seed: seed, MaxShardBytes: 250_000));
            Assert.That(shards, Has.Count.GreaterThan(2));
            Synth.Write(json, b, new SynthOptions(Seed: seed, MaxShardBytes: 250_000));
            Synth.Write(json, c, new SynthOptions(Seed: seed + 1, MaxShardBytes: 250_000));
            foreach (var s in shards)
            {
                string n = Path.GetFileName(s);
                Assert.That(File.ReadAllBytes(Path.Combine(b, n)), Is.EqualTo(File.ReadAllBytes(s)), $"{n}: same seed, same bytes");
                Assert.That(File.ReadAllBytes(Path.Combine(c, n)), Is.Not.EqualTo(File.ReadAllBytes(s)), $"{n}: another seed, other bytes");
            }
            // The exact HF layout: the same names, shapes and dtypes as the transformers-written fixture.
            var fixture = ReadJson(Path.Combine(Fixture("tiny-scout"), "fixture.json"))["checkpoint_tensors"]!.AsObject();
            var files = ReadAllFromFiles(a);
            Assert.That(files.Keys.Order(), Is.EqualTo(fixture.Select(kv => kv.Key).Order()));
            foreach (var (k, v) in files)
                Assert.That(v.Shape, Is.EqualTo(fixture[k]!.AsArray()[0]!.AsArray().Select(x => (long)x!)), k);

            using var ck = Checkpoint.Open(a);
            using var w = WeightLoader.Load(ck, Device, new LoadOptions(StagingBytes: 8192, StagingBuffers: 3));
            foreach (var (ours, dw) in w.Tensors)
            {
                var bytes = new byte[dw.Bytes];
                Device.Download(dw.Ptr, bytes.AsSpan());
                Assert.That(bytes, Is.EqualTo(ExpectedBytes(w, ours, dw, files)), ours);
            }
            // Initialisation statistics: linears ~ N(0, 1/fan_in), norms ~ 1.
            var q = ck["blk.0.attn_q"];
            var vals = ck.Shards.First(s => s == q.File).Span<ushort>(q.Entry).ToArray().Select(u => (double)BitConverter.UInt32BitsToSingle((uint)u << 16)).ToArray();
            double mean = vals.Average(), std = Math.Sqrt(vals.Select(x => (x - mean) * (x - mean)).Average());
            Assert.That(std, Is.EqualTo(1 / Math.Sqrt(64)).Within(0.01), "q_proj std = 1/sqrt(D)");
            var norm = ck["blk.0.attn_norm"];
            var nv = norm.File.Span<ushort>(norm.Entry).ToArray().Select(u => (double)BitConverter.UInt32BitsToSingle((uint)u << 16)).Average();
            Assert.That(nv, Is.EqualTo(1).Within(0.05));
        }
        finally
        {
            foreach (var d in new[] { a, b, c }) Directory.Delete(d, true);
        }
    }

    [Test]
    public void TextOnlyCheckpointWithTiedEmbeddingsRoundTrips()
    {
        var o = ReadJson(Path.Combine(FixtureModel("tiny-maverick"), "config.json"));
        var flat = o["text_config"]!.DeepClone().AsObject();
        flat["architectures"] = new System.Text.Json.Nodes.JsonArray("Llama4ForCausalLM");
        flat["tie_word_embeddings"] = true;
        string d = NewTempDir("synth-causal");
        try
        {
            Synth.Write(flat.ToJsonString(), d, new SynthOptions(Seed: Seed("causal lm"), MaxShardBytes: 200_000));
            using var ck = Checkpoint.Open(d);
            Assert.That(ck.Config.IsMultimodal, Is.False);
            Assert.That(ck.TryGet("output", out _), Is.False, "tied: no lm_head");
            Assert.That(ck["tok_embd"].Expected.Hf, Is.EqualTo("model.embed_tokens.weight"));
            Assert.That(ck.Tensors.Select(t => t.Name), Has.None.StartWith("v."));
            using var w = WeightLoader.Load(ck, Device);
            Assert.That(w.Tensors, Has.Count.EqualTo(ck.Tensors.Count));
        }
        finally { Directory.Delete(d, true); }
    }

    [Test]
    public void SynthSingleShardAndOtherDTypes()
    {
        string d = NewTempDir("synth-single");
        try
        {
            Synth.Write(Presets.ConfigJson("tiny-maverick"), d, new SynthOptions(DType: DType.F32, Seed: Seed("single shard")));
            Assert.That(File.Exists(Path.Combine(d, Checkpoint.SingleFile)), Is.True);
            Assert.That(File.Exists(Path.Combine(d, Checkpoint.IndexFile)), Is.False);
            using var ck = Checkpoint.Open(d);
            Assert.That(ck.Tensors.Select(t => t.DType).Distinct(), Is.EqualTo(new[] { DType.F32 }));
        }
        finally { Directory.Delete(d, true); }
    }

    [Test]
    public void LoaderReportsProgressFiltersAndKeepsAlignment()
    {
        using var ck = Checkpoint.Open(FixtureModel("tiny-maverick"));
        var seen = new List<LoadProgress>();
        using var w = WeightLoader.Load(ck, Device, new LoadOptions(
            Include: n => !n.StartsWith("v.", StringComparison.Ordinal) && !n.StartsWith("mm.", StringComparison.Ordinal),
            StagingBytes: 65536, StagingBuffers: 2, Progress: seen.Add));
        Assert.That(w.Tensors.Keys, Has.None.StartWith("v."));
        Assert.That(w.Tensors.ContainsKey("tok_embd") && w.Tensors.ContainsKey("blk.0.ffn_gate") && w.Tensors.ContainsKey("blk.1.moe.router"));
        Assert.That(seen, Is.Not.Empty);
        Assert.That(seen.Select(p => p.BytesDone), Is.Ordered.Ascending);
        Assert.That(seen[^1].BytesDone, Is.EqualTo(seen[^1].BytesTotal));
        Assert.That(w.Arena.Bytes, Is.EqualTo(seen[^1].BytesTotal));
        Assert.That(w.Layer(1, "moe.gate_up_exps").Shape.ToString(), Is.EqualTo("[8, 64, 80]"));
        Assert.Throws<KeyNotFoundException>(() => _ = w["v.patch_embd"]);
    }

    /// <summary>End to end on the emulated device, when it can be built here (it needs g++ and the kernel sources).</summary>
    [Test]
    public void EmulatedDeviceWhenAvailable()
    {
        EmuDevice emu;
        // Only a missing C++ compiler is a reason to skip; any other failure to build the device is a bug.
        try { emu = new EmuDevice(new EmuOptions(Threads: 1)); }
        catch (Llama4Native.Kernels.KernelCompileException e) when (e.Message.Contains("cannot run the C++ compiler"))
        { Assert.Ignore($"emulated device unavailable here: {e.Message}"); return; }
        using (emu)
        {
            string dir = FixtureModel("tiny-maverick-fp8");
            var files = ReadAllFromFiles(dir);
            using var w = WeightLoader.Load(dir, emu, new LoadOptions(StagingBytes: 4096));
            foreach (var (ours, dw) in w.Tensors)
            {
                var bytes = new byte[dw.Bytes];
                emu.Download(dw.Ptr, bytes.AsSpan());
                Assert.That(bytes, Is.EqualTo(ExpectedBytes(w, ours, dw, files)), ours);
            }
        }
    }

    [Test]
    public void OutOfDeviceMemoryIsReportedAndNothingLeaks()
    {
        using var small = new HostTestDevice(capacity: 100_000);
        using var ck = Checkpoint.Open(FixtureModel("tiny-scout"));
        var e = Assert.Throws<Llama4Native.Devices.DeviceOutOfMemoryException>(() => WeightLoader.Load(ck, small))!;
        Assert.That(e.Message, Does.Contain("out of device memory"));
        Assert.That(small.FreeMemory, Is.EqualTo(100_000));
    }

    /// <summary>
    /// Quantizing at load never holds the bf16 model on the device: a device with room for the int4 arena plus ONE
    /// expert's bf16 slice (the staging scratch) — less than the bf16 weights — loads tiny-scout with --quantize int4,
    /// and refuses the plain load before allocating anything, naming the quantization that fits.
    /// </summary>
    [Test]
    public void QuantizedLoadNeedsOnlyTheQuantizedArenaPlusOneExpertSlice()
    {
        using var ck = Checkpoint.Open(FixtureModel("tiny-scout"));
        var t = ck.Config.Text;
        var q = new LoadOptions(Quantize: new QuantizeOptions(QuantizeMode.Int4, 16));
        long int4 = WeightLoader.ArenaBytes(ck, q), bf16 = WeightLoader.ArenaBytes(ck);
        long slice = (long)t.HiddenSize * 2 * t.IntermediateSize * 2;            // one expert's gate_up, bf16
        long capacity = int4 + ((slice + 255) & ~255L);
        Assert.That(capacity, Is.LessThan(bf16), "the test must make holding the bf16 weights impossible");
        using var emu = new EmuDevice(new EmuOptions(MemoryBytes: capacity));
        using (var w = WeightLoader.Load(ck, emu, q))
        {
            Assert.That(w.Arena.Bytes, Is.EqualTo(int4));
            Assert.That(w["blk.0.moe.gate_up_exps"].DType, Is.EqualTo(DType.I4));
            Assert.That(w.BytesByFormat["int4"], Is.GreaterThan(0));
        }
        Assert.That(emu.FreeMemory, Is.EqualTo(capacity), "the scratch and the arena are freed");
        var e = Assert.Throws<Llama4Native.Devices.DeviceOutOfMemoryException>(() => WeightLoader.Load(ck, emu))!;
        Assert.That(e.Message, Does.Contain("out of device memory").And.Contain("--quantize int4"));
        Assert.That(emu.FreeMemory, Is.EqualTo(capacity), "nothing was allocated by the refused load");
    }
}
