using System.Diagnostics;
using Llama4Native.Model;
using Llama4Native.Reference;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Text;
using Llama4Native.Vision;

namespace Llama4Native.Tests.Vision;

internal class ImageProcessorTests
{
    static readonly Llama4ImageProcessor Scout = new();

    static RgbImage RandomImage(Random rng, int w, int h)
    {
        var px = new byte[w * h * 3];
        rng.NextBytes(px);
        return new RgbImage(w, h, px);
    }

    /// <summary>
    /// A second, plain implementation of the resize: per output pixel, both passes spelled out with their own
    /// weight loops (no shared taps, no spans, no parallelism), for both kernels. It shares the formulas, not the code.
    /// </summary>
    static byte[] ReferenceResize(byte[] src, int sw, int sh, int dw, int dh, ResizeKernel kernel)
    {
        if (sw == dw && sh == dh) return src;
        if (kernel == ResizeKernel.TorchUint8)
        {
            byte[] cur = src; int cw = sw;
            if (dw != sw) { cur = PassU8(cur, sw, sh, dw, horizontal: true); cw = dw; }
            if (dh != sh) cur = PassU8(cur, cw, sh, dh, horizontal: false);
            return cur;
        }
        float[] f = src.Select(b => (float)b).ToArray(); int fw = sw;
        if (dw != sw) { f = PassF(f, sw, sh, dw, horizontal: true); fw = dw; }
        if (dh != sh) f = PassF(f, fw, sh, dh, horizontal: false);
        return f.Select(v => (byte)Math.Clamp(MathF.Round(v, MidpointRounding.ToEven), 0, 255)).ToArray();
    }

    static (long Min, long Size) Range(double center, double support, int inSize)
    {
        long min = Math.Max((long)(center - support + 0.5), 0);
        return (min, Math.Min((long)(center + support + 0.5), inSize) - min);
    }

