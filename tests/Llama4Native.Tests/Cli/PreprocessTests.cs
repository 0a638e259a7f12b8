using System.Text.Json;
using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Cli;

/// <summary>`llama4 preprocess` on the fixture images gives HF's pixel_values bit for bit, its tile grids and its
/// expanded image text.</summary>
public class PreprocessTests
{
    [Test]
    public void MatchesTheHuggingFaceGoldens()
    {
        string fx = CkptTestUtil.Fixture("llama4-image-processor");
        using var golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(fx, "image_processor_golden.json")));
        var images = golden.RootElement.GetProperty("images").EnumerateArray().ToList();
        string dir = CkptTestUtil.NewTempDir("pre");
        try
        {
            string outPath = Path.Combine(dir, "pv.safetensors");
            var args = new List<string> { "preprocess", "--json", "--out", outPath };
            foreach (var im in images) { args.Add("--image"); args.Add(Path.Combine(fx, im.GetProperty("file").GetString()!)); }
            var o = new StringWriter();
            var e = new StringWriter();
            Assert.That(Commands.Run([.. args], o, e), Is.EqualTo(0), e.ToString());
            using var got = JsonDocument.Parse(o.ToString());
            var gotImages = got.RootElement.GetProperty("images").EnumerateArray().ToList();
            using var st = SafetensorsFile.Open(outPath);
            using var gst = SafetensorsFile.Open(Path.Combine(fx, "image_processor_golden.safetensors"));
            var pixels = st.Span<float>(st.Get("pixel_values")).ToArray();
            var grid = st.Span<long>(st.Get("tile_grid")).ToArray();
            long at = 0;
            for (int i = 0; i < images.Count; i++)
            {
                var want = images[i];
                var hw = want.GetProperty("aspect_ratio_tiles_hw").EnumerateArray().Select(x => x.GetInt32()).ToArray();
                Assert.That((gotImages[i].GetProperty("rows").GetInt32(), gotImages[i].GetProperty("cols").GetInt32()), Is.EqualTo((hw[0], hw[1])));
                Assert.That((grid[2 * i], grid[2 * i + 1]), Is.EqualTo(((long)hw[0], (long)hw[1])));
                Assert.That(gotImages[i].GetProperty("layout_text").GetString(), Is.EqualTo(want.GetProperty("expanded_image_text").GetString()));
                var hf = gst.Span<ushort>(gst.Get($"image{i}.pixel_values_bf16")).ToArray();
                for (long k = 0; k < hf.Length; k++)
                {
                    float w = BitConverter.Int32BitsToSingle(hf[k] << 16);
                    if (pixels[at + k] != w) Assert.Fail($"image {i} element {k}: {pixels[at + k]} vs HF {w}");
                }
                at += hf.Length;
            }
            Assert.That(at, Is.EqualTo(pixels.LongLength));
        }
        finally { Directory.Delete(dir, true); }
    }
}
