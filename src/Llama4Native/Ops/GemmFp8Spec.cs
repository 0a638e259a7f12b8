using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.GemmFp8;
using Q = Llama4Native.Reference.QuantizeFp8;
using R = Llama4Native.Reference.GemmFp8;

namespace Llama4Native.Ops;

/// <summary>
/// gemm_fp8 cases (FBGEMM f8f8bf16_rowwise). Variants: "mma" (the e4m3 tensor-core path; the hardware instruction on
/// sm_89+, the emulator's twin), "mma-bf16" (the sm_80 path: exact bf16 conversion + bf16 mma, forced), "gemv"
/// (decode, M ≤ 8), "linear" (GemmFp8.Linear: quantize x on the device, then the auto-picked GEMM; x's dtype is the
/// first input type), "gemv-misaligned"/"mma-misaligned" (xq one byte off 16: the byte paths). Dims: M, N, K.
/// Types "x>y": x is what was quantized (f32/bf16; f32 = N(0,1)), y bf16 or f32 (holding bf16 values).
/// Operands: xq, xs = quantize_fp8_per_row(x, 1200) and wq, ws = the row quantization of W ~ N(0, 1/K), so |y| ~ 1.
/// </summary>
internal sealed class GemmFp8Spec : OpSpec
{
    public override string Name => "gemm_fp8";

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var y in new[] { "bf16", "f32" })
        {
            string t = "f32>" + y;
            foreach (var s in new long[][] { [1, 1, 1], [3, 7, 17], [8, 65, 16], [1, 300, 64], [5, 65, 1000], [8, 9, 5120], [2, 33, 544] })
                yield return new OpCase(Name, "gemv", t, s);
            // Tiles 128×128×64: partial M/N/K tiles, K not a multiple of 16 (byte loads), several K tiles.
            foreach (var s in new long[][] { [9, 7, 32], [33, 65, 100], [130, 129, 200], [17, 140, 64] })
            {
                yield return new OpCase(Name, "mma", t, s);
                yield return new OpCase(Name, "mma-bf16", t, s);
            }
        }
        yield return new OpCase(Name, "gemv-misaligned", "f32>bf16", [3, 65, 64]);
        yield return new OpCase(Name, "mma-misaligned", "f32>bf16", [20, 40, 96]);
        yield return new OpCase(Name, "linear", "bf16>bf16", [4, 33, 96]);
        yield return new OpCase(Name, "linear", "f32>f32", [21, 33, 40]);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // Dense FP8 projections at Scout/Maverick shapes (D = 5120): decode (M = 1) and prefill (M = 2048).
        yield return new OpCase(Name, "gemv", "bf16>bf16", [1, 5120, 5120], "attn_q");
        yield return new OpCase(Name, "gemv", "bf16>bf16", [1, 16384, 5120], "shexp_gate_up");
        yield return new OpCase(Name, "gemv", "bf16>bf16", [1, 5120, 8192], "shexp_down");
        yield return new OpCase(Name, "gemv", "bf16>bf16", [4, 5120, 5120], "attn_q.m4");
        yield return new OpCase(Name, "mma", "bf16>bf16", [2048, 5120, 5120], "attn_q.prefill");
        yield return new OpCase(Name, "mma", "bf16>bf16", [2048, 16384, 5120], "shexp_gate_up.prefill");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int m, n, k; readonly string variant;
        readonly float[] x; readonly byte[] xq, wq; readonly float[] xs, ws;
        readonly Tensor tx, txq, txs, tw, ty, scratchQ, scratchS;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (m, n, k) = ((int)c[0], (int)c[1], (int)c[2]);
            variant = c.Variant;
            x = DeviceData.Normal(rng, (long)m * k, 1f, sig.In(0));
            var w = DeviceData.Normal(rng, (long)n * k, (float)(1 / Math.Sqrt(k)), DType.BF16);
            xq = new byte[(long)m * k]; xs = new float[m]; wq = new byte[(long)n * k]; ws = new float[n];
            Q.Rows(x, xq, xs, m, k, 1200f);
            Q.Weights(w, false, wq, ws, 1, n, k);
            int skew = variant.EndsWith("misaligned", StringComparison.Ordinal) ? 1 : 0;
            var xqb = new byte[xq.Length + skew]; xq.CopyTo(xqb, skew);
            txq = new Tensor(Track(DeviceData.Upload<byte>(dev, xqb)).Ptr + skew, DType.F8E4M3, new Shape(m, k));
            txs = new Tensor(Track(DeviceData.Upload<float>(dev, xs)).Ptr, DType.F32, new Shape(m));
            tw = Tensor.Quantized(Track(DeviceData.Upload<byte>(dev, wq)).Ptr, DType.F8E4M3, new Shape(n, k), Track(DeviceData.Upload<float>(dev, ws)).Ptr, k);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, sig.In(0))).Ptr, sig.In(0), new Shape(m, k));
            ty = new Tensor(Track(DeviceData.Poisoned(dev, (long)m * n, sig.Output)).Ptr, sig.Output, new Shape(m, n));
            scratchQ = new Tensor(Track(dev.Allocate(Math.Max(16, (long)m * k))).Ptr, DType.F8E4M3, new Shape((long)m * k));
            scratchS = new Tensor(Track(dev.Allocate(Math.Max(16, 4L * m))).Ptr, DType.F32, new Shape(m));
        }
        public override double Bytes => txq.Bytes + tw.Bytes + ty.Bytes + 4.0 * (m + n);
        public override double Flops => 2.0 * m * n * k;
        public override void Launch(DeviceStream? stream = null)
        {
            switch (variant)
            {
                case "linear": K.Linear(Device, tx, tw, ty, scratchQ, scratchS, 1200f, stream); break;
                case "gemv" or "gemv-misaligned": K.Run(Device, txq, txs, tw, ty, stream, K.Variant.Gemv); break;
                case "mma-bf16": K.Run(Device, txq, txs, tw, ty, stream, K.Variant.Mma, viaBf16: true); break;
                default: K.Run(Device, txq, txs, tw, ty, stream, K.Variant.Mma); break;
            }
        }
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, ty.Ptr, ty.Elements, sig.Output);
            var want = new float[ty.Elements];
            R.Forward(xq, xs, wq, ws, want, m, n, k);
            return OpCheck.Compare("y", got, want, Tolerances.For("gemm_fp8", sig.Output, k));
        }
    }
}
