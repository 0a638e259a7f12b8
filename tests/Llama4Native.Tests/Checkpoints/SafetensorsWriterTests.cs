using System.Runtime.InteropServices;
using Llama4Native.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Checkpoints;

public class SafetensorsWriterTests
{
    [Test]
    public void WrittenTensorsReadBackExactly_AndBadSizesAreRefused()
    {
        var rng = new Random(TestSeed.For(nameof(WrittenTensorsReadBackExactly_AndBadSizesAreRefused)));
        int t = rng.Next(1, 20), v = rng.Next(1, 50);
        var logits = Enumerable.Range(0, t * v).Select(_ => (float)rng.NextDouble()).ToArray();
        var ids = Enumerable.Range(0, t).Select(_ => (long)rng.Next()).ToArray();
        var path = Path.Combine(Path.GetTempPath(), $"l4-w-{Guid.NewGuid():N}.safetensors");
        try
        {
            SafetensorsWriter.Write(path, [
                ("logits", DType.F32, [t, v], MemoryMarshal.AsBytes(logits.AsSpan()).ToArray()),
                ("generated_ids", DType.I64, [t], MemoryMarshal.AsBytes(ids.AsSpan()).ToArray()),
            ]);
            using var f = SafetensorsFile.Open(path);
            Assert.That(f.Span<float>(f.Get("logits")).ToArray(), Is.EqualTo(logits));
            Assert.That(f.Span<long>(f.Get("generated_ids")).ToArray(), Is.EqualTo(ids));
            Assert.That(f.Get("logits").Shape, Is.EqualTo(new long[] { t, v }));
            var e = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [("x", DType.F32, [t, v + 1], new byte[t * v * 4])]));
            Assert.That(e!.Message, Does.Contain("'x'"));
        }
        finally { File.Delete(path); }
    }
}
