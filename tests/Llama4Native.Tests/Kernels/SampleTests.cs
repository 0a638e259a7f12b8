using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Sample;
using R = Llama4Native.Reference.Sample;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// Sampling properties the op table cannot express (the table checks ids against the reference row by row):
/// a fixed seed reproduces; over 2,000 seeds the empirical distribution matches the reference's filtered
/// distribution (total variation); top-k / top-p / min-p never emit a token outside their kept set;
/// penalties move exactly the seen tokens; update = 1 advances counts and step on the device.
/// </summary>
[TestFixture, Category("Emulator")]
internal sealed class SampleTests
{
    Device? dev;
    [OneTimeSetUp] public void Open() => dev = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => dev?.Dispose();

    /// <summary>Runs the kernel on B rows; returns ids and leaves counts/steps as the device left them.</summary>
    int[] Run(float[] logits, SampleParams[] ps, int[] counts, int[] steps, int v, bool update = false)
    {
        var d = dev!; int b = ps.Length;
        using var l = DeviceData.Upload(d, logits, DType.F32);
        using var p = DeviceData.Upload<SampleParams>(d, ps);
        using var c = DeviceData.Upload<int>(d, counts.Length > 0 ? counts : [0]);
        using var s = DeviceData.Upload<int>(d, steps);
        using var ids = DeviceData.Poisoned(d, b, DType.I32);
        K.Run(d, new Tensor(l.Ptr, DType.F32, new Shape(b, v)), p.Ptr, counts.Length > 0 ? c.Ptr : new DevicePtr(0), s.Ptr,
              new Tensor(ids.Ptr, DType.I32, new Shape(b)), new DevicePtr(0), update);
        var r = new int[b]; d.Download(ids.Ptr, r.AsSpan());
        if (counts.Length > 0) d.Download(c.Ptr, counts.AsSpan());
        d.Download(s.Ptr, steps.AsSpan());
        return r;
    }

    /// <summary>The whole 64-bit seed keys the draw: seeds equal in their low 32 bits (0, 2^32, 2^63) or in the
    /// XOR of their halves (1, 2^32 + 0 … the old 32-bit fold) give different tokens, ulong.MaxValue works, and
    /// every draw is the reference's.</summary>
    [Test]
    public void SixtyFourBitSeedsAreNotFolded()
    {
        const int v = 1000, steps = 24;
        var rng = new Random(TestContext.CurrentContext.Random.Next());
        var row = DeviceData.Normal(rng, v, 0.5f);
        ulong[] seeds = [0, 1UL << 32, 1UL << 63, 1, (1UL << 32) + 1, ulong.MaxValue, ulong.MaxValue - 1, (ulong)rng.NextInt64()];
        var draws = new List<int[]>();
        foreach (var seed in seeds)
        {
            var p = new SampleParams(1f, 0, 1f, 0f, 1f, 0f, 0f, 0).WithSeed(seed);
            Assert.That(p.Seed64, Is.EqualTo(seed));
            var got = new int[steps];
            for (int st = 0; st < steps; st++)
            {
                got[st] = Run(row, [p], [], [st], v)[0];
                Assert.That(got[st], Is.EqualTo(R.Row(row, p, default, 0, st, out _)), $"seed {seed} step {st}: kernel ≠ reference");
            }
            draws.Add(got);
        }
        for (int i = 0; i < seeds.Length; i++)
            for (int j = i + 1; j < seeds.Length; j++)
                Assert.That(draws[i], Is.Not.EqualTo(draws[j]), $"seeds {seeds[i]} and {seeds[j]} drew the same {steps} tokens");
    }

    [Test]
    public void FixedSeedIsReproducible()
    {
        var rng = new Random(11); int b = 4, v = 5000;
        var logits = DeviceData.Normal(rng, b * v, 3f);
        var ps = Enumerable.Range(0, b).Select(r => SampleSpec.Params("all", r, rng)).ToArray();
        var counts = Enumerable.Range(0, b * v).Select(_ => rng.Next(0, 30) == 0 ? 1 : 0).ToArray();
        var a = Run(logits, ps, (int[])counts.Clone(), [1, 2, 3, 4], v);
        var c = Run(logits, ps, (int[])counts.Clone(), [1, 2, 3, 4], v);
        Assert.That(c, Is.EqualTo(a));
        var other = Run(logits, ps.Select(p => p with { Seed = p.Seed + 1 }).ToArray(), (int[])counts.Clone(), [1, 2, 3, 4], v);
        Assert.That(other, Is.Not.EqualTo(a), "a different seed should change at least one sampled row");
    }

