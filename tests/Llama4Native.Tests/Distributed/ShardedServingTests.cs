using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;
using Llama4Native.Tests.Checkpoints;
using Llama4Native.Text;

namespace Llama4Native.Tests.Distributed;

/// <summary>
/// The serving scheduler over a model loaded on two emulated devices (<c>serve --devices emu:2</c>: the sequential step
/// engine, each slot's generator over both ranks): three requests at once give the tokens of a lone one-device generator.
/// </summary>
[Category("Emulator")]
internal class ShardedServingTests
{
    /// <summary>Ids as themselves: the scheduler needs a codec; these requests carry token prompts.</summary>
    sealed class IdCodec : ITextCodec
    {
        public int EndOfTurn => 456;
        public IReadOnlyList<int> EncodeDialog(IReadOnlyList<Message> messages, bool continuation = false, IReadOnlyList<(int Rows, int Cols)>? imageGrids = null) =>
            throw new NotSupportedException("token prompts only");
        public ITokenStreamDecoder CreateStreamDecoder() => new Decoder();
        sealed class Decoder : ITokenStreamDecoder { public string Push(int id) => ""; public string Flush() => ""; }
    }

    [Test]
    public async Task ConcurrentRequestsOnTwoDevicesEqualOneDevice()
    {
        const int context = 96;
        var rng = new Random(TestSeed.For("sharded serving"));
        var prompts = Enumerable.Range(0, 3).Select(i => Enumerable.Range(0, 5 + 7 * i).Select(_ => rng.Next(0, 448)).ToArray()).ToArray();
        var o = new GenerationOptions { MaxNewTokens = 5, Temperature = 0, StopAtModelStops = false };
        using var one = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"), new Llama4ModelOptions(Device: "emu", Compute: ComputeMode.F32, MaxContext: context, Codec: new IdCodec()));
        var lone = prompts.Select(p => { using var g = new TokenGenerator(one.Weights, ComputeMode.F32, context); return g.Generate(p, o).ToList(); }).ToArray();

        using var two = Llama4Model.Load(CkptTestUtil.FixtureModel("tiny-maverick"), new Llama4ModelOptions(Compute: ComputeMode.F32, MaxContext: context, Codec: new IdCodec(), Devices: "emu:2"));
        using var scheduler = new ServingScheduler(SequentialStepEngine.For(two, 3, context), two.Codec, new ServingOptions { MaxQueue = 4, StepTokenBudget = 16 });
        var got = await Task.WhenAll(prompts.Select(p => scheduler.Submit(new ServingRequest { Prompt = p, Options = o })).ToList().Select(async s =>
        {
            var ids = new List<int>();
            await foreach (var piece in s.Pieces.ReadAllAsync()) if (piece.TokenId >= 0) ids.Add(piece.TokenId);
            await s.Completion;
            return ids;
        }));
        for (int i = 0; i < prompts.Length; i++) Assert.That(got[i], Is.EqualTo(lone[i]), $"request {i} on emu:2 vs one device");
    }
}
