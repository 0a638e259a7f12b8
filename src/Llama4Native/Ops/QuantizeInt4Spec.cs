using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.QuantizeInt4;
using R = Llama4Native.Reference.QuantizeInt4;

namespace Llama4Native.Ops;

/// <summary>
/// quantize_int4 cases: Meta int4_mixed quantization of a weight, bit-exact (q and scales) to the reference.
/// Dims: batch, N, K, G. Variant "out" (w output-major [batch, N, K]) or "in" (input-major [batch, K, N], HF's expert
/// layout), "-special" plants the edge cases in every row: a group of zeros (the 1e-6 clamp), a group whose values are
/// exact halves of its scale (ties round half to even: ±0.5, ±2.5, −7.5 → −8, 7.5 → 8 clamps to 7), and the row's
/// largest magnitude at both signs (+max → 7, −max → −8). Types: the weight's dtype.
/// </summary>
internal sealed class QuantizeInt4Spec : OpSpec
{
    public override string Name => "quantize_int4";

    public override IEnumerable<OpCase> Cases()
    {
        long[][] shapes =
        [
            [1, 1, 16, 8], [1, 3, 40, 8], [2, 5, 48, 16], [3, 7, 256, 128], [1, 65, 384, 128], [2, 33, 96, 32], [1, 300, 64, 64],
            [4, 9, 24, 24],
        ];
        foreach (var t in new[] { "bf16", "f32" })
            foreach (var v in new[] { "out", "in" })
            {
                foreach (var s in shapes) yield return new OpCase(Name, v, t, s);
                yield return new OpCase(Name, v + "-special", t, [2, 5, 64, 16]);
                yield return new OpCase(Name, v + "-special", t, [1, 3, 256, 128]);
            }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "out", "bf16", [1, 8192, 5120, 128], "scout.shexp_gate");
        yield return new OpCase(Name, "in", "bf16", [16, 16384, 5120, 128], "scout.experts_gate_up");
        yield return new OpCase(Name, "in", "bf16", [16, 5120, 8192, 128], "scout.experts_down");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly DType dt; readonly bool inputMajor, perf; readonly int batch, n, k, g;
        readonly float[] w = [];
        readonly Tensor tw, tq;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            dt = TypeSig.Parse(c.Types).Output;
            (batch, n, k, g) = ((int)c[0], (int)c[1], (int)c[2], (int)c[3]);
            inputMajor = c.Variant.StartsWith("in", StringComparison.Ordinal);
            long count = (long)batch * n * k;
            perf = count > (1L << 26);
            var wShape = inputMajor ? new Shape(batch, k, n) : new Shape(batch, n, k);
            if (perf)
            {   // real sizes: a constant byte fill on the device (values don't change the timing); Check knows the result
                var buf = Track(dev.Allocate(count * dt.Size()));
                dev.Memset(buf.Ptr, 0x3c, buf.Bytes);
                tw = new Tensor(buf.Ptr, dt, wShape);
            }
            else
            {
                w = DeviceData.Normal(rng, count, 0.05f, dt);
                if (c.Variant.EndsWith("special", StringComparison.Ordinal)) Plant(rng);
                tw = new Tensor(Track(DeviceData.Upload(dev, w, dt)).Ptr, dt, wShape);
            }
            var q = Track(dev.Allocate(count / 2));
            var s = Track(dev.Allocate(count / g * 4));
            dev.Memset(q.Ptr, 0xA5, q.Bytes);
            dev.Memset(s.Ptr, 0xFF, s.Bytes);  // NaN: an unwritten scale never passes
            tq = Tensor.Quantized(q.Ptr, DType.I4, new Shape(batch, n, k), s.Ptr, g);
        }

        long Index(long b, long row, long kk) => inputMajor ? (b * k + kk) * n + row : (b * n + row) * k + kk;

        /// <summary>In every row: group 0 all zeros; group 1 exact halves of s = 1 (max 8); the row's ±max at group 2.</summary>
        void Plant(Random rng)
        {
            float[] ties = [8f, 0.5f, -0.5f, 2.5f, -2.5f, 7.5f, -7.5f, 1.5f, 3.5f, -6.5f, 6.5f, -1.5f, 4.5f, -4.5f, 5.5f, -5.5f];
            for (long b = 0; b < batch; b++)
                for (long row = 0; row < n; row++)
                {
                    for (int j = 0; j < g; j++) w[Index(b, row, j)] = 0f;
                    if (k / g > 1) for (int j = 0; j < g; j++) w[Index(b, row, g + j)] = ties[j % ties.Length] * (j % 2 == 0 || j < 16 ? 1 : -1);
                    if (k / g > 2)
                    {
                        float m = 0.25f + rng.Next(4) * 0.125f;  // exact in bf16
                        w[Index(b, row, 2 * g)] = m; w[Index(b, row, 2 * g + 1)] = -m;
                    }
                }
        }

        public override double Bytes => tw.Bytes + tq.Bytes + tq.ScaleBytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tw, inputMajor, tq, stream);

        public override OpCheck Check()
        {
            long count = (long)batch * n * k;
            var q = new byte[count / 2];
            var s = new float[count / g];
            Device.Download(tq.Ptr, q.AsSpan());
            Device.Download(tq.Scale, s.AsSpan());
            var wantQ = new byte[q.Length];
            var wantS = new float[s.Length];
            if (perf)
            {   // every weight is the fill value v: s = v/8 and q = round(8) = 8, clamped to 7
                float v = dt == DType.BF16 ? Reference.BF16.ToFloat(0x3c3c) : BitConverter.UInt32BitsToSingle(0x3c3c3c3c);
                var one = new byte[1]; var os = new float[1];
                R.Quantize([v, v], 1, 1, 2, 2, false, one, os);
                wantQ.AsSpan().Fill(one[0]);
                wantS.AsSpan().Fill(os[0]);
            }
            else R.Quantize(w, batch, n, k, g, inputMajor, wantQ, wantS);
            var c = OpCheck.Compare("q (packed bytes)", Bytes2F(q), Bytes2F(wantQ), Tolerances.Exact);
            return c.Passed ? OpCheck.Compare("scales", s, wantS, Tolerances.Exact) : c;
        }

        static float[] Bytes2F(byte[] a) { var r = new float[a.Length]; for (int i = 0; i < a.Length; i++) r[i] = a[i]; return r; }
    }
}
