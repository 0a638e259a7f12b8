using Llama4Native.Checkpoints;
using Llama4Native.Devices.Recording;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Generation;

/// <summary>The run-time prefill piece (issue #11): auto takes the largest of 2048/1024/512/256 whose KV cache and prefill graph
/// fit the device's free memory with that graph's size to spare — checked at the exact edge on the recording device.</summary>
internal class PrefillPieceTests
{
    static Llama4Config Config() => Llama4Config.Parse(Presets.ConfigJson("tiny-scout"), "preset tiny-scout");
    const int Context = 4096;

    /// <summary>(KV bytes, graph bytes) of a piece, measured as the auto rule measures them (free memory before/after).</summary>
    static (long Kv, long Graph) Need(Llama4Config config, int piece)
    {
        using var dev = new RecordingDevice(1L << 40);
        using var w = WeightLoader.Describe(config, dev);
        long f0 = dev.FreeMemory;
        using var kv = new KvCache(dev, config.Text, DType.BF16, Context, piece);
        long f1 = dev.FreeMemory;
        using var g = new Llama4TextGraph(w, piece, ComputeMode.BF16, kv, lastLogitsOnly: true);
        return (f0 - f1, f1 - dev.FreeMemory);
    }

    static int AutoPiece(Llama4Config config, long spare)
    {
        long weights;
        using (var probe = new RecordingDevice(1L << 40))
        using (WeightLoader.Describe(config, probe)) weights = probe.AllocatedBytes;
        using var dev = new RecordingDevice(weights + spare);
        using var w = WeightLoader.Describe(config, dev);
        using var gen = new TokenGenerator(w, ComputeMode.BF16, Context, maxPiece: 0);
        Assert.That(gen.PieceAuto, Is.True);
        return gen.MaxPiece;
    }

    [Test]
    public void AutoTakesTheLargestPieceThatFitsFreeMemory()
    {
        var config = Config();
        var need = TokenGenerator.AutoPieces.ToDictionary(p => p, p => Need(config, p));
        foreach (int p in TokenGenerator.AutoPieces)
            TestContext.Out.WriteLine($"piece {p}: KV {need[p].Kv} B, graph {need[p].Graph} B");
        Assert.That(need[2048].Graph, Is.GreaterThan(need[256].Graph), "a larger piece needs a larger arena");
        foreach (int p in TokenGenerator.AutoPieces)
        {
            long edge = need[p].Kv + 2 * need[p].Graph;
            Assert.That(AutoPiece(config, edge), Is.EqualTo(p), $"exactly room for piece {p} (KV + its graph twice)");
            int smaller = Array.IndexOf(TokenGenerator.AutoPieces, p) + 1;
            if (smaller < TokenGenerator.AutoPieces.Length)
                Assert.That(AutoPiece(config, edge - 1), Is.LessThan(p), $"a byte short of piece {p}");
        }
        Assert.That(AutoPiece(config, 1L << 36), Is.EqualTo(2048), "plenty of memory: 2,048");
        // an explicit piece is taken as given
        using var dev = new RecordingDevice(1L << 40);
        using var w = WeightLoader.Describe(config, dev);
        using var gen = new TokenGenerator(w, ComputeMode.BF16, Context, maxPiece: 300);
        Assert.That((gen.MaxPiece, gen.PieceAuto), Is.EqualTo((300, false)));
    }
}
