using System.Diagnostics;
using System.Runtime.Intrinsics;
using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>Load progress: bytes of the arena image uploaded so far.</summary>
public readonly record struct LoadProgress(long BytesDone, long BytesTotal, TimeSpan Elapsed)
{
    public double Fraction => BytesTotal == 0 ? 1 : (double)BytesDone / BytesTotal;
    public double GBps => Elapsed.TotalSeconds > 0 ? BytesDone / 1e9 / Elapsed.TotalSeconds : 0;
    public TimeSpan? Eta => BytesDone > 0 && Elapsed.Ticks > 0
        ? TimeSpan.FromSeconds(Elapsed.TotalSeconds * (BytesTotal - BytesDone) / BytesDone) : null;
}

/// <summary>How to load.</summary>
/// <param name="UpcastToF32">Convert BF16/F16 weights to F32 while staging (the exact-parity path); FP8 stays FP8.</param>
/// <param name="Include">Which tensors to upload (by our name); null = all. E.g. skip <c>v.*</c> for text-only use.</param>
/// <param name="StagingBuffers">Pinned staging buffers cycled through (at least 2: one filling while one copies).</param>
/// <param name="StagingBytes">Size of each staging buffer (a multiple of <see cref="WeightLoader.Alignment"/>); 0 = by
/// device: 16 MiB on CUDA (large DMA transfers), 1 MiB on the emulator (both copies are CPU copies, and a
/// cache-sized window makes the second one read from cache: measured 4.4 vs 3.1 GB/s at 8 MiB here).</param>
/// <param name="Progress">Called after each staged slice, from the loading thread.</param>
/// <param name="Quantize">On-the-fly quantization (null = none): int4_mixed or fp8_mixed, done on the device.</param>
public sealed record LoadOptions(
    bool UpcastToF32 = false,
    Func<string, bool>? Include = null,
    int StagingBuffers = 4,
    long StagingBytes = 0,
    Action<LoadProgress>? Progress = null,
    QuantizeOptions? Quantize = null);

/// <summary>
/// Uploads a validated <see cref="Checkpoint"/> into one device arena.
///
/// Why this shape: tensors are placed in checkpoint order (shard, offset) at 256-byte aligned offsets, so
/// the arena is a near-verbatim image of the shards' data sections. That image is streamed through a few
/// pinned staging buffers: the host fills buffer b from the memory-mapped pages (a plain copy, or a
/// bf16→f32 widening) while the device copies buffer b−1 asynchronously; an event per buffer says when it
/// may be refilled. One copy call per staging slice (not per tensor), reads strictly sequential through the
/// page cache. The emulated device runs the same path (its copies are memcpy and its events are no-ops).
/// </summary>
public static class WeightLoader
{
    public const int Alignment = 256;

    public static ModelWeights Load(string directory, Device device, LoadOptions? options = null)
    {
        using var ckpt = Checkpoint.Open(directory);
        return Load(ckpt, device, options);
    }

    /// <summary>One tensor's place in the arena.</summary>
    readonly record struct Placement(CheckpointTensor Source, DType Target, long Offset, long Bytes);

    static DType TargetDType(DType src, bool upcast) => upcast && src is DType.BF16 or DType.F16 ? DType.F32 : src;

    /// <summary>Bytes the arena needs for <paramref name="ckpt"/> under <paramref name="options"/>.</summary>
    public static long ArenaBytes(Checkpoint ckpt, LoadOptions? options = null) => Plan(ckpt, options ?? new LoadOptions(), out _);

    static long Plan(Checkpoint ckpt, LoadOptions o, out List<Placement> plan)
    {
        plan = new List<Placement>(ckpt.Tensors.Count);
        long cursor = 0;
        foreach (var t in ckpt.Tensors)
        {
            if (o.Include is not null && !o.Include(t.Name)) continue;
            var target = TargetDType(t.DType, o.UpcastToF32);
            long bytes = checked(t.Entry.ElementCount * target.Size());
            cursor = Align(cursor);
            plan.Add(new Placement(t, target, cursor, bytes));
            cursor = checked(cursor + bytes);
        }
        return Align(cursor);
    }

    static long Align(long x) => (x + Alignment - 1) & ~(long)(Alignment - 1);

