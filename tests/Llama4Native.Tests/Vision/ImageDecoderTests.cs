using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using Llama4Native.Vision;
using StbImageWriteSharp;
using WriteComponents = StbImageWriteSharp.ColorComponents;

namespace Llama4Native.Tests.Vision;

public class ImageDecoderTests
{
    static byte[] Fixture(string name) => File.ReadAllBytes(Path.Combine(ImageFixture.Dir, name));

    static byte[] Png(byte[] pixels, int w, int h, WriteComponents comp)
    {
        using var ms = new MemoryStream();
        new ImageWriter().WritePng(pixels, w, h, comp, ms);
        return ms.ToArray();
    }

    static byte[] Bmp(byte[] pixels, int w, int h, WriteComponents comp)
    {
        using var ms = new MemoryStream();
        new ImageWriter().WriteBmp(pixels, w, h, comp, ms);
        return ms.ToArray();
    }

    static byte[] RandomBytes(Random rng, int n) { var b = new byte[n]; rng.NextBytes(b); return b; }

    /// <summary>A PNG whose IHDR declares <paramref name="w"/>×<paramref name="h"/>, followed by one IDAT of
    /// <paramref name="rawBytes"/> zero bytes deflated, and IEND.</summary>
    static byte[] PngHeaderOnly(uint w, uint h, int rawBytes = 64)
    {
        var ms = new MemoryStream();
        ms.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        void Chunk(string type, byte[] body)
        {
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(len, (uint)body.Length);
            ms.Write(len);
            var tb = System.Text.Encoding.ASCII.GetBytes(type);
            ms.Write(tb); ms.Write(body);
            BinaryPrimitives.WriteUInt32BigEndian(len, Crc32(tb.Concat(body).ToArray()));
            ms.Write(len);
        }
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, w);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), h);
        ihdr[8] = 8; ihdr[9] = 2;   // 8-bit RGB
        Chunk("IHDR", ihdr);
        var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.SmallestSize, leaveOpen: true)) zs.Write(new byte[rawBytes]);
        Chunk("IDAT", z.ToArray());
        Chunk("IEND", []);
        return ms.ToArray();
    }

    static uint Crc32(byte[] data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data) { c ^= b; for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1; }
        return ~c;
    }

    /// <summary>A GIF89a with a 4-colour global palette and one 1×1 frame per palette index given (LZW, min code size 2).</summary>
    static byte[] Gif(byte[][] palette, params int[] frames)
    {
        var ms = new MemoryStream();
        ms.Write("GIF89a"u8);
        ms.Write([1, 0, 1, 0, 0x81, 0, 0]);   // 1x1, global colour table of 2^(1+1) = 4 entries
        foreach (var c in palette) ms.Write(c);
        foreach (int index in frames)
        {
            ms.Write([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]);   // image descriptor 1x1 at (0,0), no local table
            // codes (3 bits, LSB first): clear (4), the index, end (5)
            int bits = 4 | (index << 3) | (5 << 6);
            ms.Write([2, 2, (byte)(bits & 0xFF), (byte)(bits >> 8), 0]);
        }
        ms.WriteByte(0x3B);
        return ms.ToArray();
    }

    static ImageException Throws(Func<RgbImage> f) => Assert.Throws<ImageException>(() => f())!;

    [Test]
    public void ErrorCasesNameSourceProblemAndFix()
    {
        var png = Fixture("wide_500x300.png");
        var e = Throws(() => ImageDecoder.Decode([], "image #1"));
        Assert.That(e.Message, Does.StartWith("image #1: ").And.Contain("empty"));

        e = Throws(() => ImageDecoder.Decode("hello, world, not an image"u8.ToArray(), "image #2"));
        Assert.That(e.Message, Does.StartWith("image #2: ").And.Contain("unknown image format").And.Contain("JPEG, PNG, BMP, GIF"));
        e = Throws(() => ImageDecoder.Decode([.. "RIFF\0\0\0\0WEBPVP8 "u8], "x.webp"));
        Assert.That(e.Message, Does.Contain("WebP").And.Contain("supported"));

        e = Throws(() => ImageDecoder.Decode(png[..20], "image #3"));          // cut inside IHDR
        Assert.That(e.Message, Does.Contain("truncated"));
        e = Throws(() => ImageDecoder.Decode(png[..(png.Length / 2)], "half.png"));
        Assert.That(e.Message, Does.StartWith("half.png: ").And.Contain("truncated PNG"));
        var jpg = Fixture("small_200x150.jpg");
        var corrupt = (byte[])jpg.Clone();
        for (int i = 0; i < 64; i++) corrupt[i + 2] = 0xAB;                   // smash the marker segments after SOI
        Assert.Throws<ImageException>(() => ImageDecoder.Decode(corrupt, "smashed.jpg"));

        e = Throws(() => ImageDecoder.Decode(PngHeaderOnly(0, 10), "zero.png"));
        Assert.That(e.Message, Does.Contain("0x10").And.Contain("≥ 1"));
        var gif0 = Gif([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]], 0);
        gif0[6] = 0; gif0[7] = 0;
        e = Throws(() => ImageDecoder.Decode(gif0, "zero.gif"));
        Assert.That(e.Message, Does.Contain("0x1"));
    }

    [Test]
    public void DecompressionBombRefusedBeforeDecoding()
    {
        var bomb = PngHeaderOnly(100_000, 100_000);
        var sw = Stopwatch.StartNew();
        var e = Throws(() => ImageDecoder.Decode(bomb, "bomb.png"));
        Assert.That(e.Message, Does.Contain("100000x100000").And.Contain("limit").And.Contain(ImageDecodeOptions.DefaultMaxPixels.ToString()));
        Assert.That(sw.ElapsedMilliseconds, Is.LessThan(1000));
        e = Throws(() => ImageDecoder.Decode(PngHeaderOnly(uint.MaxValue, 1), "wide.png"));
        Assert.That(e.Message, Does.Contain("4294967295x1"));
        // a 4x4 PNG whose image data inflates to 64 MiB: refused before stb inflates it
        var zbomb = PngHeaderOnly(4, 4, 64 << 20);
        TestContext.Out.WriteLine($"zlib bomb: {zbomb.Length} bytes");
        e = Throws(() => ImageDecoder.Decode(zbomb, "zbomb.png"));
        Assert.That(e.Message, Does.Contain("decompression bomb").And.Contain("4x4"));
        // configurable: a real 500x300 image over a 100k-pixel limit
        e = Throws(() => ImageDecoder.Decode(Fixture("wide_500x300.png"), "w.png", new ImageDecodeOptions(MaxPixels: 100_000)));
        Assert.That(e.Message, Does.Contain("500x300 = 150000 pixels").And.Contain("100000"));
        e = Throws(() => ImageDecoder.Decode(Fixture("wide_500x300.png"), "w.png", new ImageDecodeOptions(MaxBytes: 1000)));
        Assert.That(e.Message, Does.Contain("limit of 1000"));
    }

    /// <summary>HF converts with PIL <c>convert("RGB")</c>: grey is replicated and alpha DROPPED (not composited).</summary>
    [Test]
    public void GreyGreyAlphaAndRgbaConvertLikePil([Values] bool bmp)
    {
        var rng = new Random(TestSeed.For(nameof(GreyGreyAlphaAndRgbaConvertLikePil)));
        int w = rng.Next(1, 40), h = rng.Next(1, 40);
        foreach (var comp in new[] { WriteComponents.Grey, WriteComponents.GreyAlpha, WriteComponents.RedGreenBlue, WriteComponents.RedGreenBlueAlpha })
        {
            if (bmp && comp is WriteComponents.Grey or WriteComponents.GreyAlpha) continue;   // stb writes BMPs as RGB(A) only
            int n = (int)comp;
            var px = RandomBytes(rng, w * h * n);
            var img = ImageDecoder.Decode(bmp ? Bmp(px, w, h, comp) : Png(px, w, h, comp), $"{comp}");
            Assert.That((img.Width, img.Height), Is.EqualTo((w, h)));
            var want = new byte[w * h * 3];
            for (int i = 0; i < w * h; i++)
                for (int c = 0; c < 3; c++)
                    want[i * 3 + c] = n <= 2 ? px[i * n] : px[i * n + c];
            Assert.That(img.Pixels, Is.EqualTo(want), $"{comp} {w}x{h} {(bmp ? "BMP" : "PNG")}");
        }
    }

    [Test]
    public void GifFirstFrameAndPalette()
    {
        byte[][] pal = [[200, 10, 20], [0, 128, 255], [7, 8, 9], [0, 0, 0]];
        Assert.That(ImageDecoder.Decode(Gif(pal, 0), "a.gif").Pixels, Is.EqualTo(new byte[] { 200, 10, 20 }));
        Assert.That(ImageDecoder.Decode(Gif(pal, 1), "b.gif").Pixels, Is.EqualTo(new byte[] { 0, 128, 255 }));
        Assert.That(ImageDecoder.Decode(Gif(pal, 1, 0), "anim.gif").Pixels, Is.EqualTo(new byte[] { 0, 128, 255 }), "first frame");
        Assert.That(ImageDecoder.DetectFormat(Gif(pal, 0)), Is.EqualTo(ImageFormat.Gif));
    }

    [Test]
    public void PathBytesAndStreamAgree()
    {
        string path = Path.Combine(ImageFixture.Dir, "tall_300x900.png");
        var a = ImageDecoder.Decode(path);
        var b = ImageDecoder.Decode(File.ReadAllBytes(path), "tall");
        using var fs = File.OpenRead(path);
        var c = ImageDecoder.Decode(new NonSeekable(fs), "tall");
        Assert.That(b.Pixels, Is.EqualTo(a.Pixels));
        Assert.That(c.Pixels, Is.EqualTo(a.Pixels));
        var e = Throws(() => ImageDecoder.Decode(Path.Combine(ImageFixture.Dir, "missing.png")));
        Assert.That(e.Message, Does.StartWith("missing.png: ").And.Contain("not found"));
    }

    sealed class NonSeekable(Stream inner) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, Math.Min(count, 777));
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>
    /// Hostile input: random byte flips, runs of random bytes, truncations and header-size rewrites of the three
    /// fixture images (and a BMP and GIF made here). Only an image or an <see cref="ImageException"/> may come out,
    /// each decode within a time bound. Fresh inputs every run (seed printed; replay with LLAMA4_TEST_SEED).
    /// </summary>
    [Test]
    public void MutatedInputsOnlyThrowImageException()
    {
        int seed = TestSeed.For(nameof(MutatedInputsOnlyThrowImageException));
        TestContext.Out.WriteLine($"seed {seed} (run seed {TestSeed.Run})");
        var rng = new Random(seed);
        var rgb = RandomBytes(rng, 37 * 23 * 3);
        var seeds = new List<(string, byte[])>
        {
            ("wide.png", Fixture("wide_500x300.png")), ("small.jpg", Fixture("small_200x150.jpg")), ("tall.png", Fixture("tall_300x900.png")),
            ("made.bmp", Bmp(rgb, 37, 23, WriteComponents.RedGreenBlue)), ("made.gif", Gif([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], 2, 1)),
        };
        var options = new ImageDecodeOptions(MaxPixels: 4_000_000);
        int ok = 0, refused = 0;
        var total = Stopwatch.StartNew();
        for (int iter = 0; iter < 2000; iter++)
        {
            var (name, orig) = seeds[iter % seeds.Count];
            var d = (byte[])orig.Clone();
            switch (rng.Next(5))
            {
                case 0: for (int k = rng.Next(1, 20); k > 0; k--) d[rng.Next(d.Length)] = (byte)rng.Next(256); break;
                case 1: d = d[..rng.Next(0, d.Length)]; break;
                case 2: { int at = rng.Next(d.Length), n = Math.Min(rng.Next(1, 200), d.Length - at); rng.NextBytes(d.AsSpan(at, n)); break; }
                case 3: for (int k = rng.Next(1, 4); k > 0; k--) d[rng.Next(Math.Min(d.Length, 40))] = (byte)rng.Next(256); break;   // headers
                default: { int at = rng.Next(d.Length); d = [.. d[..at], .. RandomBytes(rng, rng.Next(1, 64)), .. d[at..]]; break; }
            }
            var task = Task.Run(() =>
            {
                try { ImageDecoder.Decode(d, name, options); return true; }
                catch (ImageException e) { Assert.That(e.Message, Does.StartWith(name + ": ")); return false; }
            });
            if (!task.Wait(TimeSpan.FromSeconds(20)))
                Assert.Fail($"decode of a mutated {name} ({d.Length} bytes) did not finish in 20 s; seed {seed}, iteration {iter}");
            if (task.Result) ok++; else refused++;
        }
        TestContext.Out.WriteLine($"{ok} decoded, {refused} refused with ImageException, {total.Elapsed.TotalSeconds:F1} s");
        Assert.That(total.Elapsed, Is.LessThan(TimeSpan.FromSeconds(120)));
    }
}
