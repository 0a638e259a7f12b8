using System.Text.Json.Nodes;
using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;
using TextModel = Llama4Native.Reference.TextModel;

namespace Llama4Native.Tests.Model;

/// <summary>
/// Long prompts at scaled-down sizes (issue #15): a synthesized model with attention chunk 16 and a prompt of 3,000
/// tokens (187 chunks; the NoPE layers' history is 187 chunks long), run through the public generation API
/// (<see cref="TokenGenerator"/>) on the emulator, against the host reference forward. Everything goes through
/// TokenGenerator so the test holds whatever the KV cache's internals are (contiguous or paged).
/// </summary>
[Category("Emulator")]
internal class LongContextTests
{
    const int Chunk = 16, Prompt = 3000, NewTokens = 6, Piece = 64;

    /// <summary>4 layers [RoPE, NoPE, RoPE, NoPE], MoE in layers 1 and 3 with top-2 of 2 experts (every expert always
    /// chosen: the routing has no discontinuity, so f32 summation-order noise cannot flip a route over 3,000 tokens and
    /// the comparison stays at 1e-3), temperature tuning on (floor 4: its log term changes at every 4th position).</summary>
    static string ConfigJson()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(CkptTestUtil.FixtureModel("tiny-scout"), "config.json")))!;
        var tc = json["text_config"]!.AsObject();
        foreach (var derived in new[] { "layer_types", "no_rope_layers", "moe_layers" }) tc.Remove(derived);
        tc["num_hidden_layers"] = 4; tc["no_rope_layer_interval"] = 2; tc["interleave_moe_layer_step"] = 2;
        tc["num_local_experts"] = 2; tc["num_experts_per_tok"] = 2; tc["attention_chunk_size"] = Chunk;
        tc["max_position_embeddings"] = 8192;
        return json.ToJsonString();
    }

    static string? dir;
    static string Model()
    {
        if (dir is not null) return dir;
        var d = CkptTestUtil.NewTempDir("longctx");
        Synth.Write(ConfigJson(), d, new SynthOptions(Seed: 7));
        return dir = d;
    }

    [OneTimeTearDown]
    public void Cleanup() { if (dir is not null && Directory.Exists(dir)) Directory.Delete(dir, true); dir = null; }

    sealed record Run(int[] Tokens, float[][] StepLogits, long MaxArenaBytes, long KvBytes);

    static Run Generate(ModelWeights w, int[] prompt, int maxPiece, KvCacheFormat kv, int maxContext = Prompt + NewTokens,
                        ComputeMode mode = ComputeMode.F32)
    {
        using var gen = new TokenGenerator(w, mode, maxContext, maxPiece, kvCache: kv);
        var tokens = new List<int>();
        var logits = new List<float[]>();
        foreach (var t in gen.Generate(prompt, new GenerationOptions { Temperature = 0, MaxNewTokens = NewTokens, StopAtModelStops = false }))
        {
            tokens.Add(t);
            logits.Add(gen.LastLogits);
        }
        return new Run([.. tokens], [.. logits], gen.Graphs.Max(g => g.Plan.ArenaBytes), gen.Cache.Bytes);
    }

    /// <summary>Issue #11's prefill pieces: the same 3,000-token prompt fed in pieces of 2,048 (then 512 + 256 + 128 + 32 + 16 + 8),
    /// of 16, in one forward, and with the piece chosen from the device's free memory (auto: 2,048 here) gives the same
    /// logits (fp32, ≤ 1e-3) and greedy tokens; lm_head runs on the last piece only whatever the piece.</summary>
    [Test]
    public void PrefillPieceSizeDoesNotChangeLogitsOrTokens()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(Model(), dev);
        var c = w.Config.Text;
        var rng = new Random(TestSeed.For(nameof(PrefillPieceSizeDoesNotChangeLogitsOrTokens)));
        int top = Math.Min(c.VocabSize, w.Config.ImageTokenIndex > 0 ? w.Config.ImageTokenIndex : c.VocabSize) - 64;
        var prompt = Enumerable.Range(0, Prompt).Select(_ => rng.Next(top)).ToArray();

        var big = Generate(w, prompt, 2048, KvCacheFormat.Default);
        var small = Generate(w, prompt, 16, KvCacheFormat.Default);
        var whole = Generate(w, prompt, Prompt, KvCacheFormat.Default);
        var tol = new Tolerance(1e-3, 1e-3);
        double worst = 0;
        for (int i = 0; i < NewTokens; i++)
            foreach (var (name, other) in new[] { ("pieces of 16", small), ("one forward", whole) })
            {
                var r = OpCheck.Compare($"step {i}: pieces of 2048 vs {name}", big.StepLogits[i], other.StepLogits[i], tol);
                Assert.That(r.Passed, r.ToString());
                worst = Math.Max(worst, r.MaxAbs);
            }
        Assert.That(small.Tokens, Is.EqualTo(big.Tokens), "greedy tokens: pieces of 16 vs 2048");
        Assert.That(whole.Tokens, Is.EqualTo(big.Tokens), "greedy tokens: one forward vs pieces of 2048");

        using (var auto = new TokenGenerator(w, ComputeMode.F32, Prompt + NewTokens, maxPiece: 0))
        {
            Assert.That((auto.MaxPiece, auto.PieceAuto), Is.EqualTo((2048, true)), "auto: the largest piece that fits the emulator's memory");
            var tokens = auto.Generate(prompt, new GenerationOptions { Temperature = 0, MaxNewTokens = NewTokens, StopAtModelStops = false }).ToArray();
            Assert.That(tokens, Is.EqualTo(big.Tokens), "auto piece: the same tokens");
        }
        TestContext.Out.WriteLine($"pieces 2048 vs 16 vs one forward: max |Δlogit| {worst:g3} over {NewTokens} steps");
    }

    /// <summary>bf16 prefill pieces of ≥ 64 rows take the tensor-core paged kernel (paged_attn_mma_bf16), smaller ones the
    /// CUDA-core split kernel: a 400-token prompt in pieces of 128 (three mma pieces, then 16 rows) and in pieces of 32 (CUDA
    /// cores only) give the same logits within bf16 noise (|Δ| ≤ 2^-4·max|logit| at every step; P is rounded to bf16
    /// in P·V on tensor cores) — through the chunked layers' ring (chunk 16) and the NoPE layers' whole history.</summary>
    [Test]
    public void Bf16PrefillOnTensorCoresMatchesCudaCorePieces()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(Model(), dev);
        var c = w.Config.Text;
        Assert.That(Llama4Native.Kernels.PagedAttention.UsesMma(DType.BF16, DType.BF16, c.HeadDim, 128), Is.True, "pieces of 128 take mma");
        Assert.That(Llama4Native.Kernels.PagedAttention.UsesMma(DType.BF16, DType.BF16, c.HeadDim, 32), Is.False, "pieces of 32 do not");
        var rng = new Random(TestSeed.For(nameof(Bf16PrefillOnTensorCoresMatchesCudaCorePieces)));
        int top = Math.Min(c.VocabSize, w.Config.ImageTokenIndex > 0 ? w.Config.ImageTokenIndex : c.VocabSize) - 64;
        var prompt = Enumerable.Range(0, 400).Select(_ => rng.Next(top)).ToArray();
        var mma = Generate(w, prompt, 128, KvCacheFormat.Default, 400 + NewTokens, ComputeMode.BF16);
        var cuda = Generate(w, prompt, 32, KvCacheFormat.Default, 400 + NewTokens, ComputeMode.BF16);
        // teacher-forcing is not needed for step 0; later steps compare only while the greedy tokens agree
        double worst = 0;
        for (int i = 0; i < NewTokens && (i == 0 || mma.Tokens[i - 1] == cuda.Tokens[i - 1]); i++)
        {
            float max = cuda.StepLogits[i].Max(Math.Abs), d = cuda.StepLogits[i].Zip(mma.StepLogits[i], (a, b) => Math.Abs(a - b)).Max();
            Assert.That(d, Is.LessThanOrEqualTo(max / 16), $"step {i}: max |Δlogit| {d} vs max |logit| {max}");
            worst = Math.Max(worst, d / max);
        }
        TestContext.Out.WriteLine($"bf16 pieces of 128 (mma) vs 32 (CUDA cores): max |Δlogit| / max |logit| = {worst:g3}; tokens {string.Join(",", mma.Tokens)} vs {string.Join(",", cuda.Tokens)}");
    }

    [Test]
    public void ThreeThousandTokenPromptInPiecesEqualsTheReferenceAndOneFullForward()
    {
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(Model(), dev);
        var c = w.Config.Text;
        Assert.That(c.UsesRope, Is.EqualTo(new[] { true, false, true, false }));
        var rng = new Random(TestSeed.For(nameof(ThreeThousandTokenPromptInPiecesEqualsTheReferenceAndOneFullForward)));
        // plain text ids: below the special tokens (the image placeholders need pixels)
        int top = Math.Min(c.VocabSize, w.Config.ImageTokenIndex > 0 ? w.Config.ImageTokenIndex : c.VocabSize) - 64;
        var prompt = Enumerable.Range(0, Prompt).Select(_ => rng.Next(top)).ToArray();

        var pieces = Generate(w, prompt, Piece, KvCacheFormat.Default);        // 46 pieces of 64, then 32 + 16 + 8
        var whole = Generate(w, prompt, Prompt, KvCacheFormat.Default);        // the prompt in one forward

        // The reference: one forward over the prompt and the generated tokens (teacher-forced on the device's choices).
        var cache = new Dictionary<string, float[]>();
        float[] W(string n) => cache.TryGetValue(n, out var a) ? a : cache[n] = DeviceData.Download(w.Device, w[n].Tensor.Ptr, w[n].Tensor.Elements, w[n].Tensor.DType);
        int[] all = [.. prompt, .. pieces.Tokens[..^1]];
        var want = TextModel.Forward(c, W, all);
        int v = c.VocabSize;
        float[] Row(int pos) => want.AsSpan(pos * v, v).ToArray();
        var tol = new Tolerance(1e-3, 1e-3);
        for (int i = 0; i < NewTokens; i++)
        {
            int pos = Prompt - 1 + i;
            var r = OpCheck.Compare($"logits at position {pos} (pieces of {Piece})", pieces.StepLogits[i], Row(pos), tol);
            Assert.That(r.Passed, r.ToString());
            var r2 = OpCheck.Compare($"logits at position {pos}: pieces of {Piece} vs one full forward", pieces.StepLogits[i], whole.StepLogits[i], tol);
            Assert.That(r2.Passed, r2.ToString());
            Assert.That(pieces.Tokens[i], Is.EqualTo(Array.IndexOf(Row(pos), Row(pos).Max())), $"greedy token {i} = the reference's argmax");
        }
        Assert.That(whole.Tokens, Is.EqualTo(pieces.Tokens), "greedy tokens: one full forward vs pieces");

        // Activation memory is bounded by the piece, not the prompt: the arenas are those of a 100-token context.
        var shortRun = Generate(w, prompt[..100], Piece, KvCacheFormat.Default, maxContext: 128);
        Assert.That(pieces.MaxArenaBytes, Is.EqualTo(shortRun.MaxArenaBytes), "largest activation arena: 3,006-token context vs 128");
        Assert.That(whole.MaxArenaBytes, Is.GreaterThan(10 * pieces.MaxArenaBytes), "a 3,000-token piece needs ≫ the arena of 64");
        TestContext.Out.WriteLine($"arena: pieces of {Piece} {pieces.MaxArenaBytes} B (context 3006) = {shortRun.MaxArenaBytes} B (context 128); " +
                                  $"one 3000-token piece {whole.MaxArenaBytes} B; KV {pieces.KvBytes} B");

        // FP8 KV: within the bound of KvFp8ErrorTests against the float reference; greedy equal wherever decisive.
        var f8 = Generate(w, prompt, Piece, KvCacheFormat.Fp8);
        Assert.That(f8.KvBytes, Is.LessThan(pieces.KvBytes / 3), "FP8 KV: a byte + 4/d of scale per element vs f32's 4");
        double spread = want.Max() - want.Min();
        for (int i = 0; i < NewTokens; i++)
        {
            // teacher-forced on the float run's tokens only while the FP8 run chose the same ones
            if (i > 0 && f8.Tokens[i - 1] != pieces.Tokens[i - 1]) break;
            var row = Row(Prompt - 1 + i);
            double mean = 0, max = 0;
            for (int j = 0; j < v; j++) { double e = Math.Abs(row[j] - f8.StepLogits[i][j]); mean += e / v; max = Math.Max(max, e); }
            TestContext.Out.WriteLine($"FP8 KV step {i}: mean |Δ| {mean:G3}, max |Δ| {max:G3} (logit spread {spread:G3})");
            Assert.That(mean, Is.LessThanOrEqualTo(spread / 64), $"FP8 KV step {i}: mean |Δlogit|");
            var sorted = row.OrderDescending().ToArray();
            if (sorted[0] - sorted[1] > 2 * max) Assert.That(f8.Tokens[i], Is.EqualTo(pieces.Tokens[i]), $"FP8 KV step {i}: decisive greedy token");
        }
    }
}

