using System.Diagnostics;
using Llama4Native.Vision;
using StbImageSharp;
using StbImageWriteSharp;
using WriteComponents = StbImageWriteSharp.ColorComponents;

namespace Llama4Native.Tests.Vision;

/// <summary>
/// The managed baseline JPEG decoder: its IDCT (properties, not a copy of the formulas), files written by
/// StbImageWriteSharp (baseline, JFIF, 4:2:0 at quality ≤ 90 and 4:4:4 above, no restart markers), and files
/// built here by a tiny DC-only encoder (grey, RGB, YCbCr 4:4:4 and 4:2:0, restart intervals) whose pixels are
/// known exactly. The exactness against PIL is in <see cref="ImageProcessorGoldenTests.DecoderMatchesPil"/>.
/// </summary>
public class JpegDecoderTests
{
    static byte[] StbJpeg(byte[] rgb, int w, int h, int quality)
    {
        using var ms = new MemoryStream();
        new ImageWriter().WriteJpg(rgb, w, h, WriteComponents.RedGreenBlue, ms, quality);
        return ms.ToArray();
    }

    /// <summary>A smooth test picture (gradients and a soft disc) with a little seeded noise.</summary>
    static byte[] Picture(int w, int h, int seed, int noise = 3)
    {
        var rng = new Random(seed);
        var p = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double fx = w == 1 ? 0.5 : x / (double)(w - 1), fy = h == 1 ? 0.5 : y / (double)(h - 1);
                double disc = Math.Exp(-((fx - 0.4) * (fx - 0.4) + (fy - 0.6) * (fy - 0.6)) * 8);
                int i = (y * w + x) * 3;
                p[i] = (byte)Math.Clamp(40 + 170 * fx + rng.Next(-noise, noise + 1), 0, 255);
                p[i + 1] = (byte)Math.Clamp(60 + 150 * disc + rng.Next(-noise, noise + 1), 0, 255);
                p[i + 2] = (byte)Math.Clamp(200 - 150 * fy + rng.Next(-noise, noise + 1), 0, 255);
            }
        return p;
    }

    static readonly ushort[] Ones = Enumerable.Repeat((ushort)1, 64).ToArray();

    static byte[] Idct(short[] coef, ushort[]? quant = null)
    {
        var o = new byte[64];
        JpegDecoder.IdctIslow(coef, quant ?? Ones, new int[64], o, 8);
        return o;
    }

    [Test]
    public void IdctOfDcOnlyBlockIsFlatAtLibjpegValue()
    {
        // DC·q = 8·(p − 128) gives p exactly: pass 1 scales by 4, pass 2 descales by 32 with +16 rounding.
        foreach (int p in new[] { 0, 1, 77, 128, 200, 254, 255 })
            Assert.That(Idct(Coef(0, (short)(8 * (p - 128)))), Is.All.EqualTo((byte)p), $"p {p}");
        // with a quantiser: 10·8 = 80 → (4·80 + 16) >> 5 = 10 → 138; 3·5 = 15 → (60 + 16) >> 5 = 2 → 130
        Assert.That(Idct(Coef(0, 10), Quant(8)), Is.All.EqualTo((byte)138));
        Assert.That(Idct(Coef(0, 3), Quant(5)), Is.All.EqualTo((byte)130));
        Assert.That(Idct(Coef(0, -3), Quant(5)), Is.All.EqualTo((byte)126));   // (−60 + 16) >> 5 = −2 (floor)
        // clipping: above 127 → 255 and below −128 → 0 within the table's ±512 window ...
        Assert.That(Idct(Coef(0, 8 * 300)), Is.All.EqualTo((byte)255));
        Assert.That(Idct(Coef(0, 8 * -300)), Is.All.EqualTo((byte)0));
        // ... and beyond it the RANGE_MASK wrap of libjpeg's table: 600 lands in the [512, 895] zero segment,
        // −300 − 1024 = −1324 ≡ −300 (mod 1024) → 0, 1000 ≡ −24 (mod 1024) → 104
        Assert.That(Idct(Coef(0, 8 * 600)), Is.All.EqualTo((byte)0));
        Assert.That(Idct(Coef(0, 8 * 1000)), Is.All.EqualTo((byte)104));
    }

    /// <summary>
    /// DESCALE's round-half-up on an exact half: DC 2 and horizontal frequency 4 of 2 (quantiser 1) make the true
    /// IDCT ½ at columns 0, 3, 4, 7 (0.25 + 0.354·cos((2x+1)π/4)) and 0 elsewhere. Pass 1 gives 8 and 8, pass 2
    /// (8 + 8)·2¹³ = 2¹⁷, + 2¹⁷ rounding, >> 18 = 1 → 129; the negated block (−½ at those columns)
    /// gives −2¹⁷ + 2¹⁷ = 0 → 128 everywhere (not 127).
    /// </summary>
    [Test]
    public void IdctRoundsExactHalvesUp()
    {
        byte[] row = [129, 128, 128, 129, 129, 128, 128, 129];
        var up = Idct(Coef((0, 2), (4, 2)));
        var down = Idct(Coef((0, -2), (4, -2)));
        for (int r = 0; r < 8; r++)
        {
            Assert.That(up.AsSpan(r * 8, 8).ToArray(), Is.EqualTo(row), $"row {r}");
            Assert.That(down.AsSpan(r * 8, 8).ToArray(), Is.All.EqualTo((byte)128), $"row {r}");   // −½ rounds up to 0
        }
    }

    static short[] Coef(params (int At, short V)[] values) { var c = new short[64]; foreach (var (a, v) in values) c[a] = v; return c; }
    static short[] Coef(int at, short v) => Coef((at, v));
    static short[] Coef(int at, int v) => Coef((at, (short)v));
    static ushort[] Quant(int q) => Enumerable.Repeat((ushort)q, 64).ToArray();

    /// <summary>Random coefficient blocks (kept inside the sample range): ISLOW within ±1 of a double-precision IDCT.</summary>
    [Test]
    public void IdctOfRandomBlocksWithinOneOfFloatIdct()
    {
        var rng = new Random(TestSeed.For(nameof(IdctOfRandomBlocksWithinOneOfFloatIdct)));
        int compared = 0, off = 0, maxErr = 0;
        var cos = new double[8, 8];
        for (int x = 0; x < 8; x++) for (int u = 0; u < 8; u++) cos[x, u] = Math.Cos((2 * x + 1) * u * Math.PI / 16);
        for (int t = 0; t < 2000; t++)
        {
            var c = new short[64];
            int nz = rng.Next(1, 20);
            for (int k = 0; k < nz; k++) c[rng.Next(64)] = (short)rng.Next(-60, 61);
            c[0] = (short)rng.Next(-300, 300);
            var q = new ushort[64];
            for (int k = 0; k < 64; k++) q[k] = (ushort)rng.Next(1, 6);
            var got = Idct(c, q);
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                {
                    double s = 0;
                    for (int v = 0; v < 8; v++)
                        for (int u = 0; u < 8; u++)
                            s += (u == 0 ? Math.Sqrt(0.5) : 1) * (v == 0 ? Math.Sqrt(0.5) : 1) * c[v * 8 + u] * q[v * 8 + u] * cos[x, u] * cos[y, v];
                    double want = s / 4 + 128;
                    if (want < 0.5 || want > 254.5) continue;   // clipped
                    int err = Math.Abs(got[y * 8 + x] - (int)Math.Round(want));
                    compared++;
                    if (err != 0) off++;
                    maxErr = Math.Max(maxErr, err);
                }
        }
        TestContext.Out.WriteLine($"{compared} samples, {off} differ from the rounded float IDCT, max {maxErr}");
        Assert.That(maxErr, Is.LessThanOrEqualTo(1));
        Assert.That(compared, Is.GreaterThan(50_000));
    }

    /// <summary>stb-written files of awkward sizes, 4:2:0 (quality ≤ 90) and 4:4:4: close to the source and to stb's own decode.</summary>
    [Test]
    public void StbWrittenFilesOfManySizes([Values(50, 90, 95)] int quality)
    {
        foreach (var (w, h) in new[] { (1, 1), (2, 2), (3, 1), (17, 9), (9, 17), (16, 16), (33, 31), (5, 40), (201, 149) })
        {
            var src = Picture(w, h, w * 1000 + h);
            var file = StbJpeg(src, w, h, quality);
            var img = JpegDecoder.TryDecode(file, "t.jpg") ?? throw new AssertionException("not handled by the managed decoder");
            Assert.That((img.Width, img.Height), Is.EqualTo((w, h)));
            var stb = ImageResult.FromMemory(file, StbImageSharp.ColorComponents.RedGreenBlue).Data;
            double errSrc = 0, errStb = 0; int maxStb = 0;
            for (int i = 0; i < src.Length; i++)
            {
                errSrc += Math.Abs(img.Pixels[i] - src[i]);
                errStb += Math.Abs(stb[i] - src[i]);
                maxStb = Math.Max(maxStb, Math.Abs(img.Pixels[i] - stb[i]));
            }
            errSrc /= src.Length; errStb /= src.Length;
            TestContext.Out.WriteLine($"q{quality} {w}x{h}: mean |decoded − source| {errSrc:F2} (stb {errStb:F2}), max |ours − stb| {maxStb}");
            // the picture's colour ramps are steep for tiny sizes and 4:2:0 loses real colour (a 2x2 image has one
            // chroma sample), so the bound against the source is stb's own error on the same file
            Assert.That(errSrc, Is.LessThanOrEqualTo(errStb + 0.5), $"{w}x{h}");
            // stb's IDCT, colour and chroma edge handling differ slightly; at a chroma width ≤ 2 libjpeg replicates
            // (no fancy upsampling) where stb interpolates, so those are not compared
            if (quality > 90 || w > 4) Assert.That(maxStb, Is.LessThanOrEqualTo(quality > 90 ? 3 : 4), $"{w}x{h}");
        }
    }

    // ---- a tiny DC-only baseline encoder: every 8x8 block flat, quantiser 1, so each block decodes exactly ----

    sealed class BitWriter
    {
        public readonly MemoryStream Out = new();
        int acc, n;
        public void Put(int code, int len)
        {
            for (int i = len - 1; i >= 0; i--)
            {
                acc = acc << 1 | ((code >> i) & 1);
                if (++n == 8) { Out.WriteByte((byte)acc); if (acc == 0xFF) Out.WriteByte(0); acc = 0; n = 0; }
            }
        }
        public void Flush() { while (n != 0) Put(1, 1); }
    }

    /// <summary>
    /// A baseline JPEG whose component <c>c</c> block (bx, by) is flat at <paramref name="level"/>(c, bx, by).
    /// DC table: categories 0–11 as 4-bit codes; AC table: EOB only, code "0".
    /// </summary>
    static byte[] DcOnlyJpeg(int w, int h, (int Id, int H, int V)[] comps, Func<int, int, int, int> level,
                             int restartInterval = 0, string app = "JFIF", int adobeTransform = 0)
    {
        var ms = new MemoryStream();
        void Seg(int marker, byte[] body) { ms.Write([0xFF, (byte)marker, (byte)((body.Length + 2) >> 8), (byte)(body.Length + 2)]); ms.Write(body); }
        ms.Write([0xFF, 0xD8]);
        if (app == "JFIF") Seg(0xE0, [(byte)'J', (byte)'F', (byte)'I', (byte)'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
        if (app == "Adobe") Seg(0xEE, [(byte)'A', (byte)'d', (byte)'o', (byte)'b', (byte)'e', 0, 100, 0, 0, 0, 0, (byte)adobeTransform]);
        Seg(0xDB, [0, .. Enumerable.Repeat((byte)1, 64)]);
        var sof = new List<byte> { 8, (byte)(h >> 8), (byte)h, (byte)(w >> 8), (byte)w, (byte)comps.Length };
        foreach (var c in comps) sof.AddRange([(byte)c.Id, (byte)(c.H << 4 | c.V), 0]);
        Seg(0xC0, [.. sof]);
        var dht = new List<byte> { 0x00 };
        dht.AddRange(new byte[16]); dht[1 + 3] = 12;           // twelve 4-bit codes
        dht.AddRange(Enumerable.Range(0, 12).Select(i => (byte)i));
        dht.Add(0x10); dht.AddRange(new byte[16]); dht[^16] = 1; dht.Add(0x00);   // AC: one 1-bit code, EOB
        Seg(0xC4, [.. dht]);
        if (restartInterval > 0) Seg(0xDD, [(byte)(restartInterval >> 8), (byte)restartInterval]);
        var sos = new List<byte> { (byte)comps.Length };
        foreach (var c in comps) sos.AddRange([(byte)c.Id, 0x00]);
        sos.AddRange([0, 63, 0]);
        Seg(0xDA, [.. sos]);

        int hmax = comps.Max(c => c.H), vmax = comps.Max(c => c.V);
        int mx = (w + 8 * hmax - 1) / (8 * hmax), my = (h + 8 * vmax - 1) / (8 * vmax);
        var bw = new BitWriter();
        var pred = new int[comps.Length];
        int mcu = 0, rst = 0;
        for (int y = 0; y < my; y++)
            for (int x = 0; x < mx; x++, mcu++)
            {
                if (restartInterval > 0 && mcu > 0 && mcu % restartInterval == 0)
                {
                    bw.Flush(); bw.Out.Write([0xFF, (byte)(0xD0 + rst++ % 8)]);
                    Array.Clear(pred);
                }
                for (int ci = 0; ci < comps.Length; ci++)
                    for (int by = 0; by < comps[ci].V; by++)
                        for (int bx = 0; bx < comps[ci].H; bx++)
                        {
                            int dcv = 8 * (level(ci, x * comps[ci].H + bx, y * comps[ci].V + by) - 128);
                            int diff = dcv - pred[ci]; pred[ci] = dcv;
                            int cat = diff == 0 ? 0 : 32 - int.LeadingZeroCount(Math.Abs(diff));
                            bw.Put(cat, 4);
                            if (cat > 0) bw.Put(diff > 0 ? diff : diff + (1 << cat) - 1, cat);
                            bw.Put(0, 1);   // EOB
                        }
            }
        bw.Flush();
        ms.Write(bw.Out.ToArray());
        ms.Write([0xFF, 0xD9]);
        return ms.ToArray();
    }

    [Test]
    public void GreyscaleBlocksExactWithAndWithoutRestartMarkers()
    {
        var rng = new Random(7);
        const int w = 43, h = 21;   // 6x3 blocks, the last ones partial
        var lv = new int[6 * 3];
        for (int i = 0; i < lv.Length; i++) lv[i] = rng.Next(256);
        int L(int c, int bx, int by) => lv[by * 6 + bx];
        RgbImage? first = null;
        foreach (int ri in new[] { 0, 1, 2, 5, 7, 100 })
        {
            var file = DcOnlyJpeg(w, h, [(1, 1, 1)], L, restartInterval: ri);
            var img = ImageDecoder.Decode(file, "grey.jpg");
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    int want = lv[(y / 8) * 6 + x / 8];
                    Assert.That(img.Pixels.AsSpan((y * w + x) * 3, 3).ToArray(), Is.EqualTo(new[] { want, want, want }.Select(v => (byte)v).ToArray()), $"restart {ri} ({x},{y})");
                }
            first ??= img;
            Assert.That(img.Pixels, Is.EqualTo(first.Pixels), $"restart interval {ri}");
        }
    }

    [Test]
    public void ThreeComponentColourSpaces()
    {
        var rng = new Random(11);
        var lv = new int[3, 4, 2];
        foreach (var c in Enumerable.Range(0, 3)) for (int x = 0; x < 4; x++) for (int y = 0; y < 2; y++) lv[c, x, y] = rng.Next(256);
        int L(int c, int bx, int by) => lv[c, bx, by];
        // Adobe transform 0: the components are R, G, B (no conversion)
        var rgb = ImageDecoder.Decode(DcOnlyJpeg(32, 16, [(1, 1, 1), (2, 1, 1), (3, 1, 1)], L, app: "Adobe", adobeTransform: 0), "rgb.jpg");
        // no marker but component ids 'R', 'G', 'B': RGB too
        var ids = ImageDecoder.Decode(DcOnlyJpeg(32, 16, [('R', 1, 1), ('G', 1, 1), ('B', 1, 1)], L, app: ""), "ids.jpg");
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 32; x++)
                for (int c = 0; c < 3; c++)
                {
                    Assert.That(rgb.Pixels[(y * 32 + x) * 3 + c], Is.EqualTo(lv[c, x / 8, y / 8]));
                    Assert.That(ids.Pixels[(y * 32 + x) * 3 + c], Is.EqualTo(lv[c, x / 8, y / 8]));
                }
        // JFIF (and Adobe transform 1): YCbCr, within 1 of the real-valued JFIF equations, exact on neutral chroma
        foreach (var app in new[] { "JFIF", "Adobe" })
        {
            var ycc = ImageDecoder.Decode(DcOnlyJpeg(32, 16, [(1, 1, 1), (2, 1, 1), (3, 1, 1)], L, app: app, adobeTransform: 1), "ycc.jpg");
            for (int bx = 0; bx < 4; bx++)
                for (int by = 0; by < 2; by++)
                {
                    double Y = lv[0, bx, by], cb = lv[1, bx, by] - 128, cr = lv[2, bx, by] - 128;
                    double[] want = [Y + 1.402 * cr, Y - 0.344136 * cb - 0.714136 * cr, Y + 1.772 * cb];
                    for (int c = 0; c < 3; c++)
                        Assert.That(ycc.Pixels[(by * 8 * 32 + bx * 8) * 3 + c], Is.EqualTo(Math.Clamp(want[c], 0, 255)).Within(1.0), $"{app} block ({bx},{by}) channel {c}");
                }
            var neutral = ImageDecoder.Decode(DcOnlyJpeg(16, 8, [(1, 1, 1), (2, 1, 1), (3, 1, 1)], (c, bx, by) => c == 0 ? 37 + 150 * bx : 128, app: app, adobeTransform: 1), "n.jpg");
            Assert.That(neutral.Pixels[..3], Is.EqualTo(new byte[] { 37, 37, 37 }));
            Assert.That(neutral.Pixels[^3..], Is.EqualTo(new byte[] { 187, 187, 187 }));
        }
    }

    /// <summary>
    /// 4:2:0 fancy upsampling by hand: Y = 128, Cr = 128, Cb blocks 100 | 180 side by side (chroma columns 0–7 and
    /// 8–15, constant down the image). Chroma column sums are 4·Cb; across the boundary the triangle filter gives
    /// x 14: (16·100 + 8) >> 4 = 100, x 15: (12·100 + 4·180 + 7) >> 4 = 120, x 16: (12·180 + 4·100 + 8) >> 4 = 160,
    /// x 17: 180. Then B = 128 + round(1.772·(Cb − 128)): 78, 114, 185, 220, and R = 128.
    /// </summary>
    [Test]
    public void H2V2FancyUpsamplingAcrossABlockEdge()
    {
        var file = DcOnlyJpeg(32, 16, [(1, 2, 2), (2, 1, 1), (3, 1, 1)], (c, bx, by) => c == 0 ? 128 : c == 1 ? (bx == 0 ? 100 : 180) : 128);
        var img = ImageDecoder.Decode(file, "fancy.jpg");
        foreach (int y in new[] { 0, 7, 15 })
        {
            byte[] b = [.. Enumerable.Range(13, 6).Select(x => img.Pixels[(y * 32 + x) * 3 + 2])];
            Assert.That(b, Is.EqualTo(new byte[] { 78, 78, 114, 185, 220, 220 }), $"row {y}");
            Assert.That(img.Pixels[(y * 32 + 15) * 3], Is.EqualTo(128));
        }
        // 4:2:2 (h2v1) gives the same row with its own rounding: (3·100 + 180 + 2) >> 2 = 120, (3·180 + 100 + 1) >> 2 = 160
        var h2v1 = ImageDecoder.Decode(DcOnlyJpeg(32, 8, [(1, 2, 1), (2, 1, 1), (3, 1, 1)], (c, bx, by) => c == 0 ? 128 : c == 1 ? (bx == 0 ? 100 : 180) : 128), "h2v1.jpg");
        Assert.That(Enumerable.Range(13, 6).Select(x => h2v1.Pixels[(3 * 32 + x) * 3 + 2]).ToArray(), Is.EqualTo(new byte[] { 78, 78, 114, 185, 220, 220 }));
        // 4:4:0 (h1v2, fancy since libjpeg-turbo 1.5.1), the same edge turned vertical: bias 1 above, 2 below
        var h1v2 = ImageDecoder.Decode(DcOnlyJpeg(8, 32, [(1, 1, 2), (2, 1, 1), (3, 1, 1)], (c, bx, by) => c == 0 ? 128 : c == 1 ? (by == 0 ? 100 : 180) : 128), "h1v2.jpg");
        Assert.That(Enumerable.Range(13, 6).Select(y => h1v2.Pixels[(y * 8 + 5) * 3 + 2]).ToArray(), Is.EqualTo(new byte[] { 78, 78, 114, 185, 220, 220 }));
    }

    [Test]
    public void TruncatedScanIsPaddedWithGrey()
    {
        var src = Picture(64, 64, 3);
        var file = StbJpeg(src, 64, 64, 90);
        int sos = IndexOfMarker(file, 0xDA);
        var cut = file[..(sos + (file.Length - sos) / 3)];
        // The decoder pads like libjpeg; ImageDecoder (the policy, as PIL's default) refuses the truncated file.
        Assert.That(() => ImageDecoder.Decode(cut, "cut.jpg"), Throws.TypeOf<ImageException>().With.Message.Contains("truncated JPEG"));
        var img = JpegDecoder.TryDecode(cut, "cut.jpg")!;
        Assert.That((img.Width, img.Height), Is.EqualTo((64, 64)));
        Assert.That(img.Pixels[^3..], Is.EqualTo(new byte[] { 128, 128, 128 }));   // zero coefficients after the end
        var full = ImageDecoder.Decode(file, "full.jpg");
        Assert.That(img.Pixels.AsSpan(0, 64 * 3).SequenceEqual(full.Pixels.AsSpan(0, 64 * 3)), Is.True, "the first row decodes as in the whole file");
    }

    static int IndexOfMarker(byte[] d, byte m)
    {
        for (int i = 0; i + 1 < d.Length; i++) if (d[i] == 0xFF && d[i + 1] == m) return i;
        throw new AssertionException($"no marker {m:X2}");
    }

    [Test]
    public void CorruptDataGivesAnImageOrImageException()
    {
        var file = StbJpeg(Picture(48, 40, 5), 48, 40, 80);
        int sos = IndexOfMarker(file, 0xDA);
        var rng = new Random(TestSeed.For(nameof(CorruptDataGivesAnImageOrImageException)));
        for (int t = 0; t < 300; t++)
        {
            var d = (byte[])file.Clone();
            int at = rng.Next(sos + 14, d.Length - 2);
            for (int k = rng.Next(1, 40); k > 0 && at < d.Length - 2; k--) d[at++] = t % 3 == 0 ? (byte)0xFF : (byte)rng.Next(256);
            try { var img = JpegDecoder.TryDecode(d, "bad.jpg"); Assert.That(img, Is.Not.Null); Assert.That(img!.Width, Is.EqualTo(48)); }
            catch (ImageException e) { Assert.That(e.Message, Does.StartWith("bad.jpg: ")); }
        }
        // a Huffman table with an all-ones code is refused, as libjpeg does
        var badTable = (byte[])file.Clone();
        int dht = IndexOfMarker(badTable, 0xC4);
        Array.Fill(badTable, (byte)0, dht + 5, 16);
        badTable[dht + 5] = 2;   // two 1-bit codes: "0" and "1" (all ones)
        Assert.That(() => JpegDecoder.TryDecode(badTable, "t.jpg"), Throws.TypeOf<ImageException>().With.Message.Contains("Huffman table"));
    }

    /// <summary>A file repeating its scan thousands of times decodes once (the work is bounded by one pass per component).</summary>
    [Test]
    public void RepeatedScansDecodeOnce()
    {
        var file = DcOnlyJpeg(64, 64, [(1, 1, 1)], (c, bx, by) => 16 * bx + by);
        int sos = IndexOfMarker(file, 0xDA);
        var scan = file[sos..^2];
        var ms = new MemoryStream();
        ms.Write(file.AsSpan(0, sos));
        for (int i = 0; i < 5000; i++) ms.Write(scan);
        ms.Write([0xFF, 0xD9]);
        var sw = Stopwatch.StartNew();
        var img = ImageDecoder.Decode(ms.ToArray(), "repeat.jpg");
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
        Assert.That(img.Pixels, Is.EqualTo(ImageDecoder.Decode(file, "once.jpg").Pixels));
    }

    /// <summary>
    /// Against the system's libjpeg(-turbo): pairs written by tools/libjpeg-check/jpegpairs.c (every sampling
    /// 4:4:4/4:2:2/4:2:0/4:4:0/4:1:1/4:1:0, grey, RGB, odd sizes from 1×1, restart intervals, optimised tables,
    /// 16-bit quantisers/SOF1; progressive files must be left to stb). Every baseline file must decode to
    /// libjpeg's RGB bit for bit. Runs when LLAMA4_LIBJPEG_PAIRS names the folder (gcc + libjpeg-dev needed to
    /// make it); ignored otherwise.
    /// </summary>
    [Test]
    public void MatchesSystemLibjpeg()
    {
        var dir = Environment.GetEnvironmentVariable("LLAMA4_LIBJPEG_PAIRS");
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir))
            Assert.Ignore("set LLAMA4_LIBJPEG_PAIRS to a folder made by tools/libjpeg-check/jpegpairs.c");
        int exact = 0, fallback = 0;
        var bad = new List<string>();
        foreach (var jpg in Directory.GetFiles(dir!, "*.jpg").Order())
        {
            var file = File.ReadAllBytes(jpg);
            var raw = File.ReadAllBytes(Path.ChangeExtension(jpg, ".rgb"));
            int w = BitConverter.ToInt32(raw, 0), h = BitConverter.ToInt32(raw, 4);
            var img = JpegDecoder.TryDecode(file, Path.GetFileName(jpg));
            if (img is null) { fallback++; Assert.That(jpg, Does.Contain("progressive")); continue; }
            int n = 0, max = 0;
            for (int i = 0; i < w * h * 3; i++)
            {
                int d = Math.Abs(img.Pixels[i] - raw[8 + i]);
                if (d != 0) { n++; max = Math.Max(max, d); }
            }
            if (img.Width != w || img.Height != h || n != 0) bad.Add($"{Path.GetFileName(jpg)}: {n} values differ, max {max}");
            else exact++;
        }
        TestContext.Out.WriteLine($"{exact} files bit-exact to libjpeg, {fallback} left to stb, {bad.Count} differ");
        foreach (var b in bad) TestContext.Out.WriteLine(b);
        Assert.That(bad, Is.Empty);
        Assert.That(exact, Is.GreaterThan(0));
    }

    [Test]
    public void NonBaselineJpegsAreLeftToStb()
    {
        var file = StbJpeg(Picture(16, 16, 1), 16, 16, 90);
        int sof = IndexOfMarker(file, 0xC0);
        foreach (byte m in new byte[] { 0xC2, 0xC3, 0xC9 })
        {
            var d = (byte[])file.Clone();
            d[sof + 1] = m;
            Assert.That(JpegDecoder.TryDecode(d, "p.jpg"), Is.Null, $"SOF 0x{m:X2}");
        }
        var twelve = (byte[])file.Clone();
        twelve[sof + 4] = 12;
        Assert.That(JpegDecoder.TryDecode(twelve, "p.jpg"), Is.Null, "12-bit");
    }

    /// <summary>A 12-megapixel 4:2:0 JPEG (4000×3000, quality 90) with ±20 levels of noise, so that the entropy
    /// data is as dense as a photo's (several MB): decode time.</summary>
    [Test]
    public void TwelveMegapixelDecodeTime()
    {
        const int w = 4000, h = 3000;
        var file = StbJpeg(Picture(w, h, 12, noise: 20), w, h, 90);
        JpegDecoder.TryDecode(file, "warm.jpg");
        var times = new List<double>();
        for (int i = 0; i < 3; i++)
        {
            var sw = Stopwatch.StartNew();
            var img = JpegDecoder.TryDecode(file, "big.jpg");
            times.Add(sw.Elapsed.TotalMilliseconds);
            Assert.That(img!.Width, Is.EqualTo(w));
        }
        var stb = Stopwatch.StartNew();
        ImageResult.FromMemory(file, StbImageSharp.ColorComponents.RedGreenBlue);
        TestContext.Out.WriteLine($"{w}x{h} q90 4:2:0, {file.Length} bytes: managed decoder min {times.Min():F0} ms (runs {string.Join(", ", times.Select(t => t.ToString("F0")))}), stb {stb.Elapsed.TotalMilliseconds:F0} ms");
        Assert.That(times.Min(), Is.LessThan(5000));
    }
}
