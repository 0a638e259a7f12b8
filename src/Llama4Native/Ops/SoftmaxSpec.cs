using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Softmax;
using R = Llama4Native.Reference.Softmax;

namespace Llama4Native.Ops;

/// <summary>softmax cases. Dims: rows, cols. Some entries are −inf (masked scores), and one row is fully masked.</summary>
internal sealed class SoftmaxSpec : OpSpec
{
    public override string Name => "softmax";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var v in new[] { "block", "warp" })
            foreach (var s in new long[][] { [1, 1], [3, 5], [4, 32], [2, 33], [5, 1000], [2, 1500], [1, 8192] })
                yield return new OpCase(Name, v, "f32", s);
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "block", "f32", [40, 8192], "decode.scores");
        yield return new OpCase(Name, "warp", "f32", [40L * 512, 512], "prefill.scores");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly int rows, cols; readonly float[] x; readonly Tensor tx, ty; readonly K.Variant variant;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            rows = (int)c[0]; cols = (int)c[1];
            variant = c.Variant == "warp" ? K.Variant.Warp : K.Variant.Block;
            x = DeviceData.Normal(rng, (long)rows * cols, 4f);
            for (int i = 0; i < x.Length; i++) if (rng.Next(8) == 0) x[i] = float.NegativeInfinity;
            if (rows > 1) Array.Fill(x, float.NegativeInfinity, cols, cols); // row 1 fully masked → zeros
            tx = new Tensor(Track(DeviceData.Upload(dev, x, DType.F32)).Ptr, DType.F32, new Shape(rows, cols));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, x.Length, DType.F32)).Ptr, DType.F32, new Shape(rows, cols));
        }
        public override double Bytes => tx.Bytes + ty.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, ty, stream, variant);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, x.Length, DType.F32);
            var want = new float[x.Length];
            R.Forward(x, want, rows, cols);
            return OpCheck.Compare("y", got, want, Tolerances.For("softmax", DType.F32));
        }
    }
}
