using Llama4Native.Vision;

namespace Llama4Native.Text;

internal enum PromptRole { System, User, Assistant, Tool }

/// <summary>One item of a message's content: text, or an image given by its tile grid.</summary>
internal abstract record PromptContent;
internal sealed record PromptText(string Text) : PromptContent;
/// <summary>An image split into <paramref name="Rows"/>×<paramref name="Cols"/> tiles (plus a global tile when more than one).</summary>
internal sealed record PromptImage(int Rows, int Cols) : PromptContent
{
    /// <summary>The tile grid the Llama 4 image processor picks for an image of this size (FORMAT.md section 5).</summary>
    public static PromptImage FromSize(int width, int height, VisionTokenSettings settings)
    {
        var (r, c) = TileGrid.Choose(width, height, settings.TileSize, settings.MaxTiles);
        return new PromptImage(r, c);
    }
}

/// <summary>
/// A chat message. <paramref name="EndOfMessage"/>: an assistant message that stopped with &lt;|eom|&gt; (tool call
/// pending); <paramref name="PythonCall"/>: a code-interpreter call appended as &lt;|python_start|&gt;code&lt;|python_end|&gt;.
/// </summary>
internal sealed record PromptMessage(PromptRole Role, IReadOnlyList<PromptContent> Content, bool EndOfMessage = false, string? PythonCall = null)
{
    public PromptMessage(PromptRole role, string text) : this(role, [new PromptText(text)]) { }
    public static PromptMessage System(string text) => new(PromptRole.System, text);
    public static PromptMessage User(string text) => new(PromptRole.User, text);
    public static PromptMessage Assistant(string text) => new(PromptRole.Assistant, text);
    public static PromptMessage Tool(string text) => new(PromptRole.Tool, text);
}

/// <summary>
/// Vision values that decide the image token layout, taken from the checkpoint's vision config (not hard-coded):
/// patches per tile = (tile/patch)² · pixelShuffleRatio².
/// </summary>
internal sealed record VisionTokenSettings(int TileSize = 336, int PatchSize = 14, double PixelShuffleRatio = 0.5, int MaxTiles = 16)
{
    public int PatchesPerTile
    {
        get
        {
            if (TileSize <= 0 || PatchSize <= 0 || TileSize % PatchSize != 0) throw new ArgumentException($"tile size {TileSize} is not a multiple of patch size {PatchSize}");
            int side = TileSize / PatchSize;
            double n = side * side * PixelShuffleRatio * PixelShuffleRatio;
            int r = (int)Math.Round(n);
            if (r <= 0 || Math.Abs(n - r) > 1e-9) throw new ArgumentException($"(tile/patch)² · ratio² = {n} is not a positive integer");
            return r;
        }
    }
}

/// <summary>
/// The Llama 4 instruct chat layout (FORMAT.md section 4), built piecewise like the reference: special ids are
/// inserted directly and message text is encoded with specials NOT allowed (no prompt injection through text).
/// <code>&lt;|begin_of_text|&gt; (&lt;|header_start|&gt;role&lt;|header_end|&gt;\n\n content &lt;|eot|&gt;)* &lt;|header_start|&gt;assistant&lt;|header_end|&gt;\n\n</code>
/// </summary>
internal sealed class ChatFormat(Llama4Tokenizer tokenizer, VisionTokenSettings? vision = null)
{
    public Llama4Tokenizer Tokenizer { get; } = tokenizer;
    public VisionTokenSettings Vision { get; } = vision ?? new VisionTokenSettings();
    /// <summary>End tool results with &lt;|eot|&gt; like the HF template instead of the reference's &lt;|eom|&gt;.</summary>
    public bool ToolResultEndsWithEot { get; init; }

    public static string RoleName(PromptRole role) => role switch
    {
        PromptRole.System => "system",
        PromptRole.User => "user",
        PromptRole.Assistant => "assistant",
        PromptRole.Tool => "ipython",
        _ => throw new ArgumentOutOfRangeException(nameof(role)),
    };

