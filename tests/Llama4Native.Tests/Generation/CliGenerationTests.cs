using Llama4Native.Cli;
using Llama4Native.Cli.Verbs;
using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Text;
using Llama4Native.Vision;
using StbImageWriteSharp;

namespace Llama4Native.Tests.Generation;

/// <summary>`llama4 run` and `llama4 chat` end to end on the emulator: the demo model (no --model) with the demo
/// tokenizer, streaming to stdout, stats to stderr.</summary>
[Category("Emulator")]
public class CliGenerationTests
{
    [Test]
    public void RunWithoutAModelStreamsFromTheLabelledDemoModel()
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = Commands.Run(["run", "--device", "emu", "--max-new-tokens", "3", "--temperature", "0.8",
                               "--seed", TestContext.CurrentContext.Random.Next().ToString(), "--prompt", "Name three colours."], o, e);
        Assert.That(rc, Is.EqualTo(0), e.ToString());
        Assert.That(e.ToString(), Does.Contain("TINY RANDOM-WEIGHT"), "the demo must say what it is");
        // --max-context not given: what fits, said so (the demo's 8,192 max_position_embeddings caps it on the emulator)
        Assert.That(e.ToString(), Does.Contain("max context: 8192 tokens (default: what fits in").And.Contain("bf16 KV").And.Contain("capped at max_position_embeddings"));
        Assert.That(e.ToString(), Does.Match(@"\[\d+ prompt tokens, [1-3] new; first token \d+ ms"), "stats on stderr");
        Assert.That(o.ToString(), Does.EndWith(Environment.NewLine));
    }

    [Test]
    public void ChatKeepsTheConversationAndSurvivesReset()
    {
        var input = new StringReader("Hello!\nAnd again?\n/reset\nHello!\n/exit\nnever read\n");
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = ChatVerb.Run(["--device", "emu", "--max-new-tokens", "2"], input, o, e);
        Assert.That(rc, Is.EqualTo(0), e.ToString());
        var stats = System.Text.RegularExpressions.Regex.Matches(e.ToString(), @"\[(\d+) prompt tokens");
        Assert.That(stats, Has.Count.EqualTo(3), e.ToString());
        int first = int.Parse(stats[0].Groups[1].Value), second = int.Parse(stats[1].Groups[1].Value), third = int.Parse(stats[2].Groups[1].Value);
        // The second turn feeds only what is new (the cache holds the first turn); after /reset it starts over.
        Assert.That(second, Is.LessThan(first + 4), "the second turn re-sent the history instead of continuing the cache");
        Assert.That(third, Is.EqualTo(first), "after /reset the same message is the same fresh prompt");
        Assert.That(o.ToString().Split("> ").Length - 1, Is.EqualTo(5), "one prompt per line read, up to and including /exit");
    }

    [Test]
    public void ACheckpointWithoutATokenizerIsAClearErrorBeforeLoading()
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = Commands.Run(["run", "--device", "emu", "--model", CkptTestUtil.FixtureModel("tiny-maverick"), "--prompt", "x"], o, e);
        Assert.That(rc, Is.Not.EqualTo(0));
        Assert.That(e.ToString(), Does.Contain("--tokenizer").And.Not.Contain("load ["), "fails before the weight load, naming the fix");
    }

    /// <summary>A random RGB PNG of the given size.</summary>
    static string WritePng(string dir, string name, int w, int h, Random rng)
    {
        var px = new byte[w * h * 3];
        rng.NextBytes(px);
        var path = Path.Combine(dir, name);
        using var f = File.Create(path);
        new ImageWriter().WritePng(px, w, h, ColorComponents.RedGreenBlue, f);
        return path;
    }

    [Test]
    public void FiveImagesOfDifferentShapesRunEndToEnd()
    {
        var rng = new Random(TestContext.CurrentContext.Random.Next());
        string dir = CkptTestUtil.NewTempDir("imgs");
        try
        {
            // Wide, tall, square, smaller than a tile, extreme: different grids and a global tile or not.
            (int W, int H)[] sizes = [(150 + rng.Next(100), 60 + rng.Next(20)), (40 + rng.Next(20), 200 + rng.Next(60)),
                                      (64, 64), (20 + rng.Next(30), 20 + rng.Next(30)), (400 + rng.Next(200), 8 + rng.Next(8))];
            var paths = sizes.Select((s, i) => WritePng(dir, $"img{i}.png", s.W, s.H, rng)).ToArray();
            var o = new StringWriter();
            var e = new StringWriter();
            const string prompt = "How do these five differ?";
            int rc = Commands.Run(["run", "--device", "emu", "--max-new-tokens", "2", "--prompt", prompt,
                                   .. paths.SelectMany(p => new[] { "--image", p })], o, e);
            Assert.That(rc, Is.EqualTo(0), e.ToString());

            // The prompt the CLI fed: the chat format with each image's placeholders expanded from its own grid.
            var config = Llama4Config.Parse(Presets.ConfigJson("tiny-demo"), "tiny-demo");
            var proc = Llama4ImageProcessor.FromConfig(config.Vision!);
            var grids = paths.Select(p => { var g = proc.Process(p); return (g.Rows, g.Cols); }).ToList();
            Assert.That(grids.Distinct().Count(), Is.GreaterThanOrEqualTo(4), "the shapes should give different tile grids");
            var codec = Llama4TextCodec.Create(Llama4Tokenizer.CreateDemo(), config);
            int want = codec.EncodeDialog([new Message(MessageRole.User, prompt, paths.Select(ImageInput.FromFile).ToArray())], imageGrids: grids).Count;
            Assert.That(e.ToString(), Does.Contain($"[{want} prompt tokens,"), e.ToString());
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void ABrokenImageIsAClearErrorBeforeTheModelLoads()
    {
        string dir = CkptTestUtil.NewTempDir("badimg");
        try
        {
            var good = WritePng(dir, "good.png", 32, 32, new Random(1));
            var bytes = File.ReadAllBytes(good);
            var cut = Path.Combine(dir, "cut.png");
            File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
            var text = Path.Combine(dir, "notes.png");
            File.WriteAllText(text, "not an image at all");
            foreach (var (path, says) in new[] { (cut, "cut.png"), (text, "notes.png"), (Path.Combine(dir, "missing.png"), "no such file") })
            {
                var o = new StringWriter();
                var e = new StringWriter();
                int rc = Commands.Run(["run", "--device", "emu", "--prompt", "x", "--image", good, "--image", path], o, e);
                Assert.That(rc, Is.Not.EqualTo(0), path);
                Assert.That(e.ToString(), Does.Contain(says).And.Not.Contain("load ["), e.ToString());
            }
        }
        finally { Directory.Delete(dir, true); }
    }
}
