using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.QuantizeFp8;
using R = Llama4Native.Reference.QuantizeFp8;

namespace Llama4Native.Ops;

/// <summary>
/// quantize_fp8 cases, all bit-exact (codes and scales). Variants: "rows" (dims M, K; x ~ N(0, 1) with special rows:
/// row 1 ×1000 so the bound ub = 1200 clamps the scale and codes saturate at ±448, row 2 all zeros (minimum scale),
/// row 3 with NaN, ±inf and −0), "rows-misaligned" (x one element off 16 bytes: the scalar path), "weights" (dims E,
/// N, K, output-major), "weights-im" (dims E, N, K; the source is input-major [E, K, N], HF's routed experts),
/// "relayout" (dims E, N, K; random e4m3 bytes input-major [E, K, N] → [E, N, K]). Types: the source dtype.
/// </summary>
internal sealed class QuantizeFp8Spec : OpSpec
{
    public override string Name => "quantize_fp8";

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16" })
        {
            foreach (var s in new long[][] { [4, 1], [5, 7], [6, 64], [4, 1000], [9, 5120] })
                yield return new OpCase(Name, "rows", t, s);
            yield return new OpCase(Name, "rows-misaligned", t, [5, 64]);
            foreach (var s in new long[][] { [1, 1, 1], [3, 33, 17], [2, 40, 64] })
            {
                yield return new OpCase(Name, "weights", t, s);
                yield return new OpCase(Name, "weights-im", t, s);
            }
        }
        foreach (var s in new long[][] { [1, 1, 1], [3, 33, 17], [2, 80, 64], [1, 5, 100] })
            yield return new OpCase(Name, "relayout", "f32", s);
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "rows", "bf16", [1, 5120], "decode");
        yield return new OpCase(Name, "rows", "bf16", [2048, 5120], "prefill");
        yield return new OpCase(Name, "rows", "bf16", [2048, 8192], "prefill.h");
        // One Maverick expert's gate_up (D = 5120, 2I = 16384), as loaded from a bf16 or an FP8 checkpoint.
        yield return new OpCase(Name, "weights-im", "bf16", [1, 16384, 5120], "maverick.expert_gate_up");
        yield return new OpCase(Name, "relayout", "f32", [1, 16384, 5120], "maverick.expert_gate_up");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly string variant; readonly DType dt; readonly int rows, e, n, k;
        readonly float[] x = []; readonly byte[] src = [];
        readonly Tensor tx, tq, ts;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            variant = c.Variant;
            dt = TypeSig.Parse(c.Types).Output;
            if (variant.StartsWith("rows", StringComparison.Ordinal))
            {
                (rows, k) = ((int)c[0], (int)c[1]);
                x = DeviceData.Normal(rng, (long)rows * k, 1f, dt);
                if (rows > 1) for (int i = 0; i < k; i++) x[k + i] *= 1000f;
                if (rows > 2) Array.Clear(x, 2 * k, k);
                if (rows > 3)
                {
                    float[] sp = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f];
                    for (int i = 0; i < Math.Min(k, sp.Length); i++) x[3 * k + i * Math.Max(1, k / 4)] = sp[i];
                }
                if (dt == DType.BF16) DeviceData.RoundToBf16(x);
                int skew = variant.EndsWith("misaligned", StringComparison.Ordinal) ? 1 : 0;
                var xs = new float[x.Length + skew]; x.CopyTo(xs, skew);
                tx = new Tensor(Track(DeviceData.Upload(dev, xs, dt)).Ptr + skew * (long)dt.Size(), dt, new Shape(rows, k));
                tq = new Tensor(Track(Poison(dev, (long)rows * k)).Ptr, DType.F8E4M3, new Shape(rows, k));
                ts = new Tensor(Track(Poison(dev, 4L * rows)).Ptr, DType.F32, new Shape(rows));
                return;
            }
            (e, n, k) = ((int)c[0], (int)c[1], (int)c[2]);
            long total = (long)e * n * k;
            bool im = variant != "weights";
            if (variant == "relayout")
            {
                src = new byte[total];
                rng.NextBytes(src);
                tx = new Tensor(Track(DeviceData.Upload<byte>(dev, src)).Ptr, DType.F8E4M3, new Shape(e, k, n));
                tq = new Tensor(Track(Poison(dev, total)).Ptr, DType.F8E4M3, new Shape(e, n, k));
                return;
            }
            x = DeviceData.Normal(rng, total, 0.02f, dt);
            tx = new Tensor(Track(DeviceData.Upload(dev, x, dt)).Ptr, dt, im ? new Shape(e, k, n) : new Shape(e, n, k));
            ts = new Tensor(Track(Poison(dev, 4L * e * n)).Ptr, DType.F32, new Shape(e, n));
            tq = Tensor.Quantized(Track(Poison(dev, total)).Ptr, DType.F8E4M3, new Shape(e, n, k), ts.Ptr, k);
        }

        static DeviceBuffer Poison(Device dev, long bytes)
        {
            var b = dev.Allocate(Math.Max(16, bytes));
            dev.Memset(b.Ptr, 0xFF, b.Bytes);
            return b;
        }

        public override double Bytes => tx.Bytes + tq.Bytes + (ts.Ptr.IsNull ? 0 : ts.Bytes);
        public override void Launch(DeviceStream? stream = null)
        {
            switch (variant)
            {
                case "relayout": K.Relayout(Device, tx, tq, stream); break;
                case "weights": K.Weights(Device, tx, false, tq, stream); break;
                case "weights-im": K.Weights(Device, tx, true, tq, stream); break;
                default: K.Rows(Device, tx, tq, ts, 1200f, stream); break;
            }
        }

        public override OpCheck Check()
        {
            var q = new byte[tq.Elements];
            Device.Download(tq.Ptr, q.AsSpan());
            var wantQ = new byte[q.Length];
            float[] s = [], wantS = [];
            if (variant == "relayout") R.Relayout(src, wantQ, e, k, n);
            else
            {
                int ns = variant.StartsWith("rows", StringComparison.Ordinal) ? rows : e * n;
                s = new float[ns]; wantS = new float[ns];
                Device.Download(ts.Ptr, s.AsSpan());
                if (variant.StartsWith("rows", StringComparison.Ordinal)) R.Rows(x, wantQ, wantS, rows, k, 1200f);
                else R.Weights(x, variant == "weights-im", wantQ, wantS, e, n, k);
            }
            var c = OpCheck.Compare("codes", F(q), F(wantQ), Tolerances.Exact);
            if (!c.Passed || s.Length == 0) return c;
            return OpCheck.Compare("scales", s, wantS, Tolerances.Exact);
        }

        static float[] F(byte[] b) { var r = new float[b.Length]; for (int i = 0; i < b.Length; i++) r[i] = b[i]; return r; }
    }
}