    public static unsafe ModelWeights Load(Checkpoint ckpt, Device device, LoadOptions? options = null)
    {
        var o = options ?? new LoadOptions();
        if (o.StagingBuffers < 1) throw new ArgumentOutOfRangeException(nameof(options), "StagingBuffers must be ≥ 1 (2 are used at least)");
        if (o.StagingBytes == 0) o = o with { StagingBytes = device.Kind == DeviceKind.Cuda ? 16L << 20 : 1L << 20 };
        if (o.StagingBytes < Alignment || o.StagingBytes % Alignment != 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"StagingBytes must be a positive multiple of {Alignment}");
        var sw = Stopwatch.StartNew();
        long total = Plan(ckpt, o, out var plan);
        long sourceBytes = plan.Sum(p => p.Source.Bytes);

        // No MADV_SEQUENTIAL: it makes the kernel drop pages behind the reader, evicting the page cache.
        DeviceBuffer arena = device.Allocate(Math.Max(total, Alignment));
        long staging = Math.Min(o.StagingBytes, Math.Max(Alignment, Align(total)));
        int nbuf = Math.Max(2, o.StagingBuffers);
        var buffers = new HostBuffer[nbuf];
        var events = new DeviceEvent[nbuf];
        var stream = device.CreateStream();
        using var cancel = new CancellationTokenSource();
        Task? producer = null;
        try
        {
            for (int b = 0; b < nbuf; b++)
            {
                buffers[b] = device.AllocatePinned(staging);
                events[b] = device.CreateEvent();
            }
            // Producer (a worker thread): fills free staging buffers from the mapped pages, window by window.
            // Consumer (this thread): issues each filled buffer's copy, records its event, and hands back the
            // buffer whose copy was issued before (after its event) — so filling overlaps copying.
            using var free = new System.Collections.Concurrent.BlockingCollection<int>(nbuf);
            using var filled = new System.Collections.Concurrent.BlockingCollection<(int Slot, long At, long Len)>(nbuf);
            for (int b = 0; b < nbuf; b++) free.Add(b);
            var ct = cancel.Token;
            producer = Task.Factory.StartNew(() =>
            {
                try
                {
                    int next = 0;
                    for (long a = 0; a < total; a += staging)
                    {
                        long len = Math.Min(staging, total - a);
                        int slot = free.Take(ct);
                        FillWindow(plan, ref next, a, len, (byte*)buffers[slot].Pointer);
                        filled.Add((slot, a, len), ct);
                    }
                }
                finally { filled.CompleteAdding(); }
            }, ct, TaskCreationOptions.LongRunning, TaskScheduler.Default);

            var inflight = new Queue<int>();
            foreach (var (slot, a, len) in filled.GetConsumingEnumerable(ct))
            {
                device.CopyHostToDevice(buffers[slot].Pointer, arena.Ptr + a, len, stream);
                events[slot].Record(stream);
                inflight.Enqueue(slot);
                if (inflight.Count >= nbuf - 1)
                {
                    int done = inflight.Dequeue();
                    events[done].Synchronize();
                    free.Add(done, ct);
                }
                o.Progress?.Invoke(new LoadProgress(a + len, total, sw.Elapsed));
            }
            producer.GetAwaiter().GetResult(); // surfaces a producer exception
            stream.Synchronize();
            if (total == 0) o.Progress?.Invoke(new LoadProgress(0, 0, sw.Elapsed));
        }
        catch
        {
            cancel.Cancel();
            try { producer?.Wait(); } catch { /* its exception is the one being thrown, or a cancellation */ }
            try { stream.Synchronize(); } catch { /* already failing */ }
            arena.Dispose();
            if (producer is { IsFaulted: true }) throw producer.Exception!.InnerException!;
            throw;
        }
        finally
        {
            foreach (var e in events) e?.Dispose();
            foreach (var b in buffers) b?.Dispose();
            stream.Dispose();
        }

        var map = new Dictionary<string, DeviceWeight>(plan.Count, StringComparer.Ordinal);
        foreach (var p in plan)
            map[p.Source.Name] = new DeviceWeight(p.Source.Name, new Tensor(arena.Ptr + p.Offset, p.Target, new Shape(p.Source.Shape)),
                                                  p.Offset, p.Source.DType, p.Source.Expected.Hf);
        return new ModelWeights(ckpt.Config, device, arena, map, sourceBytes, sw.Elapsed);
    }

