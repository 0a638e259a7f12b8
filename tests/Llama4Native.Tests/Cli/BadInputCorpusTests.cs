using System.Runtime.InteropServices;
using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Cli;

/// <summary>
/// The bad-input corpus: every way a hostile or careless user was seen to misuse the CLI, each with the exit code it
/// must give (2: the command line is wrong, nothing was loaded; 1: an input is wrong) and the words its message must
/// contain. No case may print a stack trace or succeed. Paths in braces are made in a temp folder: {MODEL} the
/// tiny-scout fixture (no tokenizer), {FILE} a plain file, {DIR} an empty folder, {NONEMPTY} a folder with a file,
/// {LINK} a symlink to a file, {FIFO} a named pipe, {BADPNG} a PNG with a broken body, {INPUTS} valid input_ids,
/// {BADIDS} input_ids outside the vocabulary, {BADCONFIG} a checkpoint folder whose config.json is not JSON,
/// {HUBEMPTY} a hub cache repo with no snapshot, {BADGEN} a checkpoint whose generation_config.json is broken.
/// </summary>
[Category("Emulator")]
public class BadInputCorpusTests
{
    static string root = "";
    static readonly Dictionary<string, string> paths = [];

    [DllImport("libc", SetLastError = true)] static extern int mkfifo(string path, uint mode);

    [OneTimeSetUp]
    public void MakeFiles()
    {
        root = CkptTestUtil.NewTempDir("corpus");
        string P(string n) => Path.Combine(root, n);
        paths["MODEL"] = CkptTestUtil.FixtureModel("tiny-scout");
        File.WriteAllText(paths["FILE"] = P("file.txt"), "not a model");
        Directory.CreateDirectory(paths["DIR"] = P("empty"));
        Directory.CreateDirectory(paths["NONEMPTY"] = P("nonempty"));
        File.WriteAllText(P("nonempty/keep.txt"), "x");
        File.CreateSymbolicLink(paths["LINK"] = P("link.safetensors"), paths["FILE"]);
        paths["FIFO"] = P("fifo");
        if (mkfifo(paths["FIFO"], Convert.ToUInt32("644", 8)) != 0) paths["FIFO"] = "/dev/null";   // still not a regular file
        var png = File.ReadAllBytes(Path.Combine(CkptTestUtil.Fixture("llama4-image-processor"), "wide_500x300.png"));
        File.WriteAllBytes(paths["BADPNG"] = P("bad.png"), [.. png.AsSpan(0, 60), .. new byte[200]]);
        var crc = png.ToArray();
        crc[29] ^= 0x01;   // the IHDR CRC's last byte
        File.WriteAllBytes(paths["BADCRC"] = P("bad-crc.png"), crc);
        var jpg = File.ReadAllBytes(Directory.GetFiles(CkptTestUtil.Fixture("llama4-image-processor"), "*.jpg")[0]);
        File.WriteAllBytes(paths["CUTJPEG"] = P("cut.jpg"), jpg.AsSpan(0, jpg.Length * 2 / 3).ToArray());
        File.WriteAllBytes(paths["NOFRAMES"] = P("noframes.gif"), [.. "GIF89a"u8, 1, 0, 1, 0, 0, 0, 0, 0x3B]);
        WriteIds(paths["INPUTS"] = P("inputs.safetensors"), [1, 2, 3]);
        WriteIds(paths["BADIDS"] = P("badids.safetensors"), [1, 1L << 40, 3]);
        Directory.CreateDirectory(paths["BADCONFIG"] = P("badconfig"));
        File.WriteAllText(P("badconfig/config.json"), "{ not json");
        Directory.CreateDirectory(P("models--org--empty/snapshots"));
        Directory.CreateDirectory(P("models--org--empty/blobs"));
        paths["HUBEMPTY"] = P("models--org--empty");
        paths["BADGEN"] = P("badgen");
        CkptTestUtil.CopyDir(paths["MODEL"], paths["BADGEN"]);
        File.WriteAllText(P("badgen/generation_config.json"), "{\"do_sample\": true, \"temperature\": \"hot\"}");
    }

