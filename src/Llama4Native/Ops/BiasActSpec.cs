using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.BiasAct;
using R = Llama4Native.Reference.BiasAct;

namespace Llama4Native.Ops;

/// <summary>
/// bias_act cases. Dims: rows, n. Variant "&lt;none|gelu&gt;[-nobias][-inplace]". Types "x,bias>y" with a bias,
/// "x>y" without. x ~ N(0, 2²): GELU's negative tail (1 + erf → 0) and its linear region both get exercised.
/// </summary>
internal sealed class BiasActSpec : OpSpec
{
    public override string Name => "bias_act";
    static readonly string[] Biased = ["f32,f32>f32", "f32,bf16>f32", "bf16,bf16>bf16", "f32,bf16>bf16"];
    static readonly string[] Unbiased = ["f32", "bf16", "f32>bf16"];

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes = [[1, 1], [3, 7], [5, 64], [2, 100], [7, 1000], [3, 1408], [2, 88], [1, 8], [4, 5632]];
        foreach (var a in new[] { "none", "gelu" })
        {
            foreach (var t in Biased) foreach (var s in shapes) yield return new OpCase(Name, a, t, s);
            foreach (var t in Unbiased) foreach (var s in shapes) yield return new OpCase(Name, a + "-nobias", t, s);
            foreach (var t in new[] { "f32,f32>f32", "bf16,bf16>bf16" })
            {
                yield return new OpCase(Name, a + "-inplace", t, [3, 1408]);
                yield return new OpCase(Name, a + "-inplace", t, [5, 13]);
            }
            foreach (var t in new[] { "f32", "bf16" })
                yield return new OpCase(Name, a + "-nobias-inplace", t, [3, 96]);
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        const long tokens = 17 * 577; // 16 tiles + the global one, 577 tokens each
        yield return new OpCase(Name, "gelu-inplace", "bf16,bf16>bf16", [tokens, 5632], "vision.fc1");
        yield return new OpCase(Name, "none-inplace", "bf16,bf16>bf16", [tokens, 1408], "vision.o_proj");
        yield return new OpCase(Name, "gelu", "f32,bf16>bf16", [tokens, 5632], "vision.fc1.f32gemm");
        yield return new OpCase(Name, "gelu-nobias-inplace", "bf16", [17 * 144, 4096], "vision.adapter");
        yield return new OpCase(Name, "gelu-inplace", "f32,f32>f32", [tokens, 5632], "vision.fc1");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int rows, n; readonly bool hasBias, inplace; readonly K.Activation act;
        readonly float[] x, b; readonly Tensor tx, ty; readonly Tensor? tb;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            rows = (int)c[0]; n = (int)c[1];
            hasBias = !c.Variant.Contains("-nobias", StringComparison.Ordinal);
            inplace = c.Variant.EndsWith("-inplace", StringComparison.Ordinal);
            act = c.Variant.StartsWith("gelu", StringComparison.Ordinal) ? K.Activation.GeluErf : K.Activation.None;
            DType dx = sig.In(0);
            x = DeviceData.Normal(rng, (long)rows * n, 2f, dx);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, dx)).Ptr, dx, new Shape(rows, n));
            b = hasBias ? DeviceData.Normal(rng, n, 0.5f, sig.In(1)) : [];
            if (hasBias) tb = new Tensor(Track(DeviceData.Upload(dev, b, sig.In(1))).Ptr, sig.In(1), new Shape(n));
            ty = inplace ? tx : new Tensor(Track(DeviceData.Poisoned(dev, (long)rows * n, sig.Output)).Ptr, sig.Output, new Shape(rows, n));
        }

        public override double Bytes => tx.Bytes + ty.Bytes + (tb?.Bytes ?? 0);
        // In place: checked after the first launch; later (timing) launches re-apply to the output, which is fine.
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, tb, ty, act, stream);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            var ra = (R.Activation)(int)act;
            float[] want;
            if (sig.Output == DType.BF16)
            {
                var y = new ushort[x.Length];
                R.Forward(x, Bits.ToBf16(b), y, rows, n, ra);
                want = Bits.FromBf16(y);
            }
            else
            {
                want = new float[x.Length];
                R.Forward(x, b, want, rows, n, ra);
            }
            return OpCheck.Compare("y", got, want, Tolerances.For("bias_act", sig.Output));
        }
    }
}
