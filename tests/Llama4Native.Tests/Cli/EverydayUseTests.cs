using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Cli.Verbs;
using Llama4Native.Generation;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Cli;

/// <summary>Models where users keep them (the Hugging Face hub cache), generation_config.json as HF reads it, and the
/// CLI's everyday behaviour: chat commands, synth over an existing checkpoint.</summary>
public class EverydayUseTests
{
    static (int Rc, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = Commands.Run(args, o, e);
        return (rc, o.ToString(), e.ToString());
    }

    /// <summary>The fixture laid out as huggingface_hub stores it: blobs named by hash, snapshot files as relative
    /// links into ../../blobs, refs/main naming the snapshot.</summary>
    static (string Repo, string Snapshot) HubCache(string root, string rev = "0123abcd")
    {
        string repo = Path.Combine(root, "models--meta-llama--Tiny-Scout");
        string snap = Path.Combine(repo, "snapshots", rev);
        Directory.CreateDirectory(Path.Combine(repo, "blobs"));
        Directory.CreateDirectory(snap);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), rev + "\n");
        int k = 0;
        foreach (var f in Directory.GetFiles(CkptTestUtil.FixtureModel("tiny-scout")))
        {
            string blob = $"{k++:x8}deadbeef";
            File.Copy(f, Path.Combine(repo, "blobs", blob));
            File.CreateSymbolicLink(Path.Combine(snap, Path.GetFileName(f)), Path.Combine("..", "..", "blobs", blob));
        }
        return (repo, snap);
    }

    [Test]
    public void HubCacheSnapshotAndRepoFoldersOpen()
    {
        string root = CkptTestUtil.NewTempDir("hub");
        try
        {
            var (repo, snap) = HubCache(root);
            Assert.That(Checkpoint.ResolveModelDirectory(repo), Is.EqualTo(snap), "refs/main picks the snapshot");
            using var fromSnap = Checkpoint.Open(snap);
            using var fromRepo = Checkpoint.Open(repo);
            using var plain = Checkpoint.Open(CkptTestUtil.FixtureModel("tiny-scout"));
            Assert.That(fromSnap.Tensors.Count, Is.EqualTo(plain.Tensors.Count));
            Assert.That(fromRepo.TotalBytes, Is.EqualTo(plain.TotalBytes));
            var i = Run("inspect", "--model", repo, "--device", "none");
            Assert.That(i.Rc, Is.EqualTo(0), i.Err);

            // refs/main naming a missing snapshot, and a repo with two snapshots and no ref: each its own message.
            File.WriteAllText(Path.Combine(repo, "refs", "main"), "feedface");
            Assert.That(() => Checkpoint.ResolveModelDirectory(repo), Throws.TypeOf<CheckpointException>().With.Message.Contains("names revision feedface"));
            File.Delete(Path.Combine(repo, "refs", "main"));
            Directory.CreateDirectory(Path.Combine(repo, "snapshots", "other"));
            Assert.That(() => Checkpoint.ResolveModelDirectory(repo), Throws.TypeOf<CheckpointException>().With.Message.Contains("2 snapshots and no refs/main"));
        }
        finally { Directory.Delete(root, true); }
    }

    [Test]
    public void HubCacheLinksLeavingTheRepoAreStillRefused()
    {
        string root = CkptTestUtil.NewTempDir("hub-out");
        try
        {
            var (_, snap) = HubCache(root);
            // One shard's link now points outside the cache repo (at the fixture itself).
            string shard = Directory.GetFiles(snap, "model-00001-*.safetensors").Single();
            string outside = Path.Combine(root, "elsewhere.safetensors");
            File.Copy(shard, outside);
            File.Delete(shard);
            File.CreateSymbolicLink(shard, outside);
            Assert.That(() => Checkpoint.Open(snap), Throws.TypeOf<CheckpointException>()
                        .With.Message.Contains("outside the model directory").And.Message.Contains("blobs/ only"));
        }
        finally { Directory.Delete(root, true); }
    }

    [Test]
    public void GenerationConfigAsHuggingFaceReadsIt()
    {
        // Llama 4's own file: sampling on, T 0.6, top-p 0.9, HF's default top-k 50, three stop ids.
        var o = GenerationConfig.Parse("""{"bos_token_id": 200000, "do_sample": true, "eos_token_id": [200001, 200007, 200008], "pad_token_id": 200018, "temperature": 0.6, "top_p": 0.9}""");
        Assert.That((o.Temperature, o.TopP, o.TopK), Is.EqualTo((0.6f, 0.9f, 50)));
        Assert.That(o.StopTokens, Is.EqualTo(new[] { 200001, 200007, 200008 }));
        // do_sample absent (HF: false) = greedy whatever the temperature; one eos id as a plain int.
        var g = GenerationConfig.Parse("""{"eos_token_id": 456, "temperature": 0.6, "max_new_tokens": 77}""");
        Assert.That((g.Temperature, g.TopP, g.TopK, g.MaxNewTokens), Is.EqualTo((0f, 1f, 0, 77)));
        Assert.That(g.StopTokens, Is.EqualTo(new[] { 456 }));
        foreach (var bad in new[] { "{", "[]", """{"do_sample": "yes"}""", """{"temperature": "hot"}""", """{"eos_token_id": [1, -2]}""",
                                    """{"do_sample": true, "top_p": 0}""", """{"max_new_tokens": 1.5}""" })
            Assert.That(() => GenerationConfig.Parse(bad, "/m/generation_config.json"),
                        Throws.TypeOf<InvalidDataException>().With.Message.StartsWith("/m/generation_config.json: "), bad);

        // Explicit options win, the rest comes from the file.
        var a = new Args(["--temperature", "0.2", "--stop-token", "7"], RunVerb.Spec);
        var merged = RunVerb.Settings.From(a).Sampling(o);
        Assert.That((merged.Temperature, merged.TopP, merged.TopK), Is.EqualTo((0.2f, 0.9f, 50)));
        Assert.That(merged.StopTokens, Is.EqualTo(new[] { 200001, 200007, 200008, 7 }));
    }

    [Test]
    public void SynthRefusesANonEmptyFolderAndForceLeavesNoStaleShards()
    {
        string dir = CkptTestUtil.NewTempDir("synth-force");
        try
        {
            var first = Run("synth", "--preset", "tiny-scout", "--out", dir, "--max-shard-size", "100KB", "--quiet");
            Assert.That(first.Rc, Is.EqualTo(0), first.Err);
            int many = Directory.GetFiles(dir, "model*.safetensors").Length;
            Assert.That(many, Is.GreaterThan(1));
            var again = Run("synth", "--preset", "tiny-scout", "--out", dir, "--quiet");
            Assert.That((again.Rc, again.Err), Is.EqualTo((2, $"llama4 synth: --out {dir} is not empty; pass an empty or new folder, or --force to replace the checkpoint in it\n")));
            var forced = Run("synth", "--preset", "tiny-scout", "--out", dir, "--quiet", "--force");
            Assert.That(forced.Rc, Is.EqualTo(0), forced.Err);
            Assert.That(Directory.GetFiles(dir, "*.safetensors").Select(Path.GetFileName), Is.EqualTo(new[] { "model.safetensors" }), "no stale shards");
            Assert.That(File.Exists(Path.Combine(dir, Checkpoint.IndexFile)), Is.False, "no stale index");
            using var c = Checkpoint.Open(dir);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void EvalOutputReplacesARegularFileOnly()
    {
        string dir = CkptTestUtil.NewTempDir("eval-out");
        try
        {
            string inputs = Path.Combine(CkptTestUtil.Fixture("tiny-scout"), "golden_text.safetensors");
            string outPath = Path.Combine(dir, "out.safetensors");
            File.WriteAllText(outPath, "old");
            var r = Run("eval", "--model", CkptTestUtil.FixtureModel("tiny-scout"), "--inputs", inputs, "--out", outPath, "--device", "emu");
            Assert.That(r.Rc, Is.EqualTo(0), r.Err);
            using var f = SafetensorsFile.Open(outPath);
            Assert.That(f.Contains("logits"), Is.True);
            Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(1), "no temporary file left behind");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCase("80GiB", "80 GiB total")]
    [TestCase("141GiB", "141 GiB total")]
    [TestCase("80GB", "74.51 GiB total")]
    [TestCase("80 GB", "74.51 GiB total")]
    [TestCase("512MiB", "512 MiB total")]
    public void InspectFitsAgainstAGivenMemorySize(string size, string shown)
    {
        foreach (var args in new[] { new[] { "--preset", "scout" }, ["--config", Path.Combine(CkptTestUtil.FixtureModel("tiny-scout"), "config.json")],
                                     ["--model", CkptTestUtil.FixtureModel("tiny-scout")] })
        {
            var r = Run(["inspect", .. args, "--device-memory", size, "--quantize", "int4", "--int4-group-size", "16", "--context", "1000"]);
            Assert.That(r.Rc, Is.EqualTo(0), r.Err);
            Assert.That(r.Out, Does.Contain($"--device-memory {shown.Split(" total")[0]}").And.Contain(shown));
        }
    }

    [Test, Category("Emulator")]
    public void ChatCommandsAreNotSentToTheModel()
    {
        var input = new StringReader("/help\n/image\n/image   \n/bogus\n/q\nnever read\n");
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = ChatVerb.Run(["--device", "emu", "--max-new-tokens", "1"], input, o, e);
        var err = e.ToString();
        Assert.That(rc, Is.EqualTo(0), err);
        Assert.That(err, Does.Contain("/exit or /quit quits"));
        Assert.That(System.Text.RegularExpressions.Regex.Matches(err, "/image needs a path").Count, Is.EqualTo(2), err);
        Assert.That(err, Does.Contain("unknown command /bogus"));
        Assert.That(err, Does.Not.Contain("prompt tokens"), "a command reached the model");
        Assert.That(o.ToString().Split("> ").Length - 1, Is.EqualTo(5));
    }
}
