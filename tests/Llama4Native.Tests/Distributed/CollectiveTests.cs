using Llama4Native.Devices;
using Llama4Native.Distributed;
using Llama4Native.Tensors;
using BF16 = Llama4Native.Reference.BF16;

namespace Llama4Native.Tests.Distributed;

/// <summary>
/// The in-process collectives against a plain reference, on 2–4 emulated devices, f32 and bf16, uneven element counts
/// (1, 7, 1001) and uneven all-to-all(v) blocks (including zero), driven both ways the interface allows: one thread in
/// group brackets (the sharded runner's way) and one thread per rank (blocking). Fresh random data, replayable seeds.
/// </summary>
[Category("Emulator")]
public class CollectiveTests
{
    static Device[] Devices(int n) => Enumerable.Range(0, n).Select(_ => TestDevices.Emulated()).ToArray();

    static float[] Random(Random rng, long n, DType dt)
    {
        var a = Ops.DeviceData.Normal(rng, n);
        if (dt == DType.BF16) Ops.DeviceData.RoundToBf16(a);
        return a;
    }

    static DeviceBuffer Up(Device d, float[] a, DType dt) => Ops.DeviceData.Upload(d, a, dt);
    static float[] Down(Device d, DeviceBuffer b, long n, DType dt) => Ops.DeviceData.Download(d, b.Ptr, n, dt);
    static Tensor T(DeviceBuffer b, DType dt, long n) => new(b.Ptr, dt, new Shape(n));

