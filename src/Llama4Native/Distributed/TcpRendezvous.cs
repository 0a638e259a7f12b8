using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Llama4Native.Distributed;

/// <summary>
/// How the processes of a group find each other: <c>--init tcp://HOST:PORT</c> names rank 0's address. Rank 0 listens
/// there; every other rank connects (retrying until the timeout, since rank 0 may start later), says its rank, the world
/// size and a tag (what the ranks must agree on: the model and its plan), and waits for rank 0's answer. When all W−1
/// have arrived, rank 0 checks them (ranks distinct and in range, the same world size and tag) and hands every rank the
/// same blob — NCCL's unique id (<c>ncclGetUniqueId</c> on rank 0, then <c>ncclCommInitRank</c> everywhere), or nothing
/// for emulated devices, which keep the connections: a star around rank 0 that <see cref="SocketCommunicator"/> runs
/// every collective over. A rank that never arrives is a <see cref="TimeoutException"/> naming it and the address,
/// never a hang. The same code spans nodes: HOST is rank 0's node as the others reach it.
/// </summary>
internal sealed class TcpRendezvous : IDisposable
{
    const int Magic = 0x4C345256; // "L4RV"
    const int Version = 1;

    public int Rank { get; }
    public int World { get; }
    /// <summary>HOST:PORT as given.</summary>
    public string Endpoint { get; }
    /// <summary>What rank 0 handed out (NCCL's unique id; empty for emulated devices).</summary>
    public byte[] Blob { get; }
    /// <summary>Rank 0: the stream to rank r at [r] (null at [0]); other ranks: the stream to rank 0 at [0].</summary>
    internal NetworkStream?[] Peers { get; }
    readonly List<IDisposable> owned;

    TcpRendezvous(int rank, int world, string endpoint, byte[] blob, NetworkStream?[] peers, List<IDisposable> owned)
    { Rank = rank; World = world; Endpoint = endpoint; Blob = blob; Peers = peers; this.owned = owned; }

    /// <summary>HOST and PORT of a <c>tcp://HOST:PORT</c> address; an <see cref="ArgumentException"/> saying what is wrong otherwise.</summary>
    public static (string Host, int Port) ParseInit(string init)
    {
        ArgumentException Bad(string why) => new($"--init '{init}': {why}; give rank 0's address as tcp://HOST:PORT (e.g. tcp://10.0.0.1:29500)");
        if (!init.StartsWith("tcp://", StringComparison.Ordinal)) throw Bad("only tcp:// is supported");
        var rest = init["tcp://".Length..].TrimEnd('/');
        int colon = rest.LastIndexOf(':');
        if (colon <= 0) throw Bad(rest.Length == 0 ? "no host" : "no port");
        string host = rest[..colon], port = rest[(colon + 1)..];
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        if (host.Length == 0 || host.Any(c => char.IsWhiteSpace(c) || c is '/' or '@' or '?' or '#')) throw Bad($"'{host}' is not a host name or address");
        if (!int.TryParse(port, System.Globalization.NumberStyles.None, null, out int p) || p < 1 || p > 65535) throw Bad($"'{port}' is not a port (1 to 65535)");
        return (host, p);
    }

    /// <summary>Joins the group at <paramref name="init"/> as <paramref name="rank"/> of <paramref name="world"/>.</summary>
    /// <param name="tag">What every rank must agree on (e.g. the model and device kind); a mismatch fails every rank.</param>
    /// <param name="rootBlob">Rank 0 only: makes the blob handed to everyone (NCCL's unique id), called once every rank has arrived.</param>
    /// <param name="keep">Keep the connections (the socket communicator runs over them); false closes them after the handshake.</param>
    public static TcpRendezvous Join(string init, int rank, int world, TimeSpan timeout, string tag = "", Func<byte[]>? rootBlob = null, bool keep = true)
    {
        if (world < 1) throw new ArgumentOutOfRangeException(nameof(world), world, "the world size must be ≥ 1");
        if ((uint)rank >= (uint)world) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank {rank} is not in 0..{world - 1} (--world-size {world})");
        var (host, port) = ParseInit(init);
        string endpoint = $"{host}:{port}";
        return rank == 0 ? Listen(endpoint, port, world, timeout, tag, rootBlob, keep) : Connect(endpoint, host, port, rank, world, timeout, tag, keep);
    }

