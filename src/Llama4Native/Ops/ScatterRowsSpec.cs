using Llama4Native.Devices;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.ScatterRows;
using R = Llama4Native.Reference.ScatterRows;

namespace Llama4Native.Ops;

/// <summary>
/// scatter_rows cases. Dims: n, D, T. Types "src>dst". index = n distinct random rows of [0, T) in increasing order
/// (as &lt;|patch|&gt; positions are); dst starts random (rows not named must survive) with the named rows NaN (an
/// unwritten one fails). Variant "outofrange": two extra entries −1 and T must be skipped — dst sits between two guard
/// rows (rows −1 and T of the buffer) that are checked too. A copy: exact.
/// </summary>
internal sealed class ScatterRowsSpec : OpSpec
{
    public override string Name => "scatter_rows";

    public override IEnumerable<OpCase> Cases()
    {
        foreach (var t in new[] { "f32", "bf16", "f32>bf16", "bf16>f32" })
        {
            foreach (var s in new long[][] { [1, 1, 1], [5, 7, 20], [48, 64, 70], [3, 5120, 10], [17, 1000, 40], [4, 16, 4] })
                yield return new OpCase(Name, "default", t, s);
            yield return new OpCase(Name, "outofrange", t, [6, 16, 10]);
            yield return new OpCase(Name, "outofrange", t, [3, 13, 9]);
        }
    }

    public override IEnumerable<OpCase> PerfCases()
    {
        // 16 + 1 tiles of 144 patch tokens into a 2448 + 200 token prompt at Scout's hidden size
        yield return new OpCase(Name, "default", "bf16", [17 * 144, 5120, 17 * 144 + 200], "scout.17tiles");
        yield return new OpCase(Name, "default", "f32>bf16", [17 * 144, 5120, 17 * 144 + 200], "scout.17tiles");
    }

    public override OpInstance Create(Device device, OpCase c, Random rng) => new Instance(device, c, rng);

    sealed class Instance : OpInstance
    {
        readonly TypeSig sig; readonly int n, d, t; readonly float[] src, dst0; readonly int[] index;
        readonly Tensor ts, ti, td; readonly DevicePtr buf;

        public Instance(Device dev, OpCase c, Random rng) : base(dev, c)
        {
            sig = TypeSig.Parse(c.Types);
            (n, d, t) = ((int)c[0], (int)c[1], (int)c[2]);
            var rows = Enumerable.Range(0, t).OrderBy(_ => rng.Next()).Take(n).Order().ToList();
            if (c.Variant == "outofrange") { rows.Insert(rows.Count / 2, -1); rows.Add(t); }
            index = [.. rows];
            int total = index.Length;
            src = DeviceData.Normal(rng, (long)total * d, 1f, sig.In(0));
            dst0 = DeviceData.Normal(rng, (long)(t + 2) * d, 1f, sig.Output); // [guard, T rows, guard]
            foreach (var r in index) if (r >= 0 && r < t) Array.Fill(dst0, float.NaN, (r + 1) * d, d);
            ts = new Tensor(Track(DeviceData.Upload(dev, src, sig.In(0))).Ptr, sig.In(0), new Shape(total, d));
            ti = new Tensor(Track(DeviceData.Upload<int>(dev, index)).Ptr, DType.I32, new Shape(total));
            buf = Track(DeviceData.Upload(dev, dst0, sig.Output)).Ptr;
            td = new Tensor(new DevicePtr(buf.Value + (ulong)(d * sig.Output.Size())), sig.Output, new Shape(t, d));
        }

        public override double Bytes => ts.Bytes + (double)index.Length * d * sig.Output.Size() + ti.Bytes;
        public override void Launch(DeviceStream? stream = null) => K.Run(Device, ts, ti, td, stream);

        public override OpCheck Check()
        {
            var got = DeviceData.Download(Device, buf, dst0.Length, sig.Output);
            var want = (float[])dst0.Clone();
            var s = (float[])src.Clone();
            if (sig.Output == DType.BF16) DeviceData.RoundToBf16(s);
            R.Forward(s, index, want.AsSpan(d, t * d), index.Length, d, t);
            return OpCheck.Compare("dst", got, want, Tolerances.For("scatter_rows", sig.Output));
        }
    }
}
