using System.Diagnostics;
using System.Text.Json;
using Llama4Native.Checkpoints;
using Llama4Native.Tests.Text;
using Llama4Native.Text;
using Llama4Native.Vision;

namespace Llama4Native.Tests.Vision;

/// <summary>
/// The llama4-image-processor fixture (tests/fixtures/ in the repo, or shared/fixtures/), found by walking up from
/// the test binary: 3 images, HF's decoded RGB, HF's bf16 pixel values, grids and layout strings.
/// </summary>
static class ImageFixture
{
    static readonly Lazy<string?> dir = new(() =>
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            foreach (var p in new[] { Path.Combine(d.FullName, "tests", "fixtures", "llama4-image-processor"), Path.Combine(d.FullName, "shared", "fixtures", "llama4-image-processor") })
                if (File.Exists(Path.Combine(p, "image_processor_golden.json"))) return p;
        }
        return null;
    });

    public static string Dir
    {
        get
        {
            if (dir.Value is null) Assert.Ignore("image-processor fixture absent: expected tests/fixtures/llama4-image-processor/ or shared/fixtures/llama4-image-processor/ in a parent folder of the test binary");
            return dir.Value!;
        }
    }

    public sealed record Golden(int Index, string File, int Width, int Height, int Rows, int Cols, int Tiles,
                                int CanvasH, int CanvasW, int ResizedH, int ResizedW, string Text);

    public static IReadOnlyList<Golden> Images()
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllBytes(Path.Combine(Dir, "image_processor_golden.json")));
        var list = new List<Golden>();
        int i = 0;
        foreach (var e in doc.RootElement.GetProperty("images").EnumerateArray())
        {
            int[] I(string k) => e.GetProperty(k).EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var g = I("aspect_ratio_tiles_hw"); var c = I("canvas_hw"); var r = I("resized_hw_before_padding");
            list.Add(new Golden(i++, e.GetProperty("file").GetString()!, e.GetProperty("width").GetInt32(), e.GetProperty("height").GetInt32(),
                g[0], g[1], e.GetProperty("num_tiles_incl_global").GetInt32(), c[0], c[1], r[0], r[1], e.GetProperty("expanded_image_text").GetString()!));
        }
        return list;
    }

    public static IReadOnlyList<(int H, int W)> SupportedCanvases()
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllBytes(Path.Combine(Dir, "image_processor_golden.json")));
        return doc.RootElement.GetProperty("supported_canvases_hw").EnumerateArray()
            .Select(e => (e[0].GetInt32(), e[1].GetInt32())).ToList();
    }

    /// <summary>HF's decoded pixels [H, W, 3] and processor output (bf16 bits [tiles, 3, 336, 336]).</summary>
    public static (byte[] Rgb, ushort[] Pixels, long[] Shape) Tensors(int i)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Dir, "image_processor_golden.safetensors"));
        var rgb = f.Bytes(f.Get($"image{i}.decoded_rgb_uint8")).ToArray();
        var pv = f.Get($"image{i}.pixel_values_bf16");
        return (rgb, f.Span<ushort>(pv).ToArray(), pv.Shape);
    }
}

public class ImageProcessorGoldenTests
{
    static readonly Llama4ImageProcessor Scout = new(new VisionTokenSettings(TileSize: 336, PatchSize: 14, PixelShuffleRatio: 0.5, MaxTiles: 16));

    /// <summary>Index of the first differing element, counts, and the largest difference in bf16 ulps.</summary>
    static string Diff(ushort[] got, ushort[] want)
    {
        int n = 0, first = -1, maxUlp = 0;
        for (int i = 0; i < Math.Min(got.Length, want.Length); i++)
            if (got[i] != want[i])
            {
                if (first < 0) first = i;
                n++;
                maxUlp = Math.Max(maxUlp, Math.Abs(Ordered(got[i]) - Ordered(want[i])));
            }
        return $"{n} of {want.Length} differ (first at {first}, max {maxUlp} bf16 ulp)";
        static int Ordered(ushort b) => (b & 0x8000) != 0 ? -(b & 0x7FFF) : b;
    }

    [Test]
    public void SupportedCanvasesInHfOrder()
    {
        var want = ImageFixture.SupportedCanvases();
        var got = TileGrid.SupportedGrids(16).Select(g => (g.Rows * 336, g.Cols * 336)).ToList();
        Assert.That(got, Is.EqualTo(want));
    }

    [Test]
    public void GridCanvasAndResizeSizeMatch()
    {
        foreach (var g in ImageFixture.Images())
        {
            var (r, c) = TileGrid.Choose(g.Width, g.Height, 336, 16);
            Assert.That((r, c), Is.EqualTo((g.Rows, g.Cols)), g.File);
            Assert.That((r * 336, c * 336), Is.EqualTo((g.CanvasH, g.CanvasW)), g.File);
            Assert.That(TileGrid.ResizedSize(g.Width, g.Height, r, c, 336), Is.EqualTo((g.ResizedH, g.ResizedW)), g.File);
        }
    }

