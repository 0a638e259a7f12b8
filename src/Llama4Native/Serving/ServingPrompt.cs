using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Text;
using Llama4Native.Vision;

namespace Llama4Native.Serving;

/// <summary>A codec that can also encode plain text (no chat format) for completion requests.</summary>
internal interface IPlainTextEncoder
{
    /// <summary>Ids of <paramref name="text"/>, after begin-of-text when <paramref name="beginOfText"/>; specials in the text are not special.</summary>
    IReadOnlyList<int> EncodePlain(string text, bool beginOfText);
}

/// <summary>Prompts for serving: a dialog (with its images decoded and tiled) or plain text, as ids.</summary>
internal static class ServingPrompt
{
    /// <summary>The ids of <paramref name="messages"/> ending with the assistant header, and the tiles of their images
    /// in order. Images are decoded here (a broken one is an <see cref="ImageException"/> naming it) before anything
    /// is queued.</summary>
    public static (IReadOnlyList<int> Ids, ImageTiles? Tiles) Dialog(ITextCodec codec, Llama4ImageProcessor? processor, IReadOnlyList<Message> messages)
    {
        var inputs = messages.SelectMany(m => m.Images ?? []).ToList();
        if (inputs.Count == 0) return (codec.EncodeDialog(messages), null);
        if (processor is null)
            throw new NotSupportedException($"the messages hold {inputs.Count} image(s) but this model has no vision tower (a text-only checkpoint)");
        var decoded = inputs.Select((x, i) => ImageDecoder.Decode(x.Data.ToArray(), $"{x.Name} (image #{i + 1})")).ToList();
        var batch = processor.ProcessBatch(decoded);
        var ids = codec.EncodeDialog(messages, imageGrids: batch.Images.Select(p => (p.Rows, p.Cols)).ToList());
        return (ids, ImageTiles.FromBf16(batch.PixelValues, batch.TotalTiles));
    }

    /// <summary>Plain text as ids: the codec's own <see cref="IPlainTextEncoder"/>, or the Llama 4 tokenizer.</summary>
    public static IReadOnlyList<int> Plain(ITextCodec codec, string text, bool beginOfText = true) => codec switch
    {
        IPlainTextEncoder e => e.EncodePlain(text, beginOfText),
        Llama4TextCodec l => beginOfText ? [Llama4Tokenizer.BeginOfText, .. l.Tokenizer.Encode(text)] : l.Tokenizer.Encode(text),
        _ => throw new NotSupportedException($"the text codec {codec.GetType().Name} cannot encode plain text (it implements no {nameof(IPlainTextEncoder)})"),
    };
}
