using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Model;
using static Llama4Native.Tests.Checkpoints.CkptTestUtil;

namespace Llama4Native.Tests.Checkpoints;

/// <summary>
/// The malformed-input corpus: each case copies a valid synthetic checkpoint (tiny-maverick, 3 shards, or its
/// FP8 variant) into a temp dir, breaks one thing, and asserts the exact exception type and message fragments
/// naming the file and (when there is one) the tensor. Nothing else may escape: no crash, no other exception.
/// </summary>
[TestFixture, NonParallelizable]
public class MalformedCorpusTests
{
    const string Q1 = "language_model.model.layers.1.self_attn.q_proj.weight";
    const string Norm0 = "language_model.model.layers.0.input_layernorm.weight";
    const string Emb = "language_model.model.embed_tokens.weight";
    const string GateUp1 = "language_model.model.layers.1.feed_forward.experts.gate_up_proj";
    const string Shard1 = "model-00001-of-00003.safetensors", Shard2 = "model-00002-of-00003.safetensors", Shard3 = "model-00003-of-00003.safetensors";

    static string? template, templateFp8;

    static string Template(bool fp8)
    {
        ref string? t = ref fp8 ? ref templateFp8 : ref template;
        if (t is not null) return t;
        string dir = NewTempDir(fp8 ? "template-fp8" : "template");
        ulong seed = Seed("corpus template" + (fp8 ? " (fp8)" : ""));
        Synth.Write(Presets.ConfigJson(fp8 ? "tiny-maverick-fp8" : "tiny-maverick"), dir, new SynthOptions(Seed: seed, MaxShardBytes: 320_000));
        Assert.That(Directory.GetFiles(dir, "*.safetensors"), Has.Length.EqualTo(3), "the corpus assumes a 3-shard template");
        using (Checkpoint.Open(dir)) { } // the template itself is valid
        return t = dir;
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        foreach (var d in new[] { template, templateFp8 })
            if (d is not null && Directory.Exists(d)) Directory.Delete(d, true);
    }

    public sealed record Case(string Name, Action<string> Break, Type Expected, string[] Fragments, bool Fp8 = false)
    {
        public override string ToString() => Name;
    }

    static string Sh(string dir, string hf) => Path.Combine(dir, ShardOf(dir, hf));

