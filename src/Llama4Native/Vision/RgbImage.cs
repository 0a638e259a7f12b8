namespace Llama4Native.Vision;

/// <summary>
/// An 8-bit RGB image: <c>Pixels</c> [Height, Width, 3] interleaved, row-major, top row first — the
/// layout of PIL's <c>np.asarray(image.convert("RGB"))</c>.
/// </summary>
internal sealed record RgbImage
{
    public int Width { get; }
    public int Height { get; }
    /// <summary>[Height, Width, 3] bytes.</summary>
    public byte[] Pixels { get; }

    public RgbImage(int width, int height, byte[] pixels)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"image {width}x{height}: both sides must be positive");
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.LongLength != (long)width * height * 3)
            throw new ArgumentException($"{width}x{height} RGB needs {(long)width * height * 3} bytes; got {pixels.LongLength}", nameof(pixels));
        Width = width; Height = height; Pixels = pixels;
    }
}
