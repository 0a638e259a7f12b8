using System.Text;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>
/// What <c>llama4 inspect</c> prints: architecture, layer kinds, parameter counts (total and active per
/// token), bytes per dtype, and device memory for the weights (bf16 / FP8 / int4) and for a KV cache.
/// Computed from the config through the name table, plus the checkpoint's real dtypes when the shards are there.
/// </summary>
internal sealed class ModelReport
{
    public required Llama4Config Config { get; init; }
    /// <summary>All parameters (text + vision + projector).</summary>
    public long TotalParams { get; init; }
    public long TextParams { get; init; }
    public long VisionParams { get; init; }
    /// <summary>Parameters that one text token touches: everything in the decoder except the (E − k)/E of routed experts not chosen; vision excluded.</summary>
    public long ActiveParamsPerToken { get; init; }
    public long RoutedExpertParams { get; init; }
    /// <summary>Checkpoint bytes per dtype (from the shards when present; else the config at bf16).</summary>
    public IReadOnlyDictionary<DType, long> BytesPerDType { get; init; } = new Dictionary<DType, long>();
    public bool FromShards { get; init; }
    /// <summary>Device bytes of the weights as stored (the checkpoint's own formats, no quantization at load).</summary>
    public long WeightBytesBf16 { get; init; }
    /// <summary>fp8_mixed at load (routed experts of MoE layers but the first and last to FP8 row-wise), or the FP8 checkpoint as stored.</summary>
    public long WeightBytesFp8 { get; init; }
    /// <summary>int4_mixed at load (routed + shared experts, group <see cref="Int4Group"/>); 0 when the group does not divide K.</summary>
    public long WeightBytesInt4 { get; init; }
    /// <summary>The group size the int4 figure uses.</summary>
    public int Int4Group { get; init; } = 128;
    /// <summary>Why int4 does not apply (e.g. K not a multiple of G), or null.</summary>
    public string? Int4Problem { get; init; }
    /// <summary>The recipe the report is for (what a load with these options would hold) and its bytes by format.</summary>
    public QuantizeOptions Quantize { get; init; } = QuantizeOptions.None;
    public WeightFootprint Chosen { get; init; } = new(0, new Dictionary<string, long>());

    public static ModelReport FromConfig(Llama4Config cfg, Checkpoint? ckpt = null, QuantizeOptions? quantize = null)
    {
        long total = 0, text = 0, vision = 0, experts = 0;
        foreach (var e in TensorNames.Expected(cfg))
        {
            long n = 1;
            foreach (long d in e.Shape) n *= d;
            total += n;
            bool isVision = e.Ours.StartsWith("v.", StringComparison.Ordinal) || e.Ours.StartsWith("mm.", StringComparison.Ordinal);
            if (isVision) vision += n; else text += n;
            if (e.Rule.Kind == TensorKind.Experts) experts += n;
        }
        var q = quantize ?? QuantizeOptions.None;
        WeightFootprint Of(QuantizeMode m) => WeightLoader.Footprint(cfg, new LoadOptions(Quantize: q with { Mode = m }), ckpt);
        var none = Of(QuantizeMode.None);
        var fp8 = Of(QuantizeMode.Fp8);
        WeightFootprint? int4 = null; string? int4Problem = null;
        try { int4 = Of(QuantizeMode.Int4); }
        catch (ArgumentException e) { int4Problem = e.Message.Split('\n')[0]; }
        var t = cfg.Text;
        long active = text - (t.NumLocalExperts > 0 ? experts / t.NumLocalExperts * (t.NumLocalExperts - t.NumExpertsPerTok) : 0);
        var perDType = new Dictionary<DType, long>();
        if (ckpt is not null)
            foreach (var ct in ckpt.Tensors) perDType[ct.DType] = perDType.GetValueOrDefault(ct.DType) + ct.Bytes;
        else
            foreach (var (format, bytes) in none.ByFormat)
                perDType[format switch { "fp8" => DType.F8E4M3, "scales" or "f32" => DType.F32, _ => DType.BF16 }] =
                    perDType.GetValueOrDefault(format switch { "fp8" => DType.F8E4M3, "scales" or "f32" => DType.F32, _ => DType.BF16 }) + bytes;
        return new ModelReport
        {
            Config = cfg, TotalParams = total, TextParams = text, VisionParams = vision, ActiveParamsPerToken = active,
            RoutedExpertParams = experts, BytesPerDType = perDType, FromShards = ckpt is not null,
            WeightBytesBf16 = none.Total, WeightBytesFp8 = fp8.Total, WeightBytesInt4 = int4?.Total ?? 0, Int4Group = q.Int4GroupSize,
            Int4Problem = int4Problem, Quantize = q,
            Chosen = q.Mode switch { QuantizeMode.Fp8 => fp8, QuantizeMode.Int4 => int4 ?? throw new ArgumentException(int4Problem), _ => none },
        };
    }

