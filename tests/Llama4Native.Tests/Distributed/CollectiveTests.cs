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
        var devs = Devices(n);
        using var g = new InProcessGroup(devs);
        try { Exercise(devs, g.Ranks, call => OnAll(g, threads, call), bf16, count, $"threads={threads}"); }
        finally { foreach (var d in devs) d.Dispose(); }
    }

    public static IEnumerable<TestCaseData> SocketCases()
    {
        foreach (int n in new[] { 2, 3 })
            foreach (var dt in new[] { DType.F32, DType.BF16 })
                foreach (long count in new long[] { 1, 7, 1001 })
                    yield return new TestCaseData(n, dt == DType.BF16, count).SetName($"SocketCollectives_n{n}_{dt}_{count}");
    }

    /// <summary>The socket communicator (one rank per thread here, one per process in the CLI) over a real loopback
    /// rendezvous: the same reference, the same uneven sizes.</summary>
    [TestCaseSource(nameof(SocketCases))]
    public void SocketCollectivesMatchTheReference(int n, bool bf16, long count)
    {
        var devs = Devices(n);
        var comms = Sockets(devs, TimeSpan.FromSeconds(60));
        try
        {
            Exercise(devs, comms, call => Task.WaitAll(Enumerable.Range(0, n).Select(r => Task.Run(() => call(r))).ToArray()), bf16, count, "tcp");
            Assert.That(comms.Select(c => (c.Rank, c.Size, c.Backend)), Is.EqualTo(Enumerable.Range(0, n).Select(r => (r, n, "tcp"))));
        }
        finally
        {
            foreach (var c in comms) c.Dispose();
            foreach (var d in devs) d.Dispose();
        }
    }

    internal static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        int port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>n socket communicators meeting at a fresh loopback port, each joined from its own thread.</summary>
    static SocketCommunicator[] Sockets(Device[] devs, TimeSpan timeout)
    {
        string init = $"tcp://127.0.0.1:{FreePort()}";
        var joins = Enumerable.Range(0, devs.Length).Select(r => Task.Run(() => TcpRendezvous.Join(init, r, devs.Length, timeout, "test"))).ToArray();
        Task.WaitAll(joins);
        return joins.Select((j, r) => new SocketCommunicator(j.Result, devs[r]) { Timeout = timeout }).ToArray();
    }

    static void Exercise(Device[] devs, IReadOnlyList<Communicator> ranks, Action<Action<int>> onAll, bool bf16, long count, string how)
    {
        int n = devs.Length;
        var dt = bf16 ? DType.BF16 : DType.F32;
        int seed = TestSeed.For($"collectives {n} {dt} {count} {how}");
        var rng = new Random(seed);
        var bufs = new List<DeviceBuffer>();
        try
        {
            DeviceBuffer Keep(DeviceBuffer b) { bufs.Add(b); return b; }
            var x = Enumerable.Range(0, n).Select(_ => Random(rng, count * n, dt)).ToArray();
            var send = Enumerable.Range(0, n).Select(r => Keep(Up(devs[r], x[r], dt))).ToArray();
            var recv = Enumerable.Range(0, n).Select(r => Keep(Ops.DeviceData.Poisoned(devs[r], count * n * n, dt))).ToArray();
            float Round(float v) => dt == DType.BF16 ? BF16.ToFloat(BF16.FromFloat(v)) : v;
            string ctx = $"n={n} {dt} count={count} {how} seed={seed} (LLAMA4_TEST_SEED={TestSeed.Run})";

            // all-reduce over count·n elements (out of place)
            onAll(r => ranks[r].AllReduceSum(T(send[r], dt, count * n), T(recv[r], dt, count * n)));
            var sum = new float[count * n];
            for (int i = 0; i < sum.Length; i++) { float s = 0; for (int r = 0; r < n; r++) s += x[r][i]; sum[i] = Round(s); }
            for (int r = 0; r < n; r++) Assert.That(Down(devs[r], recv[r], count * n, dt), Is.EqualTo(sum), $"all-reduce rank {r} {ctx}");

            // all-gather: rank r sends its first count elements
            onAll(r => ranks[r].AllGather(T(send[r], dt, count), T(recv[r], dt, count * n)));
            var gathered = Enumerable.Range(0, n).SelectMany(r => x[r].Take((int)count)).ToArray();
            for (int r = 0; r < n; r++) Assert.That(Down(devs[r], recv[r], count * n, dt), Is.EqualTo(gathered), $"all-gather rank {r} {ctx}");

            // reduce-scatter: rank r gets Σ of block r
            onAll(r => ranks[r].ReduceScatterSum(T(send[r], dt, count * n), T(recv[r], dt, count)));
            for (int r = 0; r < n; r++)
            {
                var want = Enumerable.Range(0, (int)count).Select(i => Round(Enumerable.Range(0, n).Aggregate(0f, (s, q) => s + x[q][r * count + i]))).ToArray();
                Assert.That(Down(devs[r], recv[r], count, dt), Is.EqualTo(want), $"reduce-scatter rank {r} {ctx}");
            }

            // broadcast from the last rank
            int root = n - 1;
            onAll(r => ranks[r].Broadcast(T(send[r], dt, count), T(recv[r], dt, count), root));
            for (int r = 0; r < n; r++) Assert.That(Down(devs[r], recv[r], count, dt), Is.EqualTo(x[root].Take((int)count).ToArray()), $"broadcast rank {r} {ctx}");

            // all-to-all(v): uneven blocks, some empty; counts[a][b] = what a sends to b
            var counts = new long[n][];
            for (int a = 0; a < n; a++) counts[a] = Enumerable.Range(0, n).Select(_ => (long)rng.Next(0, (int)count + 1)).ToArray();
            onAll(r => ranks[r].AllToAllV(T(send[r], dt, count * n), counts[r], T(recv[r], dt, count * n * n),
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
    public void SocketRendezvousAndCollectiveErrorsAreClear()
    {
        var quick = TimeSpan.FromMilliseconds(1500);
        // rank 0 alone: times out naming the missing ranks and the address (not a hang)
        int port = FreePort();
        var alone = Assert.Throws<TimeoutException>(() => TcpRendezvous.Join($"tcp://127.0.0.1:{port}", 0, 3, quick));
        Assert.That(alone!.Message, Does.Contain("rank(s) 1, 2 of 3").And.Contain($"127.0.0.1:{port}"));
        // a rank whose rank 0 never starts: times out naming host:port
        port = FreePort();
        var lost = Assert.Throws<TimeoutException>(() => TcpRendezvous.Join($"tcp://127.0.0.1:{port}", 1, 2, quick));
        Assert.That(lost!.Message, Does.Contain("rank 1 could not reach rank 0").And.Contain($"tcp://127.0.0.1:{port}"));
        // different world sizes: both sides fail naming the disagreement
        string init = $"tcp://127.0.0.1:{FreePort()}";
        var r0 = Task.Run(() => TcpRendezvous.Join(init, 0, 2, TimeSpan.FromSeconds(20)));
        var r1 = Task.Run(() => TcpRendezvous.Join(init, 1, 3, TimeSpan.FromSeconds(20)));
        foreach (var t in new[] { r0, r1 })
        {
            var e = Assert.Throws<AggregateException>(() => t.Wait())!.InnerException!;
            Assert.That(e, Is.TypeOf<InvalidOperationException>());
            Assert.That(e.Message, Does.Contain("world size is 3, rank 0 says 2"));
        }
        // bad addresses and ranks are refused before any socket opens
        foreach (var bad in new[] { "http://h:1", "tcp://h", "tcp://:5", "tcp://h:0", "tcp://h:70000", "tcp://h:x" })
            Assert.That(() => TcpRendezvous.ParseInit(bad), Throws.ArgumentException.With.Message.Contains("tcp://HOST:PORT"), bad);
        Assert.That(() => TcpRendezvous.Join("tcp://127.0.0.1:1", 2, 2, quick), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("not in 0..1"));

        var devs = Devices(2);
        var comms = Sockets(devs, TimeSpan.FromSeconds(20));
        using var a = Ops.DeviceData.Upload(devs[0], new float[8], DType.F32);
        using var b = Ops.DeviceData.Upload(devs[1], new float[8], DType.F32);
        try
        {
            // mismatched calls: every rank fails with a message naming both
            var x = Task.Run(() => comms[0].AllReduceSum(T(a, DType.F32, 8), T(a, DType.F32, 8)));
            var y = Task.Run(() => comms[1].AllReduceSum(T(b, DType.F32, 4), T(b, DType.F32, 4)));
            foreach (var t in new[] { x, y })
                Assert.That(Assert.Throws<AggregateException>(() => t.Wait())!.InnerException!.Message,
                            Does.Contain("mismatched collective").And.Contain("rank 0").And.Contain("rank 1"));
            // a rank that never issues the next collective: the other times out naming it, not a hang
            comms[0].Timeout = quick;
            var m = Assert.Throws<TimeoutException>(() => comms[0].Broadcast(T(a, DType.F32, 8), T(a, DType.F32, 8), 0));
            Assert.That(m!.Message, Does.Contain("rank 0 of 2 waited").And.Contain("never issued it"));
        }
        finally
        {
            foreach (var c in comms) c.Dispose();
            foreach (var d in devs) d.Dispose();
        }
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
