using Llama4Native.Cli;
using Llama4Native.Cli.Verbs;
using Llama4Native.Tests.Checkpoints;

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
}
