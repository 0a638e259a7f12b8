using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Tensors;
using Llama4Native.Text;
using Llama4Native.Vision;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 preprocess --image PATH… [--out FILE.safetensors] [--json]`: our HF-exact image processor
/// (Llama4ImageProcessorFast) on any images — pixel_values [tiles, 3, S, S] float32 (the bf16 values HF produces,
/// widened), the tile grid of each image, and the expanded image-token layout string of the prompt — the way to
/// check our preprocessing against HF's on any image.
/// </summary>
internal static class PreprocessVerb
{
    public static readonly VerbSpec Spec = new("preprocess", "run the HF-exact image processor: pixel_values, tile grids and the image-token layout",
        [
            new("image", "PATH", "an image (JPEG, PNG, BMP, GIF), in prompt order (at least one)", Many: true),
            new("out", "FILE", "write pixel_values F32 [tiles, 3, S, S], tile_grid I64 [images, 2] and tiles_per_image I64 [images] as safetensors (the layout string in its metadata)"),
            new("json", null, "print the result as JSON on stdout (grids, tiles, token counts, layout string)"),
            new("model", "DIR", "take tile size, patch size and pixel shuffle from this checkpoint's vision config (default: Llama 4's: 336, 14, 0.5)"),
            new("max-tiles", "N", "most tiles per image, 1 to 64 (default 16, the released processor's max_patches)"),
        ],
        "The layout string is what each image expands to in the prompt: <|image_start|>, per tile row the tiles' <|patch|>\n" +
        "tokens separated by <|tile_x_separator|> and ended by <|tile_y_separator|>, then <|image|> and the global tile's\n" +
        "patches, <|image_end|> (runs of <|patch|> are written <|patch|>×N).");

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        var paths = a.All("image");
        if (paths.Count == 0) throw new UsageException("--image PATH is required (one or more)");
        int maxTiles = a.GetInt("max-tiles", 16, 1, 64);
        string? outPath = a.Get("out");
        if (outPath is not null) OutputFile.Check(outPath, "--out");
        foreach (var p in paths)
        {
            if (p == "-") throw new UsageException("--image -: preprocess reads files only; save the image first");
            if (Directory.Exists(p)) throw new UsageException($"--image {p} is a folder; pass an image file");
            if (!File.Exists(p)) throw new UsageException($"--image {p}: no such file");
        }
        var settings = new VisionTokenSettings(MaxTiles: maxTiles);
        if (a.Has("model"))
        {
            var vc = Llama4Config.Load(Common.ModelDir(a)).Vision ?? throw new UsageException($"--model {a.Get("model")} has no vision tower");
            settings = new VisionTokenSettings(vc.ImageSize, vc.PatchSize, vc.PixelShuffleRatio, maxTiles);
        }
        var processor = new Llama4ImageProcessor(settings);
        var decoded = paths.Select(p => ImageDecoder.Decode(p)).ToList();
        var batch = processor.ProcessBatch(decoded);
        var format = new ChatFormat(Llama4Tokenizer.CreateDemo(), settings);   // the one layout rule (ids are the same in every Llama 4 vocabulary)
        var imageIds = batch.Images.Select(img => { var ids = new List<int>(); format.AppendImage(img.Rows, img.Cols, ids); return ids; }).ToList();
        var layouts = imageIds.Select(ids => Layout(ids, fold: true)).ToList();
        int S = settings.TileSize;

        if (outPath is not null)
        {
            var pixels = batch.ToFloat();
            var grid = batch.Images.SelectMany(i => new long[] { i.Rows, i.Cols }).ToArray();
            var tiles = batch.TilesPerImage.Select(t => (long)t).ToArray();
            OutputFile.Write(outPath, "--out", tmp => SafetensorsWriter.Write(tmp,
                [
                    ("pixel_values", DType.F32, [batch.TotalTiles, 3, S, S], MemoryMarshal.AsBytes(pixels.AsSpan()).ToArray()),
                    ("tile_grid", DType.I64, [grid.Length / 2, 2], MemoryMarshal.AsBytes(grid.AsSpan()).ToArray()),
                    ("tiles_per_image", DType.I64, [tiles.Length], MemoryMarshal.AsBytes(tiles.AsSpan()).ToArray()),
                ],
                new Dictionary<string, string> { ["image_token_layout"] = string.Concat(imageIds.Select(ids => Layout(ids, fold: false))), ["format"] = "pt" }));
        }
        if (a.Has("json"))
        {
            var doc = new
            {
                tile_size = S,
                patches_per_tile = settings.PatchesPerTile,
                total_tiles = batch.TotalTiles,
                pixel_values_shape = new[] { batch.TotalTiles, 3, S, S },
                images = batch.Images.Select((img, i) => new
                {
                    path = paths[i], width = decoded[i].Width, height = decoded[i].Height, rows = img.Rows, cols = img.Cols,
                    tiles = img.TileCount, image_tokens = format.ImageTokenCount(img.Rows, img.Cols), layout = layouts[i],
                    layout_text = Layout(imageIds[i], fold: false),
                }),
            };
            stdout.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        }
        else
        {
            for (int i = 0; i < paths.Count; i++)
            {
                var img = batch.Images[i];
                stdout.WriteLine($"{paths[i]}: {decoded[i].Width}x{decoded[i].Height} → grid {img.Rows}x{img.Cols}, {img.TileCount} tile{(img.TileCount == 1 ? "" : "s")}, {format.ImageTokenCount(img.Rows, img.Cols)} image tokens");
                stdout.WriteLine($"  {layouts[i]}");
            }
            stdout.WriteLine($"pixel_values [{batch.TotalTiles}, 3, {S}, {S}]{(outPath is null ? "" : $" → {outPath}")}");
        }
        return 0;
    }

    static readonly Dictionary<int, string> Names = new()
    {
        [Llama4Tokenizer.ImageStart] = "<|image_start|>", [Llama4Tokenizer.ImageEnd] = "<|image_end|>", [Llama4Tokenizer.Image] = "<|image|>",
        [Llama4Tokenizer.Patch] = "<|patch|>", [Llama4Tokenizer.TileXSeparator] = "<|tile_x_separator|>", [Llama4Tokenizer.TileYSeparator] = "<|tile_y_separator|>",
    };

    /// <summary>The ids as text (HF's expanded image text), with <paramref name="fold"/> runs of &lt;|patch|&gt; as &lt;|patch|&gt;×N.</summary>
    static string Layout(List<int> ids, bool fold)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < ids.Count;)
        {
            int j = i;
            while (j < ids.Count && ids[j] == ids[i]) j++;
            sb.Append(Names.TryGetValue(ids[i], out var n) ? n : $"<{ids[i]}>");
            if (fold && ids[i] == Llama4Tokenizer.Patch && j - i > 1) sb.Append('×').Append(j - i);
            else for (int k = i + 1; k < j; k++) sb.Append(Names.GetValueOrDefault(ids[i], $"<{ids[i]}>"));
            i = j;
        }
        return sb.ToString();
    }
}
