using System.Globalization;
using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.PixelShuffle;
using R = Llama4Native.Reference.PixelShuffle;

namespace Llama4Native.Ops;

/// <summary>
/// pixel_shuffle cases. Dims: tiles, N (= G², the tokens shuffled), C. Variant "r&lt;ratio&gt;[-dropcls]": the ratio,
/// and whether x carries one more row per tile (the class token, last) that must be skipped. A permutation: exact.
/// </summary>
internal sealed class PixelShuffleSpec : OpSpec
{
    public override string Name => "pixel_shuffle";

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
        {
            foreach (var s in new long[][] { [3, 64, 32], [1, 4, 1], [2, 16, 3], [2, 36, 8], [1, 4, 5], [3, 100, 12], [1, 576, 64], [2, 16, 40] })
                yield return new OpCase(Name, "r0.5", t, s);
            yield return new OpCase(Name, "r0.5-dropcls", t, [3, 64, 32]);
            yield return new OpCase(Name, "r0.5-dropcls", t, [2, 16, 3]);
            yield return new OpCase(Name, "r0.25", t, [1, 64, 16]);
            yield return new OpCase(Name, "r0.25", t, [2, 64, 8]);
            yield return new OpCase(Name, "r2", t, [1, 4, 16]);
            yield return new OpCase(Name, "r1", t, [2, 9, 5]);
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "r0.5-dropcls", "bf16", [17, 576, 1408], "vision.17tiles");
        yield return new OpCase(Name, "r0.5", "f32", [17, 576, 1408], "vision.17tiles");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly int tiles, n, ch, tokensIn; readonly double ratio; readonly bool drop;
        readonly float[] x; readonly Tensor tx, ty;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            (tiles, n, ch) = ((int)c[0], (int)c[1], (int)c[2]);
            drop = c.Variant.EndsWith("-dropcls", StringComparison.Ordinal);
            ratio = double.Parse(c.Variant[1..].Replace("-dropcls", ""), CultureInfo.InvariantCulture);
            tokensIn = n + (drop ? 1 : 0);
            var (_, wr, _, c2) = K.Sizes(n, ch, ratio);
            x = DeviceData.Normal(rng, (long)tiles * tokensIn * ch, 1f, dt);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, dt)).Ptr, dt, new Shape(tiles, tokensIn, ch));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)tiles * wr * wr * c2, dt)).Ptr, dt, new Shape(tiles, (long)wr * wr, c2));
        }

        public override double Bytes => 2.0 * ty.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, ty, ratio, stream, drop);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, dt);
            var want = new float[ty.Elements];
            R.Forward(x, want, tiles, tokensIn, n, ch, ratio);
            return OpCheck.Compare("y", got, want, Tolerances.For("pixel_shuffle", dt));
        }
    }
}
