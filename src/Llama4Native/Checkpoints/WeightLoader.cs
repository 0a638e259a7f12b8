using System.Diagnostics;
using System.Runtime.Intrinsics;
using Llama4Native.Devices;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>Load progress, reported through <see cref="Llama4ModelOptions.Progress"/> while the weights are uploaded.</summary>
/// <param name="BytesDone">Bytes of the device weight arena uploaded so far.</param>
/// <param name="BytesTotal">Bytes of the whole arena (weights after any quantization, with alignment).</param>
/// <param name="Elapsed">Time since the upload started.</param>
public readonly record struct LoadProgress(long BytesDone, long BytesTotal, TimeSpan Elapsed)
{
    /// <summary>The share done, 0 to 1 (1 for an empty model).</summary>
    public double Fraction => BytesTotal == 0 ? 1 : (double)BytesDone / BytesTotal;
    /// <summary>Upload speed so far in GB/s (10⁹ bytes per second); 0 before any time has passed.</summary>
    public double GBps => Elapsed.TotalSeconds > 0 ? BytesDone / 1e9 / Elapsed.TotalSeconds : 0;
    /// <summary>Time left at the speed so far; null until the first bytes are done.</summary>
    public TimeSpan? Eta => BytesDone > 0 && Elapsed.Ticks > 0
        ? TimeSpan.FromSeconds(Elapsed.TotalSeconds * (BytesTotal - BytesDone) / BytesDone) : null;
}

/// <summary>Device bytes of a model's weights: the arena <paramref name="Total"/> (with alignment) and the bytes by stored format.</summary>
internal sealed record WeightFootprint(long Total, IReadOnlyDictionary<string, long> ByFormat);

/// <summary>How to load.</summary>
/// <param name="UpcastToF32">Convert BF16/F16 weights to F32 while staging (the exact-parity path); FP8 stays FP8.</param>
/// <param name="Include">Which tensors to upload (by our name); null = all. E.g. skip <c>v.*</c> for text-only use.</param>
/// <param name="StagingBuffers">Pinned staging buffers cycled through (at least 2: one filling while one copies).</param>
/// <param name="StagingBytes">Size of each staging buffer (a multiple of <see cref="WeightLoader.Alignment"/>); 0 = by
/// device: 16 MiB on CUDA (large DMA transfers), 1 MiB on the emulator (both copies are CPU copies, and a
/// cache-sized window makes the second one read from cache: measured 4.4 vs 3.1 GB/s at 8 MiB here).</param>
/// <param name="Progress">Called after each staged slice, from the loading thread.</param>
/// <param name="Quantize">On-the-fly quantization (null = none): int4_mixed or fp8_mixed, done on the device.</param>
/// <param name="Shard">Several devices: the slice of each tensor this device (rank) owns (<see cref="Distributed.ShardingPlan.ForRank"/>);
/// only that slice is read from the checkpoint, staged and placed — the full tensor never exists on the device or the host.</param>
internal sealed record LoadOptions(
    bool UpcastToF32 = false,
    Func<string, bool>? Include = null,
    int StagingBuffers = 4,
    long StagingBytes = 0,
    Action<LoadProgress>? Progress = null,
    QuantizeOptions? Quantize = null,
    Distributed.ITensorSharding? Shard = null);

/// <summary>
/// Uploads a validated <see cref="Checkpoint"/> into one device arena, quantizing on the device where asked.
///
/// Why this shape: tensors are placed in checkpoint order (shard, offset) at 256-byte aligned offsets, so
/// the arena's first part is a near-verbatim image of the shards' data sections. That image is streamed
/// through a few pinned staging buffers: the host fills buffer b from the memory-mapped pages (a plain copy,
/// or a bf16→f32 widening) while the device copies buffer b−1 asynchronously; an event per buffer says when it
/// may be refilled. One copy call per staging slice (not per tensor), reads strictly sequential through the
/// page cache. The emulated device runs the same path (its copies are memcpy and its events are no-ops).
/// <para>
/// Weights that change form on the way in — quantized at load (<see cref="QuantizeMode"/>: int4_mixed /
/// fp8_mixed) or an FP8 checkpoint's input-major routed experts, which are transposed to the output-major
/// <c>[E, N, K]</c> every quantized kernel reads — are "staged": placed after the image, their source is
/// uploaded one expert (or one matrix) at a time into a small device scratch buffer and a kernel writes the
/// final form (packed int4 / fp8 plus f32 scales) into the arena. So neither host memory nor the device ever
/// holds the bf16 model: the arena is the quantized size, the scratch one expert's bf16 slice.
/// </para>
/// </summary>
internal static class WeightLoader
{
    public const int Alignment = 256;