    /// <summary>
    /// KV cache bytes for one sequence of <paramref name="context"/> tokens: per layer 2 · Hkv · d · elemBytes per
    /// cached token; RoPE (chunked) layers keep at most one attention chunk, NoPE layers the full context.
    /// </summary>
    public static long KvCacheBytes(TextConfig t, long context, int elemBytes = 2)
    {
        long perToken = 2L * t.NumKeyValueHeads * t.HeadDim * elemBytes;
        long sum = 0;
        for (int i = 0; i < t.NumHiddenLayers; i++)
        {
            long tokens = t.UsesRope[i] && t.AttentionChunkSize > 0 ? Math.Min(context, t.AttentionChunkSize) : context;
            sum += tokens * perToken;
        }
        return sum;
    }

    /// <summary>KV cache bytes for <paramref name="context"/> tokens in a <see cref="KvCacheFormat"/>: bf16 (2 bytes per
    /// element; the bf16-compute default), or FP8 (1 byte per element + an f32 scale per (token, kv head)).</summary>
    public static long KvCacheBytes(TextConfig t, long context, KvCacheFormat format)
    {
        if (format != KvCacheFormat.Fp8) return KvCacheBytes(t, context, 2);
        long perToken = 2L * t.NumKeyValueHeads * (t.HeadDim + 4);
        long sum = 0;
        for (int i = 0; i < t.NumHiddenLayers; i++)
            sum += (t.UsesRope[i] && t.AttentionChunkSize > 0 ? Math.Min(context, t.AttentionChunkSize) : context) * perToken;
        return sum;
    }

