using System.Buffers.Binary;
using System.Text.Json;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>Writes safetensors files: synthetic checkpoints, and `llama4 eval` outputs (logits, layer outputs, dumps).</summary>
internal static class SafetensorsWriter
{
    /// <summary>The safetensors header bytes (length prefix + space-padded JSON) for tensors written in this order.</summary>
    public static byte[] Header(IReadOnlyList<(string Name, DType DType, long[] Shape, long Bytes)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            foreach (var (k, v) in metadata ?? new Dictionary<string, string> { ["format"] = "pt" }) w.WriteString(k, v);
            w.WriteEndObject();
            long off = 0;
            foreach (var t in tensors)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.SafetensorsName());
                w.WriteStartArray("shape");
                foreach (long d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(off);
                w.WriteNumberValue(off + t.Bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                off += t.Bytes;
            }
            w.WriteEndObject();
        }
        int len = (int)ms.Length;
        int padded = (len + 7) / 8 * 8;
        var bytes = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)padded);
        ms.GetBuffer().AsSpan(0, len).CopyTo(bytes.AsSpan(8));
        bytes.AsSpan(8 + len).Fill((byte)' ');
        return bytes;
    }

    /// <summary>Writes <paramref name="tensors"/> in order to <paramref name="path"/> (via a temporary file and a rename).</summary>
    public static void Write(string path, IReadOnlyList<(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data)> tensors,
                             IReadOnlyDictionary<string, string>? metadata = null)
    {
        foreach (var t in tensors)
        {
            long want = t.Shape.Aggregate(1L, (a, b) => checked(a * b)) * t.DType.Size();
            if (want != t.Data.Length)
                throw new ArgumentException($"safetensors: tensor '{t.Name}' {t.DType}[{string.Join(", ", t.Shape)}] needs {want} bytes, got {t.Data.Length}");
        }
        var header = Header(tensors.Select(t => (t.Name, t.DType, t.Shape, (long)t.Data.Length)).ToList(), metadata);
        var tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            fs.Write(header);
            foreach (var t in tensors) fs.Write(t.Data.Span);
        }
        File.Move(tmp, path, overwrite: true);
    }
}
