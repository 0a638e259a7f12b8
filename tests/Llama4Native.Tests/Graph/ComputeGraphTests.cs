using Llama4Native.Devices;
using Llama4Native.Graph;
using Llama4Native.Kernels;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using GemmBLayout = Llama4Native.Reference.GemmBLayout;

namespace Llama4Native.Tests.Graph;

[Category("Emulator")]
public class ComputeGraphTests
{
    Device dev = null!;
    [OneTimeSetUp] public void Open() => dev = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => dev.Dispose();

    /// <summary>Views: named parts of a node's output at element offsets (no launch), written in place through, dumped by name.</summary>
    [Test]
    public void ViewsAreNamedPartsOfOneBufferAndInPlaceNodesWriteThroughThem()
    {
        var rng = new Random(TestSeed.For(nameof(ViewsAreNamedPartsOfOneBufferAndInPlaceNodesWriteThroughThem)));
        int a = rng.Next(1, 40), b = rng.Next(1, 40);
        var x = DeviceData.Normal(rng, a + b);
        var g = new ComputeGraph();
        var vx = g.Input("x", DType.F32, new Shape(a + b));
        var all = g.Node("all", DType.F32, new Shape(a + b), [vx], (in NodeContext c) => Add(c.Device, c[0], c[0], c.Output));   // 2x
        var p0 = g.View("all.first", all, 0, new Shape(a));
        var p1 = g.View("all.second", all, a, new Shape(b));
        var p1x = g.Node("all.second.x2", DType.F32, new Shape(b), [p1], (in NodeContext c) => Add(c.Device, c[0], c[0], c.Output), inPlaceOf: p1);
        var sum = g.Node("sum", DType.F32, new Shape(a + b), [all, p0, p1x], (in NodeContext c) => Add(c.Device, c[0], c[0], c.Output));
        g.Output(sum);
        Assert.Throws<ArgumentException>(() => g.View("too.far", all, a, new Shape(b + 1)));
        using var plan = g.Plan(dev);
        Assert.That(plan[p0].Ptr, Is.EqualTo(plan[all].Ptr));
        Assert.That(plan[p1].Ptr, Is.EqualTo(plan[all].Ptr + 4L * a));
        Assert.That(plan[p1x].Ptr, Is.EqualTo(plan[p1].Ptr));
        dev.Upload<float>(x, plan[vx].Ptr);
        var dumps = new Dictionary<string, float[]>();
        plan.Run(dumpPattern: "*", dump: (name, _, data) => dumps[name] = data);
        Assert.That(dumps["all.first"], Is.EqualTo(x.Take(a).Select(v => 2 * v).ToArray()));
        Assert.That(dumps["all.second"], Is.EqualTo(x.Skip(a).Select(v => 2 * v).ToArray()));
        Assert.That(dumps["sum"], Is.EqualTo(x.Select((v, k) => k < a ? 4 * v : 8 * v).ToArray()), "the in-place node wrote the second part of 'all'");
    }

    /// <summary>A SwiGLU MLP as a graph: norm → gate_up → silu·up → down → + x, checked node by node via dumps.</summary>
    [Test]
    public void MlpGraphMatchesTheReferenceAtEveryDumpedNode()
    {
        var rng = new Random(TestSeed.For(nameof(MlpGraphMatchesTheReferenceAtEveryDumpedNode)));
        int t = rng.Next(1, 9), d = 8 * rng.Next(2, 6), i = rng.Next(3, 40);
        var x = DeviceData.Normal(rng, t * d);
        var wn = DeviceData.Normal(rng, d, 0.2f, DType.BF16).Select(v => Reference.BF16.Round(1 + v)).ToArray();
        var wgu = DeviceData.Normal(rng, 2 * i * d, (float)(1 / Math.Sqrt(d)), DType.BF16);   // [2I, D] nk
        var wdn = DeviceData.Normal(rng, d * i, (float)(1 / Math.Sqrt(i)), DType.BF16);       // [D, I] nk
        using var bwn = DeviceData.Upload(dev, wn, DType.BF16);
        using var bgu = DeviceData.Upload(dev, wgu, DType.BF16);
        using var bdn = DeviceData.Upload(dev, wdn, DType.BF16);

        var g = new ComputeGraph();
        var vx = g.Input("x", DType.F32, new Shape(t, d));
        var vwn = g.Bind("mlp.norm.weight", new Tensor(bwn.Ptr, DType.BF16, new Shape(d)));
        var vgu = g.Bind("mlp.gate_up.weight", new Tensor(bgu.Ptr, DType.BF16, new Shape(2 * i, d)));
        var vdn = g.Bind("mlp.down.weight", new Tensor(bdn.Ptr, DType.BF16, new Shape(d, i)));
        var h = g.Node("mlp.norm", DType.F32, new Shape(t, d), [vx, vwn], (in NodeContext c) => RmsNorm.Run(c.Device, c[0], c[1], c.Output, 1e-5f, c.Stream));
        var gu = g.Node("mlp.gate_up", DType.F32, new Shape(t, 2 * i), [h, vgu], (in NodeContext c) => Gemm.Run(c.Device, c[0], c[1], c.Output, GemmBLayout.NK, c.Stream, Gemm.Variant.Simple));
        var act = g.Node("mlp.act", DType.F32, new Shape(t, i), [gu], (in NodeContext c) => SiluMul.Fused(c.Device, c[0], c.Output, c.Stream));
        var dn = g.Node("mlp.down", DType.F32, new Shape(t, d), [act, vdn], (in NodeContext c) => Gemm.Run(c.Device, c[0], c[1], c.Output, GemmBLayout.NK, c.Stream, Gemm.Variant.Simple));
        var y = g.Node("mlp.out", DType.F32, new Shape(t, d), [dn, vx], (in NodeContext c) => Add(c.Device, c[0], c[1], c.Output));
        g.Output(y);

        using var plan = g.Plan(dev);
        dev.Upload<float>(x, plan[vx].Ptr);
        var dumps = new Dictionary<string, float[]>();
        plan.Run(dumpPattern: "mlp.*", dump: (name, _, data) => dumps[name] = data);
        Assert.That(dumps.Keys, Is.EquivalentTo(new[] { "mlp.norm", "mlp.gate_up", "mlp.act", "mlp.down", "mlp.out" }));

        // The same maths on the host, from the references.
        var rh = new float[t * d]; Reference.RmsNorm.Forward(x, Bits(wn), rh, t, d, 1e-5f);
        var rgu = new float[t * 2 * i]; Reference.Gemm.Forward(rh, Bits(wgu), rgu, t, 2 * i, d, GemmBLayout.NK);
        var ract = new float[t * i]; Reference.SiluMul.Fused(rgu, ract, t, i);
        var rdn = new float[t * d]; Reference.Gemm.Forward(ract, Bits(wdn), rdn, t, d, i, GemmBLayout.NK);
        var rout = rdn.Select((v, k) => v + x[k]).ToArray();
        var tol = new Tolerance(1e-5, 1e-4);
        foreach (var (name, want) in new[] { ("mlp.norm", rh), ("mlp.gate_up", rgu), ("mlp.act", ract), ("mlp.down", rdn), ("mlp.out", rout) })
        {
            var r = OpCheck.Compare(name, dumps[name], want, tol);
            Assert.That(r.Passed, r.ToString());
        }
        var final = DeviceData.Download(dev, plan[y].Ptr, t * d, DType.F32);
        Assert.That(OpCheck.Compare("y", final, rout, tol).Passed);
    }