/// <summary>
/// The C# plumbing at 10M positions (issue #15: positions, cache indices, byte offsets): Scout's shapes with 4 layers
/// (3 chunked RoPE, 1 NoPE), FP8 KV, planned on the recording device — the real KvCache, TokenGenerator, graphs and
/// kernel wrappers prefill 10,000,000 tokens in pieces of 32,768 and decode at position ≈ 10M. Kernel-level offsets near
/// 2^31 are tested in the attention/kv_append op cases.
/// </summary>
internal class TenMillionPositionTests
{
    [Test]
    public void PlanAtTenMillionPositionsSizesEverythingIn64Bits()
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(Presets.ConfigJson("scout"))!;
        var tc = json["text_config"]!.AsObject();
        foreach (var derived in new[] { "layer_types", "no_rope_layers", "moe_layers" }) tc.Remove(derived);
        tc["num_hidden_layers"] = 4;
        tc["max_position_embeddings"] = 10_485_760;
        var config = Llama4Config.Parse(json.ToJsonString(), "scout, 4 layers");
        var c = config.Text;
        Assert.That(c.UsesRope, Is.EqualTo(new[] { true, true, true, false }));
        const int context = 10_000_000, piece = 1 << 15;   // past one launch's grid: the paged cache launches it in parts
        var plan = Llama4Native.Devices.Recording.Planner.Run(config, new Llama4Native.Devices.Recording.PlanOptions(
            Context: context, DeviceMemory: 141L << 30, Steps: 2, MaxPiece: piece, KvCache: KvCacheFormat.Fp8));
        long row = 2L * c.NumKeyValueHeads * (c.HeadDim + 4);                   // K and V of one slot: e4m3 codes + f32 scales
        // pages of 64 positions: every position's page for the NoPE layer, a ring of ceil((C + piece) / 64) + 1 pages per
        // chunked layer, and the block tables (int32 per page)
        long stride = (context + 63) / 64, ring = (c.AttentionChunkSize + piece + 63) / 64 + 1;
        long want = stride * 64 * row + 3 * ring * 64 * row + 4 * (stride + ring);
        Assert.That(plan.Memory.Single(m => m.What.StartsWith("KV cache", StringComparison.Ordinal)).Bytes, Is.EqualTo(want));
        Assert.That(plan.Decode.Position, Is.EqualTo(context - 2), "the last decode step feeds position N − 2 (its token lands at N − 1)");
        // the decode step's NoPE attention reads all 10M keys: its declared traffic is > 10M rows (no 32-bit wrap)
        var split = plan.Decode.Trace.Items.Where(i => i.Kernel.StartsWith("paged_attn_bf16", StringComparison.Ordinal) && i.Grid.X > 1).ToList();
        Assert.That(split, Has.Count.EqualTo(4));
        Assert.That(split.Max(i => i.Bytes), Is.GreaterThan((long)context * row));
        Assert.That(split.Max(i => i.Grid.Count), Is.GreaterThanOrEqualTo(Llama4Native.Devices.Recording.Plan.Sms), "split-KV grid fills the SMs at 10M keys");
        Assert.That(plan.Prefill.Trace.Launches, Is.GreaterThan(0));
    }
}
