using Llama4Native.Devices;
using Llama4Native.Reference;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Gemm;
using R = Llama4Native.Reference.Gemm;

namespace Llama4Native.Ops;

/// <summary>
/// gemm cases. Dims: M, N, K. Variant "&lt;mma|simple&gt;-&lt;nk|kn&gt;" (B layout). Types "A,B>C".
/// A ~ N(0, 1), B ~ N(0, 1/K) like real weights, so |C| ~ 1 at every K.
/// </summary>
internal sealed class GemmSpec : OpSpec
{
    public override string Name => "gemm";

    public override IEnumerable<OpCase> Cases()
    {
        // Odd sizes, non-multiples of the 128×128×32 tile, K not a multiple of 8 (the scalar edge path), and
        // shapes spanning several tiles in every direction.
        long[][] shapes = [[1, 1, 1], [3, 5, 7], [17, 33, 40], [64, 64, 64], [130, 70, 200], [33, 129, 72], [5, 300, 8], [129, 257, 96]];
        foreach (var lay in new[] { "nk", "kn" })
        {
            foreach (var s in shapes)
            {
                yield return new OpCase(Name, "mma-" + lay, "bf16,bf16>f32", s);
                yield return new OpCase(Name, "simple-" + lay, "bf16,bf16>f32", s);
            }
            foreach (var s in new long[][] { [3, 5, 7], [130, 70, 200] })
            {
                yield return new OpCase(Name, "mma-" + lay, "bf16,bf16>bf16", s);
                yield return new OpCase(Name, "simple-" + lay, "bf16,bf16>bf16", s);
                yield return new OpCase(Name, "simple-" + lay, "f32,f32>f32", s);
                yield return new OpCase(Name, "simple-" + lay, "f32,bf16>f32", s);
            }
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Scout/Maverick projection shapes: q/o 5120→5120, kv 5120→1024, shared expert 5120→2×8192 and
        // 8192→5120, the routed experts' fused gate_up as [K, N] weights; prefill (M = 2048) and small batches.
        foreach (var m in new long[] { 2048, 128, 16 })
        {
            yield return new OpCase(Name, "mma-nk", "bf16,bf16>bf16", [m, 5120, 5120], "attn_q");
            yield return new OpCase(Name, "mma-nk", "bf16,bf16>bf16", [m, 1024, 5120], "attn_kv");
            yield return new OpCase(Name, "mma-nk", "bf16,bf16>bf16", [m, 16384, 5120], "shexp_gate_up");
            yield return new OpCase(Name, "mma-nk", "bf16,bf16>bf16", [m, 5120, 8192], "shexp_down");
            yield return new OpCase(Name, "mma-kn", "bf16,bf16>bf16", [m, 16384, 5120], "exp_gate_up");
        }
        yield return new OpCase(Name, "mma-nk", "bf16,bf16>f32", [2048, 8192, 8192], "square");
        yield return new OpCase(Name, "simple-nk", "bf16,bf16>f32", [512, 5120, 5120], "attn_q.simple");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int m, n, k; readonly GemmBLayout layout; readonly K.Variant variant;
        readonly float[] a, b; readonly Tensor ta, tb, tc;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (m, n, k) = ((int)c[0], (int)c[1], (int)c[2]);
            layout = c.Variant.EndsWith("kn", StringComparison.Ordinal) ? GemmBLayout.KN : GemmBLayout.NK;
            variant = c.Variant.StartsWith("mma", StringComparison.Ordinal) ? K.Variant.Mma : K.Variant.Simple;
            a = DeviceData.Normal(rng, (long)m * k, 1f, sig.In(0));
            b = DeviceData.Normal(rng, (long)n * k, (float)(1 / Math.Sqrt(k)), sig.In(1));
            ta = new Tensor(Track(DeviceData.Upload(dev, a, sig.In(0))).Ptr, sig.In(0), new Shape(m, k));
            tb = new Tensor(Track(DeviceData.Upload(dev, b, sig.In(1))).Ptr, sig.In(1), layout == GemmBLayout.NK ? new Shape(n, k) : new Shape(k, n));
            tc = new Tensor(Track(DeviceData.Poisoned(dev, (long)m * n, sig.Output)).Ptr, sig.Output, new Shape(m, n));
        }
        public override double Bytes => ta.Bytes + tb.Bytes + tc.Bytes;
        public override double Flops => 2.0 * m * n * k;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, ta, tb, tc, layout, stream, variant);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, tc.Ptr, tc.Elements, sig.Output);
            var want = new float[tc.Elements];
            if (sig.In(0) == DType.BF16) R.Forward(Bits.ToBf16(a), Bits.ToBf16(b), want, m, n, k, layout);
            else if (sig.In(1) == DType.BF16) R.Forward(a, Bits.ToBf16(b), want, m, n, k, layout);
            else R.Forward(a, b, want, m, n, k, layout);
            if (sig.Output == DType.BF16) DeviceData.RoundToBf16(want);
            return OpCheck.Compare("C", got, want, Tolerances.For("gemm", sig.Output, k));
        }
    }
}
