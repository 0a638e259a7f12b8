using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Generation;

/// <summary>NaN weights or NaN pixels: generation stops with a <see cref="NonFiniteException"/> naming the first node
/// that produced non-finite values — never NaN logits sampled into tokens with exit 0.</summary>
[Category("Emulator")]
public class NonFiniteTests
{
    static int[] Prompt(int n, int seed) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => r.Next(1, 200)).ToArray(); }

    [Test]
    public void NanWeightIsReportedAtItsNode()
    {
        int seed = TestSeed.For(nameof(NanWeightIsReportedAtItsNode));
        string dir = CkptTestUtil.NewTempDir("nan");
        try
        {
            CkptTestUtil.CopyDir(CkptTestUtil.FixtureModel("tiny-scout"), dir);
            const string hf = "language_model.model.layers.1.self_attn.o_proj.weight";
            var rng = new Random(seed);
            CkptTestUtil.EditTensors(Path.Combine(dir, CkptTestUtil.ShardOf(dir, hf)), ts => ts.Select(t =>
            {
                if (t.Name != hf) return t;
                var d = t.Data.ToArray();
                int at = rng.Next(d.Length / 2) * 2;
                d[at] = 0xC0; d[at + 1] = 0x7F;   // bf16 NaN (0x7FC0), little-endian
                return t with { Data = d };
            }));
            using var dev = TestDevices.Emulated();
            using var w = WeightLoader.Load(dir, dev);
            using var gen = new TokenGenerator(w, ComputeMode.F32, 64, 16);
            var e = Assert.Throws<NonFiniteException>(() => gen.Generate(Prompt(9, seed), new GenerationOptions { MaxNewTokens = 3 }).ToList());
            Assert.That(e!.Node, Is.EqualTo("blk.1.attn_o"), e.Message);
            Assert.That(e.Message, Does.Contain("non-finite").And.Contain("blk.1.attn_o"));

            // Through the CLI: exit 1 and the message, not NaN tokens.
            var err = new StringWriter();
            var inputs = Path.Combine(dir, "in.safetensors");
            long[] ids = [.. Prompt(5, seed).Select(i => (long)i)];
            SafetensorsWriter.Write(inputs, [("input_ids", Tensors.DType.I64, [ids.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()).ToArray())]);
            int rc = Commands.Run(["eval", "--model", dir, "--inputs", inputs, "--out", Path.Combine(dir, "o.safetensors"), "--device", "emu", "--generate", "2"], new StringWriter(), err);
            Assert.That(rc, Is.EqualTo(1), err.ToString());
            Assert.That(err.ToString(), Does.Contain("first at node 'blk.1.attn_o'"));

            // The plain forward (no --generate) too: exit 1 naming the node, no output file with NaN logits.
            err = new StringWriter();
            string plainOut = Path.Combine(dir, "plain.safetensors");
            rc = Commands.Run(["eval", "--model", dir, "--inputs", inputs, "--out", plainOut, "--device", "emu"], new StringWriter(), err);
            Assert.That(rc, Is.EqualTo(1), err.ToString());
            Assert.That(err.ToString(), Does.Contain("non-finite").And.Contain("first at node 'blk.1.attn_o'"));
            Assert.That(File.Exists(plainOut), Is.False, "no output file is written for a non-finite forward");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void NanPixelsAreReportedAtTheFirstVisionNode()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        var vc = w.Config.Vision!;
        int tiles = 1;
        var pixels = new float[(long)tiles * vc.NumChannels * vc.ImageSize * vc.ImageSize];
        var rng = new Random(TestSeed.For(nameof(NanPixelsAreReportedAtTheFirstVisionNode)));
        for (int i = 0; i < pixels.Length; i++) pixels[i] = (float)(rng.NextDouble() * 2 - 1);
        pixels[rng.Next(pixels.Length)] = float.NaN;
        var prompt = new List<int> { 1, 2 };
        prompt.AddRange(Enumerable.Repeat(w.Config.ImageTokenIndex, vc.TokensPerTile * tiles));
        prompt.Add(3);
        using var gen = new TokenGenerator(w, ComputeMode.F32, 256, 64);
        var e = Assert.Throws<NonFiniteException>(() => gen.Generate(prompt, new GenerationOptions { MaxNewTokens = 2 }, new ImageTiles(pixels, tiles)).ToList());
        Assert.That(e!.Node, Does.StartWith("v."), e.Message);
        Assert.That(e.Message, Does.Contain("pixel values"));
    }

    [Test]
    public void FiniteRunsAreUnaffected()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel("tiny-scout"), dev);
        using var gen = new TokenGenerator(w, ComputeMode.F32, 64, 16);
        Assert.That(gen.Generate(Prompt(7, 1), new GenerationOptions { MaxNewTokens = 4, StopAtModelStops = false }).Count(), Is.EqualTo(4));
    }
}
