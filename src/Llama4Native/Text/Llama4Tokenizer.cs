using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace Llama4Native.Text;

/// <summary>
/// The exact Llama 4 tokenizer (FORMAT.md): tiktoken BPE ranks (ids 0..199,999) run by Microsoft.ML.Tokenizers'
/// <see cref="TiktokenTokenizer"/> with our per-code-point <see cref="O200kPreTokenizer"/>, plus the 2,048
/// special tokens (ids 200,000..202,047) handled here, the reference's cutting of very long runs, and a
/// byte table for exact (streaming) decoding. Create with <see cref="FromFile"/>, <see cref="FromCheckpoint"/>,
/// <see cref="FromTiktoken"/>, <see cref="FromHuggingFaceJson"/> or <see cref="CreateDemo"/>.
/// </summary>
internal sealed class Llama4Tokenizer
{
    public const int BaseVocabSize = 200_000;
    public const int SpecialCount = 2_048;
    public const int VocabSize = BaseVocabSize + SpecialCount;
    public const int BeginOfText = 200_000, EndOfText = 200_001, HeaderStart = 200_005, HeaderEnd = 200_006,
        EndOfMessage = 200_007, EndOfTurn = 200_008, PythonStart = 200_016, PythonEnd = 200_017, FinetuneRightPad = 200_018,
        ImageStart = 200_080, ImageEnd = 200_081, TileXSeparator = 200_084, TileYSeparator = 200_085, Image = 200_090, Patch = 200_092;
    /// <summary>Generation stops on any of these: &lt;|end_of_text|&gt;, &lt;|eom|&gt;, &lt;|eot|&gt;.</summary>
    public static IReadOnlyList<int> StopTokens { get; } = [EndOfText, EndOfMessage, EndOfTurn];

    /// <summary>Reference cut sizes (llama-models tokenizer.py): chunks of 400,000 code points, runs of ≤ 25,000.</summary>
    public const int MaxEncodeChars = 400_000, MaxRunChars = 25_000;

    readonly TiktokenTokenizer bpe;
    readonly byte[][] tokenBytes;
    readonly Dictionary<string, int> specials;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> specialLookup;
    readonly string[] specialNames;

    /// <summary>True for the fresh-clone stand-in (o200k_base ranks + Llama 4 specials): not Llama 4's ids.</summary>
    public bool IsDemo { get; }
    /// <summary>The underlying Microsoft.ML.Tokenizers BPE (no special tokens).</summary>
    public TiktokenTokenizer Bpe => bpe;
    public IReadOnlyDictionary<string, int> SpecialTokens => specials;

    Llama4Tokenizer(byte[] tiktokenText, bool demo)
    {
        IsDemo = demo;
        tokenBytes = new byte[VocabSize][];
        ParseRanks(tiktokenText, tokenBytes);
        specialNames = SpecialTokenNames();
        specials = new Dictionary<string, int>(SpecialCount, StringComparer.Ordinal);
        for (int i = 0; i < SpecialCount; i++)
        {
            specials[specialNames[i]] = BaseVocabSize + i;
            tokenBytes[BaseVocabSize + i] = Encoding.UTF8.GetBytes(specialNames[i]);
        }
        specialLookup = specials.GetAlternateLookup<ReadOnlySpan<char>>();
        using var ms = new MemoryStream(tiktokenText, writable: false);
        bpe = TiktokenTokenizer.Create(ms, O200kPreTokenizer.Instance, normalizer: null, specialTokens: null, cacheSize: 65536);
    }

    // ---- factories ----

    /// <summary>A tiktoken rank file (`tokenizer.model`), HF `tokenizer.json`, or a checkpoint folder.</summary>
    public static Llama4Tokenizer FromFile(string path)
    {
        if (Directory.Exists(path)) return FromCheckpoint(path);
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return FromHuggingFaceJson(path);
        return new Llama4Tokenizer(File.ReadAllBytes(path), demo: false);
    }