    /// <summary>The largest context whose KV cache (in <paramref name="format"/>) fits in <paramref name="budget"/> bytes; 0 when
    /// not even one token does. KvCacheBytes grows with the context, so a binary search over [0, 2^40] finds it.</summary>
    public static long LargestContext(TextConfig t, long budget, KvCacheFormat format)
    {
        long lo = 0, hi = 1L << 40;
        if (budget <= 0) return 0;
        while (lo < hi)
        {
            long mid = lo + (hi - lo + 1) / 2;
            if (KvCacheBytes(t, mid, format) <= budget) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>Spelled as the CLI takes it (--kv-cache).</summary>
    public static string Name(KvCacheFormat f) => f == KvCacheFormat.Fp8 ? "fp8" : "bf16";

    public string Render(long context, long? deviceTotal, long? deviceFree, string? deviceName, KvCacheFormat kvFormat = KvCacheFormat.Default)
    {
        var c = Config;
        var t = c.Text;
        var sb = new StringBuilder();
        string G(long b) => Format.Bytes(b);
        static string P(long n) => n >= 1_000_000_000 ? $"{n / 1e9:0.##}B" : n >= 1_000_000 ? $"{n / 1e6:0.##}M" : n >= 1000 ? $"{n / 1e3:0.##}K" : n.ToString();
        sb.AppendLine($"config        {c.Source}");
        sb.AppendLine($"architecture  {c.Architecture}{(c.Quantization is { } q ? $" (quantization: {q.QuantMethod}, {q.ModulesToNotConvert.Length} modules kept in bf16)" : "")}");
        sb.AppendLine($"text          D={t.HiddenSize} L={t.NumHiddenLayers} V={t.VocabSize} H={t.NumAttentionHeads} Hkv={t.NumKeyValueHeads} d={t.HeadDim} " +
                      $"E={t.NumLocalExperts} k={t.NumExpertsPerTok} I={t.IntermediateSize} Im={t.IntermediateSizeMlp}");
        sb.AppendLine($"attention     chunk C={(t.AttentionChunkSize > 0 ? t.AttentionChunkSize.ToString() : "none")}, qk_norm={t.UseQkNorm}, " +
                      $"temperature tuning={t.AttnTemperatureTuning} (floor {t.FloorScale}, scale {t.AttnScale}), rope θ={t.RopeTheta}" +
                      (t.RopeScaling is { } rs ? $", {rs.RopeType} ×{rs.Factor} (low {rs.LowFreqFactor}, high {rs.HighFreqFactor}, orig {rs.OriginalMaxPositionEmbeddings})" : ""));
        var kinds = new StringBuilder();
        for (int i = 0; i < t.NumHiddenLayers; i++)
            kinds.Append(t.UsesRope[i] ? (t.IsMoeLayer[i] ? 'R' : 'r') : (t.IsMoeLayer[i] ? 'N' : 'n'));
        sb.AppendLine($"layers        {kinds}");
        sb.AppendLine($"              (R/r = RoPE+chunked, N/n = NoPE+global; upper case = MoE, lower = dense) " +
                      $"{t.UsesRope.Count(x => !x)} NoPE, {t.NumMoeLayers} MoE, {t.NumDenseLayers} dense");
        if (c.Vision is { } v)
            sb.AppendLine($"vision        Dv={v.HiddenSize} Lv={v.NumHiddenLayers} Hv={v.NumAttentionHeads} Iv={v.IntermediateSize} tile {v.ImageSize}px / patch {v.PatchSize} → {v.TokensPerTile} tokens per tile, projector {v.VisionOutputDim}→{t.HiddenSize}");
        sb.AppendLine($"parameters    {P(TotalParams)} total ({P(TextParams)} text, {P(VisionParams)} vision+projector); {P(ActiveParamsPerToken)} active per text token");
        sb.AppendLine($"checkpoint    " + string.Join(", ", BytesPerDType.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key.SafetensorsName()} {G(kv.Value)}")) +
                      (FromShards ? "" : " (config only: no shards read)"));
        long kvBf16 = KvCacheBytes(t, context, KvCacheFormat.Default), kvFp8 = KvCacheBytes(t, context, KvCacheFormat.Fp8);
        long kvChosen = kvFormat == KvCacheFormat.Fp8 ? kvFp8 : kvBf16;
        string kvName = Name(kvFormat);
        long kvNaive = 2L * t.NumKeyValueHeads * t.HeadDim * 2 * context * t.NumHiddenLayers;
        string recipe = Quantize.Mode switch
        {
            QuantizeMode.Int4 => $"--quantize int4 (int4_mixed, G={Int4Group})",
            QuantizeMode.Fp8 => "--quantize fp8 (fp8_mixed)",
            _ => "as stored",
        };
        sb.AppendLine($"weights       {recipe}: {G(Chosen.Total)} = " +
                      string.Join(" + ", Chosen.ByFormat.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {G(kv.Value)}")));
        sb.AppendLine($"recipes       as stored {G(WeightBytesBf16)} | fp8_mixed {G(WeightBytesFp8)} | " +
                      (Int4Problem is null ? $"int4_mixed G={Int4Group} {G(WeightBytesInt4)}" : $"int4_mixed G={Int4Group}: n/a ({Int4Problem})"));
        sb.AppendLine($"kv cache      {context} tokens: bf16 {G(kvBf16)}, fp8 {G(kvFp8)} (codes + scales; all layers at full context would be {G(kvNaive)} in bf16)");
        long need = Chosen.Total + kvChosen;
        sb.AppendLine($"need          {G(need)} = weights {G(Chosen.Total)} + {kvName} kv {G(kvChosen)} (activations and workspaces not counted: ≈ 1–3 GiB)");
        foreach (int n in new[] { 2, 4, 8 })
            sb.AppendLine($"  on {n} devices ≈ {G((need + n - 1) / n)} each (an even split of weights and kv; several devices are not implemented yet)");
        if (deviceTotal is { } total)
        {
            long free = deviceFree ?? total;
            sb.AppendLine($"device        {deviceName}: {G(total)} total, {G(free)} free");
            sb.AppendLine($"  {recipe} + {kvName} kv: {(need <= free ? $"fits ({G(free - need)} headroom)" : $"does NOT fit (short by {G(need - free)})")}");
            sb.AppendLine($"  largest context with {recipe}: bf16 kv {LargestContext(t, free - Chosen.Total, KvCacheFormat.Default)} tokens, " +
                          $"fp8 kv {LargestContext(t, free - Chosen.Total, KvCacheFormat.Fp8)} tokens (weights + kv ≤ {G(free)}; activations not counted)");
            foreach (var (name, w) in new[] { ("as stored", WeightBytesBf16), ("fp8_mixed", WeightBytesFp8), ("int4_mixed", Int4Problem is null ? WeightBytesInt4 : 0) })
            {
                if (w == 0) continue;
                long n1 = w + kvBf16;
                sb.AppendLine($"  {name,-10} + bf16 kv: {G(n1),10}  {(n1 <= free ? "fits" : $"does NOT fit (short by {G(n1 - free)})")}");
            }
        }
        else sb.AppendLine("device        unknown (no device available): cannot say whether it fits");
        if (c.Defaulted.Count > 0) sb.AppendLine($"defaults      {string.Join("; ", c.Defaulted)}");
        return sb.ToString();
    }
}
