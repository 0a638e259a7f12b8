// A host of the Llama4Native package: loads a checkpoint, generates a few tokens through a ChatSession and the
// same reply through Microsoft.Extensions.AI's IChatClient, and prints both.
//
//   dotnet run -- MODEL_DIR [--device auto|emu|cuda|cuda:N] [--tokens N] [--prompt TEXT] [--byte-codec]
//
// --byte-codec: bytes as token ids (see ByteCodec below), for the tokenizer-less test checkpoints such as
// tests/fixtures/tiny-scout/model. A real checkpoint brings its own tokenizer and needs no codec.
using System.Text;
using Llama4Native;
using Llama4Native.Generation;
using Microsoft.Extensions.AI;

string? modelDir = null, device = "auto", prompt = "Why is the sky blue?";
int tokens = 8;
bool byteCodec = false;
for (int i = 0; i < args.Length; i++)
{
    string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--device": device = Value(); break;
        case "--tokens": tokens = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--prompt": prompt = Value(); break;
        case "--byte-codec": byteCodec = true; break;
        default:
            if (args[i].StartsWith('-') || modelDir is not null) { Console.Error.WriteLine($"unknown argument {args[i]}"); return 2; }
            modelDir = args[i]; break;
    }
}
if (modelDir is null) { Console.Error.WriteLine("usage: Llama4Native.Sample MODEL_DIR [--device D] [--tokens N] [--prompt TEXT] [--byte-codec]"); return 2; }

var options = new Llama4ModelOptions(Device: device, MaxContext: 512, Codec: byteCodec ? new ByteCodec() : null);
using var model = Llama4Model.Load(modelDir, options);
Console.WriteLine($"device: {model.DeviceName}");

// 1. The library's own API: a session streams pieces (text + token id). Greedy, so both paths agree.
var generation = new GenerationOptions { MaxNewTokens = tokens, Temperature = 0 };
var ids = new List<int>();
var text = new StringBuilder();
using (var session = model.CreateSession())
{
    await foreach (var piece in session.GenerateAsync([new Message(MessageRole.User, prompt)], generation))
    {
        ids.Add(piece.TokenId);
        text.Append(piece.Text);
    }
    Console.WriteLine($"session: {ids.Count} tokens: {string.Join(' ', ids)}");
    Console.WriteLine($"session stats: {session.LastStats}");
}

// 2. Microsoft.Extensions.AI: the same model as an IChatClient.
using IChatClient client = model.AsChatClient();
var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, prompt)],
                                             new ChatOptions { MaxOutputTokens = tokens, Temperature = 0 });
Console.WriteLine($"chat client: {response.Usage?.OutputTokenCount} tokens, finish {response.FinishReason}, " +
                  $"same text as the session: {(response.Text == text.ToString() ? "yes" : "no")}");
Console.WriteLine($"reply: {response.Text}");
return 0;

/// <summary>
/// A toy <see cref="ITextCodec"/>: UTF-8 bytes are token ids 0–255, and four ids above them stand for the chat
/// format's specials. Enough to drive a test checkpoint with a vocabulary of at least 457 ids; a real host uses the
/// checkpoint's tokenizer (the default when <see cref="Llama4ModelOptions.Codec"/> is null).
/// </summary>
sealed class ByteCodec : ITextCodec
{
    const int Bos = 448, HeaderStart = 453, HeaderEnd = 454, Eot = 456;
    public int EndOfTurn => Eot;

    public IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false,
                                           IReadOnlyList<(int Rows, int Cols)>? imageGrids = null)
    {
        if (imageGrids is { Count: > 0 }) throw new NotSupportedException("the byte codec has no image tokens");
        var ids = continuation ? new List<int>() : [Bos];
        void Header(string role)
        {
            ids.Add(HeaderStart);
            ids.AddRange(Encoding.UTF8.GetBytes(role).Select(b => (int)b));
            ids.Add(HeaderEnd);
            ids.AddRange("\n\n"u8.ToArray().Select(b => (int)b));
        }
        foreach (var m in messages)
        {
            Header(m.Role.ToString().ToLowerInvariant());
            ids.AddRange(Encoding.UTF8.GetBytes(m.Text).Select(b => (int)b));
            ids.Add(Eot);
        }
        Header("assistant");
        return ids;
    }

    public ITokenStreamDecoder CreateStreamDecoder() => new Decoder();

    sealed class Decoder : ITokenStreamDecoder
    {
        readonly System.Text.Decoder utf8 = Encoding.UTF8.GetDecoder();
        public string Push(int id)
        {
            if (id > 255) return "";
            var chars = new char[4];
            return new string(chars, 0, utf8.GetChars([(byte)id], 0, 1, chars, 0, flush: false));
        }
        public string Flush()
        {
            var chars = new char[8];
            return new string(chars, 0, utf8.GetChars([], 0, 0, chars, 0, flush: true));
        }
    }
}