    /// <summary>
    /// The weights <see cref="Load"/> would produce for <paramref name="config"/>, without a checkpoint: the same
    /// placement (expected tensors in writing order at 256-byte aligned offsets, FP8 routed experts and their scales
    /// where the config's quantization_config says so, f32 with UpcastToF32), the arena allocated on
    /// <paramref name="device"/> and every view mapped, nothing copied. For planning on a recording device (`llama4
    /// plan`) and synthetic benchmarks that fill the arena on the device.
    /// <para>Written on the `plan` branch ahead of the lead's version (which adds on-the-fly int4/FP8 from
    /// <see cref="LoadOptions.Quantize"/>); on-the-fly quantization is refused here.</para>
    /// </summary>
    public static ModelWeights Describe(Llama4Config config, Device device, LoadOptions? options = null)
    {
        var o = options ?? new LoadOptions();
        if (o.Quantize is { Mode: not QuantizeMode.None } q)
            throw new NotSupportedException($"WeightLoader.Describe: on-the-fly {q.Mode} quantization is not in this build (it comes with the quantized load path)");
        var places = new List<(ExpectedTensor E, DType Source, DType Target, long Offset, long Elements)>();
        long cursor = 0;
        void Place(ExpectedTensor e, DType source)
        {
            if (o.Include is not null && !o.Include(e.Ours)) return;
            var target = TargetDType(source, o.UpcastToF32);
            long n = 1; foreach (var d in e.Shape) n = checked(n * d);
            long bytes = target.BytesOf(n);
            cursor = Align(cursor);
            places.Add((e, source, target, cursor, n));
            cursor = checked(cursor + bytes);
        }
        foreach (var e in TensorNames.Expected(config))
        {
            bool fp8 = e.Rule.Kind == TensorKind.Experts && config.Quantization is { QuantMethod: "fbgemm_fp8" } qc && !qc.IsExcluded(e.Module);
            Place(e, fp8 ? DType.F8E4M3 : DType.BF16);
            if (fp8 && TensorNames.ScaleFor(config, e) is { } s) Place(s, DType.F32);
        }
        long total = Align(cursor);
        var sw = Stopwatch.StartNew();
        var arena = device.Allocate(Math.Max(total, Alignment));
        var map = new Dictionary<string, DeviceWeight>(places.Count, StringComparer.Ordinal);
        foreach (var p in places)
            map[p.E.Ours] = new DeviceWeight(p.E.Ours, new Tensor(arena.Ptr + p.Offset, p.Target, new Shape(p.E.Shape)), p.Offset, p.Source, p.E.Hf);
        return new ModelWeights(config, device, arena, map, places.Sum(p => p.Source.BytesOf(p.Elements)), sw.Elapsed);
    }

    /// <summary>Fills staging memory <paramref name="dst"/> with the arena image [a, a+len); gaps between tensors are zeroed.</summary>
    static unsafe void FillWindow(List<Placement> plan, ref int next, long a, long len, byte* dst)
    {
        long filled = 0;
        while (next < plan.Count && plan[next].Offset + plan[next].Bytes <= a) next++;
        for (int i = next; i < plan.Count && plan[i].Offset < a + len; i++)
        {
            var p = plan[i];
            long from = Math.Max(a, p.Offset), to = Math.Min(a + len, p.Offset + p.Bytes);
            if (from - a > filled) new Span<byte>(dst + filled, (int)(from - a - filled)).Clear();
            Stage(p, from - p.Offset, to - from, dst + (from - a));
            filled = to - a;
        }
        if (filled < len) new Span<byte>(dst + filled, (int)(len - filled)).Clear();
    }

    /// <summary>Writes target bytes [offset, offset+bytes) of placement <paramref name="p"/> into <paramref name="dst"/>.</summary>
    static unsafe void Stage(Placement p, long offset, long bytes, byte* dst)
    {
        byte* src = p.Source.File.Pointer(p.Source.Entry);
        var from = p.Source.DType;
        if (from == p.Target)
        {
            Buffer.MemoryCopy(src + offset, dst, bytes, bytes);
            return;
        }
        // Widening to f32: target offsets are multiples of 4 (windows and placements are 256-aligned).
        long first = offset / 4, n = bytes / 4;
        if (from == DType.BF16) Bf16ToF32((ushort*)src + first, (uint*)dst, n);
        else if (from == DType.F16)
        {
            var s = (Half*)src + first;
            var d = (float*)dst;
            for (long i = 0; i < n; i++) d[i] = (float)s[i];
        }
        else throw new InvalidOperationException($"no conversion {from} → {p.Target}");
    }

    /// <summary>bf16 → f32 is exact: the bf16 bits become the high half of the f32.</summary>
    public static unsafe void Bf16ToF32(ushort* src, uint* dst, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
                Vector256.ShiftLeft(lo, 16).Store(dst + i);
                Vector256.ShiftLeft(hi, 16).Store(dst + i + 8);
            }
        for (; i < n; i++) dst[i] = (uint)src[i] << 16;
    }
}
