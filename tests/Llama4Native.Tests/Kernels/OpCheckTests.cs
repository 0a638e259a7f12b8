using Llama4Native.Ops;
using Llama4Native.Reference;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// The whole-layer allowance for bf16 rounding flips (MoE specs): ≤ 1% of the values moved by at most 2⁻⁶ of the
/// layer's largest |y| pass with a note; a larger change, a permutation, or many moved values still fail.
/// </summary>
[TestFixture]
internal sealed class OpCheckTests
{
    static (float[] Want, float[] Got) Layer(Random rng, int n)
    {
        var want = new float[n];
        for (int i = 0; i < n; i++) want[i] = BF16.Round((float)(rng.NextDouble() * 8 - 4));
        return (want, (float[])want.Clone());
    }

    static float Ulps(float v, int ulps) => BF16.ToFloat((ushort)(BF16.FromFloat(v) + ulps)); // away from zero for |v| > 0

    [Test]
    public void FewSmallMovesPass_LargerManyOrPermutedFail()
    {
        var rng = new Random(TestSeed.For(nameof(FewSmallMovesPass_LargerManyOrPermutedFail)));
        var tol = new Tolerance(1e-6, 1e-6); // tighter than one ulp, so every flip is out of tolerance
        var (want, got) = Layer(rng, 2048);
        int at = rng.Next(2048);
        got[at] = want[at] + (want[at] >= 0 ? -0.03f : 0.03f); // max |y| ≈ 4: allowed 0.0625
        var one = OpCheck.AllowBf16RoundingFlips(OpCheck.Compare("y", got, want, tol), got, want);
        Assert.That(one.Passed, Is.True, one.ToString());
        Assert.That(one.Output, Does.Contain("1 values moved"));

        var far = (float[])want.Clone();
        far[at] = want[at] + 0.2f;
        Assert.That(OpCheck.AllowBf16RoundingFlips(OpCheck.Compare("y", far, want, tol), far, want).Passed, Is.False, "0.2 is not a rounding flip");

        var many = (float[])want.Clone();
        for (int i = 0; i < 64; i++) many[(at + 31 * i) % 2048] = Ulps(want[(at + 31 * i) % 2048], 1); // 3% of the values
        Assert.That(OpCheck.AllowBf16RoundingFlips(OpCheck.Compare("y", many, want, tol), many, want).Passed, Is.False, "more than 1% of the values");

        var swapped = (float[])want.Clone();
        int b = (at + 1) % 2048;
        while (Math.Abs(want[at] - want[b]) <= 0.1f) b = (b + 1) % 2048;
        (swapped[at], swapped[b]) = (swapped[b], swapped[at]);
        Assert.That(OpCheck.AllowBf16RoundingFlips(OpCheck.Compare("y", swapped, want, tol), swapped, want).Passed, Is.False, "a permutation");
    }
}
