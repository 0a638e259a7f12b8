using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Tests.Text;
using Llama4Native.Text;
using Llama4Native.Vision;
using Microsoft.Extensions.AI;
using AI = Microsoft.Extensions.AI;

namespace Llama4Native.Tests.Generation;

/// <summary>The library entry point with a checkpoint laid out like a release: the tokenizer comes from
/// `original/tokenizer.model` without the host passing one.</summary>
[Category("Emulator")]
public class LibraryTests
{
    [Test]
    public async Task LoadFindsTheCheckpointsTokenizerAndAnswers()
    {
        var tokenizerFile = Path.Combine(TokenizerFixture.Dir, "tokenizer.model"); // skips, saying why, when absent
        string dir = CkptTestUtil.NewTempDir("lib");
        try
        {
            Synth.Write(Presets.ConfigJson("tiny-demo"), dir, new SynthOptions(Seed: CkptTestUtil.Seed("library")));
            Directory.CreateDirectory(Path.Combine(dir, "original"));
            File.Copy(tokenizerFile, Path.Combine(dir, "original", "tokenizer.model"));
            using var model = Llama4Model.Load(dir, new Llama4ModelOptions(Device: "emu", MaxContext: 256));
            var codec = (Llama4TextCodec)model.Codec;
            Assert.That(codec.Tokenizer.IsDemo, Is.False, "the checkpoint's tokenizer.model, not the demo vocabulary");

            var messages = new[] { new Message(MessageRole.System, "Be brief."), new Message(MessageRole.User, "Où est la gare ? 🚉") };
            var want = new ChatFormat(TokenizerFixture.Tokenizer).EncodeDialog([PromptMessage.System("Be brief."), PromptMessage.User("Où est la gare ? 🚉")]);
            Assert.That(codec.EncodeDialog(messages), Is.EqualTo(want));

            using var chat = model.CreateSession();
            var pieces = new List<GeneratedPiece>();
            await foreach (var p in chat.GenerateAsync(messages, new GenerationOptions { MaxNewTokens = 3, Temperature = 1, Seed = 5 }))
                pieces.Add(p);
            Assert.That(pieces, Has.Count.InRange(1, 3));
            Assert.That(chat.LastStats!.PromptTokens, Is.EqualTo(want.Length));
            Assert.That(string.Concat(pieces.Select(p => p.Text)),
                        Is.EqualTo(codec.Tokenizer.Decode(pieces.Select(p => p.TokenId).Where(t => !codec.Tokenizer.IsSpecial(t)).ToArray())));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public async Task ImagesGoThroughIChatClientAndTheNextTurnContinuesTheCache()
    {
        string dir = CkptTestUtil.NewTempDir("lib-img");
        try
        {
            Synth.Write(Presets.ConfigJson("tiny-demo"), dir, new SynthOptions(Seed: CkptTestUtil.Seed("library images")));
            var config = Llama4Native.Model.Llama4Config.Load(dir);
            using var model = Llama4Model.Load(dir, new Llama4ModelOptions(Device: "emu", MaxContext: 1024,
                                                   Codec: Llama4TextCodec.Create(Llama4Tokenizer.CreateDemo(), config)));
            var png = await File.ReadAllBytesAsync(Path.Combine(CkptTestUtil.Fixture("llama4-image-processor"), "wide_500x300.png"));
            using IChatClient client = model.AsChatClient();
            var history = new List<AI.ChatMessage>
            {
                new(AI.ChatRole.User, [new DataContent(png, "image/png"), new AI.TextContent("What is in this picture?")]),
            };
            var first = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 2 });
            var grid = Llama4ImageProcessor.FromConfig(config.Vision!).Process(ImageDecoder.Decode(png, "wide"));
            int imageTokens = new ChatFormat(Llama4Tokenizer.CreateDemo(), Llama4TextCodec.VisionSettings(config)).ImageTokenCount(grid.Rows, grid.Cols);
            Assert.That(first.Usage!.InputTokenCount, Is.GreaterThan(imageTokens), "the image's placeholders are in the prompt");

            // Next turn: the same history plus the reply and a question — only the new turn is fed, the image is not re-encoded.
            history.AddRange(first.Messages);
            history.Add(new AI.ChatMessage(AI.ChatRole.User, "And the colours?"));
            var second = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 2 });
            Assert.That(second.Usage!.InputTokenCount, Is.LessThan(20), "the second turn re-sent the history (and the image)");
        }
        finally { Directory.Delete(dir, true); }
    }
}
