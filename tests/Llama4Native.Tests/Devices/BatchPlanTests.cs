using System.Text.Json;
using Llama4Native.Checkpoints;
using Llama4Native.Cli;
using Llama4Native.Devices;
using Llama4Native.Devices.Emulated;
using Llama4Native.Devices.Recording;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Devices;

/// <summary>`llama4 plan --batch B`: the server's batched decode step on the recording device, and the paged KV capacity.</summary>
public class BatchPlanTests
{
    static JsonElement Plan(params string[] args)
    {
        var o = new StringWriter(); var e = new StringWriter();
        int rc = Commands.Run(["plan", .. args, "--json"], o, e);
        Assert.That(rc, Is.Zero, e.ToString());
        return JsonDocument.Parse(o.ToString()).RootElement.Clone();
    }

    static JsonElement Get(JsonElement r, string path)
    {
        foreach (var p in path.Split('.')) r = r.GetProperty(p);
        return r;
    }

    [TestCase("tiny-maverick", 1, 4, 16)]
    [TestCase("tiny-scout", 1, 8, 32)]
    public void ABiggerBatchDoesMoreWorkPerStepAndMoreTokensPerSecond(string preset, int b1, int b2, int b3)
    {
        var rng = new Random(TestSeed.For(nameof(ABiggerBatchDoesMoreWorkPerStepAndMoreTokensPerSecond) + preset));
        int context = rng.Next(130, 400);
        string[] common = ["--preset", preset, "--context", context.ToString(), "--steps", "5", "--device-memory", "1GiB", "--max-piece", "64"];
        var plans = new[] { b1, b2, b3 }.Select(b => Plan([.. common, "--batch", b.ToString()])).ToArray();
        var single = Plan(common);
        Assert.That(Get(single, "decode.batch").GetInt32(), Is.EqualTo(1), "without --batch: batch 1");
        Assert.That(single.GetProperty("kv").ValueKind, Is.EqualTo(JsonValueKind.Null));
        for (int i = 0; i < plans.Length; i++)
        {
            var p = plans[i];
            int b = Get(p, "decode.batch").GetInt32();
            Assert.That(b, Is.EqualTo(new[] { b1, b2, b3 }[i]));
            Assert.That(Get(p, "decode.batched.position").GetInt32(), Is.EqualTo(context - 2), "the last step's rows sit at context − 2 (the cache then holds N − 1)");
            Assert.That(Get(p, "decode.batched.uncosted_launches").GetInt32(), Is.Zero);
            double s = Get(p, "decode.batched.modelled_s").GetDouble();
            Assert.That(Get(p, "decode.aggregate_tokens_per_s").GetDouble(), Is.EqualTo(b / s).Within(1e-9).Percent);
            Assert.That(Get(p, "decode.batched.aggregate_tokens_per_s").GetDouble(), Is.EqualTo(b / s).Within(1e-9).Percent);
            // The single-sequence plan is unchanged by --batch.
            Assert.That(Get(p, "decode.bytes").GetInt64(), Is.EqualTo(Get(single, "decode.bytes").GetInt64()));
        }
        for (int i = 1; i < plans.Length; i++)
        {
            var (small, big) = (plans[i - 1], plans[i]);
            Assert.That(Get(big, "decode.batched.flops").GetDouble(), Is.GreaterThan(Get(small, "decode.batched.flops").GetDouble()), "more rows, more FLOPs");
            long bytesSmall = Get(small, "decode.batched.bytes").GetInt64(), bytesBig = Get(big, "decode.batched.bytes").GetInt64();
            Assert.That(bytesBig, Is.GreaterThanOrEqualTo(bytesSmall), "the weights are read at least once per step");
            Assert.That((double)bytesBig / Get(big, "decode.batch").GetInt32(), Is.LessThan((double)bytesSmall / Get(small, "decode.batch").GetInt32()),
                        "fewer bytes per token: the weights are shared by the batch");
            Assert.That(Get(big, "decode.aggregate_tokens_per_s").GetDouble(), Is.GreaterThan(Get(small, "decode.aggregate_tokens_per_s").GetDouble()));
        }
    }

