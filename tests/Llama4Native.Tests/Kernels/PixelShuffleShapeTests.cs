using Llama4Native.Kernels;

namespace Llama4Native.Tests.Kernels;

/// <summary>PixelShuffle's shape rules: HF's sizes where its views work, an ArgumentException naming the numbers where they fail.</summary>
[TestFixture]
public sealed class PixelShuffleShapeTests
{
    [Test]
    public void LlamaShapes() => Assert.That(PixelShuffle.Sizes(576, 1408, 0.5), Is.EqualTo((24, 12, 2816, 5632)));

    [Test]
    public void TinyFixture() => Assert.That(PixelShuffle.Sizes(64, 32, 0.5), Is.EqualTo((8, 4, 64, 128)));

    [TestCase(575, 1408, 0.5, "N = 575")]   // not a perfect square
    [TestCase(25, 8, 0.5, "G·r = 2.5")]     // G = 5: 5·0.5 is not whole
    [TestCase(4, 3, 2.0, "C/r = 1.5")]      // channels not divisible
    [TestCase(0, 8, 0.5, "N = 0")]
    public void Refuses(long n, long c, double ratio, string mention)
    {
        var e = Assert.Throws<ArgumentException>(() => PixelShuffle.Sizes(n, c, ratio))!;
        Assert.That(e.Message, Does.Contain(mention));
    }

    [Test]
    public void OddChannelsWithQuarterRatio()
    {
        // C = 6, r = 0.25: C/r = 24, C/r² = 96, G = 4 → Wr = 1: 4·1·24 = 96 = 4·4·6 and 1·1·96 = 1·4·24: valid
        Assert.That(PixelShuffle.Sizes(16, 6, 0.25), Is.EqualTo((4, 1, 24, 96)));
        // G = 6, r = 0.25: G·r = 1.5 → HF's view fails
        Assert.Throws<ArgumentException>(() => PixelShuffle.Sizes(36, 6, 0.25));
    }
}
