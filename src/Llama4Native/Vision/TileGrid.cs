namespace Llama4Native.Vision;

/// <summary>
/// The Llama 4 tile-grid rule (HF <c>Llama4ImageProcessorFast</c>: <c>find_supported_resolutions</c>,
/// <c>get_best_fit</c>, <c>get_max_res_without_distortion</c>), the one place it lives: the processor and
/// <see cref="Text.PromptImage.FromSize"/> both ask here, so the pixels and the prompt layout cannot disagree.
/// </summary>
internal static class TileGrid
{
    /// <summary>
    /// Every (rows, cols) with rows·cols ≤ maxTiles, in HF's order: tile counts from maxTiles down to 1, and
    /// within that the factor pairs grouped by the first occurrence of their aspect ratio rows/cols. The order
    /// matters: ties on scale and area go to the first candidate (torch.argmin takes the first minimum).
    /// </summary>
    public static IReadOnlyList<(int Rows, int Cols)> SupportedGrids(int maxTiles)
    {
        if (maxTiles <= 0) throw new ArgumentOutOfRangeException(nameof(maxTiles), $"max tiles {maxTiles} must be positive");
        var byRatio = new List<(double Ratio, List<(int, int)> Grids)>();
        for (int n = maxTiles; n >= 1; n--)
            for (int f = 1; f <= n; f++)
            {
                if (n % f != 0) continue;
                double ratio = (double)f / (n / f);
                int k = byRatio.FindIndex(e => e.Ratio == ratio);
                if (k < 0) byRatio.Add((ratio, [(f, n / f)]));
                else byRatio[k].Grids.Add((f, n / f));
            }
        return byRatio.SelectMany(e => e.Grids).ToArray();
    }

    /// <summary>
    /// The tile grid for a <paramref name="width"/>×<paramref name="height"/> image: per canvas the scale
    /// min(C·S/w, R·S/h) in float32 (torch divides an int64 tensor by an int: float32); the smallest scale ≥ 1 if
    /// any, else the largest; among equal scales the smallest canvas area, first in <see cref="SupportedGrids"/>.
    /// </summary>
    public static (int Rows, int Cols) Choose(int width, int height, int tileSize = 336, int maxTiles = 16)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"image {width}x{height}: both sides must be positive");
        if (tileSize <= 0) throw new ArgumentOutOfRangeException(nameof(tileSize), $"tile size {tileSize} must be positive");
        var grids = SupportedGrids(maxTiles);
        var scales = new float[grids.Count];
        bool anyUp = false;
        for (int i = 0; i < grids.Count; i++)
        {
            float sw = (float)(grids[i].Cols * tileSize) / width, sh = (float)(grids[i].Rows * tileSize) / height;
            scales[i] = sh > sw ? sw : sh;
            anyUp |= scales[i] >= 1f;
        }
        float best = anyUp ? float.MaxValue : float.MinValue;
        foreach (var s in scales)
            if (anyUp ? s >= 1f && s < best : s > best) best = s;
        int pick = -1;
        long area = long.MaxValue;
        for (int i = 0; i < grids.Count; i++)
        {
            if (scales[i] != best) continue;
            long a = (long)grids[i].Rows * grids[i].Cols;
            if (a < area) { area = a; pick = i; }
        }
        return grids[pick];
    }

    /// <summary>
    /// The size (height, width) the image is resized to before zero padding to the canvas R·S × C·S: keep the
    /// aspect ratio, fit inside the canvas, and never upscale a side beyond max(side, S) (HF's
    /// <c>max_upscaling_size</c> with <c>resize_to_max_canvas</c> false). Python floats are doubles; so are ours.
    /// </summary>
    public static (int Height, int Width) ResizedSize(int width, int height, int rows, int cols, int tileSize)
    {
        int canvasH = rows * tileSize, canvasW = cols * tileSize;
        int targetH = Math.Min(Math.Max(height, tileSize), canvasH);
        int targetW = Math.Min(Math.Max(width, tileSize), canvasW);
        double scaleW = (double)targetW / width, scaleH = (double)targetH / height;
        int newH, newW;
        if (scaleW < scaleH)
        {
            newW = targetW;
            newH = (int)Math.Min(Math.Floor(height * scaleW), targetH);
        }
        else
        {
            newH = targetH;
            newW = (int)Math.Min(Math.Floor(width * scaleH), targetW);
        }
        return (Math.Max(newH, 1), Math.Max(newW, 1));
    }
}
