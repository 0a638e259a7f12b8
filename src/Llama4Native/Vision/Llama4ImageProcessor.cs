using Llama4Native.Model;
using Llama4Native.Reference;
using Llama4Native.Text;

namespace Llama4Native.Vision;

/// <summary>
/// One processed image. <see cref="PixelValues"/> is bf16 bits [TileCount, 3, S, S]: the Rows×Cols tiles
/// row-major, then the global tile (the whole image squashed to S×S) when Rows·Cols &gt; 1.
/// </summary>
internal sealed record ProcessedImage(int Rows, int Cols, int TileSize, ushort[] PixelValues,
                                    int SourceWidth, int SourceHeight, int ResizedWidth, int ResizedHeight)
{
    public bool HasGlobalTile => Rows * Cols > 1;
    public int TileCount => HasGlobalTile ? Rows * Cols + 1 : 1;
    /// <summary>The prompt item for this image; ChatFormat expands it into the placeholder tokens.</summary>
    public PromptImage ToContent() => new(Rows, Cols);
    /// <summary>[TileCount, 3, S, S] as fp32 (exact widening).</summary>
    public float[] ToFloat() => BF16.ToFloatArray(PixelValues);
}

/// <summary>
/// Several images: <see cref="PixelValues"/> bf16 [Σ tiles, 3, S, S], each image's tiles in order
/// (HF concatenates the per-image tensors along dim 0 in input order).
/// </summary>
internal sealed record ProcessedBatch(IReadOnlyList<ProcessedImage> Images, ushort[] PixelValues, int[] TilesPerImage, int TileSize)
{
    public int TotalTiles => TilesPerImage.Sum();
    public float[] ToFloat() => BF16.ToFloatArray(PixelValues);
}

/// <summary>
/// Llama 4 image preprocessing, bit-identical to HF <c>Llama4ImageProcessorFast</c> (transformers
/// models/llama4/image_processing_llama4_fast.py) at <c>resize_to_max_canvas=False</c>, mean = std = 0.5, rescale
/// 1/255, bilinear with antialias:
/// <list type="number">
/// <item>grid and canvas from <see cref="TileGrid.Choose"/>, resize size from <see cref="TileGrid.ResizedSize"/>;</item>
/// <item>resize with <see cref="AntialiasResize"/>, bit-identical to torchvision's uint8 resize on CPU (float32 path by default, as in the HF fixture);</item>
/// <item>zero-pad right/bottom to the canvas, still uint8 (<c>pad_to_best_fit</c>, fill 0);</item>
/// <item>rescale + normalise in bf16 (the Llama 4 override of <c>rescale_and_normalize</c>):
///   <c>x.to(bf16) * (1/255)</c> (torch: float32 product of the bf16 value and float32(1/255), rounded to bf16),
///   then torchvision <c>normalize</c>: <c>sub(mean)</c> and <c>div_(std)</c> with mean/std as bf16 tensors, each op
///   rounded to bf16. A function of the uint8 value alone, so it is a 256-entry table;</item>
/// <item>split into tiles row-major ([C, R·S, C·S] → [R·C, C, S, S]); when R·C &gt; 1 append the global tile:
///   the ORIGINAL image resized to S×S (aspect not kept), normalised the same way.</item>
/// </list>
/// Host code: separable passes, one table lookup per output value.
/// </summary>
internal sealed class Llama4ImageProcessor
{
    public const float RescaleFactor = (float)(1.0 / 255.0);   // torch reads the Python float as float32
    public const float Mean = 0.5f, Std = 0.5f;

    public VisionTokenSettings Settings { get; }
    /// <summary>Which torch CPU resize path to reproduce (the HF fixture used <see cref="ResizeKernel.TorchFloat32"/>).</summary>
    public ResizeKernel Kernel { get; }
    public int TileSize => Settings.TileSize;
    public int MaxTiles => Settings.MaxTiles;

    /// <summary>uint8 value → normalised bf16 bits.</summary>
    static readonly ushort[] Lut = BuildLut();

    public Llama4ImageProcessor(VisionTokenSettings? settings = null, ResizeKernel kernel = ResizeKernel.TorchFloat32)
    {
        Settings = settings ?? new VisionTokenSettings();
        Kernel = kernel;
        if (Settings.TileSize <= 0) throw new ArgumentOutOfRangeException(nameof(settings), $"tile size {Settings.TileSize} must be positive");
        if (Settings.MaxTiles <= 0) throw new ArgumentOutOfRangeException(nameof(settings), $"max tiles {Settings.MaxTiles} must be positive");
    }

