using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Unicode;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>One tensor of a safetensors file: dtype, shape and its byte range [Begin, End) in the data section.</summary>
internal sealed record TensorEntry(string Name, DType DType, long[] Shape, long Begin, long End)
{
    public long Bytes => End - Begin;
    public long ElementCount
    {
        get { long n = 1; foreach (long d in Shape) n *= d; return n; }
    }
    public string ShapeString => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// The parsed, validated header of a safetensors file.
///
/// Layout: 8 bytes little-endian unsigned N, then N bytes of UTF-8 JSON (possibly space-padded), then the
/// data section. The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
/// relative to the data section) plus an optional "__metadata__" string→string map.
///
/// Parsing is strict, because this is the first thing a hostile file reaches: N ≤ 100 MB and ≤ file − 8,
/// valid UTF-8, valid JSON of bounded depth with no duplicate keys, known dtypes only, non-negative dims
/// whose product × dtype size (checked for overflow) equals the byte range, and ranges that, sorted,
/// tile the data section exactly — no overlap, no gap, nothing past the end. Every failure is a
/// <see cref="CheckpointException"/> naming the file and, when relevant, the tensor.
/// </summary>
internal sealed class SafetensorsHeader
{
    public const long MaxHeaderBytes = 100_000_000;
    const int MaxJsonDepth = 8;

