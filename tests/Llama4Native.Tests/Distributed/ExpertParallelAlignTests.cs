using Llama4Native.Devices;
using Llama4Native.Tensors;
using M = Llama4Native.Kernels.Moe;
using R = Llama4Native.Reference.Moe;

namespace Llama4Native.Tests.Distributed;

/// <summary>moe_align with a first expert (expert parallelism): a device holding experts [e0, e0 + E) of the model groups
/// only the pairs routed to them, exactly as the reference does, and marks every other pair dropped (slot_row −1); run
/// under the emulator's checker (race, memory, sync, init).</summary>
[Category("Emulator")]
public class ExpertParallelAlignTests
{
    [TestCase(1, 1, 8, 0, 4)]
    [TestCase(37, 1, 16, 8, 4)]
    [TestCase(19, 2, 12, 9, 3)]
    [TestCase(64, 1, 128, 112, 16)]
    public void LocalExpertsOnlyMatchTheReference(int t, int k, int experts, int e0, int local)
    {
        int seed = TestSeed.For($"ep align {t} {k} {experts} {e0}");
        var rng = new Random(seed);
        var idx = new int[t * k];
        for (int i = 0; i < t; i++)
        {
            var chosen = Enumerable.Range(0, experts).OrderBy(_ => rng.Next()).Take(k).ToArray();
            for (int s = 0; s < k; s++) idx[i * k + s] = chosen[s];
        }
        using var dev = TestDevices.EmulatedChecked();
        int bm = M.BM;
        long rows = M.MaxRows(t, k, local, bm), tiles = M.MaxTiles(t, k, local, bm);
        using var dIdx = Ops.DeviceData.Upload<int>(dev, idx);
        using var dSorted = dev.Allocate(4 * rows); using var dSlot = dev.Allocate(4L * t * k);
        using var dTiles = dev.Allocate(4 * tiles); using var dOff = dev.Allocate(4L * (local + 1));
        M.Align(dev, new Tensor(dIdx.Ptr, DType.I32, new Shape(t, k)), local, new Tensor(dSorted.Ptr, DType.I32, new Shape(rows)),
                new Tensor(dSlot.Ptr, DType.I32, new Shape(t, k)), new Tensor(dTiles.Ptr, DType.I32, new Shape(tiles)),
                new Tensor(dOff.Ptr, DType.I32, new Shape(local + 1)), null, bm, firstExpert: e0);
        var wSorted = new int[rows]; var wSlot = new int[t * k]; var wTiles = new int[tiles]; var wOff = new int[local + 1];
        int total = R.Align(idx, t, k, local, bm, wSorted, wSlot, wTiles, wOff, e0);
        int[] Get(DeviceBuffer b, long n) { var a = new int[n]; dev.Download(b.Ptr, a.AsSpan()); return a; }
        string ctx = $"seed {seed} (LLAMA4_TEST_SEED={TestSeed.Run})";
        Assert.That(Get(dOff, local + 1), Is.EqualTo(wOff), $"expert_offsets {ctx}");
        Assert.That(Get(dSlot, t * k), Is.EqualTo(wSlot), $"slot_row {ctx}");
        Assert.That(Get(dSorted, rows).Take(total), Is.EqualTo(wSorted.Take(total)), $"sorted_slots {ctx}");
        Assert.That(Get(dTiles, tiles).Take(total / bm), Is.EqualTo(wTiles.Take(total / bm)), $"tile_expert {ctx}");
        int mine = idx.Count(e => e >= e0 && e < e0 + local);
        Assert.That(wSlot.Count(r => r >= 0), Is.EqualTo(mine), "only this device's pairs are grouped");
    }
}