    /// <summary>Preprocessing alone, from HF's own decoded RGB: every bf16 value identical.</summary>
    [Test]
    public void PixelValuesBitExactFromHfDecodedRgb()
    {
        foreach (var g in ImageFixture.Images())
        {
            var (rgb, want, shape) = ImageFixture.Tensors(g.Index);
            var sw = Stopwatch.StartNew();
            var p = Scout.Process(new RgbImage(g.Width, g.Height, rgb));
            sw.Stop();
            TestContext.Out.WriteLine($"{g.File}: {g.Width}x{g.Height} -> grid {p.Rows}x{p.Cols}, {p.TileCount} tiles, {sw.Elapsed.TotalMilliseconds:F1} ms");
            Assert.That(new long[] { p.TileCount, 3, 336, 336 }, Is.EqualTo(shape), g.File);
            Assert.That((p.Rows, p.Cols, p.TileCount), Is.EqualTo((g.Rows, g.Cols, g.Tiles)), g.File);
            Assert.That((p.ResizedHeight, p.ResizedWidth), Is.EqualTo((g.ResizedH, g.ResizedW)), g.File);
            Assert.That(p.PixelValues.SequenceEqual(want), Is.True, $"{g.File}: {Diff(p.PixelValues, want)}");
        }
    }

    /// <summary>
    /// Our decoder against PIL's: every image identical, bit for bit. The PNGs go through stb; the JPEG (baseline
    /// 4:2:0) through <c>JpegDecoder</c>, which reimplements libjpeg-turbo's ISLOW IDCT, fancy upsampling and
    /// YCbCr→RGB tables exactly (stb's own IDCT and colour constants left 1,284 of the 90,000 values 1–2 levels off).
    /// </summary>
    [Test]
    public void DecoderMatchesPil()
    {
        foreach (var g in ImageFixture.Images())
        {
            var (rgb, _, _) = ImageFixture.Tensors(g.Index);
            var img = ImageDecoder.Decode(Path.Combine(ImageFixture.Dir, g.File));
            Assert.That((img.Width, img.Height), Is.EqualTo((g.Width, g.Height)), g.File);
            int n = 0, max = 0, first = -1;
            for (int i = 0; i < rgb.Length; i++)
            {
                int d = Math.Abs(img.Pixels[i] - rgb[i]);
                if (d != 0) { n++; max = Math.Max(max, d); if (first < 0) first = i; }
            }
            TestContext.Out.WriteLine($"{g.File}: {n} of {rgb.Length} channel values differ from PIL, max |diff| {max}");
            Assert.That(n, Is.Zero, $"{g.File}: {n} values differ from PIL's decode (first at {first}, max {max} levels)");
        }
    }

    /// <summary>End to end from the files (decode + process) against HF's pixel values: every bf16 value identical, JPEG included.</summary>
    [Test]
    public void EndToEndFromFiles()
    {
        foreach (var g in ImageFixture.Images())
        {
            var (_, want, _) = ImageFixture.Tensors(g.Index);
            var sw = Stopwatch.StartNew();
            var p = Scout.Process(Path.Combine(ImageFixture.Dir, g.File));
            sw.Stop();
            TestContext.Out.WriteLine($"{g.File}: decode+process {sw.Elapsed.TotalMilliseconds:F1} ms; {Diff(p.PixelValues, want)}");
            Assert.That(p.PixelValues, Has.Length.EqualTo(want.Length), g.File);
            Assert.That(p.PixelValues.SequenceEqual(want), Is.True, $"{g.File}: {Diff(p.PixelValues, want)}");
        }
    }

    [Test]
    public void TokenLayoutMatchesGoldenText()
    {
        var tok = TokenizerFixture.Tokenizer;
        var chat = new ChatFormat(tok, Scout.Settings);
        foreach (var g in ImageFixture.Images())
        {
            var (rgb, _, _) = ImageFixture.Tensors(g.Index);
            var p = Scout.Process(new RgbImage(g.Width, g.Height, rgb));
            var ids = new List<int>();
            chat.AppendImage(p.Rows, p.Cols, ids);
            Assert.That(tok.Decode(ids), Is.EqualTo(g.Text), g.File);
            Assert.That(ids.Count(i => i == Llama4Tokenizer.Patch), Is.EqualTo(144 * p.TileCount), g.File);
            Assert.That(PromptImage.FromSize(g.Width, g.Height, Scout.Settings), Is.EqualTo(p.ToContent()), g.File);
        }
    }
}
