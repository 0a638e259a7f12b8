using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Embedding;
using R = Llama4Native.Reference.Embedding;

namespace Llama4Native.Ops;

/// <summary>embedding cases. Dims: T, V, D. Types "table>out". Variant "badid" puts one out-of-range id in and expects the flag.</summary>
internal sealed class EmbeddingSpec : OpSpec
{
    public override string Name => "embedding";
    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "bf16>f32", "bf16>bf16", "f32>f32" })
        {
            foreach (var s in new long[][] { [1, 1, 1], [5, 17, 3], [7, 512, 64], [3, 100, 1001] }) yield return new OpCase(Name, "default", t, s);
            yield return new OpCase(Name, "badid", t, [6, 50, 24]);
        }
    }
    public override IEnumerable<OpCase> PerfCases()
    {
        yield return new OpCase(Name, "default", "bf16>bf16", [1, 202048, 5120], "decode");
        yield return new OpCase(Name, "default", "bf16>f32", [2048, 202048, 5120], "prefill");
    }
    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int t, v, d; readonly int[] ids; readonly float[] table;
        readonly Tensor tids, ttab, tout; readonly DeviceBuffer flag; readonly bool bad;
        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (t, v, d) = ((int)c[0], (int)c[1], (int)c[2]);
            bad = c.Variant == "badid";
            ids = Enumerable.Range(0, t).Select(_ => rng.Next(v)).ToArray();
            if (bad) ids[rng.Next(t)] = rng.Next(2) == 0 ? -1 - rng.Next(5) : v + rng.Next(5);
            table = DeviceData.Normal(rng, (long)v * d, 1f, sig.In(0));
            tids = new Tensor(Track(DeviceData.Upload<int>(dev, ids)).Ptr, DType.I32, new Shape(t));
            ttab = new Tensor(Track(DeviceData.Upload(dev, table, sig.In(0))).Ptr, sig.In(0), new Shape(v, d));
            tout = new Tensor(Track(DeviceData.Poisoned(dev, (long)t * d, sig.Output)).Ptr, sig.Output, new Shape(t, d));
            flag = Track(DeviceData.Upload<int>(dev, [0]));
        }
        // A gather reads only the T selected rows.
        public override double Bytes => (double)t * d * (sig.In(0).Size() + sig.Output.Size()) + t * 4;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, tids, ttab, tout, flag.Ptr, stream);
        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, tout.Ptr, tout.Elements, sig.Output);
            var f = new int[1];
            Device.Download(flag.Ptr, f.AsSpan());
            float[] want;
            int? firstBad;
            if (sig.Output == DType.BF16) { var y = new ushort[tout.Elements]; firstBad = R.Forward(ids, Bits.ToBf16(table), y, v, d); want = Bits.FromBf16(y); }
            else if (sig.In(0) == DType.BF16) { want = new float[tout.Elements]; firstBad = R.Forward(ids, Bits.ToBf16(table), want, v, d); }
            else { want = new float[tout.Elements]; firstBad = R.Forward(ids, table, want, v, d); }
            var r = OpCheck.Compare("out", got, want, Tolerances.For("embedding", sig.Output));
            bool flagOk = (f[0] != 0) == (firstBad is not null) && (firstBad is not null) == bad;
            return flagOk ? r : r with { Output = $"out (error flag {f[0]}, expected {(bad ? 1 : 0)})", Bad = Math.Max(1, r.Bad) };
        }
    }
}
