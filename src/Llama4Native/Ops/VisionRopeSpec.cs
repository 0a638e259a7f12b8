using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.VisionRope;
using R = Llama4Native.Reference.VisionRope;

namespace Llama4Native.Ops;

/// <summary>
/// vision_rope cases. Dims: tiles, G (grid side), heads, d; x is [tiles·(G²+1), heads, d] rotated in place.
/// Variant "unaligned": x starts one element past an aligned address (the element-wise path). θ = 10000.
/// </summary>
internal sealed class VisionRopeSpec : OpSpec
{
    public override string Name => "vision_rope";
    const float Theta = 10000f;

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[3, 8, 2, 16], [1, 1, 1, 4], [2, 3, 3, 12], [1, 5, 2, 88], [2, 4, 5, 8], [1, 24, 1, 88], [4, 2, 3, 20]];
        foreach (var t in new[] { "f32", "bf16" })
        {
            foreach (var s in shapes) yield return new OpCase(Name, "default", t, s);
            yield return new OpCase(Name, "unaligned", t, [2, 3, 3, 12]);
            yield return new OpCase(Name, "unaligned", t, [1, 4, 2, 88]);
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "default", "bf16", [17, 24, 16, 88], "vision.17tiles");
        yield return new OpCase(Name, "default", "f32", [17, 24, 16, 88], "vision.17tiles");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly int tiles, g, heads, d, rows, shift; readonly float[] x; readonly Tensor tx;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            (tiles, g, heads, d) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3]);
            rows = tiles * (g * g + 1);
            shift = c.Variant == "unaligned" ? 1 : 0;
            x = DeviceData.Normal(rng, (long)rows * heads * d + shift, 1.5f, dt);
            var buf = Track(DeviceData.Upload(dev, x, dt));
            tx = new Tensor(new DevicePtr(buf.Ptr.Value + (ulong)(shift * dt.Size())), dt, new Shape(rows, heads, d));
        }

        public override double Bytes => 2.0 * tx.Bytes;
        // Checked after the first launch; later (timing) launches keep rotating, which is fine.
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, g * g + 1, g, Theta, stream);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, tx.Ptr, tx.Elements, dt);
            var want = x.AsSpan(shift).ToArray();
            R.Forward(want, rows, heads, d, g * g + 1, g, Theta);
            if (dt == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("x", got, want, Tolerances.For("vision_rope", dt));
        }
    }
}