    static byte[] PassU8(byte[] src, int w, int h, int outSize, bool horizontal)
    {
        int inSize = horizontal ? w : h;
        double scale = (double)inSize / outSize, support = Math.Max(scale, 1.0);
        var ws = new double[outSize][]; var mins = new long[outSize];
        double wmax = 0;
        for (int o = 0; o < outSize; o++)
        {
            double center = scale * (o + 0.5);
            var (min, size) = Range(center, support, inSize);
            size = Math.Min(size, (long)Math.Ceiling(support) * 2 + 1);
            var wo = new double[size];
            for (int j = 0; j < size; j++) wo[j] = Math.Max(0, 1 - Math.Abs((j + min - center + 0.5) / Math.Max(scale, 1.0)));
            double sum = wo.Sum();
            for (int j = 0; j < size; j++) { wo[j] /= sum; wmax = Math.Max(wmax, wo[j]); }
            ws[o] = wo; mins[o] = min;
        }
        int prec = 0;
        while (prec < 22 && (int)(0.5 + wmax * (1 << (prec + 1))) < (1 << 15)) prec++;
        int ow = horizontal ? outSize : w, oh = horizontal ? h : outSize;
        var dst = new byte[ow * oh * 3];
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int c = 0; c < 3; c++)
                {
                    int o = horizontal ? x : y;
                    int acc = 1 << (prec - 1);
                    for (int j = 0; j < ws[o].Length; j++)
                    {
                        int sx = horizontal ? (int)mins[o] + j : x, sy = horizontal ? y : (int)mins[o] + j;
                        acc += (int)(0.5 + ws[o][j] * (1 << prec)) * src[(sy * w + sx) * 3 + c];
                    }
                    dst[(y * ow + x) * 3 + c] = (byte)Math.Clamp(acc >> prec, 0, 255);
                }
        return dst;
    }

    static float[] PassF(float[] src, int w, int h, int outSize, bool horizontal)
    {
        int inSize = horizontal ? w : h;
        float scale = (float)inSize / outSize;
        float support = scale >= 1 ? scale : 1f, inv = scale >= 1 ? (float)(1.0 / scale) : 1f;
        int ow = horizontal ? outSize : w, oh = horizontal ? h : outSize;
        var dst = new float[ow * oh * 3];
        for (int o = 0; o < outSize; o++)
        {
            float center = (float)(scale * (o + 0.5));
            long min = Math.Max((long)((double)(center - support) + 0.5), 0);
            long size = Math.Min(Math.Min((long)((double)(center + support) + 0.5), inSize) - min, (long)Math.Ceiling(support) * 2 + 1);
            var wo = new float[size];
            float sum = 0;
            for (int j = 0; j < size; j++)
            {
                float x = Math.Abs((float)(((double)((float)(j + min) - center) + 0.5) * inv));
                wo[j] = x < 1 ? (float)(1.0 - x) : 0f;
                sum += wo[j];
            }
            for (int j = 0; j < size; j++) wo[j] /= sum;
            for (int a = 0; a < (horizontal ? h : w); a++)
                for (int c = 0; c < 3; c++)
                {
                    float At(int j) => horizontal ? src[(a * w + (int)min + j) * 3 + c] : src[(((int)min + j) * w + a) * 3 + c];
                    float acc = At(0) * wo[0];
                    for (int j = 1; j < size; j++)
                        acc = j <= (size - 1) / 4 * 4 ? acc + At(j) * wo[j] : MathF.FusedMultiplyAdd(At(j), wo[j], acc);
                    dst[(horizontal ? a * ow + o : o * ow + a) * 3 + c] = acc;
                }
        }
        return dst;
    }

    [Test]
    public void NormalisationTable()
    {
        Assert.That(Llama4ImageProcessor.Normalize(0), Is.EqualTo((ushort)0xBF80), "-1");
        Assert.That(Llama4ImageProcessor.Normalize(255), Is.EqualTo((ushort)0x3F80), "+1");
        var all = Enumerable.Range(0, 256).Select(v => BF16.ToFloat(Llama4ImageProcessor.Normalize((byte)v))).ToArray();
        for (int v = 1; v < 256; v++) Assert.That(all[v], Is.GreaterThan(all[v - 1]), $"{v}");
        for (int v = 0; v < 256; v++) Assert.That(all[v], Is.EqualTo(v / 127.5 - 1).Within(0.008), $"{v}");
    }

    [Test]
    public void ResizeMatchesPlainReference([Values] ResizeKernel kernel)
    {
        var rng = new Random(TestSeed.For(nameof(ResizeMatchesPlainReference) + kernel));
        var sizes = new List<(int, int, int, int)> { (1, 2000, 336, 336), (2000, 1, 336, 336), (500, 300, 336, 336), (7, 5, 336, 240) };
        for (int k = 0; k < 6; k++) sizes.Add((rng.Next(1, 700), rng.Next(1, 700), rng.Next(1, 700), rng.Next(1, 700)));
        foreach (var (sw, sh, dw, dh) in sizes)
        {
            var img = RandomImage(rng, sw, sh);
            var got = AntialiasResize.Resize(img.Pixels, sw, sh, dw, dh, kernel);
            var want = ReferenceResize(img.Pixels, sw, sh, dw, dh, kernel);
            Assert.That(got, Is.EqualTo(want), $"{kernel} {sw}x{sh} -> {dw}x{dh}");
        }
    }

    [Test]
    public void ConstantImageStaysConstant([Values] ResizeKernel kernel)
    {
        var rng = new Random(TestSeed.For(nameof(ConstantImageStaysConstant) + kernel));
        for (int k = 0; k < 5; k++)
        {
            int sw = rng.Next(1, 900), sh = rng.Next(1, 900), dw = rng.Next(1, 900), dh = rng.Next(1, 900);
            byte v = (byte)rng.Next(256);
            var px = new byte[sw * sh * 3]; px.AsSpan().Fill(v);
            var got = AntialiasResize.Resize(px, sw, sh, dw, dh, kernel);
            Assert.That(got.All(b => b == v), Is.True, $"{kernel} {sw}x{sh} -> {dw}x{dh} of {v}");
        }
    }

    [Test]
    public void BatchConcatenatesTilesInOrder()
    {
        var imgs = ImageFixture.Images();
        var inputs = imgs.Select(g => new RgbImage(g.Width, g.Height, ImageFixture.Tensors(g.Index).Rgb)).ToList();
        var batch = Scout.ProcessBatch(inputs);   // warm-up (JIT)
        var times = new List<double>();
        for (int k = 0; k < 5; k++)
        {
            var sw = Stopwatch.StartNew();
            Scout.ProcessBatch(inputs);
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        TestContext.Out.WriteLine($"batch of the 3 fixture images (8 tiles), warm: median {times[2]:F1} ms, min {times[0]:F1} ms on {Environment.ProcessorCount} cores");
        Assert.That(times[0], Is.LessThan(5000), "pathologically slow");
        Assert.That(batch.TilesPerImage, Is.EqualTo(new[] { 3, 1, 4 }));
        Assert.That(batch.TotalTiles, Is.EqualTo(8));
        var want = imgs.SelectMany(g => ImageFixture.Tensors(g.Index).Pixels).ToArray();
        Assert.That(batch.PixelValues.SequenceEqual(want), Is.True, "HF's three outputs concatenated");
        Assert.That(batch.ToFloat()[0], Is.EqualTo(BF16.ToFloat(want[0])));

        var rng = new Random(TestSeed.For(nameof(BatchConcatenatesTilesInOrder)));
        var rand = Enumerable.Range(0, 4).Select(_ => RandomImage(rng, rng.Next(1, 900), rng.Next(1, 900))).ToList();
        var b2 = Scout.ProcessBatch(rand);
        var one = rand.Select(Scout.Process).ToList();
        Assert.That(b2.TilesPerImage, Is.EqualTo(one.Select(p => p.TileCount).ToArray()));
        Assert.That(b2.PixelValues, Is.EqualTo(one.SelectMany(p => p.PixelValues).ToArray()));
    }

    [Test]
    public void GridLayoutAndResizeRuleOnRandomSizes()
    {
        var rng = new Random(TestSeed.For(nameof(GridLayoutAndResizeRuleOnRandomSizes)));
        var settings = Scout.Settings;
        for (int k = 0; k < 300; k++)
        {
            int w = rng.Next(3) == 0 ? rng.Next(1, 60) : rng.Next(1, 6000), h = rng.Next(3) == 0 ? rng.Next(1, 60) : rng.Next(1, 6000);
            var (r, c) = TileGrid.Choose(w, h, 336, 16);
            Assert.That(r * c, Is.InRange(1, 16));
            Assert.That(PromptImage.FromSize(w, h, settings), Is.EqualTo(new PromptImage(r, c)), $"{w}x{h}");
            var (rh, rw) = TileGrid.ResizedSize(w, h, r, c, 336);
            Assert.That(rh, Is.InRange(1, Math.Min(r * 336, Math.Max(h, 336))), $"{w}x{h}: height never beyond max(side, S) nor the canvas");
            Assert.That(rw, Is.InRange(1, Math.Min(c * 336, Math.Max(w, 336))), $"{w}x{h}");
            Assert.That(rh == Math.Min(Math.Max(h, 336), r * 336) || rw == Math.Min(Math.Max(w, 336), c * 336), Is.True, $"{w}x{h}: one side reaches its target");
        }
    }

    [Test]
    public void SmallImageFillsOneTileAndIsPaddedWithMinusOne()
    {
        var rng = new Random(TestSeed.For(nameof(SmallImageFillsOneTileAndIsPaddedWithMinusOne)));
        int w = rng.Next(1, 336), h = rng.Next(1, w + 1);   // landscape, smaller than a tile
        var p = Scout.Process(RandomImage(rng, w, h));
        Assert.That((p.Rows, p.Cols, p.TileCount, p.HasGlobalTile), Is.EqualTo((1, 1, 1, false)));
        Assert.That(p.ResizedWidth, Is.EqualTo(336), "upscaled to the tile on the limiting side, no further");
        Assert.That(p.ResizedHeight, Is.EqualTo(Math.Max(1, (int)Math.Floor(h * (336.0 / w)))));
        Assert.That(p.PixelValues, Has.Length.EqualTo(3 * 336 * 336));
        ushort pad = Llama4ImageProcessor.Normalize(0);
        for (int c = 0; c < 3; c++)
            for (int y = p.ResizedHeight; y < 336; y++)
                Assert.That(p.PixelValues[c * 336 * 336 + y * 336 + rng.Next(336)], Is.EqualTo(pad));
    }

    [TestCase(1, 2000, 6, 1)]
    [TestCase(2000, 1, 1, 6)]
    public void ExtremeAspectRatios(int w, int h, int rows, int cols)
    {
        var rng = new Random(TestSeed.For(nameof(ExtremeAspectRatios) + w));
        var img = RandomImage(rng, w, h);
        var p = Scout.Process(img);
        Assert.That((p.Rows, p.Cols, p.TileCount), Is.EqualTo((rows, cols, rows * cols + 1)));
        Assert.That((p.ResizedWidth, p.ResizedHeight), Is.EqualTo((w, h)), "fits the canvas without resizing");
        Assert.That(p.PixelValues, Has.Length.EqualTo(p.TileCount * 3 * 336 * 336));
        // tile 0's first pixel is the image's first pixel; the global tile is the reference squash
        Assert.That(p.PixelValues[0], Is.EqualTo(Llama4ImageProcessor.Normalize(img.Pixels[0])));
        var global = ReferenceResize(img.Pixels, w, h, 336, 336, ResizeKernel.TorchFloat32);
        int g0 = rows * cols * 3 * 336 * 336;
        for (int k = 0; k < 200; k++)
        {
            int c = rng.Next(3), y = rng.Next(336), x = rng.Next(336);
            Assert.That(p.PixelValues[g0 + c * 336 * 336 + y * 336 + x], Is.EqualTo(Llama4ImageProcessor.Normalize(global[(y * 336 + x) * 3 + c])));
        }
    }

    [Test]
    public void FromConfigUsesTheVisionTowerTile()
    {
        var cfg = Llama4Config.Load(CkptTestUtil.FixtureModel("tiny-scout"));
        var proc = Llama4ImageProcessor.FromConfig(cfg.Vision!);
        Assert.That((proc.TileSize, proc.MaxTiles, proc.Settings.PatchesPerTile), Is.EqualTo((64, 16, cfg.Vision!.TokensPerTile)));
        var p = proc.Process(RandomImage(new Random(TestSeed.For(nameof(FromConfigUsesTheVisionTowerTile))), 100, 50));
        Assert.That((p.Rows, p.Cols), Is.EqualTo(TileGrid.Choose(100, 50, 64, 16)));
        Assert.That(p.PixelValues, Has.Length.EqualTo(p.TileCount * 3 * 64 * 64));
        Assert.That(p.ToFloat().All(v => v >= -1 && v <= 1), Is.True);
    }
}
