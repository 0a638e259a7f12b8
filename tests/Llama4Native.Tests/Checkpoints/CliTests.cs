using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using static Llama4Native.Tests.Checkpoints.CkptTestUtil;

namespace Llama4Native.Tests.Checkpoints;

/// <summary>The checkpoint verbs through the CLI's dispatcher, and the docs' copy of the name table.</summary>
public class CliTests
{
    static (int Rc, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int rc = Commands.Run(args, o, e);
        return (rc, o.ToString(), e.ToString());
    }

    [Test]
    public void SynthThenInspect()
    {
        string dir = NewTempDir("cli");
        try
        {
            var s = Run("synth", "--preset", "tiny-maverick-fp8", "--out", dir, "--seed", Seed("cli synth").ToString(), "--max-shard-size", "300KB");
            Assert.That(s.Rc, Is.EqualTo(0), s.Err);
            Assert.That(s.Out, Does.Contain("wrote 3 shards"));
            Assert.That(s.Err, Does.Contain("synth: 100%").And.Not.Contain("\r"), "progress as plain lines when stderr is not a terminal");
            var i = Run("inspect", "--model", dir, "--context", "100");
            Assert.That(i.Rc, Is.EqualTo(0), i.Err);
            TestContext.Out.WriteLine(i.Out);
            Assert.That(i.Out, Does.Contain("rRnRrN").And.Contain("fbgemm_fp8").And.Contain("F8_E4M3").And.Contain("kv cache      100 tokens"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void InspectOfABrokenCheckpointIsAnErrorNotACrash()
    {
        string dir = NewTempDir("cli-bad");
        try
        {
            File.WriteAllText(Path.Combine(dir, "config.json"), "{\"architectures\": [\"Llama4ForCausalLM\"]}");
            var r = Run("inspect", "--model", dir);
            Assert.That(r.Rc, Is.EqualTo(1));
            Assert.That(r.Err, Does.Contain("hidden_size is missing"));
            Assert.That(Run("synth", "--preset", "nope", "--out", dir).Rc, Is.EqualTo(2));
            Assert.That(Run("inspect").Rc, Is.EqualTo(2));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void DocsCarryTheCurrentNameTable()
    {
        string doc = File.ReadAllText(Path.Combine(RepoRoot, "docs", "checkpoints.md"));
        Assert.That(doc, Does.Contain(TensorNames.Describe()), "regenerate the table in docs/checkpoints.md with 'llama4 inspect --names'");
    }
}