    static TcpRendezvous Listen(string endpoint, int port, int world, TimeSpan timeout, string tag, Func<byte[]>? rootBlob, bool keep)
    {
        var owned = new List<IDisposable>();
        var peers = new NetworkStream?[world];
        var listener = new TcpListener(IPAddress.Any, port); // every IPv4 interface: the other nodes reach HOST
        listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        try
        {
            try { listener.Start(world); }
            catch (SocketException e)
            {
                throw new IOException($"rank 0 cannot listen on port {port} for --init tcp://{endpoint}: {e.Message} (another run still holds it? choose another port)", e);
            }
            var deadline = DateTime.UtcNow + timeout;
            int arrived = 1;
            while (arrived < world)
            {
                var left = deadline - DateTime.UtcNow;
                TcpClient client;
                try
                {
                    using var cts = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.Zero);
                    client = listener.AcceptTcpClientAsync(cts.Token).AsTask().GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                    var missing = Enumerable.Range(1, world - 1).Where(r => peers[r] is null);
                    var err = $"rank 0 waited {timeout.TotalSeconds:0.#} s at tcp://{endpoint} for rank(s) {string.Join(", ", missing)} of {world}, which never arrived: " +
                              $"start them with --rank R --world-size {world} --init tcp://{endpoint} (and check that HOST:PORT is reachable from their nodes)";
                    Abort(peers, err);
                    throw new TimeoutException(err);
                }
                owned.Add(client);
                client.NoDelay = true;
                var s = client.GetStream();
                s.ReadTimeout = (int)Math.Clamp((deadline - DateTime.UtcNow).TotalMilliseconds, 1000, int.MaxValue);
                int r, w; string t;
                try
                {
                    var rd = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
                    if (rd.ReadInt32() != Magic || rd.ReadInt32() != Version) { client.Dispose(); continue; } // not one of ours
                    r = rd.ReadInt32(); w = rd.ReadInt32(); t = rd.ReadString();
                }
                catch (IOException) { client.Dispose(); continue; }
                string? problem = w != world ? $"rank {r} says the world size is {w}, rank 0 says {world}: give every process the same --world-size"
                                : r < 1 || r >= world ? $"a process joined as rank {r}, which is not in 1..{world - 1}"
                                : peers[r] is not null ? $"two processes joined as rank {r}: give each its own --rank"
                                : t != tag ? $"rank {r} runs '{t}' but rank 0 runs '{tag}': every rank must load the same model with the same options"
                                : null;
                if (problem is not null)
                {
                    Reply(s, problem, []);
                    Abort(peers, problem);
                    throw new InvalidOperationException($"rendezvous at tcp://{endpoint}: {problem}");
                }
                peers[r] = s;
                arrived++;
            }
            byte[] blob;
            try { blob = rootBlob?.Invoke() ?? []; }
            catch (Exception e) { Abort(peers, $"rank 0 failed: {e.Message}"); throw; }
            for (int r = 1; r < world; r++) Reply(peers[r]!, null, blob);
            if (!keep) { foreach (var o in owned) o.Dispose(); owned.Clear(); Array.Clear(peers); }
            return new TcpRendezvous(0, world, endpoint, blob, peers, owned);
        }
        catch
        {
            foreach (var o in owned) o.Dispose();
            throw;
        }
        finally { listener.Stop(); listener.Dispose(); }
    }

    static TcpRendezvous Connect(string endpoint, string host, int port, int rank, int world, TimeSpan timeout, string tag, bool keep)
    {
        var deadline = DateTime.UtcNow + timeout;
        string last = "";
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
                throw new TimeoutException($"rank {rank} could not reach rank 0 at tcp://{endpoint} within {timeout.TotalSeconds:0.#} s ({last}): " +
                                           $"is rank 0 started with --world-size {world} --init tcp://{endpoint}, and is {host} reachable from here?");
            var client = new TcpClient { NoDelay = true };
            try
            {
                using (var cts = new CancellationTokenSource(left < TimeSpan.FromSeconds(5) ? left : TimeSpan.FromSeconds(5)))
                    client.ConnectAsync(host, port, cts.Token).AsTask().GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                client.Dispose();
                last = e is SocketException se ? se.SocketErrorCode.ToString() : "connect timed out";
                Thread.Sleep(TimeSpan.FromMilliseconds(Math.Min(200, Math.Max(1, (deadline - DateTime.UtcNow).TotalMilliseconds))));
                continue;
            }
            var s = client.GetStream();
            try
            {
                var wr = new BinaryWriter(s, Encoding.UTF8, leaveOpen: true);
                wr.Write(Magic); wr.Write(Version); wr.Write(rank); wr.Write(world); wr.Write(tag); wr.Flush();
                // rank 0 answers once every rank is in: up to its own timeout after this one's start, so wait for as long again.
                s.ReadTimeout = (int)Math.Clamp((deadline - DateTime.UtcNow + timeout).TotalMilliseconds, 1000, int.MaxValue);
                var rd = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
                bool ok = rd.ReadBoolean();
                string message = rd.ReadString();
                var blob = rd.ReadBytes(rd.ReadInt32());
                if (!ok) throw new InvalidOperationException($"rendezvous at tcp://{endpoint} (rank {rank} of {world}): {message}");
                if (!keep) { client.Dispose(); return new TcpRendezvous(rank, world, endpoint, blob, new NetworkStream?[1], []); }
                return new TcpRendezvous(rank, world, endpoint, blob, [s], [client]);
            }
            catch (IOException e)
            {
                client.Dispose();
                throw new TimeoutException($"rank {rank}: rank 0 at tcp://{endpoint} accepted the connection but never answered ({e.Message}): " +
                                           $"a rank of the {world} is missing, or rank 0 failed (see its output)", e);
            }
            catch { client.Dispose(); throw; }
        }
    }

    static void Reply(NetworkStream s, string? error, byte[] blob)
    {
        try
        {
            var wr = new BinaryWriter(s, Encoding.UTF8, leaveOpen: true);
            wr.Write(error is null); wr.Write(error ?? ""); wr.Write(blob.Length); wr.Write(blob); wr.Flush();
        }
        catch (IOException) { } // that rank is gone: its own error says so
    }

    static void Abort(NetworkStream?[] peers, string why)
    {
        foreach (var p in peers) if (p is not null) Reply(p, why, []);
    }

    public void Dispose()
    {
        foreach (var o in owned) o.Dispose();
        owned.Clear();
    }
}
