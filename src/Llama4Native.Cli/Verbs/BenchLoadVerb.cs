using System.Diagnostics;
using System.Runtime.InteropServices;
using Llama4Native.Checkpoints;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// llama4 bench-load --model DIR [--device auto|cuda|emu] [--runs N] [--upcast] [--staging-kib auto] [--buffers 3]
/// Load throughput of a (page-cached) checkpoint into a device arena, next to the host memcpy bandwidth
/// measured in the same run, so the ratio says how close loading gets to the machine's copy speed.
/// </summary>
internal static class BenchLoadVerb
{
    public static readonly VerbSpec Spec = new("bench-load", "measure checkpoint load GB/s (page-cached) vs memcpy GB/s on this machine",
        [Common.Model, Common.Device,
         new("runs", "N", "timed loads, 1 to 1000 (default 3)"),
         new("staging-kib", "KIB", "staging buffer size in KiB, 0 = auto (default 0)"),
         new("buffers", "N", "staging buffers in flight, 1 to 64 (default 4)"),
         new("upcast", null, "load as f32 (the fp32 compute path)"),
         new("quiet", null, "no progress output")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        int runs = a.GetInt("runs", 3, 1, 1000);
        var options = new LoadOptions(UpcastToF32: a.Has("upcast"),
                                      StagingBuffers: a.GetInt("buffers", 4, 1, 64),
                                      StagingBytes: a.Long("staging-kib", 0, 0, 1L << 30) << 10);
        var spec = Common.DeviceSpec(a);
        string dir = Common.ModelDir(a);
        using var device = InspectVerb.OpenDevice(spec, stderr)
                           ?? throw new UsageException("no device to load onto (see the message above)");
        using var ckpt = Checkpoint.Open(dir);
        long bytes = ckpt.TotalBytes;
        stdout.WriteLine($"checkpoint {dir}: {ckpt.Tensors.Count} tensors, {Format.Bytes(bytes)} in {ckpt.Shards.Count} shards; device {device.Name}");

        // Warm the page cache (the benchmark is about page-cached loads).
        var warm = Stopwatch.StartNew();
        long sum = 0;
        unsafe
        {
            foreach (var s in ckpt.Shards)
            {
                byte* p = s.DataPointer;
                for (long i = 0; i < s.Header.DataLength; i += 4096) sum += p[i];
            }
        }
        stdout.WriteLine($"page cache warmed in {warm.Elapsed.TotalSeconds:0.00} s (checksum {sum & 0xFF})");

        double memcpy = MemcpyGBps(Math.Min(bytes, 1L << 30));
        stdout.WriteLine($"memcpy (1 thread, {Format.Bytes(Math.Min(bytes, 1L << 30))} buffers, best of 5): {memcpy:0.00} GB/s");

        var best = double.MaxValue;
        for (int r = 0; r < runs; r++)
        {
            var bar = a.Has("quiet") ? null : new ProgressBar(stderr, $"load {r + 1}/{runs}");
            var opt = options with { Progress = p => bar?.Update(p.BytesDone, p.BytesTotal, p.Elapsed) };
            var sw = Stopwatch.StartNew();
            using (var w = WeightLoader.Load(ckpt, device, opt)) { }
            double s = sw.Elapsed.TotalSeconds;
            bar?.Done();
            best = Math.Min(best, s);
            stdout.WriteLine($"load run {r + 1}: {s:0.000} s, {bytes / 1e9 / s:0.00} GB/s");
        }
        double gbps = bytes / 1e9 / best;
        stdout.WriteLine($"RESULT load {gbps:0.00} GB/s (best of {runs}) = {gbps / memcpy * 100:0}% of memcpy {memcpy:0.00} GB/s");
        return 0;
    }

    /// <summary>Single-threaded memcpy between two touched buffers: the ceiling of a host-side staging copy.</summary>
    internal static unsafe double MemcpyGBps(long bytes)
    {
        bytes = Math.Max(bytes, 1 << 20);
        void* src = NativeMemory.AlignedAlloc((nuint)bytes, 4096), dst = NativeMemory.AlignedAlloc((nuint)bytes, 4096);
        try
        {
            NativeMemory.Fill(src, (nuint)bytes, 1);
            NativeMemory.Fill(dst, (nuint)bytes, 2);
            double best = double.MaxValue;
            for (int i = 0; i < 5; i++)
            {
                var sw = Stopwatch.StartNew();
                Buffer.MemoryCopy(src, dst, bytes, bytes);
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            return bytes / 1e9 / best;
        }
        finally
        {
            NativeMemory.AlignedFree(src);
            NativeMemory.AlignedFree(dst);
        }
    }
}