    [OneTimeTearDown]
    public void Clean() { try { Directory.Delete(root, true); } catch (IOException) { } }

    static void WriteIds(string path, long[] ids) =>
        SafetensorsWriter.Write(path, [("input_ids", DType.I64, [ids.Length], MemoryMarshal.AsBytes(ids.AsSpan()).ToArray())]);

    static TestCaseData C(int rc, string message, params string[] args) =>
        new TestCaseData(args, rc, message).SetName($"Corpus_{rc}_{string.Join("_", args).Replace('.', ',')}");

    public static IEnumerable<TestCaseData> Cases()
    {
        // --- run: numbers ---------------------------------------------------------------------------------
        yield return C(2, "got '0,5'", "run", "--temperature", "0,5");
        yield return C(2, "--engine must be auto, batched or sequential, not 'paged'", "serve", "--engine", "paged");
        yield return C(2, "got '1,000'", "run", "--max-new-tokens", "1,000");
        yield return C(2, "finite", "run", "--temperature", "NaN");
        yield return C(2, "finite", "run", "--temperature", "Infinity");
        yield return C(2, "expects a number like 0.5", "run", "--temperature", "-∞");
        yield return C(2, "out of range", "run", "--temperature", "1e39");
        yield return C(2, "temperature (-1) must be in [0, 100]", "run", "--temperature", "-1");
        yield return C(2, "must be in [0, 100]", "run", "--temperature", "100.5");
        yield return C(2, "top-p (0) must be in (0, 1]", "run", "--top-p", "0");
        yield return C(2, "top-p (1.5) must be in (0, 1]", "run", "--top-p", "1.5");
        yield return C(2, "finite", "run", "--top-p", "nan");
        yield return C(2, "min-p (1) must be in [0, 1)", "run", "--min-p", "1");
        yield return C(2, "min-p (-0.1) must be in [0, 1)", "run", "--min-p", "-0.1");
        yield return C(2, "--top-k -1 is out of range [0, 2147483647]", "run", "--top-k", "-1");
        yield return C(2, "--top-k expects an integer", "run", "--top-k", "1.5");
        yield return C(2, "repetition penalty (0) must be in (0, 100]", "run", "--repetition-penalty", "0");
        yield return C(2, "finite", "run", "--repetition-penalty", "-Infinity");
        yield return C(2, "repetition penalty (1000) must be in (0, 100]", "run", "--repetition-penalty", "1000");
        yield return C(2, "frequency penalty (1001) must be in [-1000, 1000]", "run", "--frequency-penalty", "1001");
        yield return C(2, "finite", "run", "--presence-penalty", "NaN");
        yield return C(2, "presence penalty (-2000) must be in [-1000, 1000]", "run", "--presence-penalty", "-2000");
        yield return C(2, "--seed must be ≥ 0", "run", "--seed", "-1");
        yield return C(2, "--seed expects an integer from 0 to 18446744073709551615", "run", "--seed", "18446744073709551616");
        yield return C(2, "--seed expects an integer", "run", "--seed", "0x10");
        yield return C(2, "--seed expects an integer", "run", "--seed", "1e3");
        yield return C(2, "--seed expects an integer", "run", "--seed", " 7");
        yield return C(2, "--max-context 4294967312 is out of range [1, 2147483647]", "run", "--max-context", "4294967312");
        yield return C(2, "--max-context 0 is out of range", "run", "--max-context", "0");
        yield return C(2, "--max-context -5 is out of range", "run", "--max-context", "-5");
        yield return C(2, "--max-new-tokens -1 is out of range", "run", "--max-new-tokens", "-1");
        yield return C(2, "--max-new-tokens 99999999999 is out of range", "run", "--max-new-tokens", "99999999999");
        yield return C(2, "--stop-token -3 is out of range", "run", "--stop-token", "-3");
        yield return C(2, "--stop-token expects an integer", "run", "--stop-token", "eot");
        yield return C(2, "--stop-token 1099511627776 is out of range", "run", "--stop-token", "1099511627776");
        yield return C(2, "--stop-token 512 is out of range: the model's vocabulary has 512 tokens", "run", "--model", "{MODEL}", "--prompt", "x", "--stop-token", "512");
        // --- run: choices, spelling, shape of the command line --------------------------------------------------
        yield return C(2, "--device must be auto, cuda, cuda:N", "run", "--device", "gpu");
        yield return C(2, "--device must be", "run", "--device", "cuda:x");
        yield return C(2, "--device must be", "run", "--device", "cuda:-1");
        yield return C(2, "--compute must be fp32 or bf16, not 'fp16'", "run", "--compute", "fp16");
        yield return C(2, "--quantize must be none, int4 or fp8, not 'int8'", "run", "--quantize", "int8");
        yield return C(2, "--int4-group-size 0 is out of range", "run", "--quantize", "int4", "--int4-group-size", "0");
        yield return C(2, "--int4-group-size applies to --quantize int4 only", "run", "--int4-group-size", "64");
        yield return C(2, "--int4-group-size applies to --quantize int4 only", "run", "--quantize", "fp8", "--int4-group-size", "64");
        // --kv-cache on every verb that builds a cache: bf16 or fp8, checked before anything loads
        yield return C(2, "--kv-cache must be bf16 or fp8, not 'fp16'", "run", "--kv-cache", "fp16");
        yield return C(2, "--kv-cache must be bf16 or fp8, not 'FP8'", "chat", "--kv-cache", "FP8");
        yield return C(2, "--kv-cache must be bf16 or fp8, not 'int8'", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{DIR}/o.safetensors", "--kv-cache", "int8");
        yield return C(2, "--kv-cache must be bf16 or fp8, not 'e4m3'", "serve", "--kv-cache", "e4m3");
        yield return C(2, "--kv-cache must be bf16 or fp8, not ''", "bench-e2e", "--model", "{MODEL}", "--kv-cache=");
        yield return C(2, "--kv-cache must be bf16 or fp8, not 'f8'", "plan", "--preset", "scout", "--kv-cache", "f8");
        yield return C(2, "--kv-cache must be bf16 or fp8, not 'fp32'", "inspect", "--preset", "scout", "--kv-cache", "fp32");
        yield return C(2, "--kv-cache was given twice", "run", "--kv-cache", "fp8", "--kv-cache", "bf16");
        yield return C(2, "option --kv-cache needs a value", "plan", "--preset", "scout", "--kv-cache");
        yield return C(2, "unexpected argument 'foo'", "run", "foo");
        yield return C(2, "unexpected argument 'hello world'", "run", "--seed", "1", "hello world");
        yield return C(2, "unknown option '-x'", "run", "-x");
        yield return C(2, "unknown option '--bogus'", "run", "--bogus");
        yield return C(2, "did you mean --temperature", "run", "--temp", "1");
        yield return C(2, "option --prompt needs a value", "run", "--prompt");
        yield return C(2, "option --prompt needs a value", "run", "--prompt", "--seed", "1");
        yield return C(2, "--prompt was given twice", "run", "--prompt", "a", "--prompt", "b");
        yield return C(2, "--seed was given twice", "run", "--seed=1", "--seed", "2");
        yield return C(2, "unknown option '--quiet'", "run", "--quiet");
        // --- run: files ----------------------------------------------------------------------------------
        yield return C(2, "model directory not found", "run", "--model", "{FILE}.missing", "--prompt", "x");
        yield return C(2, "is a file, not a model folder", "run", "--model", "{FILE}", "--prompt", "x");
        yield return C(2, "is a file, not a model folder", "run", "--model", "{MODEL}/config.json", "--prompt", "x");
        yield return C(2, "--prompt TEXT is required", "run", "--model", "{MODEL}");
        yield return C(2, "Pass --tokenizer PATH", "run", "--model", "{MODEL}", "--prompt", "x");
        yield return C(2, "--tokenizer {FILE}.missing: no such file or folder", "run", "--tokenizer", "{FILE}.missing");
        yield return C(2, "--image {FILE}.missing: no such file", "run", "--image", "{FILE}.missing");
        yield return C(2, "is a folder; pass an image file", "run", "--image", "{DIR}");
        yield return C(1, "bad.png: truncated PNG", "run", "--image", "{BADPNG}");
        yield return C(1, "bad-crc.png: corrupt PNG: bad CRC in chunk IHDR", "run", "--image", "{BADCRC}");
        yield return C(1, "cut.jpg: truncated JPEG", "run", "--image", "{CUTJPEG}");
        yield return C(1, "noframes.gif: GIF has no frames", "run", "--image", "{NOFRAMES}");
        yield return C(2, "--image - was given twice", "run", "--image", "-", "--image", "-");
        yield return C(2, "no snapshot", "run", "--model", "{HUBEMPTY}", "--prompt", "x");
        yield return C(1, "config.json", "run", "--model", "{BADCONFIG}", "--prompt", "x");
        yield return C(1, "\"temperature\" must be a finite number", "run", "--model", "{BADGEN}", "--prompt", "x");
        // --- chat ----------------------------------------------------------------------------------------
        yield return C(2, "got '0,5'", "chat", "--temperature", "0,5");
        yield return C(2, "unexpected argument 'hi'", "chat", "hi");
        yield return C(2, "unknown option '--image'", "chat", "--image", "x.png");
        // --- eval ----------------------------------------------------------------------------------------
        yield return C(2, "--model DIR is required", "eval");
        yield return C(2, "--out FILE.safetensors is required", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}");
        yield return C(2, "--generate -1 is out of range [0, 1048576]", "eval", "--generate", "-1");
        yield return C(2, "--generate 2147483647 is out of range [0, 1048576]", "eval", "--generate", "2147483647");
        yield return C(2, "exceed the model's max_position_embeddings (4096)", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{DIR}/o.safetensors", "--generate", "5000");
        yield return C(2, "is a symbolic link; refusing to replace it", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{LINK}");
        yield return C(2, "refusing to replace it", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{FIFO}");
        yield return C(2, "is a character device; refusing", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "/dev/full");
        yield return C(2, "is a folder; refusing", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{DIR}");
        yield return C(2, "does not exist", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{DIR}/no/such/o.safetensors");
        yield return C(2, "--inputs {FILE}.missing: no such file", "eval", "--model", "{MODEL}", "--inputs", "{FILE}.missing", "--out", "{DIR}/o.safetensors");
        yield return C(2, "is a folder; pass a .safetensors file", "eval", "--model", "{MODEL}", "--inputs", "{DIR}", "--out", "{DIR}/o.safetensors");
        yield return C(1, "input_ids[1] = 1099511627776 is out of range", "eval", "--model", "{MODEL}", "--inputs", "{BADIDS}", "--out", "{DIR}/o.safetensors");
        yield return C(2, "--compute must be fp32 or bf16", "eval", "--compute", "fp16");
        // --- synth ---------------------------------------------------------------------------------------
        yield return C(2, "give exactly one of --preset", "synth", "--out", "{DIR}/s");
        yield return C(2, "give exactly one of --preset", "synth", "--preset", "tiny-scout", "--config", "{FILE}", "--out", "{DIR}/s");
        yield return C(2, "unknown preset", "synth", "--preset", "nope", "--out", "{DIR}/s");
        yield return C(2, "is not empty", "synth", "--preset", "tiny-scout", "--out", "{NONEMPTY}");
        yield return C(2, "is a file; pass a folder", "synth", "--preset", "tiny-scout", "--out", "{FILE}");
        yield return C(2, "--dtype int8: expected bf16, f16 or f32", "synth", "--preset", "tiny-scout", "--out", "{DIR}/s", "--dtype", "int8");
        yield return C(2, "unknown unit 'XB'", "synth", "--preset", "tiny-scout", "--out", "{DIR}/s", "--max-shard-size", "5XB");
        yield return C(2, "must be a positive size", "synth", "--preset", "tiny-scout", "--out", "{DIR}/s", "--max-shard-size", "0");
        yield return C(2, "--seed must be ≥ 0", "synth", "--preset", "tiny-scout", "--out", "{DIR}/s", "--seed", "-1");
        yield return C(1, "is free on its disk", "synth", "--preset", "maverick", "--out", "{DIR}/big", "--dtype", "f32");
        yield return C(2, "--config {DIR} is a folder", "synth", "--config", "{DIR}", "--out", "{DIR}/s");
        // --- inspect -------------------------------------------------------------------------------------
        yield return C(2, "give exactly one of --model DIR, --preset NAME", "inspect");
        yield return C(2, "give exactly one of", "inspect", "--preset", "scout", "--model", "{MODEL}");
        yield return C(2, "--preset 'nope' is not one of", "inspect", "--preset", "nope");
        yield return C(2, "unknown unit 'XB'", "inspect", "--preset", "scout", "--device-memory", "80XB");
        yield return C(2, "must be a positive size", "inspect", "--preset", "scout", "--device-memory", "0");
        yield return C(2, "is not a size", "inspect", "--preset", "scout", "--device-memory", "-1GB");
        yield return C(2, "is too large", "inspect", "--preset", "scout", "--device-memory", "99999999999TiB");
        yield return C(2, "--context 0 is out of range", "inspect", "--preset", "scout", "--context", "0");
        yield return C(2, "--context 99999999999999 is out of range", "inspect", "--preset", "scout", "--context", "99999999999999");
        yield return C(2, "give --device or --device-memory, not both", "inspect", "--preset", "scout", "--device-memory", "80GiB", "--device", "emu");
        // --devices: spelling, counts, and a count the model cannot be split over (named dimension)
        yield return C(2, "emu:N takes a count from 1 to 64", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "/tmp/l4-bad-devices.safetensors", "--devices", "emu:0");
        yield return C(2, "unknown device kind 'tpu'", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "/tmp/l4-bad-devices.safetensors", "--devices", "tpu:2");
        yield return C(2, "a device is named twice", "plan", "--preset", "maverick", "--devices", "cuda:0,0");
        yield return C(2, "num_attention_heads (40) is not divisible by 3", "plan", "--preset", "maverick", "--devices", "3");
        yield return C(2, "out of range 1 to 4096", "inspect", "--preset", "scout", "--devices", "0");
        // --rank/--world-size/--init (one process per device): all three, a rank in range, a tcp:// address, one device each
        yield return C(2, "--rank 2 is out of range for --world-size 2: ranks are 0 to 1", "run", "--device", "emu", "--rank", "2", "--world-size", "2", "--init", "tcp://127.0.0.1:29500");
        yield return C(2, "--rank -1 is out of range", "run", "--rank", "-1", "--world-size", "2", "--init", "tcp://127.0.0.1:29500");
        yield return C(2, "only tcp:// is supported", "run", "--rank", "0", "--world-size", "2", "--init", "http://10.0.0.1:29500");
        yield return C(2, "no port", "run", "--rank", "0", "--world-size", "2", "--init", "tcp://10.0.0.1");
        yield return C(2, "'99999' is not a port", "chat", "--rank", "0", "--world-size", "2", "--init", "tcp://10.0.0.1:99999");
        yield return C(2, "give --rank R, --world-size W and --init tcp://HOST:PORT together", "run", "--rank", "0", "--world-size", "2");
        yield return C(2, "--init-timeout goes with --rank", "run", "--init-timeout", "5");
        yield return C(2, "out of range", "run", "--rank", "0", "--world-size", "0", "--init", "tcp://h:1");
        yield return C(2, "each process of a multi-process group drives one device", "run", "--devices", "emu:2", "--rank", "0", "--world-size", "2", "--init", "tcp://h:1");
        yield return C(2, "give --device (one device) or --devices (several), not both", "run", "--device", "emu", "--devices", "emu:2");
        // a world size (or device count) the model cannot be split over: named before any rendezvous or load
        yield return C(2, "num_attention_heads (4) is not divisible by 3", "run", "--model", "{MODEL}", "--prompt", "x", "--device", "emu", "--rank", "0", "--world-size", "3", "--init", "tcp://127.0.0.1:1");
        yield return C(2, "num_attention_heads (4) is not divisible by 3", "chat", "--model", "{MODEL}", "--devices", "emu:3");
        yield return C(2, "--config {DIR} is a folder", "inspect", "--config", "{DIR}");
        yield return C(2, "--quantize must be none, int4 or fp8", "inspect", "--preset", "scout", "--quantize", "q4");
        yield return C(1, "config.json", "inspect", "--model", "{BADCONFIG}");
        yield return C(2, "model directory not found", "inspect", "--model", "{FILE}.missing");
        // --- plan ----------------------------------------------------------------------------------------
        yield return C(2, "--max-piece 0 is out of range", "plan", "--preset", "tiny-scout", "--max-piece", "0");
        yield return C(2, "--batch 0 is out of range", "plan", "--preset", "tiny-scout", "--batch", "0");
        yield return C(2, "--rounds 0 is out of range", "bench-serve", "--rounds", "0");
        yield return C(2, "--batch 5000 is out of range", "plan", "--preset", "tiny-scout", "--batch", "5000");
        yield return C(2, "--batch plans the batched step on one device", "plan", "--preset", "maverick", "--devices", "8", "--batch", "8");
        yield return C(2, "--max-piece expects a number of tokens or 'auto', got 'max'", "plan", "--preset", "tiny-scout", "--max-piece", "max");
        // --- --max-piece on the verbs that feed prompts ----------------------------------------------------
        yield return C(2, "--max-piece expects a number of tokens or 'auto', got 'max'", "run", "--max-piece", "max");
        yield return C(2, "--max-piece 0 is out of range", "chat", "--max-piece", "0");
        yield return C(2, "--max-piece expects a number of tokens or 'auto', got '2k'", "serve", "--model", "{MODEL}", "--max-piece", "2k");
        yield return C(2, "--max-piece 0 is out of range", "eval", "--model", "{MODEL}", "--inputs", "{INPUTS}", "--out", "{DIR}/o.safetensors", "--max-piece", "0");
        // --- other verbs ---------------------------------------------------------------------------------
        yield return C(2, "--model DIR is required", "bench-e2e");
        yield return C(2, "--prompt-tokens 0 is out of range", "bench-e2e", "--model", "{MODEL}", "--prompt-tokens", "0");
        yield return C(2, "--new-tokens 0 is out of range", "bench-e2e", "--model", "{MODEL}", "--new-tokens", "0");
        yield return C(2, "exceed the model's max_position_embeddings", "bench-e2e", "--model", "{MODEL}", "--prompt-tokens", "5000");
        yield return C(2, "matches no op case", "selftest", "--filter", "no-such-op-zzz", "--device", "emu");
        yield return C(2, "--seed expects an integer", "selftest", "--seed", "x");
        yield return C(2, "--tokenizer", "tokenize");
        yield return C(2, "does not exist", "tokenize", "--tokenizer", "{FILE}.missing");
        yield return C(2, "--runs 0 is out of range", "bench-load", "--runs", "0");
        yield return C(2, "unknown option '--bogus'", "kernels", "--bogus");
        yield return C(2, "unexpected argument 'now'", "devices", "now");
        yield return C(2, "unknown verb 'rn' (did you mean 'run'?)", "rn");
        yield return C(2, "unknown verb 'inpsect' (did you mean 'inspect'?)", "inpsect");
        yield return C(2, "unknown verb 'nope'", "help", "nope");
        yield return C(2, "takes no arguments", "--version", "extra");
    }

    static string[] Expand(string[] args) =>
        args.Select(a => paths.Aggregate(a, (s, kv) => s.Replace("{" + kv.Key + "}", kv.Value, StringComparison.Ordinal))).ToArray();

    [TestCaseSource(nameof(Cases))]
    public void BadInputGivesItsOwnMessageAndExitCode(string[] args, int rc, string message)
    {
        var argv = Expand(args);
        message = Expand([message])[0];
        var o = new StringWriter();
        var e = new StringWriter();
        int got = Commands.Run(argv, o, e);
        var err = e.ToString();
        Assert.That(got, Is.EqualTo(rc), $"exit code of llama4 {string.Join(' ', argv)}\nstderr: {err}");
        Assert.That(err, Does.Contain(message), $"stderr of llama4 {string.Join(' ', argv)}");
        Assert.That(err, Does.Not.Contain("   at ").And.Not.Contain("Exception:"), "no stack trace");
        Assert.That(err, Does.Not.Contain("load ["), "failed before any weight was read");
        Assert.That(err.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.LessThanOrEqualTo(3), "a short message");
    }

    [Test]
    public void TheCorpusHasAtLeastEightyCases() => Assert.That(Cases().Count(), Is.GreaterThanOrEqualTo(80));

    [Test]
    public void EveryVerbHasHelpDescribingEveryOption()
    {
        foreach (var verb in Commands.Verbs)
        {
            foreach (var h in new[] { "--help", "-h" })
            {
                var o = new StringWriter();
                Assert.That(Commands.Run([verb, h], o, new StringWriter()), Is.EqualTo(0), verb);
                var text = o.ToString();
                Assert.That(text, Does.StartWith($"usage: llama4 {verb}"));
                foreach (var opt in Commands.SpecOf(verb).Options)
                {
                    Assert.That(text, Does.Contain("--" + opt.Name), $"{verb} --help lacks --{opt.Name}");
                    Assert.That(opt.Help.Length, Is.GreaterThan(10), $"{verb} --{opt.Name} has no real description");
                }
            }
            var viaHelp = new StringWriter();
            Assert.That(Commands.Run(["help", verb], viaHelp, new StringWriter()), Is.EqualTo(0));
            Assert.That(viaHelp.ToString(), Does.StartWith($"usage: llama4 {verb}"));
        }
    }

    [Test]
    public void VersionAndDevices()
    {
        var o = new StringWriter();
        Assert.That(Commands.Run(["--version"], o, new StringWriter()), Is.EqualTo(0));
        Assert.That(o.ToString(), Does.Match(@"^llama4 \d+\.\d+\.\d+"));
        o = new StringWriter();
        Assert.That(Commands.Run(["devices"], o, new StringWriter()), Is.EqualTo(0));
        Assert.That(o.ToString(), Does.Match(@"(?m)^cuda: ").And.Match(@"(?m)^emu: emulated device"));
    }

    [Test]
    public void SeedsAndContextsAtTheirLimitsAreAccepted()
    {
        var a = new Llama4Native.Cli.Verbs.Args(["--seed", "18446744073709551615", "--max-context", "2147483647", "--temperature", "0.5",
                                                 "--frequency-penalty=-1.5", "--stop-token", "0"], Llama4Native.Cli.Verbs.RunVerb.Spec);
        var s = Llama4Native.Cli.Verbs.RunVerb.Settings.From(a);
        var o = s.Sampling(new Llama4Native.Generation.GenerationOptions());
        Assert.That(o.Seed, Is.EqualTo(ulong.MaxValue));
        Assert.That(o.Temperature, Is.EqualTo(0.5f));
        Assert.That(o.FrequencyPenalty, Is.EqualTo(-1.5f));
        Assert.That(o.StopTokens, Is.EqualTo(new[] { 0 }));
        Assert.That(s.MaxContext, Is.EqualTo(int.MaxValue));
    }
}
