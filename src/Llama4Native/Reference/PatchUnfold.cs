namespace Llama4Native.Reference;

/// <summary>
/// Reference for kernels/patch_unfold.cu: nn.Unfold(kernel P, stride P) + permute(0, 2, 1) as in HF's
/// Llama4UnfoldConvolution. <c>cols[(t·Gh + py)·Gw + px, (c·P + ky)·P + kx] = pixels[t, c, py·P + ky, px·P + kx]</c>,
/// Gh = H / P, Gw = W / P (floor). A copy: exact in any dtype (the caller rounds to bf16 if the output is bf16).
/// </summary>
internal static class PatchUnfold
{
    /// <param name="pixels">[tiles, C, H, W]</param><param name="cols">[tiles·(H/P)·(W/P), C·P·P]</param>
    public static void Forward(ReadOnlySpan<float> pixels, Span<float> cols, int tiles, int c, int h, int w, int patch)
    {
        Checks.Positive(tiles, nameof(tiles)); Checks.Positive(c, nameof(c)); Checks.Positive(h, nameof(h)); Checks.Positive(w, nameof(w));
        Checks.Positive(patch, nameof(patch));
        if (patch > h || patch > w) throw new ArgumentException($"patch {patch} exceeds the {h}×{w} image.", nameof(patch));
        int gh = h / patch, gw = w / patch, k = c * patch * patch;
        Checks.Length(pixels, (long)tiles * c * h * w, nameof(pixels));
        Checks.Length(cols, (long)tiles * gh * gw * k, nameof(cols));
        for (int t = 0; t < tiles; t++)
            for (int py = 0; py < gh; py++)
                for (int px = 0; px < gw; px++)
                {
                    int row = (t * gh + py) * gw + px;
                    for (int ch = 0; ch < c; ch++)
                        for (int ky = 0; ky < patch; ky++)
                            for (int kx = 0; kx < patch; kx++)
                                cols[row * k + (ch * patch + ky) * patch + kx] =
                                    pixels[((t * c + ch) * h + py * patch + ky) * w + px * patch + kx];
                }
    }
}