    /// <summary>From the checkpoint's vision config (tile = image_size, patch size, pixel shuffle ratio); max tiles
    /// is the processor's <c>max_patches</c> (preprocessor_config.json, 16 for both released models).</summary>
    public static Llama4ImageProcessor FromConfig(VisionConfig vision, int maxTiles = 16, ResizeKernel kernel = ResizeKernel.TorchFloat32) =>
        new(new VisionTokenSettings(vision.ImageSize, vision.PatchSize, vision.PixelShuffleRatio, maxTiles), kernel);

    static ushort[] BuildLut()
    {
        var lut = new ushort[256];
        for (int v = 0; v < 256; v++)
        {
            float x = BF16.Round((float)v * RescaleFactor);   // images.to(bf16) * rescale_factor (v is exact in bf16)
            x = BF16.Round(x - BF16.Round(Mean));             // .sub(mean) with mean as a bf16 tensor
            lut[v] = BF16.FromFloat(x / BF16.Round(Std));     // .div_(std) with std as a bf16 tensor
        }
        return lut;
    }

    /// <summary>The normalised bf16 bits of a uint8 channel value (exposed for tests).</summary>
    public static ushort Normalize(byte value) => Lut[value];

    public ProcessedImage Process(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        int S = TileSize;
        var (rows, cols) = TileGrid.Choose(image.Width, image.Height, S, MaxTiles);
        var (rh, rw) = TileGrid.ResizedSize(image.Width, image.Height, rows, cols, S);
        byte[] resized = AntialiasResize.Resize(image.Pixels, image.Width, image.Height, rw, rh, Kernel);
        int grid = rows * cols;
        int tiles = grid > 1 ? grid + 1 : 1;
        long tileLen = 3L * S * S;
        var output = new ushort[tiles * tileLen];
        Parallel.For(0, grid, t =>
        {
            int r = t / cols, c = t % cols;
            WriteTile(resized, rw, rh, r * S, c * S, S, output.AsSpan((int)(t * tileLen), (int)tileLen));
        });
        if (grid > 1)
        {
            byte[] global = AntialiasResize.Resize(image.Pixels, image.Width, image.Height, S, S, Kernel);
            WriteTile(global, S, S, 0, 0, S, output.AsSpan((int)(grid * tileLen), (int)tileLen));
        }
        return new ProcessedImage(rows, cols, S, output, image.Width, image.Height, rw, rh);
    }

    public ProcessedImage Process(string path, ImageDecodeOptions? options = null) => Process(ImageDecoder.Decode(path, options));

    /// <summary>Processes several images; tiles are concatenated in input order.</summary>
    public ProcessedBatch ProcessBatch(IReadOnlyList<RgbImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        var done = new ProcessedImage[images.Count];
        for (int i = 0; i < images.Count; i++) done[i] = Process(images[i]);
        var counts = done.Select(p => p.TileCount).ToArray();
        var all = new ushort[done.Sum(p => (long)p.PixelValues.Length)];
        long at = 0;
        foreach (var p in done) { p.PixelValues.CopyTo(all, at); at += p.PixelValues.Length; }
        return new ProcessedBatch(done, all, counts, TileSize);
    }

    /// <summary>
    /// One tile [3, S, S] from the zero-padded canvas: canvas pixel (y0 + y, x0 + x) of the HWC image, or the
    /// padding value 0 outside the image (padding happens before normalisation, so it becomes Lut[0] = -1).
    /// </summary>
    static void WriteTile(byte[] img, int w, int h, int y0, int x0, int S, Span<ushort> dst)
    {
        ushort pad = Lut[0];
        int plane = S * S;
        int xe = Math.Clamp(w - x0, 0, S);
        for (int y = 0; y < S; y++)
        {
            int sy = y0 + y;
            var d0 = dst.Slice(y * S, S);
            var d1 = dst.Slice(plane + y * S, S);
            var d2 = dst.Slice(2 * plane + y * S, S);
            if (sy >= h) { d0.Fill(pad); d1.Fill(pad); d2.Fill(pad); continue; }
            var src = img.AsSpan((sy * w + x0) * 3, xe * 3);
            for (int x = 0; x < xe; x++)
            {
                d0[x] = Lut[src[3 * x]];
                d1[x] = Lut[src[3 * x + 1]];
                d2[x] = Lut[src[3 * x + 2]];
            }
            if (xe < S) { d0[xe..].Fill(pad); d1[xe..].Fill(pad); d2[xe..].Fill(pad); }
        }
    }
}