    public static ModelWeights Load(string directory, Device device, LoadOptions? options = null)
    {
        using var ckpt = Checkpoint.Open(directory);
        return Load(ckpt, device, options);
    }

    /// <summary>How a weight gets into the arena.</summary>
    enum Route
    {
        /// <summary>Part of the streamed image: copied as stored, or widened to f32.</summary>
        Image,
        /// <summary>Source uploaded to scratch, then QuantizeInt4 writes packed int4 + scales.</summary>
        Int4,
        /// <summary>Source uploaded to scratch, then QuantizeFp8.Weights writes fp8 + per-row scales.</summary>
        Fp8,
        /// <summary>An FP8 checkpoint's routed experts [E, K, N]: uploaded to scratch, transposed to [E, N, K].</summary>
        Fp8Relayout,
    }

    /// <summary>One tensor's place in the arena. <paramref name="Source"/> is null when only described (no checkpoint).</summary>
    readonly record struct Placement(ExpectedTensor Expected, CheckpointTensor? Source, DType SourceDType, long[] SourceShape, Route Route,
                                     DType Target, Shape TargetShape, long Offset, long Bytes, long ScaleOffset, int Group, bool InputMajor,
                                     string? ScaleName, Distributed.TensorSlice? Slice = null, long[]? FullShape = null)
    {
        /// <summary>The concatenation this placement is a member of (<see cref="Concatenations"/>: "blk.3.attn_qkv",
        /// its scales "blk.3.attn_qkv.scale"), or null; members are placed back to back.</summary>
        public string? Fuse { get; init; }
        public string Name => Expected.Ours;
        public long SourceBytes => SourceDType.BytesOf(SourceShape.Aggregate(1L, (a, b) => checked(a * b)));
        public long ScaleBytes => Group == 0 ? 0 : TargetShape.Elements / Group * 4;
        /// <summary>Independent slices a staged weight is processed in: one per expert, else one.</summary>
        public int Slices => Expected.Rule.Kind == TensorKind.Experts ? (int)SourceShape[0] : 1;
    }

    static DType TargetDType(DType src, bool upcast) => upcast && src is DType.BF16 or DType.F16 ? DType.F32 : src;

    /// <summary>Bytes the arena needs for <paramref name="ckpt"/> under <paramref name="options"/>.</summary>
    public static long ArenaBytes(Checkpoint ckpt, LoadOptions? options = null) => Plan(Sources(ckpt), ckpt.Config, options ?? new LoadOptions(), out _, out _);

    /// <summary>Bytes the arena needs for a checkpoint of <paramref name="config"/> (bf16, or FP8 where its
    /// quantization_config says) under <paramref name="options"/> — no checkpoint needed.</summary>
    public static long ArenaBytes(Llama4Config config, LoadOptions? options = null) => Plan(Sources(config), config, options ?? new LoadOptions(), out _, out _);

