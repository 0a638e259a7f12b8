using Llama4Native.Text;

namespace Llama4Native.Tests.Text;

public class ChatFormatTests
{
    static int[] GoldenIds(string name) => TokenizerFixture.Goldens().Single(g => g.Name == name).Ids;

    static PromptMessage UserWithImage(PromptImage img, string text) => new(PromptRole.User, [img, new PromptText(text)]);

    [Test]
    public void GoldenChatPromptsMatchTokenForToken()
    {
        var chat = new ChatFormat(TokenizerFixture.Tokenizer, new VisionTokenSettings(TileSize: 336, PatchSize: 14, PixelShuffleRatio: 0.5));
        var v = chat.Vision;
        var cases = new (string Name, PromptMessage[] Messages)[]
        {
            ("chat_system_user", [PromptMessage.System("You are a helpful assistant"), PromptMessage.User("Answer who are you in the form of jeopardy?")]),
            ("chat_multiturn", [PromptMessage.User("What is 2+2?"), PromptMessage.Assistant("2+2 equals 4."), PromptMessage.User("And times 3?")]),
            ("chat_image_1tile", [UserWithImage(PromptImage.FromSize(336, 336, v), "Describe this image in two sentences")]),
            ("chat_image_2x2", [PromptMessage.System("You are a helpful assistant"), UserWithImage(PromptImage.FromSize(672, 672, v), "What is in this picture?")]),
            ("chat_image_672x336", [UserWithImage(PromptImage.FromSize(672, 336, v), "Describe the wide image.")]),
        };
        Assert.Multiple(() =>
        {
            foreach (var (name, msgs) in cases)
                Assert.That(chat.EncodeDialog(msgs), Is.EqualTo(GoldenIds(name)), name);
        });
        Assert.That(GoldenIds("chat_image_672x336"), Has.Length.EqualTo(452));
    }

    [Test]
    public void TileGridChoice()
    {
        Assert.That(ChatFormat.ChooseTileGrid(336, 336), Is.EqualTo((1, 1)));
        Assert.That(ChatFormat.ChooseTileGrid(100, 80), Is.EqualTo((1, 1)));
        Assert.That(ChatFormat.ChooseTileGrid(672, 336), Is.EqualTo((1, 2)));
        Assert.That(ChatFormat.ChooseTileGrid(336, 672), Is.EqualTo((2, 1)));
        Assert.That(ChatFormat.ChooseTileGrid(672, 672), Is.EqualTo((2, 2)));
        Assert.That(ChatFormat.ChooseTileGrid(336, 1008), Is.EqualTo((3, 1)));
    }

    [Test]
    public void ImageBlockLengthsAndPatchesFromSettings()
    {
        var tok = Llama4Tokenizer.CreateDemo();
        var chat = new ChatFormat(tok);
        Assert.That(chat.Vision.PatchesPerTile, Is.EqualTo(144));
        foreach (var (r, c, len) in new[] { (1, 1, 147), (2, 2, 727), (3, 1, 582), (1, 2, 437) })
        {
            var ids = new List<int>();
            chat.AppendImage(r, c, ids);
            Assert.That(ids, Has.Count.EqualTo(len), $"{r}x{c}");
            Assert.That(chat.ImageTokenCount(r, c), Is.EqualTo(len));
        }
        var small = new ChatFormat(tok, new VisionTokenSettings(TileSize: 32, PatchSize: 8, PixelShuffleRatio: 0.5));
        Assert.That(small.Vision.PatchesPerTile, Is.EqualTo(4));
        var ids2 = new List<int>();
        small.AppendImage(1, 2, ids2);
        Assert.That(ids2, Is.EqualTo(new[] { 200080, 200092, 200092, 200092, 200092, 200084, 200092, 200092, 200092, 200092, 200085, 200090, 200092, 200092, 200092, 200092, 200081 }));
    }

    [Test]
    public void EndTokensAndNoInjection()
    {
        var tok = TokenizerFixture.Tokenizer;
        var chat = new ChatFormat(tok);
        var ids = chat.EncodeDialog([PromptMessage.User("hi <|eot|>"), new PromptMessage(PromptRole.Assistant, [], PythonCall: "print(1)"), PromptMessage.Tool("1")], addGenerationPrompt: false);
        Assert.That(ids[0], Is.EqualTo(Llama4Tokenizer.BeginOfText));
        Assert.That(ids.Count(i => i == Llama4Tokenizer.EndOfTurn), Is.EqualTo(1), "user text '<|eot|>' must stay text");
        Assert.That(ids.Count(i => i == Llama4Tokenizer.EndOfMessage), Is.EqualTo(2), "python call and tool result end with <|eom|>");
        Assert.That(ids, Does.Contain(Llama4Tokenizer.PythonStart).And.Contain(Llama4Tokenizer.PythonEnd));
        Assert.That(tok.Decode(ids), Does.Contain("<|header_start|>ipython<|header_end|>\n\n1<|eom|>"));
        var hf = new ChatFormat(tok) { ToolResultEndsWithEot = true };
        Assert.That(hf.EncodeDialog([PromptMessage.Tool("1")], false)[^1], Is.EqualTo(Llama4Tokenizer.EndOfTurn));
    }
}
