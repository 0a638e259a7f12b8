using Llama4Native.Devices;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Moe;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// MoE properties the op table cannot express (the table's moe cases check every step and the whole layer
/// against the reference): the layer is bit-reproducible; one workspace sized for the largest T — as a CUDA
/// graph needs — serves any smaller T even though it still holds the larger call's grouping; the wrapper
/// refuses impossible arguments.
/// </summary>
[TestFixture, Category("Emulator")]
internal sealed class MoeTests
{
    Device? dev;
    [OneTimeSetUp] public void Open() => dev = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => dev?.Dispose();

    /// <summary>Random bf16 router and expert weights on the device; runs the whole layer.</summary>
    sealed class Layer : IDisposable
    {
        readonly Device dev; readonly DType act; readonly List<DeviceBuffer> owned = [];
        public Tensor Wr { get; }   // [E, D]
        public Tensor Wgu { get; }  // [E, D, 2I]
        public Tensor Wd { get; }   // [E, I, D]
        public Layer(Device dev, Random rng, int d, int i, int e, DType act)
        {
            (this.dev, this.act) = (dev, act);
            Wr = Up(DeviceData.Normal(rng, (long)e * d, (float)(1 / Math.Sqrt(d)), DType.BF16), e, d);
            Wgu = Up(DeviceData.Normal(rng, (long)e * d * 2 * i, (float)(1 / Math.Sqrt(d)), DType.BF16), e, d, 2L * i);
            Wd = Up(DeviceData.Normal(rng, (long)e * i * d, (float)(1 / Math.Sqrt(i)), DType.BF16), e, i, d);
        }
        Tensor Up(float[] v, params long[] shape)
        {
            var buf = DeviceData.Upload(dev, v, DType.BF16);
            owned.Add(buf);
            return new Tensor(buf.Ptr, DType.BF16, new Shape(shape));
        }
        public float[] Run(float[] x, int tokens, K.Workspace ws)
        {
            using var bx = DeviceData.Upload(dev, x, act);
            using var by = DeviceData.Poisoned(dev, (long)tokens * ws.Dim, act);
            var ty = new Tensor(by.Ptr, act, new Shape(tokens, ws.Dim));
            K.Forward(dev, new Tensor(bx.Ptr, act, new Shape(tokens, ws.Dim)), Wr, Wgu, Wd, ty, ws, accumulate: false);
            return DeviceData.Download(dev, by.Ptr, ty.Elements, act);
        }
        public void Dispose() { foreach (var b in owned) b.Dispose(); }
    }

    [TestCase(DType.BF16), TestCase(DType.F32)]
    public void RepeatableBitForBit_AndAWorkspaceForMoreTokensServesFewer(DType act)
    {
        const int d = 64, i = 48, e = 8, k = 2, tMax = 40, tSmall = 5;
        var rng = new Random(TestSeed.For(nameof(RepeatableBitForBit_AndAWorkspaceForMoreTokensServesFewer) + act));
        using var layer = new Layer(dev!, rng, d, i, e, act);
        using var big = new K.Workspace(dev!, tMax, k, e, d, i, act);
        using var small = new K.Workspace(dev!, tSmall, k, e, d, i, act);
        var x = DeviceData.Normal(rng, (long)tMax * d, 1f, act);

        var y1 = layer.Run(x, tMax, big);
        var y2 = layer.Run(x, tMax, big);
        Assert.That(y2, Is.EqualTo(y1).AsCollection, "two runs of the same layer differ");
        Assert.That(y1.All(float.IsFinite), "non-finite output");

        // The big workspace now holds a 40-token grouping; a 5-token call must not see any of it.
        var xs = x.AsSpan(0, tSmall * d).ToArray();
        var fromBig = layer.Run(xs, tSmall, big);
        var fromSmall = layer.Run(xs, tSmall, small);
        Assert.That(fromBig, Is.EqualTo(fromSmall).AsCollection, "the result depends on the workspace's size or history");
    }

    [Test]
    public void RefusesImpossibleArguments()
    {
        const int d = 16, i = 8, e = 4;
        var rng = new Random(1);
        using var layer = new Layer(dev!, rng, d, i, e, DType.BF16);
        using var ws = new K.Workspace(dev!, 3, 1, e, d, i, DType.BF16);
        using var bx = DeviceData.Upload(dev!, new float[4 * d], DType.BF16);
        var x4 = new Tensor(bx.Ptr, DType.BF16, new Shape(4, d));
        var ex = Assert.Throws<ArgumentException>(() => K.Forward(dev!, x4, layer.Wr, layer.Wgu, layer.Wd, x4, ws, false));
        Assert.That(ex!.Message, Does.Contain("workspace"));

        using var idx = dev!.Allocate(4 * 5 * 4);
        using var score = dev!.Allocate(4 * 5 * 4);
        using var logits = dev!.Allocate(4 * e * 2);
        var x1 = new Tensor(bx.Ptr, DType.BF16, new Shape(4, d));
        ex = Assert.Throws<ArgumentException>(() => K.Router(dev!, x1, layer.Wr, new Tensor(logits.Ptr, DType.BF16, new Shape(4, e)),
            new Tensor(idx.Ptr, DType.I32, new Shape(4, 5)), new Tensor(score.Ptr, DType.F32, new Shape(4, 5))));
        Assert.That(ex!.Message, Does.Contain("k = 5"));

        var h = new Tensor(ws.H.Ptr, DType.BF16, new Shape(10, i));  // fewer rows than T·k + E·(BM − 1)
        ex = Assert.Throws<ArgumentException>(() => K.GateUp(dev!, new Tensor(bx.Ptr, DType.BF16, new Shape(3, d)), ws.TopkScore,
            ws.SortedSlots, ws.TileExpert, ws.ExpertOffsets, layer.Wgu, h));
        Assert.That(ex!.Message, Does.Contain("h"));
    }
}