    static IEnumerable<TestCaseData> Settings()
    {
        yield return new TestCaseData(new SampleParams(1f, 0, 1f, 0f, 1f, 0f, 0f, 0)).SetName("Distribution_temperature1");
        yield return new TestCaseData(new SampleParams(0.6f, 0, 1f, 0f, 1f, 0f, 0f, 0)).SetName("Distribution_temperature06");
        yield return new TestCaseData(new SampleParams(1f, 4, 1f, 0f, 1f, 0f, 0f, 0)).SetName("Distribution_topk4");
        yield return new TestCaseData(new SampleParams(1f, 0, 0.7f, 0f, 1f, 0f, 0f, 0)).SetName("Distribution_topp07");
        yield return new TestCaseData(new SampleParams(1f, 0, 1f, 0.15f, 1f, 0f, 0f, 0)).SetName("Distribution_minp015");
        yield return new TestCaseData(new SampleParams(1.2f, 6, 0.9f, 0.05f, 1.5f, 0.3f, 0.4f, 0)).SetName("Distribution_all");
    }

    /// <summary>2,000 rows = 2,000 independent draws (each row its own seed) from one V = 16 logit vector.</summary>
    [TestCaseSource(nameof(Settings))]
    public void EmpiricalDistributionMatchesReference(SampleParams p)
    {
        const int n = 2000, v = 16;
        var rng = new Random(5);
        var row = DeviceData.Normal(rng, v, 1.2f);
        var rowCounts = Enumerable.Range(0, v).Select(i => i % 3 == 0 ? i % 4 + 1 : 0).ToArray();
        var logits = Enumerable.Range(0, n).SelectMany(_ => row).ToArray();
        var counts = Enumerable.Range(0, n).SelectMany(_ => rowCounts).ToArray();
        var ps = Enumerable.Range(0, n).Select(_ => p with { Seed = (uint)rng.Next() }).ToArray();
        var ids = Run(logits, ps, counts, new int[n], v);
        var want = R.Distribution(row, p, rowCounts);
        var hist = new double[v];
        foreach (var id in ids)
        {
            Assert.That(id, Is.InRange(0, v - 1));
            Assert.That(want[id], Is.GreaterThan(0), $"token {id} lies outside the kept set (top-k/top-p/min-p)");
            hist[id] += 1.0 / n;
        }
        double tv = 0.5 * hist.Zip(want, (a, b) => Math.Abs(a - b)).Sum();
        // E[TV] for 16 bins and 2,000 draws is ≈ 0.03 at most; 0.06 is a > 5σ bound for any of these settings.
        Assert.That(tv, Is.LessThan(0.06), $"total variation {tv:g3}; hist [{string.Join(", ", hist.Select(h => h.ToString("F3")))}] want [{string.Join(", ", want.Select(h => h.ToString("F3")))}]");
    }

    [Test]
    public void KeptSetsAreRespectedAtLargeV()
    {
        var rng = new Random(3); int b = 64, v = 3000;
        var logits = DeviceData.Normal(rng, b * v, 2f);
        var ps = Enumerable.Range(0, b).Select(r => new SampleParams(1.5f, r % 3 == 0 ? 7 : 0, r % 3 == 1 ? 0.3f : 1f, r % 3 == 2 ? 0.3f : 0f, 1f, 0f, 0f, (uint)r)).ToArray();
        var ids = Run(logits, ps, [], new int[b], v);
        for (int r = 0; r < b; r++)
        {
            var z = R.Adjusted(logits.AsSpan(r * v, v), ps[r], default);
            float zc = z[ids[r]];
            if (ps[r].TopK > 0) Assert.That(z.Count(x => x > zc), Is.LessThan(ps[r].TopK), $"row {r}: outside the top-{ps[r].TopK}");
            if (ps[r].MinP > 0) Assert.That(Math.Exp(zc - z.Max()), Is.GreaterThanOrEqualTo(ps[r].MinP * (1 - 1e-5)), $"row {r}: below min-p");
            if (ps[r].TopP < 1)
            {   // the mass strictly above the chosen token must be < p (else the nucleus was already complete)
                double m = z.Max(), tot = z.Sum(x => Math.Exp(x - m)), above = z.Where(x => x > zc).Sum(x => Math.Exp(x - m));
                Assert.That(above / tot, Is.LessThan(ps[r].TopP + 1e-5), $"row {r}: outside the nucleus");
            }
        }
    }

