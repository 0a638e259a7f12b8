using System.Buffers.Binary;
using StbImageSharp;

namespace Llama4Native.Vision;

/// <summary>Limits for <see cref="ImageDecoder"/>: decoded pixels (width·height) and encoded bytes.</summary>
internal sealed record ImageDecodeOptions(long MaxPixels = ImageDecodeOptions.DefaultMaxPixels, long MaxBytes = ImageDecodeOptions.DefaultMaxBytes)
{
    /// <summary>64 Mi pixels (e.g. 8192×8192): 192 MiB of RGB, far above any tile canvas (≤ 16·336² ≈ 1.8 MP).</summary>
    public const long DefaultMaxPixels = 1L << 26;
    /// <summary>256 MiB of encoded data.</summary>
    public const long DefaultMaxBytes = 1L << 28;
}

/// <summary>The encoded formats <see cref="ImageDecoder"/> accepts, found by their magic bytes (never the file name).</summary>
internal enum ImageFormat { Unknown, Jpeg, Png, Bmp, Gif }

/// <summary>
/// Decodes JPEG, PNG, BMP and GIF (first frame) to <see cref="RgbImage"/>: baseline sequential JPEGs (SOF0/SOF1,
/// 8-bit, grey or 3-component) with <see cref="JpegDecoder"/>, bit-exact to libjpeg-turbo with PIL's defaults
/// (ISLOW IDCT, fancy upsampling), measured identical to PIL on the fixture JPEG; everything else (progressive,
/// arithmetic-coded, 12-bit and CMYK/YCCK JPEGs, PNG, BMP, GIF) with StbImageSharp.
/// <para>Colour: HF's fast processor converts with <c>image_transforms.convert_to_rgb</c> =
/// PIL <c>image.convert("RGB")</c> (the base <c>BaseImageProcessorFast.convert_to_rgb</c>; only some other models,
/// e.g. idefics2/mllama, composite over white). So alpha is DROPPED, not composited: grey → (g,g,g), grey+alpha →
/// (g,g,g), RGBA → RGB, palette → palette colour. stb's conversion to 3 components does exactly that.</para>
/// <para>Known differences from PIL (documented, untested against PIL): progressive and other non-baseline JPEG
/// pixels come from stb's IDCT and colour conversion, not libjpeg's (1–2 levels apart on some values); 16-bit PNG keeps the high byte (PIL
/// does the same for RGB but clips 16-bit grey to 255); transparent GIF pixels become black (PIL: the palette colour
/// of the transparent index); 16-bit 5-6-5 BMPs round channels slightly differently; CMYK JPEGs use stb's
/// conversion; EXIF orientation is not applied (nor does the processor apply it to an opened PIL image).</para>
/// <para>Safety: the declared size is read first and refused before anything is allocated when a side is 0 or
/// width·height exceeds <see cref="ImageDecodeOptions.MaxPixels"/>; every failure is an <see cref="ImageException"/>.</para>
/// </summary>
internal static class ImageDecoder
{
    public const string SupportedFormats = "JPEG, PNG, BMP, GIF";

