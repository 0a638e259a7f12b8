namespace Llama4Native.Model;

/// <summary>
/// The processed image tiles of one prompt, every image in prompt order: <see cref="Pixels"/> [Count, C, S, S]
/// (the image processor's bf16 values, held as floats: exact). Each tile becomes
/// <see cref="VisionConfig.TokensPerTile"/> rows that replace the prompt's &lt;|patch|&gt; tokens in order.
/// </summary>
internal sealed class ImageTiles
{
    public float[] Pixels { get; }
    public int Count { get; }

    public ImageTiles(float[] pixels, int count)
    {
        if (count < 1) throw new ArgumentException($"an image needs at least one tile, got {count}");
        if (pixels.Length == 0 || pixels.Length % count != 0)
            throw new ArgumentException($"{pixels.Length} pixel values do not split into {count} tiles");
        Pixels = pixels; Count = count;
    }

    /// <summary>From bf16 bits [count, C, S, S], as the image processor emits them.</summary>
    public static ImageTiles FromBf16(ReadOnlySpan<ushort> bits, int count) => new(Reference.BF16.ToFloatArray(bits), count);

    /// <summary>Checks the tiles' shape against the vision config: [Count, C, S, S].</summary>
    public void Check(VisionConfig c)
    {
        long per = (long)c.NumChannels * c.ImageSize * c.ImageSize;
        if (Pixels.Length != Count * per)
            throw new ArgumentException($"{Count} tiles of {Pixels.Length / Count} values each; the vision tower takes [{c.NumChannels}, {c.ImageSize}, {c.ImageSize}] = {per} per tile");
    }
}

/// <summary>The number of &lt;|patch|&gt; tokens in a prompt differs from the image rows given for it.</summary>
public sealed class ImageTokenMismatchException : ArgumentException
{
    internal ImageTokenMismatchException(string message, int patchTokens, int imageRows) : base(message)
    {
        PatchTokens = patchTokens; ImageRows = imageRows;
    }
    /// <summary>The &lt;|patch|&gt; tokens in the prompt.</summary>
    public int PatchTokens { get; }
    /// <summary>The image embedding rows the images produced.</summary>
    public int ImageRows { get; }
}

/// <summary>Early fusion bookkeeping on the host: where the &lt;|patch|&gt; tokens are, and whether the counts agree.</summary>
internal static class EarlyFusion
{
    /// <summary>Positions (in <paramref name="ids"/>) of the tokens equal to <paramref name="imageToken"/>, in order.</summary>
    public static int[] PatchPositions(ReadOnlySpan<int> ids, int imageToken)
    {
        var list = new List<int>();
        for (int i = 0; i < ids.Length; i++) if (ids[i] == imageToken) list.Add(i);
        return [.. list];
    }

    public static int CountPatches(ReadOnlySpan<int> ids, int imageToken)
    {
        int n = 0;
        foreach (int id in ids) if (id == imageToken) n++;
        return n;
    }

    /// <summary>Throws unless the prompt's &lt;|patch|&gt; count equals tiles × tokens per tile (null tiles: no patch tokens allowed).</summary>
    public static void CheckPrompt(ReadOnlySpan<int> prompt, Llama4Config config, int? tiles)
    {
        int patches = config.IsMultimodal ? CountPatches(prompt, config.ImageTokenIndex) : 0;
        if (tiles is null)
        {
            if (patches > 0)
                throw new ImageTokenMismatchException(
                    $"the prompt has {patches} image tokens (<|patch|> = {config.ImageTokenIndex}) but no image tiles (pixel values) were given", patches, 0);
            return;
        }
        var vc = config.Vision ?? throw new InvalidOperationException($"image tiles were given but the model ({config.Architecture}) has no vision tower");
        int rows = tiles.Value * vc.TokensPerTile;
        if (patches != rows)
            throw new ImageTokenMismatchException(
                $"the prompt has {patches} <|patch|> tokens but the images give {tiles} tiles × {vc.TokensPerTile} tokens per tile = {rows} rows", patches, rows);
    }
}