    /// <summary>From a checkpoint folder: `original/tokenizer.model`, `tokenizer.model`, else HF `tokenizer.json`.</summary>
    public static Llama4Tokenizer FromCheckpoint(string dir)
    {
        foreach (var rel in new[] { "original/tokenizer.model", "tokenizer.model" })
        {
            var p = Path.Combine(dir, rel);
            if (File.Exists(p)) return new Llama4Tokenizer(File.ReadAllBytes(p), demo: false);
        }
        var j = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(j)) return FromHuggingFaceJson(j);
        throw new FileNotFoundException($"no original/tokenizer.model, tokenizer.model or tokenizer.json in '{dir}'");
    }

    /// <summary>From tiktoken rank text (`base64 rank` per line).</summary>
    public static Llama4Tokenizer FromTiktoken(Stream stream)
    {
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        return new Llama4Tokenizer(ms.ToArray(), demo: false);
    }

    /// <summary>
    /// From Hugging Face's `tokenizer.json` (byte-level BPE): the ranks are the vocab ids below 200,000, the
    /// token strings mapped back to bytes through GPT-2's byte↔unicode table.
    /// </summary>
    public static Llama4Tokenizer FromHuggingFaceJson(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var vocab = doc.RootElement.GetProperty("model").GetProperty("vocab");
        var unicodeToByte = new Dictionary<char, byte>();
        var b2u = ByteToUnicode();
        for (int b = 0; b < 256; b++) unicodeToByte[b2u[b]] = (byte)b;
        var sb = new StringBuilder(4 << 20);
        var buf = new List<byte>(64);
        foreach (var kv in vocab.EnumerateObject())
        {
            int id = kv.Value.GetInt32();
            if (id >= BaseVocabSize) continue;
            buf.Clear();
            foreach (char c in kv.Name)
                buf.Add(unicodeToByte.TryGetValue(c, out var by) ? by : throw new InvalidDataException($"tokenizer.json: token '{kv.Name}' is not byte-level"));
            sb.Append(Convert.ToBase64String(CollectionsMarshal.AsSpan(buf))).Append(' ').Append(id).Append('\n');
        }
        return new Llama4Tokenizer(Encoding.ASCII.GetBytes(sb.ToString()), demo: false);
    }

    /// <summary>
    /// The fresh-clone demo stand-in: OpenAI's o200k_base ranks (Microsoft.ML.Tokenizers.Data.O200kBase, same
    /// split pattern) plus Llama 4's special tokens. Its ids are NOT Llama 4's; use it only to exercise the
    /// pipeline without a checkpoint.
    /// </summary>
    public static Llama4Tokenizer CreateDemo()
    {
        var asm = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.O200kBase");
        var name = asm.GetManifestResourceNames().First(n => n.EndsWith("o200k_base.tiktoken.deflate", StringComparison.Ordinal));
        using var s = asm.GetManifestResourceStream(name)!;
        using var d = new DeflateStream(s, CompressionMode.Decompress);
        // The package stores "Capacity: N" then one base64 token per line, rank = line index (or "b64 rank").
        using var reader = new StreamReader(d, Encoding.ASCII);
        var sb = new StringBuilder(4 << 20);
        int rank = 0;
        for (string? line; (line = reader.ReadLine()) is not null;)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int sp = line.IndexOf(' ');
            if (sp > 0) { sb.Append(line).Append('\n'); rank = int.Parse(line.AsSpan(sp + 1), System.Globalization.CultureInfo.InvariantCulture) + 1; }
            else sb.Append(line).Append(' ').Append(rank++).Append('\n');
        }
        return new Llama4Tokenizer(Encoding.ASCII.GetBytes(sb.ToString()), demo: true);
    }

    // ---- encode ----

    public int[] Encode(string text, bool allowSpecial = false) => Encode(text.AsSpan(), allowSpecial);

    public int[] Encode(ReadOnlySpan<char> text, bool allowSpecial = false)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        EncodeTo(text, allowSpecial, ids);
        return ids.ToArray();
    }

    /// <summary>The one implementation: appends the ids of <paramref name="text"/> to <paramref name="ids"/>.</summary>
    public void EncodeTo(ReadOnlySpan<char> text, bool allowSpecial, List<int> ids)
    {
        if (text.Length <= MaxRunChars) { EncodePiece(text, allowSpecial, ids); return; }
        // Reference behaviour: 400,000-code-point chunks, then cuts inside runs longer than 25,000 code points
        // that are all whitespace or all non-whitespace (Python str.isspace).
        int pos = 0;
        while (pos < text.Length)
        {
            int end = pos, cps = 0;
            while (end < text.Length && cps < MaxEncodeChars) { end += Width(text, end); cps++; }
            var chunk = text[pos..end];
            int sliceStart = 0, runLen = 0, i = 0;
            bool runIsSpace = chunk.Length > 0 && IsPySpace(chunk[0]);
            while (i < chunk.Length)
            {
                bool sp = IsPySpace(chunk[i]);
                if (sp != runIsSpace) { runLen = 1; runIsSpace = sp; }
                else if (++runLen > MaxRunChars)
                {
                    EncodePiece(chunk[sliceStart..i], allowSpecial, ids);
                    sliceStart = i;
                    runLen = 1;
                }
                i += Width(chunk, i);
            }
            EncodePiece(chunk[sliceStart..], allowSpecial, ids);
            pos = end;
        }
    }

    static int Width(ReadOnlySpan<char> s, int i) =>
        char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;

    static bool IsPySpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1C' and <= '\x1F';

    void EncodePiece(ReadOnlySpan<char> text, bool allowSpecial, List<int> ids)
    {
        if (text.IsEmpty) return;
        if (allowSpecial)
        {
            int start = 0, p = 0;
            while (true)
            {
                int rel = text[p..].IndexOf("<|", StringComparison.Ordinal);
                if (rel < 0) break;
                int at = p + rel;
                int close = text[(at + 2)..].IndexOf("|>", StringComparison.Ordinal);
                if (close < 0) break;
                var cand = text.Slice(at, close + 4);
                if (specialLookup.TryGetValue(cand, out int id))
                {
                    EncodeOrdinary(text[start..at], ids);
                    ids.Add(id);
                    start = p = at + cand.Length;
                }
                else p = at + 1;
            }
            EncodeOrdinary(text[start..], ids);
        }
        else EncodeOrdinary(text, ids);
    }

    void EncodeOrdinary(ReadOnlySpan<char> text, List<int> ids)
    {
        if (text.IsEmpty) return;
        ids.AddRange(bpe.EncodeToIds(text, considerPreTokenization: true, considerNormalization: false));
    }

    // ---- decode ----

    /// <summary>The raw bytes of one id (a BPE token may be part of a UTF-8 character).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id) =>
        (uint)id < (uint)tokenBytes.Length && tokenBytes[id] is { } b ? b : throw new ArgumentOutOfRangeException(nameof(id), id, "not a token id");

    public bool IsSpecial(int id) => id >= BaseVocabSize && id < VocabSize;
    public string SpecialName(int id) => specialNames[id - BaseVocabSize];
    public bool TryGetSpecial(string name, out int id) => specials.TryGetValue(name, out id);

    public string Decode(int[] ids) => Decode(ids.AsSpan());
    public string Decode(IEnumerable<int> ids) => ids is List<int> l ? Decode(CollectionsMarshal.AsSpan(l)) : Decode(ids.ToArray().AsSpan());

    /// <summary>Concatenated token bytes decoded as UTF-8, invalid sequences replaced by U+FFFD.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        int n = 0;
        foreach (var id in ids) n += TokenBytes(id).Length;
        byte[] rented = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Max(n, 1));
        try
        {
            int o = 0;
            foreach (var id in ids) { var b = TokenBytes(id); b.CopyTo(rented.AsSpan(o)); o += b.Length; }
            return Encoding.UTF8.GetString(rented, 0, n);
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(rented); }
    }

    /// <summary>A decoder for token-by-token output that never emits part of a UTF-8 character.</summary>
    public StreamingDecoder CreateStreamingDecoder() => new(this);

    // ---- tables ----

    static void ParseRanks(byte[] text, byte[][] table)
    {
        int count = 0, pos = 0;
        var span = text.AsSpan();
        while (pos < span.Length)
        {
            int nl = span[pos..].IndexOf((byte)'\n');
            var line = nl < 0 ? span[pos..] : span.Slice(pos, nl);
            pos = nl < 0 ? span.Length : pos + nl + 1;
            if (line.Length > 0 && line[^1] == '\r') line = line[..^1];
            if (line.IsEmpty) continue;
            int sp = line.IndexOf((byte)' ');
            if (sp <= 0 || !int.TryParse(Encoding.ASCII.GetString(line[(sp + 1)..]), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int rank)
                || (uint)rank >= BaseVocabSize)
                throw new InvalidDataException($"tiktoken ranks: bad line '{Encoding.ASCII.GetString(line)}' (expected '<base64> <rank>' with rank < {BaseVocabSize})");
            table[rank] = Convert.FromBase64String(Encoding.ASCII.GetString(line[..sp]));
            count++;
        }
        if (count == 0) throw new InvalidDataException("tiktoken ranks: empty file");
    }

    /// <summary>The 2,048 special-token strings in id order (FORMAT.md section 3).</summary>
    public static string[] SpecialTokenNames()
    {
        var l = new List<string>(SpecialCount);
        void Add(string s) => l.Add($"<|{s}|>");
        void Range(string prefix, int from, int toIncl) { for (int i = from; i <= toIncl; i++) Add(prefix + i); }
        foreach (var s in new[] { "begin_of_text", "end_of_text", "fim_prefix", "fim_middle", "fim_suffix", "header_start", "header_end", "eom", "eot", "step" }) Add(s);
        Range("text_post_train_reserved_special_token_", 0, 5);
        Add("python_start"); Add("python_end"); Add("finetune_right_pad");
        Range("text_post_train_reserved_special_token_", 8, 68);
        Add("image_start"); Add("image_end");
        Range("vision_reserved_special_token_", 0, 1);
        Add("tile_x_separator"); Add("tile_y_separator");
        Range("vision_reserved_special_token_", 2, 5);
        Add("image");
        Range("vision_reserved_special_token_", 6, 6);
        Add("patch");
        Range("vision_reserved_special_token_", 7, 1047);
        Range("reasoning_reserved_special_token_", 0, 7);
        Add("reasoning_thinking_start"); Add("reasoning_thinking_end");
        Range("reserved_special_token_", 0, SpecialCount - 1 - l.Count);
        if (l.Count != SpecialCount) throw new InvalidOperationException($"special token table has {l.Count} entries");
        return [.. l];
    }

    static char[] ByteToUnicode()
    {
        var map = new char[256];
        var printable = new bool[256];
        for (int b = '!'; b <= '~'; b++) printable[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) printable[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) printable[b] = true;
        int n = 0;
        for (int b = 0; b < 256; b++) map[b] = printable[b] ? (char)b : (char)(256 + n++);
        return map;
    }
}