    [Test]
    public void PenaltiesMoveExactlyTheSeenTokens()
    {
        int v = 10;
        float[] row = [0.5f, 3f, -1f, 2.5f, 0f, -2f, 1f, 2.9f, 0.1f, -0.5f];
        var greedy = SampleParams.Greedy;
        // no history: argmax 1
        Assert.That(Run(row, [greedy], new int[v], [0], v)[0], Is.EqualTo(1));
        // penalising unseen-by-argmax tokens (0, 2, 5) leaves the argmax alone
        var far = new int[v]; far[0] = 2; far[2] = 1; far[5] = 4;
        Assert.That(Run(row, [greedy with { Repetition = 2f, Frequency = 1f, Presence = 1f }], far, [0], v)[0], Is.EqualTo(1));
        // repetition 1.1 on token 1: 3 / 1.1 = 2.727 < 2.9 → token 7
        var seen1 = new int[v]; seen1[1] = 1;
        Assert.That(Run(row, [greedy with { Repetition = 1.1f }], (int[])seen1.Clone(), [0], v)[0], Is.EqualTo(7));
        // frequency 0.06 · count 2 on token 1: 3 − 0.12 = 2.88 < 2.9 → 7; with count 1: 2.94 → 1
        var c2 = new int[v]; c2[1] = 2;
        Assert.That(Run(row, [greedy with { Frequency = 0.06f }], c2, [0], v)[0], Is.EqualTo(7));
        Assert.That(Run(row, [greedy with { Frequency = 0.06f }], (int[])seen1.Clone(), [0], v)[0], Is.EqualTo(1));
        // presence 0.2 on tokens 1 and 7: 2.8, 2.7 vs 2.5 → 1
        var c17 = new int[v]; c17[1] = 5; c17[7] = 1;
        Assert.That(Run(row, [greedy with { Presence = 0.2f }], c17, [0], v)[0], Is.EqualTo(1));
        // the reference: exactly the seen indices change, negative logits multiplied
        var cs = new int[v]; cs[2] = 1; cs[3] = 2;
        var z = R.Adjusted(row, greedy with { Repetition = 2f, Frequency = 0.1f, Presence = 0.05f }, cs);
        for (int i = 0; i < v; i++)
            if (cs[i] == 0) Assert.That(z[i], Is.EqualTo(row[i]));
        Assert.That(z[2], Is.EqualTo(-2f - 0.1f - 0.05f).Within(1e-6));
        Assert.That(z[3], Is.EqualTo(1.25f - 0.2f - 0.05f).Within(1e-6));
    }

    [Test]
    public void UpdateAdvancesCountsAndStep()
    {
        int v = 50, b = 3; var rng = new Random(9);
        var logits = DeviceData.Normal(rng, b * v, 2f);
        var ps = new[] { SampleParams.Greedy, new SampleParams(1f, 0, 1f, 0f, 1f, 0f, 0f, 7), new SampleParams(0.5f, 5, 0.9f, 0f, 1f, 0f, 0f, 8) };
        var counts = new int[b * v]; int[] steps = [10, 20, 30];
        var ids = Run(logits, ps, counts, steps, v, update: true);
        Assert.That(steps, Is.EqualTo(new[] { 11, 21, 31 }));
        for (int r = 0; r < b; r++)
            for (int i = 0; i < v; i++) Assert.That(counts[r * v + i], Is.EqualTo(i == ids[r] ? 1 : 0));
        // the reference with the pre-update step picks the same ids
        var want = new int[b]; var wp = new float[b];
        R.Forward(logits, ps, new int[b * v], [10, 20, 30], want, wp, b, v);
        Assert.That(ids, Is.EqualTo(want));
    }
}