    /// <summary>Tensors sorted by data offset.</summary>
    public IReadOnlyList<TensorEntry> Tensors { get; }
    public IReadOnlyDictionary<string, TensorEntry> ByName { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Bytes before the data section: 8 + N.</summary>
    public long DataStart { get; }
    public long DataLength { get; }

    SafetensorsHeader(List<TensorEntry> tensors, Dictionary<string, TensorEntry> byName, Dictionary<string, string> meta,
                      long dataStart, long dataLength)
    {
        Tensors = tensors; ByName = byName; Metadata = meta; DataStart = dataStart; DataLength = dataLength;
    }

    /// <summary>
    /// Reads the 8-byte length prefix and returns N after checking it against the bounds. <paramref name="prefix"/>
    /// must hold at least the first 8 bytes of the file.
    /// </summary>
    public static long ReadHeaderLength(ReadOnlySpan<byte> prefix, long fileLength, string file)
    {
        if (fileLength < 8 || prefix.Length < 8)
            throw new CheckpointException(file, null,
                $"file is {fileLength} bytes, too short to hold the 8-byte header length; it is truncated or not a safetensors file — re-download or regenerate it");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (n > MaxHeaderBytes)
            throw new CheckpointException(file, null,
                $"header length {n} exceeds the {MaxHeaderBytes}-byte limit; the file is corrupt or not a safetensors file");
        if ((long)n > fileLength - 8)
            throw new CheckpointException(file, null,
                $"header length {n} runs past the end of the file ({fileLength} bytes, so at most {fileLength - 8}); the file is truncated — re-download it");
        if (n < 2)
            throw new CheckpointException(file, null, $"header length {n} is too small for a JSON object; the file is corrupt");
        return (long)n;
    }

    /// <summary>Parses a whole file image (length prefix + header + data). Used by tests and the fuzz harness.</summary>
    public static SafetensorsHeader Parse(ReadOnlySpan<byte> file, string name)
    {
        long n = ReadHeaderLength(file, file.Length, name);
        return Parse(file.Slice(8, (int)n), file.Length - 8 - n, name);
    }

    /// <summary>Parses the JSON header; <paramref name="dataLength"/> is the size of the data section.</summary>
    public static SafetensorsHeader Parse(ReadOnlySpan<byte> json, long dataLength, string file)
    {
        if (!Utf8.IsValid(json))
            throw new CheckpointException(file, null, "header is not valid UTF-8; the file is corrupt or not a safetensors file");
        JsonDocument doc;
        try
        {
            // Utf8JsonReader over the span: no copy, depth-bounded, duplicates rejected.
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxJsonDepth, CommentHandling = JsonCommentHandling.Disallow });
            doc = JsonDocument.ParseValue(ref reader);
            // Anything after the object but padding spaces is garbage.
            for (long i = reader.BytesConsumed; i < json.Length; i++)
                if (json[(int)i] is not ((byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r'))
                    throw new CheckpointException(file, null,
                        $"header has trailing bytes after the JSON object (offset {i + 8}); the header length is wrong or the file is corrupt");
        }
        catch (JsonException e)
        {
            throw new CheckpointException(file, null, $"header is not valid JSON ({Trim(e.Message)}); the file is corrupt or not a safetensors file", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(file, null, $"header is a JSON {Kind(root)}; expected an object mapping tensor names to entries");

            var tensors = new List<TensorEntry>();
            var byName = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
            var meta = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMeta = false;
            foreach (var prop in root.EnumerateObject())
            {
                string name = prop.Name;
                if (name == "__metadata__")
                {
                    if (sawMeta) throw new CheckpointException(file, null, "header has two \"__metadata__\" entries");
                    sawMeta = true;
                    ReadMetadata(prop.Value, meta, file);
                    continue;
                }
                if (name.Length == 0)
                    throw new CheckpointException(file, null, "header has a tensor with an empty name");
                if (byName.ContainsKey(name))
                    throw new CheckpointException(file, name, "is listed twice in the header; the file is corrupt");
                var t = ReadEntry(name, prop.Value, dataLength, file);
                tensors.Add(t);
                byName.Add(name, t);
            }

            // The ranges, sorted, must tile [0, dataLength) exactly.
            tensors.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long cursor = 0;
            TensorEntry? prev = null;
            foreach (var t in tensors)
            {
                if (t.Begin < cursor)
                    throw new CheckpointException(file, t.Name,
                        $"byte range [{t.Begin}, {t.End}) overlaps tensor '{prev!.Name}' [{prev.Begin}, {prev.End}); the file is corrupt");
                if (t.Begin > cursor)
                    throw new CheckpointException(file, t.Name,
                        $"byte range [{t.Begin}, {t.End}) leaves a gap of {t.Begin - cursor} bytes after " +
                        (prev is null ? "the start of the data section" : $"tensor '{prev.Name}' (ends at {prev.End})") +
                        "; safetensors data must be contiguous — the file is corrupt");
                cursor = t.End;
                prev = t;
            }
            if (cursor != dataLength)
                throw new CheckpointException(file, prev?.Name,
                    $"data section is {dataLength} bytes but the tensors cover only {cursor}; {dataLength - cursor} trailing bytes belong to no tensor — the file is corrupt or was appended to");
            return new SafetensorsHeader(tensors, byName, meta, 0, dataLength);
        }
    }

    static void ReadMetadata(JsonElement v, Dictionary<string, string> meta, string file)
    {
        if (v.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(file, null, $"\"__metadata__\" is a JSON {Kind(v)}; expected an object of string values");
        foreach (var m in v.EnumerateObject())
        {
            if (m.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointException(file, null, $"\"__metadata__\".\"{m.Name}\" is a JSON {Kind(m.Value)}; expected a string");
            if (!meta.TryAdd(m.Name, m.Value.GetString()!))
                throw new CheckpointException(file, null, $"\"__metadata__\" has the key \"{m.Name}\" twice");
        }
    }

    static TensorEntry ReadEntry(string name, JsonElement v, long dataLength, string file)
    {
        if (v.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(file, name, $"entry is a JSON {Kind(v)}; expected {{\"dtype\", \"shape\", \"data_offsets\"}}");
        JsonElement dtypeEl = default, shapeEl = default, offEl = default;
        bool hasD = false, hasS = false, hasO = false;
        foreach (var p in v.EnumerateObject())
        {
            switch (p.Name)
            {
                case "dtype": if (hasD) Dup(p.Name); dtypeEl = p.Value; hasD = true; break;
                case "shape": if (hasS) Dup(p.Name); shapeEl = p.Value; hasS = true; break;
                case "data_offsets": if (hasO) Dup(p.Name); offEl = p.Value; hasO = true; break;
                default:
                    throw new CheckpointException(file, name, $"entry has an unknown field \"{p.Name}\"; expected only dtype, shape, data_offsets");
            }
        }
        void Dup(string f) => throw new CheckpointException(file, name, $"entry has the field \"{f}\" twice");
        if (!hasD || !hasS || !hasO)
            throw new CheckpointException(file, name,
                $"entry lacks {string.Join(" and ", new[] { (hasD, "dtype"), (hasS, "shape"), (hasO, "data_offsets") }.Where(x => !x.Item1).Select(x => x.Item2))}");

        if (dtypeEl.ValueKind != JsonValueKind.String)
            throw new CheckpointException(file, name, $"dtype is a JSON {Kind(dtypeEl)}; expected a string such as \"BF16\"");
        string ds = dtypeEl.GetString()!;
        if (!DTypeInfo.TryParseSafetensors(ds, out DType dtype))
            throw new CheckpointException(file, name,
                $"has unknown dtype \"{Trim(ds)}\"; supported: BF16, F16, F32, F8_E4M3, I64, I32, U8 — convert the checkpoint to one of these");

        if (shapeEl.ValueKind != JsonValueKind.Array)
            throw new CheckpointException(file, name, $"shape is a JSON {Kind(shapeEl)}; expected a list of non-negative integers");
        int rank = shapeEl.GetArrayLength();
        if (rank > 8)
            throw new CheckpointException(file, name, $"shape has {rank} dimensions; at most 8 are supported");
        var shape = new long[rank];
        long elements = 1;
        bool overflow = false;
        for (int i = 0; i < rank; i++)
        {
            var d = shapeEl[i];
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new CheckpointException(file, name, $"shape[{i}] is {Trim(d.GetRawText())}; expected a non-negative integer");
            if (dim < 0)
                throw new CheckpointException(file, name, $"shape[{i}] is {dim}; dimensions must be non-negative");
            shape[i] = dim;
            if (!overflow)
            {
                try { elements = checked(elements * dim); }
                catch (OverflowException) { overflow = true; }
            }
        }
        long bytes = 0;
        if (!overflow)
        {
            try { bytes = checked(elements * dtype.Size()); }
            catch (OverflowException) { overflow = true; }
        }
        if (overflow && !shape.Contains(0))
            throw new CheckpointException(file, name, $"shape [{string.Join(", ", shape)}] overflows a 64-bit byte count; the header is corrupt");
        if (overflow) bytes = 0;

        if (offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new CheckpointException(file, name, $"data_offsets is {Trim(offEl.GetRawText())}; expected [begin, end]");
        if (!offEl[0].TryGetInt64Strict(out long begin) || !offEl[1].TryGetInt64Strict(out long end) || begin < 0 || end < 0)
            throw new CheckpointException(file, name, $"data_offsets {Trim(offEl.GetRawText())} must be two non-negative integers");
        if (end < begin)
            throw new CheckpointException(file, name, $"data_offsets [{begin}, {end}] end before they begin; the header is corrupt");
        if (end > dataLength)
            throw new CheckpointException(file, name,
                $"data_offsets [{begin}, {end}] run past the end of the data section ({dataLength} bytes); the file is truncated — re-download it");
        if (end - begin != bytes)
            throw new CheckpointException(file, name,
                $"shape [{string.Join(", ", shape)}] × {ds} ({dtype.Size()} bytes) = {bytes} bytes but data_offsets [{begin}, {end}] hold {end - begin}; the header is corrupt");
        return new TensorEntry(name, dtype, shape, begin, end);
    }

    static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();
    static string Trim(string s) => s.Length > 80 ? s[..80] + "…" : s;
}

static class JsonElementExtensions
{
    public static bool TryGetInt64Strict(this JsonElement e, out long v)
    {
        v = 0;
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out v);
    }
}