    [Test]
    public void TheKvCapacityIsTheFreeMemoryOverThePerSequenceCache()
    {
        var rng = new Random(TestSeed.For(nameof(TheKvCapacityIsTheFreeMemoryOverThePerSequenceCache)));
        int context = rng.Next(100, 500), batch = rng.Next(2, 9);
        var config = Llama4Config.Parse(Presets.ConfigJson("tiny-maverick"), "preset tiny-maverick");
        var memories = new List<long> { 1L << 30, 1L << 20 };
        for (int round = 0; round < memories.Count; round++)
        {
            long memory = memories[round];
            var p = Plan("--preset", "tiny-maverick", "--context", context.ToString(), "--steps", "3", "--batch", batch.ToString(),
                         "--device-memory", memory.ToString(), "--max-piece", "32");
            var kv = p.GetProperty("kv");
            long Kv(string k) => kv.GetProperty(k).GetInt64();
            long perSeq = Kv("per_sequence_bytes"), free = Kv("free_bytes"), fixedBytes = Kv("fixed_bytes");
            Assert.That(free, Is.EqualTo(memory - fixedBytes));
            Assert.That(fixedBytes, Is.GreaterThan(p.GetProperty("memory").EnumerateObject().Where(m => m.Name.StartsWith("weights", StringComparison.Ordinal)).Sum(m => m.Value.GetInt64()) - 1),
                        "the fixed part holds at least the weights");
            Assert.That(Kv("sequences_at_context"), Is.EqualTo(Math.Max(0, free) / perSeq), "capacity = floor(free / per-sequence KV)");
            Assert.That(Kv("bytes_at_batch"), Is.EqualTo(batch * perSeq), "the cache of B sequences is B per-sequence caches");
            Assert.That(kv.GetProperty("fits_at_batch").GetBoolean(), Is.EqualTo(fixedBytes + batch * perSeq <= memory));
            Assert.That(kv.GetProperty("fits_at_batch").GetBoolean(), Is.EqualTo(Kv("sequences_at_context") >= batch));
            // Per-sequence bytes from the cache itself agree with what the engine allocated.
            int stepTokens = batch + 32;
            Assert.That(BatchPlanner.PerSequenceBytes(config.Text, context, stepTokens, null), Is.EqualTo(perSeq));
            long largest = Kv("largest_context_at_batch");
            Assert.That(batch * BatchPlanner.PerSequenceBytes(config.Text, largest, stepTokens, null), Is.LessThanOrEqualTo(Math.Max(0, free)));
            if (largest < config.Text.MaxPositionEmbeddings)
                Assert.That(batch * BatchPlanner.PerSequenceBytes(config.Text, largest + 1, stepTokens, null), Is.GreaterThan(free), "the largest context is the largest");
            if (round == 0)
            {
                Assert.That(kv.GetProperty("fits_at_batch").GetBoolean(), Is.True);
                // A device with room for B − 1 and a half sequences beside the same fixed part: B − 1 fit, B do not.
                memories.Add(fixedBytes + (batch - 1) * perSeq + perSeq / 2);
            }
            if (round == 2)
            {
                Assert.That(Kv("sequences_at_context"), Is.EqualTo(batch - 1));
                Assert.That(kv.GetProperty("fits_at_batch").GetBoolean(), Is.False);
                Assert.That(largest, Is.LessThan(context));
            }
            if (round == 1) Assert.That(Kv("sequences_at_context"), Is.Zero, "1 MiB holds not even the weights");
            TestContext.Out.WriteLine($"{memory} B: {Kv("sequences_at_context")} sequences of {context}; at {batch} sequences ≤ {largest} tokens");
        }
    }

    /// <summary>The batched step the planner models is the one the emulator runs: the same launches for the same engine steps.</summary>
    [Category("Emulator")]
    [Test]
    public void TheBatchedPlanLaunchesWhatTheEmulatorLaunches()
    {
        var rng = new Random(TestSeed.For(nameof(TheBatchedPlanLaunchesWhatTheEmulatorLaunches)));
        string dir = CkptTestUtil.FixtureModel("tiny-maverick");
        var config = Llama4Config.Load(dir);
        int batch = rng.Next(2, 5), context = 64, piece = 16;
        var prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, rng.Next(3, 40)).Select(_ => rng.Next(1, 400)).ToArray()).ToArray();

        List<string> Launches(Device dev, ModelWeights w, Func<List<string>> observe)
        {
            using var engine = new BatchedStepEngine(w, ComputeMode.BF16, batch, context, piece);
            var results = new StepResult[batch];
            var last = new int[batch];
            for (int s = 0; s < batch; s++)
            {
                engine.Begin(s, new GenerationOptions { Temperature = 0 }, null);
                for (int at = 0; at < prompts[s].Length; at += piece)
                {
                    int n = Math.Min(piece, prompts[s].Length - at);
                    engine.Step([new StepPiece(s, prompts[s].AsMemory(at, n), at + n == prompts[s].Length, false)], results);
                    Assert.That(results[0].Error, Is.Null);
                }
                last[s] = results[0].Token;
            }
            var list = observe();
            for (int k = 0; k < 3; k++)
            {
                var pieces = Enumerable.Range(0, batch).Select(s => new StepPiece(s, new[] { last[s] }, true, true)).ToArray();
                engine.Step(pieces, results);
                for (int s = 0; s < batch; s++) { Assert.That(results[s].Error, Is.Null); last[s] = results[s].Token; }
            }
            return list;
        }

        List<string> emuLaunches;
        using (var emu = new EmuDevice())
        using (var w = WeightLoader.Load(dir, emu))
            emuLaunches = Launches(emu, w, () => { var l = new List<string>(); emu.LaunchObserver = (f, g, b, s) => l.Add($"{f.Name} {g} {b} {s}"); return l; });
        using var rec = new RecordingDevice();
        int mark = 0;
        using (var w = WeightLoader.Describe(config, rec))
            Launches(rec, w, () => { mark = rec.Mark; return []; });
        var recLaunches = rec.Ops.Skip(mark).Where(x => x.Kind == RecordedKind.Launch).Select(x => $"{x.Kernel} {x.Grid} {x.Block} {x.Shared}").ToList();
        Assert.That(recLaunches, Is.EqualTo(emuLaunches), "decode steps of the batched engine: recording device vs emulator");
        Assert.That(rec.Summarize(mark).Uncosted, Is.Zero, "every kernel wrapper declares its cost");
    }
}