    static void SetLength(string path, ulong n)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Write);
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, n);
        fs.Write(b);
    }

    static void ReplaceHeaderText(string path, Func<string, string> f)
    {
        var bytes = File.ReadAllBytes(path);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        string json = Encoding.UTF8.GetString(bytes, 8, n);
        WriteRaw(path, f(json), bytes[(8 + n)..]);
    }

    static JsonObject Entry(JsonObject h, string name) => (JsonObject)h[name]!;

    static readonly Type CE = typeof(CheckpointException), CfgE = typeof(ConfigException);

    public static IEnumerable<Case> Cases()
    {
        // ---- safetensors container ----
        yield return new("truncated shard", d => { var p = Sh(d, Q1); var b = File.ReadAllBytes(p); File.WriteAllBytes(p, b[..^100]); },
            CE, ["model-0000", "truncated", "run past the end of the data section"]);
        yield return new("empty shard file", d => File.WriteAllBytes(Path.Combine(d, Shard2), []),
            CE, [Shard2, "too short"]);
        yield return new("header length past EOF", d => { var p = Path.Combine(d, Shard1); SetLength(p, (ulong)new FileInfo(p).Length); },
            CE, [Shard1, "runs past the end of the file", "truncated"]);
        yield return new("header length over 100 MB", d => SetLength(Path.Combine(d, Shard1), 200_000_000),
            CE, [Shard1, "exceeds the 100000000-byte limit"]);
        yield return new("header length huge (2^63)", d => SetLength(Path.Combine(d, Shard1), 1UL << 63),
            CE, [Shard1, "exceeds"]);
        yield return new("header not JSON", d => ReplaceHeaderText(Path.Combine(d, Shard3), _ => "this is not json at all"),
            CE, [Shard3, "not valid JSON"]);
        yield return new("header not UTF-8", d =>
        {
            var p = Path.Combine(d, Shard3);
            var b = File.ReadAllBytes(p);
            int i = Encoding.ASCII.GetString(b, 8, 200).IndexOf("format", StringComparison.Ordinal) + 8;
            b[i] = 0xFF; b[i + 1] = 0xFE;
            File.WriteAllBytes(p, b);
        }, CE, [Shard3, "not valid UTF-8"]);
        yield return new("header is a JSON array", d => ReplaceHeaderText(Path.Combine(d, Shard2), _ => "[1, 2, 3]"),
            CE, [Shard2, "JSON array", "expected an object"]);
        yield return new("header too deep", d => ReplaceHeaderText(Path.Combine(d, Shard2), _ => new string('[', 64) + new string(']', 64)),
            CE, [Shard2, "not valid JSON"]);
        yield return new("unknown dtype", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1)["dtype"] = "Q4_K"),
            CE, [Q1, "unknown dtype \"Q4_K\"", "model-0000"]);
        yield return new("shape does not match byte range", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1)["shape"] = new JsonArray(64, 63)),
            CE, [Q1, "[64, 63]", "data_offsets"]);
        yield return new("overlapping ranges", d => EditHeader(Sh(d, Q1), h =>
        {
            // Another tensor of the same size now claims q_proj's bytes.
            var k = Q1.Replace("q_proj", "o_proj");
            Entry(h, k)["data_offsets"] = Entry(h, Q1)["data_offsets"]!.DeepClone();
        }), CE, ["overlaps", "self_attn"]);
        yield return new("gap in the data section", d => EditHeader(Sh(d, Q1), h => h.Remove(Q1)),
            CE, ["gap of 8192 bytes", "contiguous"]);
        yield return new("trailing bytes after the last tensor", d => File.AppendAllText(Path.Combine(d, Shard2), "0123456789abcdef"),
            CE, [Shard2, "16 trailing bytes"]);
        yield return new("offsets past EOF", d => EditHeader(Sh(d, Q1), h =>
        {
            var o = Entry(h, Q1)["data_offsets"]!.AsArray();
            long b = (long)o[0]! + 10_000_000, e = (long)o[1]! + 10_000_000;
            Entry(h, Q1)["data_offsets"] = new JsonArray(b, e);
        }), CE, [Q1, "run past the end of the data section"]);
        yield return new("end before begin", d => EditHeader(Sh(d, Q1), h =>
        {
            var o = Entry(h, Q1)["data_offsets"]!.AsArray();
            Entry(h, Q1)["data_offsets"] = new JsonArray((long)o[1]!, (long)o[0]!);
        }), CE, [Q1, "end before they begin"]);
        yield return new("negative dimension", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1)["shape"] = new JsonArray(-64, -64)),
            CE, [Q1, "shape[0] is -64", "non-negative"]);
        yield return new("huge dimensions overflow", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1)["shape"] = new JsonArray(1L << 40, 1L << 40, 1L << 40)),
            CE, [Q1, "overflows"]);
        yield return new("fractional dimension", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1)["shape"] = new JsonArray(64.5, 64)),
            CE, [Q1, "shape[0] is 64.5"]);
        yield return new("tensor entry missing data_offsets", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1).Remove("data_offsets")),
            CE, [Q1, "lacks data_offsets"]);
        yield return new("unknown field in a tensor entry", d => EditHeader(Sh(d, Q1), h => Entry(h, Q1)["quant"] = "yes"),
            CE, [Q1, "unknown field \"quant\""]);
        yield return new("duplicate tensor key in header", d => ReplaceHeaderText(Sh(d, Q1), j =>
        {
            var h = (JsonObject)JsonNode.Parse(j)!;
            string entry = Entry(h, Q1).ToJsonString();
            return j[..j.LastIndexOf('}')] + $",\"{Q1}\":{entry}}}";
        }), CE, [Q1, "listed twice"]);
        yield return new("__metadata__ value not a string", d => EditHeader(Path.Combine(d, Shard1), h => h["__metadata__"] = new JsonObject { ["format"] = 3 }),
            CE, [Shard1, "__metadata__", "expected a string"]);

        // ---- index / shard set ----
        yield return new("missing shard", d => File.Delete(Path.Combine(d, Shard2)),
            CE, [Shard2, "is missing", Checkpoint.IndexFile]);
        yield return new("shard path with ..", d => EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]![Q1] = "../" + Shard1),
            CE, ["../" + Shard1, "climbs out", Checkpoint.IndexFile]);
        yield return new("absolute shard path", d => EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]![Q1] = Path.Combine(d, Shard1)),
            CE, ["absolute path", Checkpoint.IndexFile]);
        yield return new("shard is a symlink out of the directory", d =>
        {
            string outside = d + "-outside.safetensors";
            File.Move(Path.Combine(d, Shard3), outside);
            File.CreateSymbolicLink(Path.Combine(d, Shard3), outside);
        }, CE, [Shard3, "outside the model directory", "symbolic link"]);
        yield return new("index lists a tensor in the wrong shard", d =>
        {
            string right = ShardOf(d, Q1), wrong = right == Shard1 ? Shard2 : Shard1;
            EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]![Q1] = wrong);
        }, CE, [Q1, "is listed in shard", "but is stored in", Checkpoint.IndexFile]);
        yield return new("index lists a tensor no shard has", d => EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]!["ghost.weight"] = Shard1),
            CE, ["ghost.weight", "no shard contains it"]);
        yield return new("shard holds a tensor the index omits", d => EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]!.AsObject().Remove(Norm0)),
            CE, [Norm0, "the index does not list it"]);
        yield return new("index not JSON", d => File.WriteAllText(Path.Combine(d, Checkpoint.IndexFile), "{\"weight_map\": {"),
            CE, [Checkpoint.IndexFile, "not valid JSON"]);
        yield return new("index without weight_map", d => File.WriteAllText(Path.Combine(d, Checkpoint.IndexFile), "{\"metadata\": {}}"),
            CE, [Checkpoint.IndexFile, "no \"weight_map\""]);
        yield return new("no index and no model.safetensors", d => File.Delete(Path.Combine(d, Checkpoint.IndexFile)),
            CE, [Checkpoint.IndexFile, Checkpoint.SingleFile, "llama4 synth"]);

        // ---- tensors vs config (through the name table) ----
        yield return new("missing tensor", d =>
        {
            EditTensors(Sh(d, Norm0), ts => ts.Where(t => t.Name != Norm0));
            EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]!.AsObject().Remove(Norm0));
        }, CE, ["1 missing tensor", Norm0, "blk.0.attn_norm", "[D] = [64]"]);
        yield return new("extra tensor", d =>
        {
            EditTensors(Sh(d, Norm0), ts => ts.Append(new RawTensor("language_model.model.layers.0.mystery.weight", "BF16", [4], new byte[8])));
            EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]!["language_model.model.layers.0.mystery.weight"] = ShardOf(d, Norm0));
        }, CE, ["1 unexpected tensor", "language_model.model.layers.0.mystery.weight"]);
        yield return new("all missing and all unexpected listed at once", d =>
        {
            foreach (var name in new[] { Norm0, Q1, Emb })
            {
                string shard = ShardOf(d, name);
                EditTensors(Path.Combine(d, shard), ts => ts.Select(t => t.Name == name ? t with { Name = "renamed." + name } : t));
                EditJson(Path.Combine(d, Checkpoint.IndexFile), o =>
                {
                    o["weight_map"]!.AsObject().Remove(name);
                    o["weight_map"]!["renamed." + name] = shard;
                });
            }
        }, CE, ["3 missing tensors", "3 unexpected tensors", Norm0, Q1, Emb, "renamed." + Norm0, "renamed." + Q1, "renamed." + Emb]);
        yield return new("wrong shape vs config", d => EditTensors(Sh(d, Q1), ts => ts.Select(t =>
            t.Name == Q1 ? t with { Shape = [64, 32], Data = t.Data[..(64 * 32 * 2)] } : t)),
            CE, [Q1, "shape [64, 32]", "[H·d, D] = [64, 64]"]);
        yield return new("wrong dtype vs config (integer weights)", d => EditTensors(Sh(d, Q1), ts => ts.Select(t =>
            t.Name == Q1 ? t with { DType = "I32", Shape = [64, 32] } : t)),
            CE, [Q1, "dtype I32", "expected BF16, F16 or F32"]);
        yield return new("FP8 tensor in a bf16 checkpoint", d => EditTensors(Sh(d, GateUp1), ts => ts.Select(t =>
            t.Name == GateUp1 ? t with { DType = "F8_E4M3", Shape = [8, 64, 80, 2] } : t)),
            CE, [GateUp1, "[8, 64, 80, 2]"]);
        yield return new("FP8 experts without quantization_config", d => EditTensors(Sh(d, GateUp1), ts => ts.Select(t =>
            t.Name == GateUp1 ? t with { DType = "F8_E4M3", Data = t.Data[..(t.Data.Length / 2)] } : t)),
            CE, [GateUp1, "dtype F8_E4M3", "no quantization_config"]);
        yield return new("FP8 experts listed in modules_to_not_convert", d => EditJson(Path.Combine(d, "config.json"), o =>
            o["quantization_config"]!["modules_to_not_convert"]!.AsArray().Add("language_model.model.layers.1.feed_forward.experts")),
            CE, [GateUp1, "modules_to_not_convert lists", "must stay in a float dtype"], Fp8: true);
        yield return new("FP8 experts without their scale", d =>
        {
            string scale = GateUp1 + "_scale";
            EditTensors(Sh(d, scale), ts => ts.Where(t => t.Name != scale));
            EditJson(Path.Combine(d, Checkpoint.IndexFile), o => o["weight_map"]!.AsObject().Remove(scale));
        }, CE, ["1 missing tensor", GateUp1 + "_scale", "FP8 scale"], Fp8: true);
        yield return new("FP8 scale of the wrong dtype", d => EditTensors(Sh(d, GateUp1 + "_scale"), ts => ts.Select(t =>
            t.Name == GateUp1 + "_scale" ? t with { DType = "BF16", Shape = [8, 2, 80] } : t)),
            CE, [GateUp1 + "_scale", "shape [8, 2, 80]", "dtype BF16", "must be F32"], Fp8: true);

        // ---- config.json ----
        yield return new("config missing", d => File.Delete(Path.Combine(d, "config.json")),
            CfgE, ["config.json", "file not found"]);
        yield return new("config not JSON", d => File.WriteAllText(Path.Combine(d, "config.json"), "{ \"text_config\": "),
            CfgE, ["config.json", "not valid JSON"]);
        yield return new("config missing hidden_size", d => EditJson(Path.Combine(d, "config.json"), o => o["text_config"]!.AsObject().Remove("hidden_size")),
            CfgE, ["config.json", "text_config.hidden_size is missing", "expected an integer"]);
        yield return new("config missing several fields at once", d => EditJson(Path.Combine(d, "config.json"), o =>
        {
            o["text_config"]!.AsObject().Remove("vocab_size");
            o["text_config"]!.AsObject().Remove("num_local_experts");
            o["vision_config"]!.AsObject().Remove("patch_size");
        }), CfgE, ["3 problems", "text_config.vocab_size is missing", "text_config.num_local_experts is missing", "vision_config.patch_size is missing"]);
        yield return new("config field of the wrong type", d => EditJson(Path.Combine(d, "config.json"), o => o["text_config"]!["hidden_size"] = "64"),
            CfgE, ["text_config.hidden_size is string \"64\"", "expected an integer"]);
        yield return new("config heads not divisible by kv heads", d => EditJson(Path.Combine(d, "config.json"), o => o["text_config"]!["num_key_value_heads"] = 3),
            CfgE, ["text_config.num_attention_heads (4) must be divisible by text_config.num_key_value_heads (3)"]);
        yield return new("config unknown architecture", d => EditJson(Path.Combine(d, "config.json"), o => o["architectures"] = new JsonArray("LlamaForCausalLM")),
            CfgE, ["architectures is [\"LlamaForCausalLM\"]", "Llama4ForConditionalGeneration"]);
        yield return new("config layer_types contradict no_rope_layers", d => EditJson(Path.Combine(d, "config.json"), o =>
            o["text_config"]!["layer_types"] = new JsonArray("full_attention", "chunked_attention", "full_attention", "chunked_attention", "chunked_attention", "full_attention")),
            CfgE, ["text_config.layer_types[0] is \"full_attention\" but text_config.no_rope_layers[0] is 1"]);
        yield return new("config moe_layers out of range", d => EditJson(Path.Combine(d, "config.json"), o => o["text_config"]!["moe_layers"] = new JsonArray(1, 3, 9)),
            CfgE, ["text_config.moe_layers contains 9", "[0, 6)"]);
        yield return new("config unsupported rope scaling", d => EditJson(Path.Combine(d, "config.json"), o =>
            o["text_config"]!["rope_scaling"] = new JsonObject { ["rope_type"] = "yarn", ["factor"] = 4.0 }),
            CfgE, ["rope_scaling.rope_type is \"yarn\"", "expected \"llama3\""]);
        yield return new("config vision dims inconsistent", d => EditJson(Path.Combine(d, "config.json"), o => o["vision_config"]!["intermediate_size"] = 100),
            CfgE, ["vision_config.intermediate_size (100) must equal hidden_size / pixel_shuffle_ratio² (128)"]);
        yield return new("config unsupported quantization", d => EditJson(Path.Combine(d, "config.json"), o => o["quantization_config"]!["quant_method"] = "gptq"),
            CfgE, ["quantization_config.quant_method is \"gptq\"", "fbgemm_fp8"], Fp8: true);
    }

    public static int Count => Cases().Count();

    [TestCaseSource(nameof(Cases))]
    public void MalformedCheckpointFailsWithItsOwnError(Case c)
    {
        string dir = NewTempDir("case");
        try
        {
            CopyDir(Template(c.Fp8), dir);
            c.Break(dir);
            Exception? caught = null;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                using var ck = Checkpoint.Open(dir);
            }
            catch (Exception e) { caught = e; }
            Assert.That(caught, Is.Not.Null, $"{c.Name}: the checkpoint opened without error");
            Assert.That(caught, Is.TypeOf(c.Expected), $"{c.Name}: {caught}");
            TestContext.Out.WriteLine($"{c.Name} ({sw.ElapsedMilliseconds} ms):\n{caught!.Message}");
            foreach (var f in c.Fragments) Assert.That(caught.Message, Does.Contain(f), $"{c.Name}: message lacks '{f}'");
            // Every error names a file (a shard, the index, config.json or the directory).
            Assert.That(caught.Message, Does.Contain(".safetensors").Or.Contain("config.json").Or.Contain(dir), "the message names no file");
        }
        finally
        {
            if (File.Exists(dir + "-outside.safetensors")) File.Delete(dir + "-outside.safetensors");
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void CorpusHasAtLeast25Cases()
    {
        TestContext.Out.WriteLine($"malformed corpus: {Count} cases");
        Assert.That(Count, Is.GreaterThanOrEqualTo(25));
        Assert.That(Cases().Select(c => c.Name).Distinct().Count(), Is.EqualTo(Count), "case names are unique");
    }
}