    /// <summary>Runs one collective on every rank: bracketed on this thread, or one thread per rank.</summary>
    static void OnAll(InProcessGroup g, bool threads, Action<int> call)
    {
        if (!threads)
        {
            g.GroupStart();
            for (int r = 0; r < g.Size; r++) call(r);
            g.GroupEnd();
            return;
        }
        var tasks = Enumerable.Range(0, g.Size).Select(r => Task.Run(() => call(r))).ToArray();
        Task.WaitAll(tasks);
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (int n in new[] { 2, 3, 4 })
            foreach (var dt in new[] { DType.F32, DType.BF16 })
                foreach (long count in new long[] { 1, 7, 1001 })
                    foreach (bool threads in new[] { false, true })
                        yield return new TestCaseData(n, dt == DType.BF16, count, threads).SetName($"Collectives_n{n}_{dt}_{count}_{(threads ? "threads" : "group")}");
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchTheReference(int n, bool bf16, long count, bool threads)
    {
        var dt = bf16 ? DType.BF16 : DType.F32;
        int seed = TestSeed.For($"collectives {n} {dt} {count} {threads}");
        var rng = new Random(seed);
        var devs = Devices(n);
        using var g = new InProcessGroup(devs);
        var bufs = new List<DeviceBuffer>();
        try
        {
            DeviceBuffer Keep(DeviceBuffer b) { bufs.Add(b); return b; }
            var x = Enumerable.Range(0, n).Select(_ => Random(rng, count * n, dt)).ToArray();
            var send = Enumerable.Range(0, n).Select(r => Keep(Up(devs[r], x[r], dt))).ToArray();
            var recv = Enumerable.Range(0, n).Select(r => Keep(Ops.DeviceData.Poisoned(devs[r], count * n * n, dt))).ToArray();
            float Round(float v) => dt == DType.BF16 ? BF16.ToFloat(BF16.FromFloat(v)) : v;
            string ctx = $"n={n} {dt} count={count} threads={threads} seed={seed} (LLAMA4_TEST_SEED={TestSeed.Run})";

            // all-reduce over count·n elements (out of place)
            OnAll(g, threads, r => g.Ranks[r].AllReduceSum(T(send[r], dt, count * n), T(recv[r], dt, count * n)));
            var sum = new float[count * n];
            for (int i = 0; i < sum.Length; i++) { float s = 0; for (int r = 0; r < n; r++) s += x[r][i]; sum[i] = Round(s); }
            for (int r = 0; r < n; r++) Assert.That(Down(devs[r], recv[r], count * n, dt), Is.EqualTo(sum), $"all-reduce rank {r} {ctx}");

            // all-gather: rank r sends its first count elements
            OnAll(g, threads, r => g.Ranks[r].AllGather(T(send[r], dt, count), T(recv[r], dt, count * n)));
            var gathered = Enumerable.Range(0, n).SelectMany(r => x[r].Take((int)count)).ToArray();
            for (int r = 0; r < n; r++) Assert.That(Down(devs[r], recv[r], count * n, dt), Is.EqualTo(gathered), $"all-gather rank {r} {ctx}");

            // reduce-scatter: rank r gets Σ of block r
            OnAll(g, threads, r => g.Ranks[r].ReduceScatterSum(T(send[r], dt, count * n), T(recv[r], dt, count)));
            for (int r = 0; r < n; r++)
            {
                var want = Enumerable.Range(0, (int)count).Select(i => Round(Enumerable.Range(0, n).Aggregate(0f, (s, q) => s + x[q][r * count + i]))).ToArray();
                Assert.That(Down(devs[r], recv[r], count, dt), Is.EqualTo(want), $"reduce-scatter rank {r} {ctx}");
            }

            // broadcast from the last rank
            int root = n - 1;
            OnAll(g, threads, r => g.Ranks[r].Broadcast(T(send[r], dt, count), T(recv[r], dt, count), root));
            for (int r = 0; r < n; r++) Assert.That(Down(devs[r], recv[r], count, dt), Is.EqualTo(x[root].Take((int)count).ToArray()), $"broadcast rank {r} {ctx}");

            // all-to-all(v): uneven blocks, some empty; counts[a][b] = what a sends to b
            var counts = new long[n][];
            for (int a = 0; a < n; a++) counts[a] = Enumerable.Range(0, n).Select(_ => (long)rng.Next(0, (int)count + 1)).ToArray();
            OnAll(g, threads, r => g.Ranks[r].AllToAllV(T(send[r], dt, count * n), counts[r], T(recv[r], dt, count * n * n),
                                                        Enumerable.Range(0, n).Select(p => counts[p][r]).ToArray()));
            for (int b = 0; b < n; b++)
            {
                var want = new List<float>();
                for (int a = 0; a < n; a++) want.AddRange(x[a].Skip((int)counts[a].Take(b).Sum()).Take((int)counts[a][b]));
                var got = Down(devs[b], recv[b], want.Count, dt);
                Assert.That(got, Is.EqualTo(want.ToArray()), $"all-to-all(v) rank {b} {ctx}");
            }
        }
        finally
        {
            foreach (var b in bufs) b.Dispose();
            foreach (var d in devs) d.Dispose();
        }
    }

    [Test]
    public void MismatchedOrMissingCallsAreClearErrors()
    {
        var devs = Devices(2);
        using var g = new InProcessGroup(devs) { Timeout = TimeSpan.FromMilliseconds(300) };
        using var a = Ops.DeviceData.Upload(devs[0], new float[8], DType.F32);
        using var b = Ops.DeviceData.Upload(devs[1], new float[8], DType.F32);
        try
        {
            // different sizes on the two ranks: both named
            g.GroupStart();
            g.Ranks[0].AllReduceSum(T(a, DType.F32, 8), T(a, DType.F32, 8));
            var e = Assert.Throws<InvalidOperationException>(() => g.Ranks[1].AllReduceSum(T(b, DType.F32, 4), T(b, DType.F32, 4)));
            Assert.That(e!.Message, Does.Contain("mismatched collective").And.Contain("rank 0").And.Contain("rank 1"));
            g.GroupEnd();

            // a rank that never issues it: GroupEnd names it
            g.GroupStart();
            g.Ranks[0].AllGather(T(a, DType.F32, 4), T(a, DType.F32, 8));
            var m = Assert.Throws<InvalidOperationException>(() => g.GroupEnd());
            Assert.That(m!.Message, Does.Contain("not by 1"));

            // outside a bracket a lone rank times out naming the missing one
            var t = Assert.Throws<TimeoutException>(() => g.Ranks[1].Broadcast(T(b, DType.F32, 8), T(b, DType.F32, 8), 0));
            Assert.That(t!.Message, Does.Contain("rank(s) 0"));

            // wrong buffer sizes are refused before anything moves
            var s = Assert.Throws<ArgumentException>(() => g.Ranks[0].AllGather(T(a, DType.F32, 4), T(a, DType.F32, 4)));
            Assert.That(s!.Message, Does.Contain("all-gather").And.Contain("expected 4 and 8"));
        }
        finally { foreach (var d in devs) d.Dispose(); }
    }

    [Test]
    public void DeviceSpecsParse()
    {
        Assert.That(DeviceGroup.Parse("emu:3"), Is.EqualTo(new[] { "emu", "emu", "emu" }));
        Assert.That(DeviceGroup.Parse("cuda:0-3"), Is.EqualTo(new[] { "cuda:0", "cuda:1", "cuda:2", "cuda:3" }));
        Assert.That(DeviceGroup.Parse("cuda:0,2,5-6"), Is.EqualTo(new[] { "cuda:0", "cuda:2", "cuda:5", "cuda:6" }));
        Assert.That(DeviceGroup.Parse("auto"), Is.EqualTo(new[] { "auto" }));
        foreach (var bad in new[] { "emu:0", "emu:x", "cuda:3-1", "cuda:1,1", "tpu:2", "cuda:", "cuda:-1" })
            Assert.That(() => DeviceGroup.Parse(bad), Throws.ArgumentException.With.Message.Contains("--devices"), bad);
    }
}