    /// <summary>A long chain reuses storage, and a value that must outlive the chain is never overwritten.</summary>
    [Test]
    public void PlannerReusesDeadStorageButNeverLiveStorage()
    {
        var rng = new Random(TestSeed.For(nameof(PlannerReusesDeadStorageButNeverLiveStorage)));
        int n = 1000 + rng.Next(1000), steps = 12;
        var x = DeviceData.Normal(rng, n);
        var g = new ComputeGraph();
        var vx = g.Input("x", DType.F32, new Shape(n));
        var keep = g.Node("keep", DType.F32, new Shape(n), [vx], (in NodeContext c) => Copy(c.Device, c[0], c.Output));
        var cur = keep;
        for (int s = 0; s < steps; s++)
            cur = g.Node($"step.{s}", DType.F32, new Shape(n), [cur], (in NodeContext c) => Add(c.Device, c[0], c[0], c.Output)); // ×2
        var sum = g.Node("sum", DType.F32, new Shape(n), [cur, keep], (in NodeContext c) => Add(c.Device, c[0], c[1], c.Output));
        g.Output(sum);
        using var plan = g.Plan(dev);
        Assert.That(plan.ArenaBytes, Is.LessThanOrEqualTo(4 * Align(n * 4)), "a chain needs only a few live buffers");
        Assert.That(plan.ArenaBytes, Is.LessThan(plan.UnplannedBytes));
        dev.Upload<float>(x, plan[vx].Ptr);
        plan.Run();
        var got = DeviceData.Download(dev, plan[sum].Ptr, n, DType.F32);
        var want = x.Select(v => v * (1 << steps) + v).ToArray();
        Assert.That(OpCheck.Compare("sum", got, want, new Tolerance(0, 1e-6)).Passed);
    }

    [Test]
    public void InPlaceNodesShareStorage_AndAFailingNodeIsNamed()
    {
        var g = new ComputeGraph();
        var a = g.Input("a", DType.F32, new Shape(4, 8));
        var b = g.Node("blk.0.inplace", DType.F32, new Shape(4, 8), [a], (in NodeContext c) => Softmax.Run(c.Device, c[0], c.Output), inPlaceOf: a);
        var bad = g.Node("blk.0.bad", DType.F32, new Shape(4, 8), [b], (in NodeContext c) => Softmax.Run(c.Device, c[0].Reshape(32), c.Output));
        g.Output(bad);
        Assert.Throws<ArgumentException>(() => g.Input("a", DType.F32, new Shape(1)));
        using var plan = g.Plan(dev);
        Assert.That(plan[b].Ptr, Is.EqualTo(plan[a].Ptr));
        var e = Assert.Throws<GraphExecutionException>(() => plan.Run());
        Assert.That(e!.Node, Is.EqualTo("blk.0.bad"));
        Assert.That(e.Message, Does.Contain("blk.0.bad").And.Contain("softmax"));
    }

    static long Align(long b) => (b + GraphPlan.Alignment - 1) / GraphPlan.Alignment * GraphPlan.Alignment;
    static ushort[] Bits(float[] a) { var b = new ushort[a.Length]; Reference.BF16.FromFloat(a, b); return b; }

    static void Add(Device d, Tensor a, Tensor b, Tensor y) => Llama4Native.Kernels.Add.Run(d, a, b, y);
    static void Copy(Device d, Tensor a, Tensor y) => d.CopyDeviceToDevice(a.Ptr, y.Ptr, a.Bytes);
}