/// <summary>
/// Token-by-token text output: buffers an incomplete UTF-8 tail so a multi-byte character (or surrogate pair)
/// is emitted whole, never half; invalid bytes become U+FFFD as in <see cref="Llama4Tokenizer.Decode(ReadOnlySpan{int})"/>.
/// </summary>
internal sealed class StreamingDecoder
{
    readonly Llama4Tokenizer tokenizer;
    readonly Decoder utf8 = new UTF8Encoding(false, false).GetDecoder();
    char[] chars = new char[64];

    internal StreamingDecoder(Llama4Tokenizer tokenizer) => this.tokenizer = tokenizer;

    /// <summary>Decodes <paramref name="id"/> into <paramref name="destination"/>; returns the chars written (may be 0).</summary>
    public int Decode(int id, Span<char> destination) => utf8.GetChars(tokenizer.TokenBytes(id), destination, flush: false);

    /// <summary>The complete text this id finishes (may be empty while a character is incomplete).</summary>
    public string Push(int id)
    {
        var b = tokenizer.TokenBytes(id);
        int need = utf8.GetCharCount(b, flush: false);
        if (chars.Length < need) chars = new char[Math.Max(need, chars.Length * 2)];
        int n = utf8.GetChars(b, chars, flush: false);
        return new string(chars, 0, n);
    }

    /// <summary>End of stream: any buffered incomplete bytes come out as U+FFFD.</summary>
    public string Flush()
    {
        Span<char> tail = stackalloc char[8];
        int n = utf8.GetChars(ReadOnlySpan<byte>.Empty, tail, flush: true);
        return new string(tail[..n]);
    }

    public void Reset() => utf8.Reset();
}
