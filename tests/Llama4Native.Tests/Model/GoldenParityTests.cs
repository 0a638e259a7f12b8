using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Model;

/// <summary>
/// The decoder on the device against the Hugging Face goldens (fixtures README: fp32 path within 1e-3 with
/// identical argmax everywhere and identical router choices; bf16 path teacher-forced: mean abs ≤ 0.05 at
/// positions whose experts match, argmax agreement ≥ 90%).
/// </summary>
[Category("Emulator")]
public class GoldenParityTests
{
    public static IEnumerable<string> Fixtures() => ["tiny-scout", "tiny-maverick"];

    sealed record Golden(int[] Ids, float[] Logits, Dictionary<string, float[]> Tensors, int Vocab);

    static Golden Read(string fixture, string file, string idsName)
    {
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture(fixture), file));
        var ids = f.Span<long>(f.Get(idsName)).ToArray().Select(v => (int)v).ToArray();
        var tensors = new Dictionary<string, float[]>();
        foreach (var e in f.Tensors)
            tensors[e.Name] = e.DType == Tensors.DType.F32 ? f.Span<float>(e).ToArray()
                : e.DType == Tensors.DType.I64 ? f.Span<long>(e).ToArray().Select(v => (float)v).ToArray() : [];
        var logits = tensors["logits"];
        return new Golden(ids, logits, tensors, (int)(logits.Length / f.Get("input_ids").Shape[0]));
    }

    [TestCaseSource(nameof(Fixtures))]
    public void Fp32PathMatchesTheGoldens(string fixture)
    {
        var gold = Read(fixture, "golden_text.safetensors", "input_ids");
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        using var graph = new Llama4TextGraph(w, gold.Ids.Length, ComputeMode.F32);
        var layerOut = new Dictionary<int, float[]>();
        var topk = new Dictionary<int, float[]>();
        var logits = graph.Forward(gold.Ids, n => n.EndsWith(".out", StringComparison.Ordinal) || n.EndsWith(".moe.router", StringComparison.Ordinal),
            (name, t, data) =>
            {
                int layer = int.Parse(name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (name.EndsWith(".out", StringComparison.Ordinal)) layerOut[layer] = data;
                else topk[layer] = graph.Plan.Download(graph.RouterTopK);
            });
        var tol = new Ops.Tolerance(1e-3, 1e-3);
        int layers = w.Config.Text.NumHiddenLayers;
        for (int i = 0; i < layers; i++)
        {
            var r = Ops.OpCheck.Compare($"layer_out.{i}", layerOut[i], gold.Tensors[$"layer_out.{i}"], tol);
            Assert.That(r.Passed, $"{fixture}: {r}");
        }
        foreach (var (layer, got) in topk)
            Assert.That(got, Is.EqualTo(gold.Tensors[$"router_topk_indices.{layer}"]), $"{fixture}: router top-k of layer {layer}");
        Assert.That(topk.Keys, Is.EquivalentTo(w.Config.Text.MoeLayers));
        var lr = Ops.OpCheck.Compare("logits", logits, gold.Logits, tol);
        TestContext.Out.WriteLine($"{fixture}: {lr}");
        Assert.That(lr.Passed, $"{fixture}: {lr}");
        Assert.That(Argmax(logits, gold.Vocab), Is.EqualTo(Argmax(gold.Logits, gold.Vocab)), $"{fixture}: argmax per position");
    }

    [TestCaseSource(nameof(Fixtures))]
    public void Bf16PathIsWithinTheFixtureTolerances(string fixture)
    {
        // Teacher-forced over the full sequence (prompt + the golden's greedy tokens), as the README recommends.
        var gold = Read(fixture, "golden_text.safetensors", "full_sequence_ids");
        var ids = gold.Ids;
        using var dev = TestDevices.Emulated();
        using var w = WeightLoader.Load(CkptTestUtil.FixtureModel(fixture), dev);
        using var f32 = new Llama4TextGraph(w, ids.Length, ComputeMode.F32);
        using var b16 = new Llama4TextGraph(w, ids.Length, ComputeMode.BF16);
        var refTopk = new List<float[]>(); var gotTopk = new List<float[]>();
        var want = f32.Forward(ids, n => n.EndsWith(".moe.router", StringComparison.Ordinal), (_, _, _) => refTopk.Add(f32.Plan.Download(f32.RouterTopK)));
        var got = b16.Forward(ids, n => n.EndsWith(".moe.router", StringComparison.Ordinal), (_, _, _) => gotTopk.Add(b16.Plan.Download(b16.RouterTopK)));
        int v = want.Length / ids.Length, k = w.Config.Text.NumExpertsPerTok;
        // The fp32 path is the golden (checked above); compare positions where every MoE layer chose the same experts.
        var same = Enumerable.Range(0, ids.Length).Where(p => refTopk.Zip(gotTopk).All(l => l.First.AsSpan(p * k, k).SequenceEqual(l.Second.AsSpan(p * k, k)))).ToList();
        Assert.That(same.Count, Is.GreaterThan(ids.Length / 2), $"{fixture}: bf16 routing differs at most positions");
        double sum = 0; long n = 0;
        foreach (int p in same)
            for (int j = 0; j < v; j++) { sum += Math.Abs(got[p * v + j] - want[p * v + j]); n++; }
        double meanAbs = sum / n;
        var am = Argmax(got, v); var aw = Argmax(want, v);
        double agree = am.Zip(aw).Count(x => x.First == x.Second) / (double)am.Length;
        TestContext.Out.WriteLine($"{fixture}: bf16 vs fp32 mean abs {meanAbs:0.0000} over {same.Count}/{ids.Length} positions; argmax agreement {agree:P1}");
        Assert.That(meanAbs, Is.LessThanOrEqualTo(0.05), fixture);
        Assert.That(agree, Is.GreaterThanOrEqualTo(0.90), fixture);
    }

    static int[] Argmax(float[] logits, int v) =>
        Enumerable.Range(0, logits.Length / v).Select(p => { int best = 0; for (int j = 1; j < v; j++) if (logits[p * v + j] > logits[p * v + best]) best = j; return best; }).ToArray();
}