    /// <summary>The device bytes of a checkpoint's weights under <paramref name="options"/>, by stored format
    /// ("bf16", "f32", "fp8", "int4", "scales"), computed from the same placement plan as the load — no device needed.</summary>
    public static WeightFootprint Footprint(Llama4Config config, LoadOptions? options = null, Checkpoint? ckpt = null)
    {
        long total = Plan(ckpt is null ? Sources(config) : Sources(ckpt), config, options ?? new LoadOptions(), out var plan, out _);
        var by = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var p in plan)
        {
            string key = p.Expected.IsScale ? "scales" : ModelWeights.Format(p.Target);
            by[key] = by.GetValueOrDefault(key) + p.Bytes;
            if (p.ScaleName is null && p.Group > 0) by["scales"] = by.GetValueOrDefault("scales") + p.ScaleBytes;
        }
        return new WeightFootprint(total, by);
    }

    /// <summary>
    /// The weights a checkpoint of <paramref name="config"/> would have under <paramref name="options"/>, laid out
    /// exactly as <see cref="Load(Checkpoint, Device, LoadOptions?)"/> lays them out (same placement plan, same
    /// formats, same arena size), with the arena allocated on <paramref name="device"/> and NOTHING copied: for
    /// planning (a recording device) and synthetic benchmarks (weights filled on the device afterwards).
    /// Source dtypes are bf16, or F8_E4M3 for the tensors an fbgemm_fp8 quantization_config does not exclude.
    /// </summary>
    public static ModelWeights Describe(Llama4Config config, Device device, LoadOptions? options = null)
    {
        var o = options ?? new LoadOptions();
        var sw = Stopwatch.StartNew();
        long total = Plan(Sources(config), config, o, out var plan, out _);
        var arena = device.Allocate(Math.Max(total, Alignment));
        return new ModelWeights(config, device, arena, Map(plan, arena), plan.Sum(p => p.SourceBytes), sw.Elapsed) { ActivationScaleUb = Ub(config, o) };
    }

    readonly record struct SourceTensor(ExpectedTensor Expected, CheckpointTensor? Tensor, DType DType, long[] Shape);

    static List<SourceTensor> Sources(Checkpoint ckpt) => ckpt.Tensors.Select(t => new SourceTensor(t.Expected, t, t.DType, t.Shape)).ToList();

    static List<SourceTensor> Sources(Llama4Config config)
    {
        var list = new List<SourceTensor>();
        var q = config.Quantization;
        foreach (var e in TensorNames.Expected(config))
        {
            bool fp8 = q is not null && e.Rule.ScaleShape is not null && !q.IsExcluded(e.Module);
            list.Add(new SourceTensor(e, null, fp8 ? DType.F8E4M3 : DType.BF16, e.Shape));
            if (fp8 && TensorNames.ScaleFor(config, e) is { } s) list.Add(new SourceTensor(s, null, DType.F32, s.Shape));
        }
        return list;
    }

    /// <summary>
    /// Which weights a recipe quantizes (../shared/SPEC-llama4.md § Quantization), by our names: int4_mixed takes the
    /// routed and the shared experts of every MoE layer; fp8_mixed the routed experts of MoE layers other than the
    /// first and the last decoder layer. Everything else keeps its checkpoint form.
    /// </summary>
    public static bool Quantizes(QuantizeMode mode, ExpectedTensor e, TextConfig text)
    {
        if (e.IsScale) return false;
        string suffix = e.Layer < 0 ? e.Ours : e.Ours[(e.Ours.IndexOf('.', 4) + 1)..];
        bool routed = e.Rule.Kind == TensorKind.Experts;
        bool shared = suffix is "moe.shexp_gate" or "moe.shexp_up" or "moe.shexp_down";
        return mode switch
        {
            QuantizeMode.Int4 => routed || shared,
            QuantizeMode.Fp8 => routed && e.Layer != 0 && e.Layer != text.NumHiddenLayers - 1,
            _ => false,
        };
    }

    /// <summary>
    /// Projections that read the same input, placed back to back along N so the graph can run them as ONE
    /// output-major [ΣN, K] weight (<see cref="ModelWeights.Concat"/>): one read of the activation, one launch. Output-major
    /// weights of any format concatenate exactly along N (bf16/f32 rows; FP8 with per-row scales; int4 with per-row
    /// group scales — the scales are placed back to back too). Name of the concatenation, then its members, by layer suffix.
    /// </summary>
    public static readonly (string Name, string[] Members)[] Concatenations =
    [
        ("attn_qkv", ["attn_q", "attn_k", "attn_v"]),
        ("ffn_gate_up", ["ffn_gate", "ffn_up"]),
        ("moe.shexp_gate_up", ["moe.shexp_gate", "moe.shexp_up"]),
    ];

    /// <summary>Reorders <paramref name="list"/> so the members of each concatenation (all present, same route) follow one
    /// another at the place of the first: FP8 scale companions first (in member order), then the weights.</summary>
    static List<Placement> Grouped(List<Placement> list)
    {
        var at = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < list.Count; i++) at[list[i].Name] = i;
        var lead = new Dictionary<int, List<int>>();
        var member = new HashSet<int>();
        foreach (var p in list)
        {
            if (p.Expected.Layer < 0 || !p.Name.StartsWith("blk.", StringComparison.Ordinal) || p.Expected.IsScale) continue;
            string prefix = $"blk.{p.Expected.Layer}.";
            foreach (var (name, members) in Concatenations)
            {
                if (p.Name != prefix + members[0]) continue;
                var idx = members.Select(m => at.TryGetValue(prefix + m, out int j) ? j : -1).ToArray();
                if (idx.Any(j => j < 0) || idx.Any(j => list[j].Route != p.Route || list[j].Target != p.Target)) break;
                var scales = idx.Select(j => list[j].ScaleName is { } sn && at.TryGetValue(sn, out int k) ? k : -1).ToArray();
                bool companions = scales.All(k => k >= 0);
                if (!companions && scales.Any(k => k >= 0)) break;
                var run = (companions ? scales.Concat(idx) : idx).ToList();
                foreach (var j in run) member.Add(j);
                lead[run.Min()] = run;
                break;
            }
        }
        if (lead.Count == 0) return list;
        var result = new List<Placement>(list.Count);
        for (int i = 0; i < list.Count; i++)
        {
            if (lead.TryGetValue(i, out var run))
                foreach (var j in run)
                {
                    var p = list[j];
                    string prefix = $"blk.{p.Expected.Layer}.";
                    string suffix = p.Expected.IsScale ? p.Name[prefix.Length..^".scale".Length] : p.Name[prefix.Length..];
                    string fused = prefix + Concatenations.First(c => c.Members.Contains(suffix)).Name + (p.Expected.IsScale ? ".scale" : "");
                    result.Add(p with { Fuse = fused });
                }
            else if (!member.Contains(i)) result.Add(list[i]);
        }
        return result;
    }

    /// <summary>Where a placement starts: the next aligned offset, or — a member of a concatenation after its
    /// predecessor, when that ends on a 16-byte boundary (vector loads stay aligned) — right after it.</summary>
    static long Start(long cursor, Placement p, Placement? prev, long prevBytes) =>
        p.Fuse is not null && prev is { } q && q.Fuse == p.Fuse && prevBytes % 16 == 0 ? cursor : Align(cursor);

    /// <summary>The logical output-major shape [.., N, K] of a weight that becomes quantized.</summary>
    static Shape OutputMajor(ExpectedTensor e, long[] stored) =>
        e.Rule.Kind == TensorKind.Experts ? new Shape(stored[0], stored[2], stored[1]) : new Shape(stored);

    static long Plan(List<SourceTensor> sources, Llama4Config config, LoadOptions o, out List<Placement> plan, out long imageEnd)
    {
        var q = o.Quantize ?? QuantizeOptions.None;
        if (q.Mode == QuantizeMode.Int4 && (q.Int4GroupSize < 2 || q.Int4GroupSize % 2 != 0))
            throw new ArgumentException($"--int4-group-size {q.Int4GroupSize}: the int4 group size must be a positive even number (128 for the real models)");
        var scales = sources.Where(s => s.Expected.IsScale).ToDictionary(s => s.Expected.Ours, StringComparer.Ordinal);
        var image = new List<Placement>(sources.Count);
        var staged = new List<Placement>();
        var problems = new List<string>();
        foreach (var s in sources)
        {
            var e = s.Expected;
            if (e.IsScale) continue; // placed with its weight, below
            if (o.Include is not null && !o.Include(e.Ours)) continue;
            // Several devices: this rank's slice of the tensor is what is read, staged and placed (shapes below are local).
            var slice = o.Shard?.SliceOf(e, s.Shape);
            var full = s.Shape;
            var local = slice?.Shape(full) ?? full;
            bool quantize = Quantizes(q.Mode, e, config.Text);
            if (s.DType == DType.F8E4M3)
            {
                if (q.Mode == QuantizeMode.Int4 && quantize)
                {
                    problems.Add($"{e.Hf} is FP8 in this checkpoint; int4 quantization starts from bf16 weights — load the bf16 checkpoint with --quantize int4, or this one with --quantize none");
                    continue;
                }
                if (!scales.TryGetValue(e.Ours + ".scale", out var sc))
                    throw new InvalidOperationException($"{e.Hf} is FP8 but its scale companion is missing (the checkpoint validation should have caught this)");
                var shape = OutputMajor(e, local);
                var scSlice = o.Shard?.SliceOf(sc.Expected, sc.Shape);
                var scLocal = scSlice?.Shape(sc.Shape) ?? sc.Shape;
                image.Add(new Placement(sc.Expected, sc.Tensor, DType.F32, scLocal, Route.Image, DType.F32, new Shape(scLocal), 0, 0, 0, 0, false, null, scSlice, sc.Shape));
                var p = new Placement(e, s.Tensor, s.DType, local, e.Rule.Kind == TensorKind.Experts ? Route.Fp8Relayout : Route.Image,
                                      DType.F8E4M3, shape, 0, 0, 0, (int)shape.Inner, false, sc.Expected.Ours, slice, full);
                (p.Route == Route.Image ? image : staged).Add(p);
                continue;
            }
            if (!quantize)
            {
                var target = TargetDType(s.DType, o.UpcastToF32);
                image.Add(new Placement(e, s.Tensor, s.DType, local, Route.Image, target, new Shape(local), 0, 0, 0, 0, false, null, slice, full));
                continue;
            }
            var om = OutputMajor(e, local);
            long k = om.Inner;
            if (q.Mode == QuantizeMode.Int4)
            {
                int g = q.Int4GroupSize;
                if (k % g != 0)
                {
                    var fits = new[] { 128, 64, 32, 16, 8 }.Where(c => k % c == 0).ToList();
                    problems.Add($"{e.Hf} ({e.Ours}) has K = {k} input elements per row, not a multiple of the int4 group size {g}; " +
                                 (fits.Count > 0 ? $"use --int4-group-size {fits[0]} (sizes that divide it: {string.Join(", ", fits)})" : "choose a group size that divides it"));
                    continue;
                }
                staged.Add(new Placement(e, s.Tensor, s.DType, local, Route.Int4, DType.I4, om, 0, 0, 0, g, e.Rule.Kind == TensorKind.Experts, null, slice, full));
            }
            else
                staged.Add(new Placement(e, s.Tensor, s.DType, local, Route.Fp8, DType.F8E4M3, om, 0, 0, 0, (int)k, e.Rule.Kind == TensorKind.Experts, null, slice, full));
        }
        if (problems.Count > 0)
            throw new ArgumentException(problems.Count <= 3 ? string.Join("\n", problems)
                : string.Join("\n", problems.Take(3)) + $"\n(and {problems.Count - 3} more weights like these)");

        // The image first (checkpoint order, concatenations back to back), then the staged weights: data, then
        // scales — a concatenation's data back to back, then its scales back to back.
        image = Grouped(image);
        staged = Grouped(staged);
        plan = new List<Placement>(image.Count + staged.Count);
        long cursor = 0;
        Placement? prev = null;
        foreach (var p in image)
        {
            cursor = Start(cursor, p, prev, prev?.Bytes ?? 0);
            long bytes = p.Target.BytesOf(p.TargetShape.Elements);
            var placed = p with { Offset = cursor, Bytes = bytes };
            plan.Add(placed);
            prev = placed;
            cursor = checked(cursor + bytes);
        }
        imageEnd = Align(cursor);
        cursor = imageEnd;
        for (int i = 0; i < staged.Count;)
        {
            int end = i + 1;
            while (staged[i].Fuse is not null && end < staged.Count && staged[end].Fuse == staged[i].Fuse) end++;
            var run = new Placement[end - i];
            prev = null;
            for (int j = i; j < end; j++)
            {
                var p = staged[j];
                long bytes = p.Target.BytesOf(p.TargetShape.Elements);
                cursor = Start(cursor, p, prev, prev?.Bytes ?? 0);
                run[j - i] = p with { Offset = cursor, Bytes = bytes };
                prev = run[j - i];
                cursor = checked(cursor + bytes);
            }
            prev = null;
            for (int j = 0; j < run.Length; j++)
            {
                var p = run[j];
                if (p.ScaleName is not null) continue; // the scales are a checkpoint companion in the image
                cursor = Start(cursor, p, prev, prev?.ScaleBytes ?? 0);
                run[j] = p with { ScaleOffset = cursor };
                prev = run[j];
                cursor = checked(cursor + p.TargetShape.Elements / p.Group * 4);
            }
            plan.AddRange(run);
            i = end;
        }
        return Align(cursor);
    }

    /// <summary>The FP8 activation bound: the checkpoint's quantization_config, else the load options'.</summary>
    static float Ub(Llama4Config c, LoadOptions o) => (float?)c.Quantization?.ActivationScaleUb ?? (o.Quantize ?? QuantizeOptions.None).ActivationScaleUb;

    static long Align(long x) => (x + Alignment - 1) & ~(long)(Alignment - 1);

    static Dictionary<string, DeviceWeight> Map(List<Placement> plan, DeviceBuffer arena)
    {
        var map = new Dictionary<string, DeviceWeight>(plan.Count, StringComparer.Ordinal);
        foreach (var p in plan.Where(p => p.ScaleName is null)) map[p.Name] = View(p, arena, null);
        foreach (var p in plan.Where(p => p.ScaleName is not null))
            map[p.Name] = View(p, arena, map[p.ScaleName!]);
        return map;
    }

    static DeviceWeight View(Placement p, DeviceBuffer arena, DeviceWeight? scale)
    {
        var data = arena.Ptr + p.Offset;
        var t = p.Group == 0 ? new Tensor(data, p.Target, p.TargetShape)
              : Tensor.Quantized(data, p.Target, p.TargetShape, scale?.Ptr ?? arena.Ptr + p.ScaleOffset, p.Group);
        return new DeviceWeight(p.Name, t, p.Offset, p.SourceDType, p.Expected.Hf);
    }

    public static unsafe ModelWeights Load(Checkpoint ckpt, Device device, LoadOptions? options = null)
    {
        var o = options ?? new LoadOptions();
        if (o.StagingBuffers < 1) throw new ArgumentOutOfRangeException(nameof(options), "StagingBuffers must be ≥ 1 (2 are used at least)");
        if (o.StagingBytes == 0) o = o with { StagingBytes = device.Kind == DeviceKind.Cuda ? 16L << 20 : 1L << 20 };
        if (o.StagingBytes < Alignment || o.StagingBytes % Alignment != 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"StagingBytes must be a positive multiple of {Alignment}");
        var sw = Stopwatch.StartNew();
        long total = Plan(Sources(ckpt), ckpt.Config, o, out var plan, out long imageEnd);
        var image = plan.Where(p => p.Route == Route.Image).ToList();
        var staged = plan.Where(p => p.Route != Route.Image).ToList();
        long sourceBytes = plan.Sum(p => p.SourceBytes);
        long stagedSource = staged.Sum(p => p.SourceBytes);
        long progressTotal = imageEnd + stagedSource;

        CheckFits(ckpt, device, o, total);
        // No MADV_SEQUENTIAL: it makes the kernel drop pages behind the reader, evicting the page cache.
        DeviceBuffer arena = device.Allocate(Math.Max(total, Alignment));
        long staging = Math.Min(o.StagingBytes, Math.Max(Alignment, Align(Math.Max(imageEnd, staged.Count > 0 ? o.StagingBytes : 0))));
        int nbuf = Math.Max(2, o.StagingBuffers);
        var buffers = new HostBuffer[nbuf];
        var events = new DeviceEvent[nbuf];
        var stream = device.CreateStream();
        DeviceBuffer? scratch = null;
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
                    for (long a = 0; a < imageEnd; a += staging)
                    {
                        long len = Math.Min(staging, imageEnd - a);
                        int slot = free.Take(ct);
                        FillWindow(image, ref next, a, len, (byte*)buffers[slot].Pointer);
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
                o.Progress?.Invoke(new LoadProgress(a + len, progressTotal, sw.Elapsed));
            }
            producer.GetAwaiter().GetResult(); // surfaces a producer exception
            while (inflight.Count > 0) events[inflight.Dequeue()].Synchronize();

            // Staged weights: one slice (expert) at a time through the device scratch, then its kernel.
            if (staged.Count > 0)
            {
                long slice = staged.Max(p => p.SourceBytes / p.Slices);
                scratch = device.Allocate(Align(Math.Max(slice, Alignment)));
                long done = imageEnd;
                var views = Map(plan, arena);
                foreach (var p in staged)
                {
                    var weight = views[p.Name];
                    long sliceBytes = p.SourceBytes / p.Slices;
                    var srcShape = p.Slices > 1 ? new Shape([1, .. p.SourceShape[1..]]) : new Shape(p.SourceShape);
                    for (int e = 0; e < p.Slices; e++)
                    {
                        ct.ThrowIfCancellationRequested();
                        long first = e * sliceBytes;
                        var place = p;
                        UploadRange(device, (off, len, dst) => ReadSource(place, first + off, len, dst), scratch.Ptr, sliceBytes, buffers, events, stream);
                        var from = new Tensor(scratch.Ptr, p.SourceDType, srcShape);
                        var to = p.Slices > 1 ? weight.Tensor.Slice(e, 1) : weight.Tensor;
                        switch (p.Route)
                        {
                            case Route.Int4: Kernels.QuantizeInt4.Run(device, from, p.InputMajor, to, stream); break;
                            case Route.Fp8: Kernels.QuantizeFp8.Weights(device, from, p.InputMajor, to, stream); break;
                            case Route.Fp8Relayout: Kernels.QuantizeFp8.Relayout(device, from, to, stream); break;
                        }
                        done += sliceBytes;
                        o.Progress?.Invoke(new LoadProgress(done, progressTotal, sw.Elapsed));
                    }
                }
            }
            stream.Synchronize();
            if (total == 0) o.Progress?.Invoke(new LoadProgress(0, 0, sw.Elapsed));
        }
        catch
        {
            cancel.Cancel();
            try { producer?.Wait(); } catch { /* its exception is the one being thrown, or a cancellation */ }
            try { stream.Synchronize(); } catch { /* already failing */ }
            scratch?.Dispose();
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
        scratch?.Dispose();
        return new ModelWeights(ckpt.Config, device, arena, Map(plan, arena), sourceBytes, sw.Elapsed) { ActivationScaleUb = Ub(ckpt.Config, o) };
    }

    /// <summary>Refuses, before anything is allocated or copied, weights larger than the device's free memory, naming
    /// the on-the-fly quantization that would fit.</summary>
    static void CheckFits(Checkpoint ckpt, Device device, LoadOptions o, long total)
    {
        long free = device.FreeMemory;
        if (total <= free) return;
        var mode = (o.Quantize ?? QuantizeOptions.None).Mode;
        var options = new List<string>();
        var asked = o.Quantize ?? QuantizeOptions.None;
        if (mode != QuantizeMode.Fp8)
            try
            {
                long need = Footprint(ckpt.Config, o with { Quantize = asked with { Mode = QuantizeMode.Fp8 } }, ckpt).Total;
                options.Add($"--quantize fp8 needs {Format.Bytes(need)}{(need <= free ? " (fits)" : "")}");
            }
            catch (ArgumentException) { /* fp8_mixed does not apply to this checkpoint */ }
        if (mode != QuantizeMode.Int4)
            foreach (int g in new[] { asked.Int4GroupSize, 128, 64, 32, 16, 8 }.Distinct())
                try
                {
                    long need = Footprint(ckpt.Config, o with { Quantize = asked with { Mode = QuantizeMode.Int4, Int4GroupSize = g } }, ckpt).Total;
                    options.Add($"--quantize int4{(g == 128 ? "" : $" --int4-group-size {g}")} needs {Format.Bytes(need)}{(need <= free ? " (fits)" : "")}");
                    break;
                }
                catch (ArgumentException) { /* this group size does not divide some K, or int4 does not apply */ }
        throw new DeviceOutOfMemoryException(
            $"out of device memory: the weights of {ckpt.Directory} need {Format.Bytes(total)}" +
            (mode == QuantizeMode.None ? "" : $" with --quantize {mode.ToString().ToLowerInvariant()}") +
            $" but {device.Name} has {Format.Bytes(free)} free; nothing was loaded." +
            (options.Count > 0 ? " " + string.Join("; ", options) + "." : "") +
            " Or split it over several devices (--devices cuda:0-7; see `llama4 plan --devices N`).", total, free);
    }

    /// <summary>Copies <paramref name="bytes"/> from mapped host memory to <paramref name="dst"/> through the pinned
    /// staging buffers (round robin; a buffer is refilled only after its previous copy's event).</summary>
    unsafe delegate void FillBytes(long offset, long bytes, byte* dst);

    static unsafe void UploadRange(Device device, FillBytes src, DevicePtr dst, long bytes, HostBuffer[] buffers, DeviceEvent[] events, DeviceStream stream)
    {
        long chunk = buffers[0].Bytes;
        int b = 0;
        for (long a = 0; a < bytes; a += chunk, b = (b + 1) % buffers.Length)
        {
            long len = Math.Min(chunk, bytes - a);
            events[b].Synchronize();
            src(a, len, (byte*)buffers[b].Pointer);
            device.CopyHostToDevice(buffers[b].Pointer, dst + a, len, stream);
            events[b].Record(stream);
        }
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
        var from = p.Source!.DType;
        if (from == p.Target)
        {
            ReadSource(p, offset, bytes, dst);
            return;
        }
        if (from is not (DType.BF16 or DType.F16)) throw new InvalidOperationException($"no conversion {from} → {p.Target}");
        // Widening to f32: target offsets are multiples of 4 (windows and placements are 256-aligned).
        long first = offset / 4, n = bytes / 4;
        if (p.Slice is null)
        {
            Widen(from, p.Source.File.Pointer(p.Source.Entry) + first * 2, dst, n);
            return;
        }
        // A slice: gather the source elements first (strided or padded), then widen.
        const int Chunk = 1 << 15;
        ushort* tmp = stackalloc ushort[Chunk];
        for (long i = 0; i < n; i += Chunk)
        {
            long m = Math.Min(Chunk, n - i);
            ReadSource(p, (first + i) * 2, m * 2, (byte*)tmp);
            Widen(from, (byte*)tmp, dst + i * 4, m);
        }
    }

    static unsafe void Widen(DType from, byte* src, byte* dst, long n)
    {
        if (from == DType.BF16) { Bf16ToF32((ushort*)src, (uint*)dst, n); return; }
        var s = (Half*)src;
        var d = (float*)dst;
        for (long i = 0; i < n; i++) d[i] = (float)s[i];
    }

    /// <summary>
    /// Copies bytes [offset, offset+bytes) of placement <paramref name="p"/>'s source AS THIS DEVICE HOLDS IT into
    /// <paramref name="dst"/>: the whole checkpoint tensor, or its <see cref="Distributed.TensorSlice"/> — the full tensor
    /// viewed as [A, B, C] around the split axis, the local one as [A, Padded, C]; each run of consecutive indices along the
    /// axis is one copy from the mapped file (a row range is one copy; a column range one per row), padding is zeros.
    /// </summary>
    static unsafe void ReadSource(Placement p, long offset, long bytes, byte* dst)
    {
        byte* src = p.Source!.File.Pointer(p.Source.Entry);
        if (p.Slice is not { } sl) { Buffer.MemoryCopy(src + offset, dst, bytes, bytes); return; }
        var full = p.FullShape!;
        long row = p.SourceDType.Size();
        for (int i = sl.Axis + 1; i < full.Length; i++) row *= full[i];
        long axisLen = full[sl.Axis];
        while (bytes > 0)
        {
            long r = offset / row, within = offset % row;
            long y = r % sl.Padded, x = r / sl.Padded;
            long n;
            if (y < sl.Count)
            {
                n = Math.Min(bytes, (sl.Count - y) * row - within);
                Buffer.MemoryCopy(src + (x * axisLen + sl.Start + y) * row + within, dst, n, n);
            }
            else
            {
                n = Math.Min(bytes, (sl.Padded - y) * row - within);
                System.Runtime.InteropServices.NativeMemory.Clear(dst, (nuint)n);
            }
            offset += n; dst += n; bytes -= n;
        }
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