    public static RgbImage Decode(string path, ImageDecodeOptions? options = null)
    {
        options ??= new ImageDecodeOptions();
        string source = Path.GetFileName(path);
        byte[] bytes;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new ImageException(source, $"file not found ({path}); check the path");
            if (info.Length > options.MaxBytes)
                throw new ImageException(source, $"file is {info.Length} bytes, above the limit of {options.MaxBytes}; raise ImageDecodeOptions.MaxBytes if this image is trusted");
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(source, $"cannot read {path}: {e.Message}", e);
        }
        return Decode(bytes, source, options);
    }

    /// <summary>Reads <paramref name="stream"/> to its end (at most MaxBytes) and decodes it.</summary>
    public static RgbImage Decode(Stream stream, string source, ImageDecodeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        options ??= new ImageDecodeOptions();
        var ms = new MemoryStream();
        var buf = new byte[81920];
        try
        {
            int n;
            while ((n = stream.Read(buf, 0, buf.Length)) > 0)
            {
                if (ms.Length + n > options.MaxBytes)
                    throw new ImageException(source, $"stream is longer than the limit of {options.MaxBytes} bytes; raise ImageDecodeOptions.MaxBytes if this image is trusted");
                ms.Write(buf, 0, n);
            }
        }
        catch (IOException e)
        {
            throw new ImageException(source, $"cannot read the stream: {e.Message}", e);
        }
        return Decode(ms.ToArray(), source, options);
    }

    public static RgbImage Decode(byte[] data, string source, ImageDecodeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        options ??= new ImageDecodeOptions();
        if (data.Length == 0) throw new ImageException(source, $"is empty (0 bytes); expected an encoded image ({SupportedFormats})");
        if (data.LongLength > options.MaxBytes)
            throw new ImageException(source, $"is {data.LongLength} bytes, above the limit of {options.MaxBytes}; raise ImageDecodeOptions.MaxBytes if this image is trusted");
        var format = DetectFormat(data);
        if (format == ImageFormat.Unknown)
            throw new ImageException(source, $"unknown image format ({Describe(data)}); supported: {SupportedFormats} — convert the image to PNG or JPEG");

        CheckStructure(data, format, source);
        var (w, h) = DeclaredSize(data, format, source);
        long limit = Math.Min(options.MaxPixels, Array.MaxLength / 4);   // stb decodes to RGBA internally for some formats
        if (w * h > limit)
            throw new ImageException(source, $"{format} declares {w}x{h} = {w * h} pixels, above the limit of {limit} (a decompression bomb, or a huge image); downscale it first, or raise ImageDecodeOptions.MaxPixels if it is trusted");
        CheckStbAgrees(data, format, source, w, h);
        if (format == ImageFormat.Png) CheckPngInflation(data, w, h, source);

        if (format == ImageFormat.Jpeg && JpegDecoder.TryDecode(data, source) is { } jpeg)
        {
            if (jpeg.Width != w || jpeg.Height != h)
                throw new ImageException(source, $"corrupt JPEG data: declared {w}x{h}, decoded {jpeg.Width}x{jpeg.Height}; re-export the image");
            return jpeg;
        }

        ImageResult img;
        try
        {
            img = ImageResult.FromMemory(data, ColorComponents.RedGreenBlue);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not StackOverflowException)
        {
            throw new ImageException(source, $"corrupt or truncated {format} data ({Reason(e)}); re-export or re-download the image", e);
        }
        if (img is null || img.Data is null || img.Width != w || img.Height != h || img.Data.LongLength != (long)w * h * 3)
            throw new ImageException(source, $"corrupt {format} data: declared {w}x{h}, decoded {img?.Width}x{img?.Height}; re-export the image");
        return new RgbImage((int)w, (int)h, img.Data);
    }

    public static ImageFormat DetectFormat(ReadOnlySpan<byte> d)
    {
        if (d.Length >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat.Jpeg;
        if (d.Length >= 8 && d[..8].SequenceEqual((ReadOnlySpan<byte>)[0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A])) return ImageFormat.Png;
        if (d.Length >= 2 && d[0] == 'B' && d[1] == 'M') return ImageFormat.Bmp;
        if (d.Length >= 6 && d[..4].SequenceEqual("GIF8"u8) && (d[4] == '7' || d[4] == '9') && d[5] == 'a') return ImageFormat.Gif;
        return ImageFormat.Unknown;
    }

    /// <summary>
    /// The size the header declares, read by us (not stb) so that a zero or huge size gets its own message and is
    /// refused before stb allocates anything; stb's own header parse must then agree.
    /// </summary>
    static (long W, long H) DeclaredSize(byte[] data, ImageFormat format, string source)
    {
        var (w, h) = ReadHeaderSize(data, format)
            ?? throw new ImageException(source, $"truncated or corrupt {format} header: the image size cannot be read ({data.Length} bytes); re-export or re-download the image");
        if (w <= 0 || h <= 0)
            throw new ImageException(source, $"{format} declares a size of {w}x{h}; an image needs both sides ≥ 1 — the file is damaged");
        return (w, h);
    }

    /// <summary>Width and height from the header bytes, or null when the header is cut short or malformed.</summary>
    internal static (long W, long H)? ReadHeaderSize(ReadOnlySpan<byte> d, ImageFormat format)
    {
        switch (format)
        {
            case ImageFormat.Png:   // signature, then the IHDR chunk: length 13, "IHDR", width, height (big-endian u32)
                if (d.Length < 24 || !d[12..16].SequenceEqual("IHDR"u8)) return null;
                return (BinaryPrimitives.ReadUInt32BigEndian(d[16..]), BinaryPrimitives.ReadUInt32BigEndian(d[20..]));
            case ImageFormat.Gif:   // logical screen width, height (little-endian u16)
                if (d.Length < 10) return null;
                return (BinaryPrimitives.ReadUInt16LittleEndian(d[6..]), BinaryPrimitives.ReadUInt16LittleEndian(d[8..]));
            case ImageFormat.Bmp:   // DIB header size at 14; OS/2 core header has u16 sizes, the others i32 (height < 0: top-down)
                if (d.Length < 26) return null;
                uint dib = BinaryPrimitives.ReadUInt32LittleEndian(d[14..]);
                if (dib == 12) return (BinaryPrimitives.ReadUInt16LittleEndian(d[18..]), BinaryPrimitives.ReadUInt16LittleEndian(d[20..]));
                return (BinaryPrimitives.ReadInt32LittleEndian(d[18..]), Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(d[22..])));
            case ImageFormat.Jpeg:  // walk the markers to the first SOFn: precision, height, width (big-endian u16)
                int i = 2;
                while (i + 4 <= d.Length)
                {
                    if (d[i] != 0xFF) return null;
                    byte m = d[i + 1];
                    if (m == 0xFF) { i++; continue; }                                   // fill byte
                    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) { i += 2; continue; }    // TEM, RSTn, SOI: no length
                    if (m == 0xD9 || m == 0xDA) return null;                            // EOI or scan data before any frame
                    int len = BinaryPrimitives.ReadUInt16BigEndian(d[(i + 2)..]);
                    if (len < 2) return null;
                    bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
                    if (sof)
                    {
                        if (i + 9 > d.Length) return null;
                        return (BinaryPrimitives.ReadUInt16BigEndian(d[(i + 7)..]), BinaryPrimitives.ReadUInt16BigEndian(d[(i + 5)..]));
                    }
                    i += 2 + len;
                }
                return null;
            default:
                return null;
        }
    }

    /// <summary>
    /// A small declared size does not bound a PNG: its IDAT stream may inflate to gigabytes (a zlib bomb), and stb
    /// inflates all of it before looking. So inflate the IDAT data here first, into a counter, stopping at the most
    /// the declared size can need (16-bit RGBA, interlaced, filter bytes: h·(1 + 8w) + 7·(h + 1) bytes, doubled).
    /// </summary>
    static void CheckPngInflation(byte[] data, long w, long h, string source)
    {
        long need = 2 * (h * (1 + 8 * w) + 7 * (h + 1)) + 4096;
        var idat = new MemoryStream();
        for (long at = 8; at + 12 <= data.Length;)
        {
            long len = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)at));
            if (len > data.Length - at - 12) break;   // cut short: stb reports it
            if (data.AsSpan((int)at + 4, 4).SequenceEqual("IDAT"u8)) idat.Write(data, (int)at + 8, (int)len);
            else if (data.AsSpan((int)at + 4, 4).SequenceEqual("IEND"u8)) break;
            at += 12 + len;
        }
        idat.Position = 0;
        long total = 0;
        try
        {
            using var z = new System.IO.Compression.ZLibStream(idat, System.IO.Compression.CompressionMode.Decompress);
            var buf = new byte[65536];
            int n;
            while ((n = z.Read(buf, 0, buf.Length)) > 0)
                if ((total += n) > need)
                    throw new ImageException(source, $"PNG image data inflates to more than {need} bytes, far beyond what its declared {w}x{h} needs (a decompression bomb); refusing it");
        }
        catch (InvalidDataException) { }   // malformed deflate data: stb reports it with its own message
    }

    static void CheckStbAgrees(byte[] data, ImageFormat format, string source, long w, long h)
    {
        ImageInfo? info;
        try
        {
            using var ms = new MemoryStream(data, writable: false);
            info = ImageInfo.FromStream(ms);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not StackOverflowException)
        {
            throw new ImageException(source, $"corrupt or truncated {format} header ({Reason(e)}); re-export or re-download the image", e);
        }
        if (info is not { } i)
            throw new ImageException(source, $"corrupt or truncated {format} header ({Reason(null)}); re-export or re-download the image");
        if (i.Width != w || i.Height != h)
            throw new ImageException(source, $"corrupt {format} header: it declares {w}x{h} but the decoder reads {i.Width}x{i.Height}; re-export the image");
    }

    static string Reason(Exception? e)
    {
        string? stb = null;
        try { stb = Clean(StbImage.stbi__g_failure_reason); } catch { }
        string r = Clean(e?.Message);
        if (!string.IsNullOrEmpty(stb) && !r.Contains(stb)) r = r.Length == 0 ? $"stb: {stb}" : $"{r}; stb: {stb}";
        return r.Length == 0 ? "the decoder gave no detail" : r;
    }

    /// <summary>A decoder's message fit to print: control characters (stb leaves NULs) removed, trimmed.</summary>
    static string Clean(string? m) => m is null ? "" : new string(m.Where(c => !char.IsControl(c)).ToArray()).Trim();

    /// <summary>
    /// What PIL refuses by default and stb forgives, refused here too with its own message: a PNG chunk cut short,
    /// a PNG chunk whose CRC does not match, a PNG without IEND; a JPEG whose data ends before the EOI marker; a
    /// GIF with no image in it.
    /// </summary>
    static void CheckStructure(byte[] data, ImageFormat format, string source)
    {
        switch (format)
        {
            case ImageFormat.Png:
                for (long at = 8; ;)
                {
                    if (at + 12 > data.Length)
                        throw new ImageException(source, $"truncated PNG: the file ends at byte {data.Length} before the IEND chunk; re-export or re-download the image");
                    long len = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)at));
                    string type = System.Text.Encoding.ASCII.GetString(data, (int)at + 4, 4);
                    if (!type.All(char.IsAsciiLetter))
                        throw new ImageException(source, $"corrupt PNG: bytes at offset {at + 4} are not a chunk type; re-export or re-download the image");
                    if (len > int.MaxValue || at + 12 + len > data.Length)
                        throw new ImageException(source, $"truncated PNG: chunk {type} at offset {at} needs {len} bytes but the file ends at byte {data.Length}; re-export or re-download the image");
                    uint crc = Crc32(data.AsSpan((int)at + 4, (int)len + 4));
                    uint stored = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)(at + 8 + len)));
                    if (crc != stored)
                        throw new ImageException(source, $"corrupt PNG: bad CRC in chunk {type} at offset {at} (stored {stored:x8}, computed {crc:x8}); re-export or re-download the image");
                    if (type == "IEND") return;
                    at += 12 + len;
                }
            case ImageFormat.Jpeg:
            {
                int sos = data.AsSpan().IndexOf((ReadOnlySpan<byte>)[0xFF, 0xDA]);
                if (sos >= 0 && data.AsSpan(sos).IndexOf((ReadOnlySpan<byte>)[0xFF, 0xD9]) < 0)
                    throw new ImageException(source, $"truncated JPEG: the data ends at byte {data.Length} without the end-of-image marker; re-export or re-download the image");
                return;
            }
            case ImageFormat.Gif:
            {
                if (data.Length < 13) return;   // the header check reports it
                int at = 13;
                if ((data[10] & 0x80) != 0) at += 3 << ((data[10] & 7) + 1);
                while (at < data.Length)
                {
                    byte b = data[at];
                    if (b == 0x2C) return;   // an image descriptor: at least one frame
                    if (b == 0x3B) break;    // trailer
                    if (b != 0x21 || at + 2 >= data.Length) return;   // not ours to judge: stb reports it
                    at += 2;
                    while (at < data.Length && data[at] != 0) at += data[at] + 1;
                    at++;
                }
                throw new ImageException(source, "GIF has no frames (no image descriptor before the trailer or the end of the file); re-export the image");
            }
        }
    }

    static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    static uint Crc32(ReadOnlySpan<byte> d)
    {
        uint c = 0xFFFFFFFFu;
        foreach (var b in d) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    static string Describe(ReadOnlySpan<byte> d)
    {
        if (d.Length >= 12 && d[..4].SequenceEqual("RIFF"u8) && d[8..12].SequenceEqual("WEBP"u8)) return "WebP";
        if (d.Length >= 12 && d[4..8].SequenceEqual("ftyp"u8)) return "HEIF/AVIF/MP4 container";
        if (d.Length >= 4 && (d[..4].SequenceEqual("II*\0"u8) || d[..4].SequenceEqual("MM\0*"u8))) return "TIFF";
        var head = d[..Math.Min(8, d.Length)].ToArray();
        return "first bytes " + Convert.ToHexString(head);
    }
}
