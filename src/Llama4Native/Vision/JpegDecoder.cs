using System.Buffers.Binary;

namespace Llama4Native.Vision;

/// <summary>
/// A managed decoder for baseline sequential JPEG (SOF0, and SOF1 extended sequential with Huffman coding), 8-bit,
/// 1 or 3 components, producing exactly the RGB that libjpeg-turbo gives PIL with PIL's defaults
/// (<c>Image.open(f).convert("RGB")</c>): JDCT_ISLOW and fancy upsampling.
/// <list type="bullet">
/// <item>Entropy decoding as jdhuff.c: canonical Huffman tables (DHT, up to 4 of each class), byte stuffing, restart
/// intervals (DRI, RSTn), DC prediction; coefficients are stored as 16-bit like JCOEF.</item>
/// <item>Dequantisation (DQT, 8- and 16-bit entries) and the inverse DCT of jidctint.c <c>jpeg_idct_islow</c>:
/// CONST_BITS 13, PASS1_BITS 2, the FIX_ constants, DESCALE rounding, and the post-IDCT range-limit table with its
/// CENTERJSAMPLE offset and the <c>&amp; RANGE_MASK</c> (1023) wrap. (libjpeg-turbo's SIMD islow is bit-exact to this C.)</item>
/// <item>Upsampling as jdsample.c with <c>do_fancy_upsampling</c> TRUE (PIL's default, so jdmerge.c's merged
/// upsampler is never chosen): h2v1 and h2v2 triangle filters with their alternating bias (when the downsampled
/// width is above 2, else replication), h1v2 fancy (libjpeg-turbo ≥ 1.5.1, so every Pillow wheel), any other
/// integral ratio by replication (int_upsample). Context rows above the first and below the last real row repeat
/// that row (jdmainct.c).</item>
/// <item>Colour as jdcolor.c <c>ycc_rgb_convert</c> (SCALEBITS 16, Cr_r/Cb_b/Cr_g/Cb_g tables from FIX() and
/// ONE_HALF, range limiting). The colour space is decided as jdapimin.c does: 1 component grey (→ g,g,g); 3
/// components YCbCr when a JFIF APP0 is present, else by the Adobe APP14 transform flag (0 = RGB), else by the
/// component ids ('R','G','B' = RGB), else YCbCr.</item>
/// </list>
/// <para>Everything else — progressive (SOF2), lossless, arithmetic coding, 12-bit, 2- and 4-component
/// (CMYK/YCCK) files, non-integral sampling ratios — is not handled here: <see cref="TryDecode"/> returns null and
/// <see cref="ImageDecoder"/> falls back to StbImageSharp, unchanged.</para>
/// <para>Damaged data: malformed headers and tables throw <see cref="ImageException"/>. Entropy-coded data that ends
/// early (truncated file, or a marker where data should be) is padded with zero bits for the MCU in progress and
/// the rest of the restart interval is left as zero coefficients (mid-grey), as libjpeg does after its "premature
/// end of data" warning; a bad Huffman code decodes as symbol 0 (libjpeg's "corrupt JPEG data" warning); a
/// missing or misnumbered restart marker is handled by libjpeg's resynchronisation rules (jpeg_resync_to_restart).
/// A scan that repeats an already decoded component ends the decoding there (sequential files carry each component
/// once). Every loop is bounded by the input length or by the declared size, which <see cref="ImageDecoder"/>
/// limits before calling.</para>
/// <para>Checked bit for bit against PIL on the fixture JPEG and against libjpeg-turbo 2.1.5 on 147 files of every
/// sampling, grey and RGB, 1×1 to 640×480, restart intervals, 16-bit quantisers, and damaged variants
/// (tools/libjpeg-check/jpegpairs.c, JpegDecoderTests.MatchesSystemLibjpeg).</para>
/// </summary>
internal static class JpegDecoder
{
    /// <summary>Zig-zag position → natural (row-major) index, with 16 extra entries of 63 for corrupt run lengths (jutils.c).</summary>
    internal static readonly byte[] NaturalOrder =
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
        12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
        35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
        63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    ];

    const int ConstBits = 13, Pass1Bits = 2;
    const long FIX_0_298631336 = 2446, FIX_0_390180644 = 3196, FIX_0_541196100 = 4433, FIX_0_765366865 = 6270,
               FIX_0_899976223 = 7373, FIX_1_175875602 = 9633, FIX_1_501321110 = 12299, FIX_1_847759065 = 15137,
               FIX_1_961570560 = 16069, FIX_2_053119869 = 16819, FIX_2_562915447 = 20995, FIX_3_072711026 = 25172;

    /// <summary>
    /// jdmaster.c's post-IDCT range-limit table (<c>sample_range_limit + CENTERJSAMPLE</c>), indexed by
    /// <c>x &amp; RANGE_MASK</c>: [0,127] → x+128, [128,511] → 255, [512,895] → 0, [896,1023] → x−896.
    /// </summary>
    internal static readonly byte[] IdctRangeLimit = BuildIdctRangeLimit();

    static byte[] BuildIdctRangeLimit()
    {
        var t = new byte[1024];
        for (int i = 0; i < 1024; i++)
            t[i] = i < 128 ? (byte)(i + 128) : i < 512 ? (byte)255 : i < 896 ? (byte)0 : (byte)(i - 896);
        return t;
    }

    // jdcolor.c build_ycc_rgb_table: SCALEBITS 16, FIX(x) = (long)(x * 65536 + 0.5), ONE_HALF = 1 << 15.
    static readonly int[] CrR = new int[256], CbB = new int[256];
    static readonly long[] CrG = new long[256], CbG = new long[256];

    static JpegDecoder()
    {
        static long Fix(double x) => (long)(x * (1L << 16) + 0.5);
        const long oneHalf = 1L << 15;
        for (int i = 0; i < 256; i++)
        {
            long x = i - 128;
            CrR[i] = (int)((Fix(1.40200) * x + oneHalf) >> 16);
            CbB[i] = (int)((Fix(1.77200) * x + oneHalf) >> 16);
            CrG[i] = -Fix(0.71414) * x;
            CbG[i] = -Fix(0.34414) * x + oneHalf;
        }
    }

    static byte Clamp(int v) => (byte)(v < 0 ? 0 : v > 255 ? 255 : v);

    /// <summary>
    /// jidctint.c <c>jpeg_idct_islow</c>: dequantises <paramref name="coef"/> (natural order) with
    /// <paramref name="quant"/> and writes the 8×8 samples to <paramref name="output"/> at row pitch
    /// <paramref name="stride"/>. The all-zero-AC shortcuts of the C code give the same values as the full formulas.
    /// </summary>
    internal static void IdctIslow(ReadOnlySpan<short> coef, ReadOnlySpan<ushort> quant, Span<int> ws, Span<byte> output, int stride)
    {
        coef = coef[..64]; quant = quant[..64]; ws = ws[..64];
        for (int c = 0; c < 8; c++)
        {
            if (coef[8 + c] == 0 && coef[16 + c] == 0 && coef[24 + c] == 0 && coef[32 + c] == 0 &&
                coef[40 + c] == 0 && coef[48 + c] == 0 && coef[56 + c] == 0)
            {
                int dc = (coef[c] * quant[c]) << Pass1Bits;
                for (int r = 0; r < 8; r++) ws[r * 8 + c] = dc;
                continue;
            }
            long z2 = coef[16 + c] * quant[16 + c], z3 = coef[48 + c] * quant[48 + c];
            long z1 = (z2 + z3) * FIX_0_541196100;
            long tmp2 = z1 + z3 * -FIX_1_847759065;
            long tmp3 = z1 + z2 * FIX_0_765366865;
            z2 = coef[c] * quant[c]; z3 = coef[32 + c] * quant[32 + c];
            long tmp0 = (z2 + z3) << ConstBits, tmp1 = (z2 - z3) << ConstBits;
            long tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;

            tmp3 = coef[8 + c] * quant[8 + c]; tmp2 = coef[24 + c] * quant[24 + c];
            tmp1 = coef[40 + c] * quant[40 + c]; tmp0 = coef[56 + c] * quant[56 + c];
            Odd(ref tmp0, ref tmp1, ref tmp2, ref tmp3);
            const int sh = ConstBits - Pass1Bits; const long rnd = 1L << (sh - 1);
            ws[c] = (int)((tmp10 + tmp3 + rnd) >> sh);
            ws[56 + c] = (int)((tmp10 - tmp3 + rnd) >> sh);
            ws[8 + c] = (int)((tmp11 + tmp2 + rnd) >> sh);
            ws[48 + c] = (int)((tmp11 - tmp2 + rnd) >> sh);
            ws[16 + c] = (int)((tmp12 + tmp1 + rnd) >> sh);
            ws[40 + c] = (int)((tmp12 - tmp1 + rnd) >> sh);
            ws[24 + c] = (int)((tmp13 + tmp0 + rnd) >> sh);
            ws[32 + c] = (int)((tmp13 - tmp0 + rnd) >> sh);
        }
        var rl = IdctRangeLimit;
        for (int r = 0; r < 8; r++)
        {
            var w = ws.Slice(r * 8, 8);
            var o = output.Slice(r * stride, 8);
            const int sh = ConstBits + Pass1Bits + 3; const long rnd = 1L << (sh - 1);
            if (w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0)
            {
                byte v = rl[(int)(((long)w[0] + (1 << (Pass1Bits + 2))) >> (Pass1Bits + 3)) & 1023];
                o.Fill(v);
                continue;
            }
            long z2 = w[2], z3 = w[6];
            long z1 = (z2 + z3) * FIX_0_541196100;
            long tmp0 = ((long)w[0] + w[4]) << ConstBits;
            long tmp3 = z1 + z2 * FIX_0_765366865;
            long tmp1 = ((long)w[0] - w[4]) << ConstBits;
            long tmp2 = z1 + z3 * -FIX_1_847759065;
            long tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
            tmp3 = w[1]; tmp2 = w[3]; tmp1 = w[5]; tmp0 = w[7];
            Odd(ref tmp0, ref tmp1, ref tmp2, ref tmp3);
            o[0] = rl[(int)((tmp10 + tmp3 + rnd) >> sh) & 1023];
            o[7] = rl[(int)((tmp10 - tmp3 + rnd) >> sh) & 1023];
            o[1] = rl[(int)((tmp11 + tmp2 + rnd) >> sh) & 1023];
            o[6] = rl[(int)((tmp11 - tmp2 + rnd) >> sh) & 1023];
            o[2] = rl[(int)((tmp12 + tmp1 + rnd) >> sh) & 1023];
            o[5] = rl[(int)((tmp12 - tmp1 + rnd) >> sh) & 1023];
            o[3] = rl[(int)((tmp13 + tmp0 + rnd) >> sh) & 1023];
            o[4] = rl[(int)((tmp13 - tmp0 + rnd) >> sh) & 1023];
        }
    }

    /// <summary>The odd part shared by both passes (inputs: coefficients 7, 5, 3, 1 as tmp0..tmp3).</summary>
    static void Odd(ref long tmp0, ref long tmp1, ref long tmp2, ref long tmp3)
    {
        long z4 = tmp1 + tmp3, z3 = tmp0 + tmp2, z2 = tmp1 + tmp2, z1 = tmp0 + tmp3;
        long z5 = (z3 + z4) * FIX_1_175875602;
        tmp3 *= FIX_1_501321110; tmp2 *= FIX_3_072711026; tmp1 *= FIX_2_053119869; tmp0 *= FIX_0_298631336;
        z4 = z4 * -FIX_0_390180644 + z5;
        z3 = z3 * -FIX_1_961570560 + z5;
        z1 *= -FIX_0_899976223;
        z2 *= -FIX_2_562915447;
        tmp3 += z1 + z4; tmp2 += z2 + z3; tmp1 += z2 + z4; tmp0 += z1 + z3;
    }

    sealed class Huffman
    {
        public readonly byte[] Values = new byte[256];
        public readonly int[] MaxCode = new int[18];     // by length 1..16, -1 when none; [17] sentinel
        public readonly int[] ValOffset = new int[18];
        public readonly ushort[] Lookup = new ushort[1 << 9];   // 9-bit lookahead: length << 8 | symbol, 0 = longer
        public int Count;
        public bool DcChecked;
    }

    sealed class Component
    {
        public int Id, H, V, Tq, Td, Ta;
        public int DownW, DownH;          // jdinput.c downsampled_width/height
        public int Stride, Rows;          // plane: MCU-padded
        public byte[] Plane = [];
        public ushort[]? Quant;           // latched at the component's first scan (jdinput.c latch_quant_tables)
        public int Pred;
        public bool Scanned;
    }

    /// <summary>
    /// Decodes <paramref name="data"/> when it is a JPEG this decoder handles; null when it is another kind of JPEG
    /// (the caller falls back to stb). Throws <see cref="ImageException"/> for damaged data.
    /// </summary>
    public static RgbImage? TryDecode(byte[] data, string source)
    {
        try
        {
            return new Decoder(data, source).Run();
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or OverflowException or InvalidOperationException)
        {
            throw new ImageException(source, $"corrupt JPEG data ({e.GetType().Name}: {e.Message}); re-export or re-download the image", e);
        }
    }

    sealed class Decoder(byte[] d, string source)
    {
        readonly ushort[]?[] quant = new ushort[4][];
        readonly Huffman?[] dc = new Huffman[4], ac = new Huffman[4];
        Component[] comps = [];
        int width, height, hmax, vmax, mcusX, mcusY, restartInterval;
        bool jfif, adobe, frame, anyScan;
        int adobeTransform;
        int pos;

        // bit reader
        ulong buf; int bits, padBits, nextRestart; bool markerHit, insufficient;

        ImageException Corrupt(string what) => new(source, $"corrupt JPEG data: {what}; re-export or re-download the image");

        int U16(int at) => at + 2 <= d.Length ? BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(at)) : throw Corrupt("a marker segment is cut short");

        public RgbImage? Run()
        {
            pos = 2;
            while (true)
            {
                // next marker: skip garbage up to 0xFF (libjpeg's next_marker warns and does the same), then fill bytes
                while (pos < d.Length && d[pos] != 0xFF) pos++;
                while (pos < d.Length && d[pos] == 0xFF) pos++;
                if (pos >= d.Length) break;                  // ends without EOI: what was decoded stands
                int m = d[pos++];
                if (m == 0xD9) break;                        // EOI
                if (m == 0x01 || m is >= 0xD0 and <= 0xD8 || m == 0x00) continue;   // TEM, stray RSTn/SOI: no length
                int len = U16(pos);
                if (len < 2 || pos + len > d.Length) throw Corrupt($"marker 0x{m:X2} segment of {len} bytes runs past the end of the file");
                var seg = d.AsSpan(pos + 2, len - 2);
                switch (m)
                {
                    case 0xC0 or 0xC1:
                        if (frame) throw Corrupt("a second frame header (SOF)");
                        if (!ReadFrame(seg)) return null;
                        frame = true;
                        break;
                    case 0xC2 or 0xC3 or >= 0xC5 and <= 0xC7 or 0xC9 or 0xCA or 0xCB or >= 0xCD and <= 0xCF:
                        if (frame) throw Corrupt($"a second frame header (SOF 0x{m:X2})");
                        return null;                          // progressive, lossless, arithmetic, hierarchical: stb
                    case 0xC4: ReadDht(seg); break;
                    case 0xDB: ReadDqt(seg); break;
                    case 0xDD:
                        if (seg.Length < 2) throw Corrupt("DRI segment too short");
                        restartInterval = BinaryPrimitives.ReadUInt16BigEndian(seg);
                        break;
                    case 0xE0:
                        if (seg.Length >= 14 && seg[..5].SequenceEqual("JFIF\0"u8)) jfif = true;
                        break;
                    case 0xEE:
                        if (seg.Length >= 12 && seg[..5].SequenceEqual("Adobe"u8)) { adobe = true; adobeTransform = seg[11]; }
                        break;
                    case 0xDA:
                        if (!frame) throw Corrupt("scan data (SOS) before the frame header");
                        pos += len;
                        if (!ReadScan(seg)) return Output();
                        continue;
                }
                pos += len;
            }
            if (!frame) throw Corrupt("no frame header (SOF) before the end of the file");
            if (!anyScan) throw Corrupt("no image data (SOS) in the file");
            return Output();
        }

        bool ReadFrame(ReadOnlySpan<byte> s)
        {
            if (s.Length < 6) throw Corrupt("SOF segment too short");
            int precision = s[0];
            height = BinaryPrimitives.ReadUInt16BigEndian(s[1..]);
            width = BinaryPrimitives.ReadUInt16BigEndian(s[3..]);
            int n = s[5];
            if (precision != 8 || (n != 1 && n != 3)) return false;   // 12-bit, 2 or 4 components: stb
            if (width == 0 || height == 0) throw Corrupt($"frame declares {width}x{height}");
            if (s.Length < 6 + 3 * n) throw Corrupt("SOF segment too short for its components");
            comps = new Component[n];
            for (int i = 0; i < n; i++)
            {
                var c = comps[i] = new Component { Id = s[6 + 3 * i], H = s[7 + 3 * i] >> 4, V = s[7 + 3 * i] & 15, Tq = s[8 + 3 * i] };
                if (c.H is < 1 or > 4 || c.V is < 1 or > 4) throw Corrupt($"component {i} has sampling factors {c.H}x{c.V}");
                if (c.Tq > 3) throw Corrupt($"component {i} uses quantisation table {c.Tq}");
            }
            hmax = comps.Max(c => c.H); vmax = comps.Max(c => c.V);
            foreach (var c in comps)
                if (hmax % c.H != 0 || vmax % c.V != 0) return false;   // fractional ratios: stb
            mcusX = (width + 8 * hmax - 1) / (8 * hmax);
            mcusY = (height + 8 * vmax - 1) / (8 * vmax);
            foreach (var c in comps)
            {
                c.DownW = (int)(((long)width * c.H + hmax - 1) / hmax);
                c.DownH = (int)(((long)height * c.V + vmax - 1) / vmax);
                c.Stride = mcusX * c.H * 8;
                c.Rows = mcusY * c.V * 8;
                long size = (long)c.Stride * c.Rows;
                if (size > Array.MaxLength) throw new ImageException(source, $"JPEG {width}x{height} is too large to decode");
                c.Plane = new byte[size];
            }
            return true;
        }

        void ReadDqt(ReadOnlySpan<byte> s)
        {
            while (s.Length > 0)
            {
                int pq = s[0] >> 4, tq = s[0] & 15;
                if (tq > 3 || pq > 1) throw Corrupt($"DQT table {tq} with precision {pq}");
                int need = 1 + 64 * (pq + 1);
                if (s.Length < need) throw Corrupt("DQT segment too short");
                var q = new ushort[64];
                for (int k = 0; k < 64; k++)
                    q[NaturalOrder[k]] = pq == 0 ? s[1 + k] : BinaryPrimitives.ReadUInt16BigEndian(s[(1 + 2 * k)..]);
                quant[tq] = q;
                s = s[need..];
            }
        }

        void ReadDht(ReadOnlySpan<byte> s)
        {
            Span<int> codes = stackalloc int[256];
            while (s.Length > 0)
            {
                int tc = s[0] >> 4, th = s[0] & 15;
                if (tc > 1 || th > 3) throw Corrupt($"DHT table class {tc} id {th}");
                if (s.Length < 17) throw Corrupt("DHT segment too short");
                var counts = s.Slice(1, 16);
                int total = 0;
                foreach (var c in counts) total += c;
                if (total > 256 || s.Length < 17 + total) throw Corrupt("DHT segment too short or with more than 256 codes");
                var h = new Huffman { Count = total };
                s.Slice(17, total).CopyTo(h.Values);
                // jdhuff.c jpeg_make_d_derived_tbl: canonical codes, and a code space that must not overflow
                int p = 0, code = 0;
                for (int l = 1; l <= 16; l++)
                {
                    int n = counts[l - 1];
                    if (n == 0) { h.MaxCode[l] = -1; code <<= 1; continue; }
                    h.ValOffset[l] = p - code;
                    for (int i = 0; i < n; i++) codes[p++] = code++;
                    if (code >= (1 << l)) throw Corrupt("bad Huffman table (code space overflows, or an all-ones code)");
                    h.MaxCode[l] = code - 1;
                    // lookahead entries for codes of up to 9 bits
                    if (l <= 9)
                        for (int i = p - n; i < p; i++)
                        {
                            int lo = codes[i] << (9 - l), hi = (codes[i] + 1) << (9 - l);
                            for (int j = lo; j < hi; j++) h.Lookup[j] = (ushort)(l << 8 | h.Values[i]);
                        }
                    code <<= 1;
                }
                h.MaxCode[17] = int.MaxValue;
                (tc == 0 ? dc : ac)[th] = h;
                s = s[(17 + total)..];
            }
        }

        /// <summary>Decodes one scan; false (and nothing decoded) when it names a component an earlier scan
        /// already carried — a sequential file never does, and stopping there bounds the work at one pass per
        /// component whatever the file repeats.</summary>
        bool ReadScan(ReadOnlySpan<byte> s)
        {
            if (s.Length < 1) throw Corrupt("SOS segment too short");
            int ns = s[0];
            if (ns < 1 || ns > 4 || s.Length < 1 + 2 * ns + 3) throw Corrupt($"SOS with {ns} components");
            var sc = new Component[ns];
            int blocks = 0;
            for (int i = 0; i < ns; i++)
            {
                int id = s[1 + 2 * i];
                var c = Array.Find(comps, x => x.Id == id) ?? throw Corrupt($"scan names component id {id}, absent from the frame");
                if (Array.IndexOf(sc, c) >= 0) throw Corrupt($"scan names component id {id} twice");
                if (c.Scanned) return false;
                c.Td = s[2 + 2 * i] >> 4; c.Ta = s[2 + 2 * i] & 15;
                if (c.Td > 3 || c.Ta > 3 || dc[c.Td] is null || ac[c.Ta] is null)
                    throw Corrupt($"scan uses Huffman tables DC {c.Td} / AC {c.Ta}, which were not defined");
                var dt = dc[c.Td]!;
                if (!dt.DcChecked)
                {
                    for (int k = 0; k < dt.Count; k++) if (dt.Values[k] > 15) throw Corrupt("bad Huffman table (DC symbol above 15)");
                    dt.DcChecked = true;
                }
                c.Quant ??= (quant[c.Tq] ?? throw Corrupt($"quantisation table {c.Tq} is used but not defined")).ToArray();
                c.Pred = 0;
                sc[i] = c;
                blocks += c.H * c.V;
            }
            if (ns > 1 && blocks > 10) throw Corrupt($"an MCU of {blocks} blocks (at most 10)");
            foreach (var c in sc) c.Scanned = true;
            anyScan = true;

            buf = 0; bits = 0; padBits = 0; markerHit = false; insufficient = false; nextRestart = 0;
            var coef = new short[64];
            var ws = new int[64];
            int restartsLeft = restartInterval;
            long mcus, perRow;
            if (ns == 1)
            {
                perRow = (sc[0].DownW + 7) / 8;
                mcus = perRow * ((sc[0].DownH + 7) / 8);
            }
            else { perRow = mcusX; mcus = (long)mcusX * mcusY; }

            for (long mcu = 0; mcu < mcus; mcu++)
            {
                if (restartInterval != 0)
                {
                    if (restartsLeft == 0) { Restart(sc); restartsLeft = restartInterval; }
                    restartsLeft--;
                }
                int mx = (int)(mcu % perRow), my = (int)(mcu / perRow);
                if (ns == 1)
                {
                    var c = sc[0];
                    DecodeBlock(c, coef);
                    IdctIslow(coef, c.Quant!, ws, c.Plane.AsSpan(my * 8 * c.Stride + mx * 8), c.Stride);
                }
                else
                {
                    foreach (var c in sc)
                        for (int by = 0; by < c.V; by++)
                            for (int bx = 0; bx < c.H; bx++)
                            {
                                DecodeBlock(c, coef);
                                IdctIslow(coef, c.Quant!, ws, c.Plane.AsSpan(((my * c.V + by) * 8) * c.Stride + (mx * c.H + bx) * 8), c.Stride);
                            }
                }
                if (bits < padBits) insufficient = true;   // this MCU ran past the data: the rest stays zero
            }
            // leave pos at the marker that ends the scan (or the end of the data)
            if (!markerHit) SkipToMarker();
            return true;
        }

        /// <summary>Moves pos to the next 0xFF that starts a marker (not stuffing, not fill), or the end.</summary>
        void SkipToMarker()
        {
            while (pos < d.Length)
            {
                if (d[pos] == 0xFF)
                {
                    int p = pos + 1;
                    while (p < d.Length && d[p] == 0xFF) p++;
                    if (p < d.Length && d[p] == 0) { pos = p + 1; continue; }
                    pos = p - 1;
                    return;
                }
                pos++;
            }
        }

        /// <summary>
        /// jdhuff.c process_restart with jdmarker.c read_restart_marker and jpeg_resync_to_restart: drop the
        /// buffered bits, find the next marker; the expected RSTn is swallowed; otherwise libjpeg's resync rules
        /// (a marker below SOF0, or an RST one or two behind: discard it and look further; a non-RST marker, or an
        /// RST one or two ahead: leave it for later; any other RST: discard it). The out-of-data flag is cleared
        /// only when a marker was swallowed.
        /// </summary>
        void Restart(Component[] sc)
        {
            buf = 0; bits = 0; padBits = 0;
            if (!markerHit) SkipToMarker();
            markerHit = false;
            int expected = 0xD0 + nextRestart;
            bool swallowed = false;
            while (true)
            {
                int m = pos + 1 < d.Length ? d[pos + 1] : 0xD9;   // the end of the data reads as EOI (libjpeg inserts one)
                if (m == expected) { pos += 2; swallowed = true; break; }
                int action;
                if (m < 0xC0) action = 2;
                else if (m is < 0xD0 or > 0xD7) action = 3;
                else if (m == 0xD0 + ((nextRestart + 1) & 7) || m == 0xD0 + ((nextRestart + 2) & 7)) action = 3;
                else if (m == 0xD0 + ((nextRestart - 1) & 7) || m == 0xD0 + ((nextRestart - 2) & 7)) action = 2;
                else action = 1;
                if (action == 1) { pos += 2; swallowed = true; break; }
                if (action == 3) break;
                pos += 2;
                SkipToMarker();
            }
            nextRestart = (nextRestart + 1) & 7;
            foreach (var c in sc) c.Pred = 0;
            if (swallowed) insufficient = false;
        }

        void Fill()
        {
            while (bits <= 56)
            {
                int c = 0;
                if (markerHit || pos >= d.Length) padBits += 8;
                else
                {
                    c = d[pos];
                    if (c == 0xFF)
                    {
                        int p = pos + 1;
                        while (p < d.Length && d[p] == 0xFF) p++;
                        if (p < d.Length && d[p] == 0) pos = p + 1;
                        else { pos = p - 1; markerHit = true; c = 0; padBits += 8; }
                    }
                    else pos++;
                }
                buf |= (ulong)c << (56 - bits);
                bits += 8;
            }
        }

        int GetBits(int n)
        {
            if (n == 0) return 0;
            int v = (int)(buf >> (64 - n));
            buf <<= n; bits -= n;
            return v;
        }

        int DecodeSymbol(Huffman h)
        {
            int look = h.Lookup[(int)(buf >> 55)];
            if (look != 0)
            {
                int l = look >> 8;
                buf <<= l; bits -= l;
                return look & 0xFF;
            }
            int code16 = (int)(buf >> 48);
            for (int l = 10; l <= 16; l++)
            {
                int code = code16 >> (16 - l);
                if (code <= h.MaxCode[l])
                {
                    buf <<= l; bits -= l;
                    return h.Values[(code + h.ValOffset[l]) & 0xFF];
                }
            }
            // no code of 16 bits or fewer matches: libjpeg reads on to its length-17 sentinel, warns "bad Huffman
            // code" and returns 0, having consumed 17 bits
            buf <<= 17; bits -= 17;
            return 0;
        }

        static int Extend(int v, int s) => v < (1 << (s - 1)) ? v + (-1 << s) + 1 : v;

        void DecodeBlock(Component c, short[] coef)
        {
            Array.Clear(coef);
            if (insufficient) return;                 // out of data: zero block (libjpeg leaves the MCU zeroed)
            var dt = dc[c.Td]!; var at = ac[c.Ta]!;
            if (bits < 32) Fill();
            int s = DecodeSymbol(dt);
            if (s != 0)
            {
                if (bits < 32) Fill();
                s = Extend(GetBits(s), s);
            }
            c.Pred += s;
            coef[0] = (short)c.Pred;
            for (int k = 1; k < 64; k++)
            {
                if (bits < 32) Fill();
                int rs = DecodeSymbol(at);
                int r = rs >> 4; s = rs & 15;
                if (s != 0)
                {
                    k += r;
                    coef[NaturalOrder[k]] = (short)Extend(GetBits(s), s);
                }
                else
                {
                    if (r != 15) break;
                    k += 15;
                }
            }
        }

        RgbImage Output()
        {
            foreach (var c in comps)
                if (!c.Scanned) Array.Fill(c.Plane, (byte)128);   // never in a scan: zero coefficients → mid-grey
            var rgb = new byte[(long)width * height * 3];
            int rowLen = mcusX * hmax * 8 + 16;
            var rows = new byte[comps.Length][];
            for (int i = 0; i < comps.Length; i++) rows[i] = new byte[rowLen];
            bool ycc = comps.Length == 3 && ColourIsYcc();
            for (int y = 0; y < height; y++)
            {
                var out3 = rgb.AsSpan(y * width * 3, width * 3);
                if (comps.Length == 1)
                {
                    var g = Upsample(comps[0], y, rows[0]);
                    for (int x = 0; x < width; x++) { byte v = g[x]; out3[3 * x] = v; out3[3 * x + 1] = v; out3[3 * x + 2] = v; }
                    continue;
                }
                var r0 = Upsample(comps[0], y, rows[0]);
                var r1 = Upsample(comps[1], y, rows[1]);
                var r2 = Upsample(comps[2], y, rows[2]);
                if (!ycc)
                {
                    for (int x = 0; x < width; x++) { out3[3 * x] = r0[x]; out3[3 * x + 1] = r1[x]; out3[3 * x + 2] = r2[x]; }
                    continue;
                }
                for (int x = 0; x < width; x++)
                {
                    int yy = r0[x], cb = r1[x], cr = r2[x];
                    out3[3 * x] = Clamp(yy + CrR[cr]);
                    out3[3 * x + 1] = Clamp(yy + (int)((CbG[cb] + CrG[cr]) >> 16));
                    out3[3 * x + 2] = Clamp(yy + CbB[cb]);
                }
            }
            return new RgbImage(width, height, rgb);
        }

        /// <summary>jdapimin.c default_decompress_parms for 3 components.</summary>
        bool ColourIsYcc()
        {
            if (jfif) return true;
            if (adobe) return adobeTransform != 0;
            if (comps[0].Id == 'R' && comps[1].Id == 'G' && comps[2].Id == 'B') return false;
            return true;
        }

        /// <summary>Output row <paramref name="y"/> of component <paramref name="c"/> at full resolution (jdsample.c).</summary>
        ReadOnlySpan<byte> Upsample(Component c, int y, byte[] row)
        {
            int hr = hmax / c.H, vr = vmax / c.V;
            var p = c.Plane;
            if (hr == 1 && vr == 1) return p.AsSpan(y * c.Stride, width);
            int dw = c.DownW;
            if (hr == 2 && vr == 1 && dw > 2)
            {
                // h2v1_fancy_upsample
                var a = p.AsSpan(y * c.Stride, dw);
                row[0] = a[0];
                row[1] = (byte)((a[0] * 3 + a[1] + 2) >> 2);
                for (int i = 1; i < dw - 1; i++)
                {
                    int v = a[i] * 3;
                    row[2 * i] = (byte)((v + a[i - 1] + 1) >> 2);
                    row[2 * i + 1] = (byte)((v + a[i + 1] + 2) >> 2);
                }
                row[2 * dw - 2] = (byte)((a[dw - 1] * 3 + a[dw - 2] + 1) >> 2);
                row[2 * dw - 1] = a[dw - 1];
                return row;
            }
            if (hr == 1 && vr == 2)
            {
                // h1v2_fancy_upsample: nearer row 3/4, the next nearer (above for even rows, below for odd) 1/4
                int iy = y >> 1;
                int ny = (y & 1) == 0 ? Math.Max(iy - 1, 0) : Math.Min(iy + 1, c.DownH - 1);
                int bias = (y & 1) == 0 ? 1 : 2;
                var a = p.AsSpan(iy * c.Stride, dw); var b = p.AsSpan(ny * c.Stride, dw);
                for (int i = 0; i < dw; i++) row[i] = (byte)((a[i] * 3 + b[i] + bias) >> 2);
                return row;
            }
            if (hr == 2 && vr == 2 && dw > 2)
            {
                // h2v2_fancy_upsample: column sums 3·nearer row + next nearer row, then 3/4–1/4 across columns
                int iy = y >> 1;
                int ny = (y & 1) == 0 ? Math.Max(iy - 1, 0) : Math.Min(iy + 1, c.DownH - 1);
                var a = p.AsSpan(iy * c.Stride, dw); var b = p.AsSpan(ny * c.Stride, dw);
                int last = a[0] * 3 + b[0], cur = last, next;
                row[0] = (byte)((cur * 4 + 8) >> 4);
                next = a[1] * 3 + b[1];
                row[1] = (byte)((cur * 3 + next + 7) >> 4);
                last = cur; cur = next;
                for (int i = 1; i < dw - 1; i++)
                {
                    next = a[i + 1] * 3 + b[i + 1];
                    row[2 * i] = (byte)((cur * 3 + last + 8) >> 4);
                    row[2 * i + 1] = (byte)((cur * 3 + next + 7) >> 4);
                    last = cur; cur = next;
                }
                row[2 * dw - 2] = (byte)((cur * 3 + last + 8) >> 4);
                row[2 * dw - 1] = (byte)((cur * 4 + 7) >> 4);
                return row;
            }
            // int_upsample (and h2v1/h2v2 when the downsampled width is 2 or less): replication
            var src = p.AsSpan((y / vr) * c.Stride);
            for (int x = 0; x < width; x++) row[x] = src[x / hr];
            return row;
        }
    }
}
