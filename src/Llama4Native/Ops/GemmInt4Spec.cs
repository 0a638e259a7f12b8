using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.GemmInt4;
using R = Llama4Native.Reference.GemmInt4;

namespace Llama4Native.Ops;

/// <summary>
/// gemm_int4 cases: y = x · dequant(W)ᵀ with W int4 [N, K] (random packed q in [-8, 7], random positive scales per
/// group). Dims: M, N, K, G. Variant: the path ("gemv", "mma", "simple"; "auto" = the wrapper's choice);
/// "-misaligned" starts x one element past a 16-byte boundary (the GEMV's scalar path). Types "x>y".
/// Scales ~ U(0.5, 1.5)/(4.6·√K), so w' = q·s ~ N(0, 1/K)-sized and |y| ~ 1 for x ~ N(0, 1) at every K.
/// The mma path is checked against the reference with bf16(q·s) weights (what it feeds the tensor cores).
/// </summary>
internal sealed class GemmInt4Spec : OpSpec
{
    public override string Name => "gemm_int4";

    public override IEnumerable<OpCase> Cases()
    {
        // G = 8 (K = 40: scalar path; 64 and 1000+ vector, 4 scales per load), 16, 24 (groups straddle nothing but
        // a 32-k load holds parts of two), 32, 128 (one scale per load); N ragged against the 16-row block / 128 tile.
        long[][] gemv = [[1, 1, 16, 8], [3, 7, 40, 8], [8, 65, 64, 8], [1, 300, 1024, 16], [5, 33, 96, 24], [2, 17, 256, 32],
                         [1, 300, 5120, 128], [8, 7, 384, 128], [4, 129, 2048, 64]];
        long[][] mma = [[9, 7, 40, 8], [17, 65, 64, 8], [70, 130, 256, 16], [33, 129, 96, 24], [131, 200, 512, 128], [16, 8, 128, 128],
                        [200, 33, 1024, 64]];
        long[][] simple = [[1, 1, 16, 8], [9, 7, 40, 8], [17, 65, 64, 16], [33, 30, 256, 128], [3, 5, 96, 24]];
        string[] types = ["f32>f32", "bf16>bf16", "bf16>f32"];
        foreach (var t in types)
        {
            foreach (var s in gemv) yield return new OpCase(Name, "gemv", t, s);
            foreach (var s in simple) yield return new OpCase(Name, "simple", t, s);
            yield return new OpCase(Name, "gemv-misaligned", t, [3, 65, 256, 128]);
            yield return new OpCase(Name, "auto", t, [1, 65, 256, 128]);
            yield return new OpCase(Name, "auto", t, [12, 65, 256, 16]);
        }
        foreach (var t in types[1..])
            foreach (var s in mma) yield return new OpCase(Name, "mma", t, s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Scout/Maverick shared expert (int4 in every MoE layer): gate and up [8192, 5120], down [5120, 8192]; G = 128.
        yield return new OpCase(Name, "gemv", "bf16>bf16", [1, 8192, 5120, 128], "shexp_gate");
        yield return new OpCase(Name, "gemv", "bf16>bf16", [1, 16384, 5120, 128], "shexp_gate_up");  // = gemv's bf16 perf case
        yield return new OpCase(Name, "gemv", "bf16>bf16", [1, 5120, 8192, 128], "shexp_down");
        yield return new OpCase(Name, "gemv", "bf16>bf16", [4, 8192, 5120, 128], "shexp_gate.m4");
        yield return new OpCase(Name, "mma", "bf16>bf16", [2048, 8192, 5120, 128], "shexp_gate.prefill");
        yield return new OpCase(Name, "gemv", "f32>f32", [1, 8192, 5120, 128], "shexp_gate.fp32");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int m, n, k, g; readonly K.Variant variant;
        readonly float[] x, scales; readonly byte[] packed; readonly Tensor tx, tw, ty;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (m, n, k, g) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3]);
            variant = c.Variant.Split('-')[0] switch
            {
                "gemv" => K.Variant.Gemv, "mma" => K.Variant.Mma, "simple" => K.Variant.Simple, _ => K.Variant.Auto,
            };
            x = DeviceData.Normal(rng, (long)m * k, 1f, sig.In(0));
            (packed, scales) = RandomInt4(rng, n, k, g);
            int skew = c.Variant.EndsWith("misaligned", StringComparison.Ordinal) ? 1 : 0;
            var xs = new float[x.Length + skew];
            x.CopyTo(xs, skew);
            long esz = sig.In(0) == DType.BF16 ? 2 : 4;
            tx = new Tensor(Track(DeviceData.Upload(dev, xs, sig.In(0))).Ptr + skew * esz, sig.In(0), new Shape(m, k));
            tw = UploadInt4(dev, packed, scales, g, n, k);
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)m * n, sig.Output)).Ptr, sig.Output, new Shape(m, n));
        }

        /// <summary>Random q (every byte value) and scales U(0.5, 1.5)/(4.6·√K).</summary>
        internal static (byte[] Packed, float[] Scales) RandomInt4(Random rng, long rows, int k, int g)
        {
            var packed = new byte[rows * k / 2];
            rng.NextBytes(packed);
            var scales = new float[rows * (k / g)];
            float unit = (float)(1 / (4.6 * Math.Sqrt(k)));
            for (long i = 0; i < scales.Length; i++) scales[i] = (float)(0.5 + rng.NextDouble()) * unit;
            return (packed, scales);
        }

        Tensor UploadInt4(Device dev, byte[] p, float[] s, int group, params long[] shape)
        {
            var bp = Track(DeviceData.Upload<byte>(dev, p));
            var bs = Track(DeviceData.Upload<float>(dev, s));
            return Tensor.Quantized(bp.Ptr, DType.I4, new Shape(shape), bs.Ptr, group);
        }

        public override double Bytes => tx.Bytes + tw.Bytes + tw.ScaleBytes + ty.Bytes;
        public override double Flops => 2.0 * m * n * k;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tx, tw, ty, stream, variant);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            var want = new float[ty.Elements];
            bool mma = variant == K.Variant.Mma || (variant == K.Variant.Auto && m > K.GemvMaxRows && sig.In(0) == DType.BF16);
            R.Forward(x, packed, scales, want, m, n, k, g, bf16Weights: mma);
            if (sig.Output == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("y", got, want, Tolerances.For("gemm_int4", sig.Output, k));
        }
    }
}