    /// <summary>BOS, every message, and (by default) the open assistant header for generation.</summary>
    public int[] EncodeDialog(IEnumerable<PromptMessage> messages, bool addGenerationPrompt = true)
    {
        var ids = new List<int>(256) { Llama4Tokenizer.BeginOfText };
        foreach (var m in messages) EncodeMessage(m, ids);
        if (addGenerationPrompt) EncodeHeader(PromptRole.Assistant, ids);
        return ids.ToArray();
    }

    public void EncodeHeader(PromptRole role, List<int> ids)
    {
        ids.Add(Llama4Tokenizer.HeaderStart);
        Tokenizer.EncodeTo(RoleName(role), allowSpecial: false, ids);
        ids.Add(Llama4Tokenizer.HeaderEnd);
        Tokenizer.EncodeTo("\n\n", allowSpecial: false, ids);
    }

    public void EncodeMessage(PromptMessage message, List<int> ids)
    {
        EncodeHeader(message.Role, ids);
        foreach (var item in message.Content)
        {
            switch (item)
            {
                case PromptText t: Tokenizer.EncodeTo(t.Text, allowSpecial: false, ids); break;
                case PromptImage img: AppendImage(img.Rows, img.Cols, ids); break;
                default: throw new ArgumentException($"unknown content item {item.GetType().Name}");
            }
        }
        if (message.PythonCall is { } code)
        {
            ids.Add(Llama4Tokenizer.PythonStart);
            Tokenizer.EncodeTo(code, allowSpecial: false, ids);
            ids.Add(Llama4Tokenizer.PythonEnd);
        }
        bool eom = message.Role switch
        {
            PromptRole.Assistant => message.EndOfMessage || message.PythonCall is not null,
            PromptRole.Tool => !ToolResultEndsWithEot,
            _ => false,
        };
        ids.Add(eom ? Llama4Tokenizer.EndOfMessage : Llama4Tokenizer.EndOfTurn);
    }

    /// <summary>
    /// One image block: &lt;|image_start|&gt;, for R·C &gt; 1 each row's tiles (patches, x-separators between tiles,
    /// a y-separator after the row), then &lt;|image|&gt; + the global/only tile's patches, &lt;|image_end|&gt;.
    /// </summary>
    public void AppendImage(int rows, int cols, List<int> ids)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentOutOfRangeException(nameof(rows), $"tile grid {rows}x{cols}");
        int n = Vision.PatchesPerTile;
        ids.Add(Llama4Tokenizer.ImageStart);
        if (rows * cols > 1)
        {
            for (int r = 0; r < rows; r++)
            {
                for (int c = 0; c < cols; c++)
                {
                    for (int k = 0; k < n; k++) ids.Add(Llama4Tokenizer.Patch);
                    if (c < cols - 1) ids.Add(Llama4Tokenizer.TileXSeparator);
                }
                ids.Add(Llama4Tokenizer.TileYSeparator);
            }
        }
        ids.Add(Llama4Tokenizer.Image);
        for (int k = 0; k < n; k++) ids.Add(Llama4Tokenizer.Patch);
        ids.Add(Llama4Tokenizer.ImageEnd);
    }

    /// <summary>Token count of one image block.</summary>
    public int ImageTokenCount(int rows, int cols) =>
        rows * cols > 1 ? Vision.PatchesPerTile * (rows * cols + 1) + rows * cols + 3 : Vision.PatchesPerTile + 3;

    /// <summary>The tile grid (rows, cols); the rule lives in <see cref="TileGrid.Choose"/>.</summary>
    public static (int Rows, int Cols) ChooseTileGrid(int width, int height, int tileSize = 336, int maxTiles = 16) =>
        TileGrid.Choose(width, height, tileSize, maxTiles);
}
