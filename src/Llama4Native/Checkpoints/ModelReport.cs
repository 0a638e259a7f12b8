using System.Text;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>
/// What <c>llama4 inspect</c> prints: architecture, layer kinds, parameter counts (total and active per
/// token), bytes per dtype, and device memory for the weights (bf16 / FP8 / int4) and for a KV cache.
/// Computed from the config through the name table, plus the checkpoint's real dtypes when the shards are there.
/// </summary>
public sealed class ModelReport
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
    public long WeightBytesBf16 { get; init; }
    /// <summary>fbgemm_fp8 recipe: routed experts 1 byte/param + an F32 scale per output channel, the rest bf16.</summary>
    public long WeightBytesFp8 { get; init; }
    /// <summary>int4 group-wise (group 128, one bf16 scale per group) for every matrix; 1-D tensors bf16.</summary>
    public long WeightBytesInt4 { get; init; }

    public const int Int4Group = 128;

    public static ModelReport FromConfig(Llama4Config cfg, Checkpoint? ckpt = null)
    {
        long total = 0, text = 0, vision = 0, experts = 0, bf16 = 0, fp8 = 0, int4 = 0;
        var quant = cfg.Quantization;
        foreach (var e in TensorNames.Expected(cfg))
        {
            long n = 1;
            foreach (long d in e.Shape) n *= d;
            total += n;
            bool isVision = e.Ours.StartsWith("v.", StringComparison.Ordinal) || e.Ours.StartsWith("mm.", StringComparison.Ordinal);
            if (isVision) vision += n; else text += n;
            if (e.Rule.Kind == TensorKind.Experts) experts += n;
            bf16 += 2 * n;
            bool fp8Expert = e.Rule.Kind == TensorKind.Experts && (quant is null || !quant.IsExcluded(e.Module));
            fp8 += fp8Expert ? n + 4 * e.Rule.ScaleShape!(cfg).Aggregate(1L, (a, b) => a * b) : 2 * n;
            int4 += e.Shape.Length >= 2 ? n / 2 + (n + Int4Group - 1) / Int4Group * 2 : 2 * n;
        }
        var t = cfg.Text;
        long active = text - (t.NumLocalExperts > 0 ? experts / t.NumLocalExperts * (t.NumLocalExperts - t.NumExpertsPerTok) : 0);
        var perDType = new Dictionary<DType, long>();
        if (ckpt is not null)
            foreach (var ct in ckpt.Tensors) perDType[ct.DType] = perDType.GetValueOrDefault(ct.DType) + ct.Bytes;
        else perDType[DType.BF16] = bf16;
        return new ModelReport
        {
            Config = cfg, TotalParams = total, TextParams = text, VisionParams = vision, ActiveParamsPerToken = active,
            RoutedExpertParams = experts, BytesPerDType = perDType, FromShards = ckpt is not null,
            WeightBytesBf16 = bf16, WeightBytesFp8 = fp8, WeightBytesInt4 = int4,
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

    public string Render(long context, long? deviceTotal, long? deviceFree, string? deviceName)
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
        long kvBf16 = KvCacheBytes(t, context, 2), kvFp8 = KvCacheBytes(t, context, 1);
        long kvNaive = 2L * t.NumKeyValueHeads * t.HeadDim * 2 * context * t.NumHiddenLayers;
        sb.AppendLine($"weights       bf16 {G(WeightBytesBf16)} | fp8 experts {G(WeightBytesFp8)} | int4 g{Int4Group} {G(WeightBytesInt4)}");
        sb.AppendLine($"kv cache      {context} tokens: bf16 {G(kvBf16)}, fp8 {G(kvFp8)} (all layers at full context would be {G(kvNaive)})");
        if (deviceTotal is { } total)
        {
            sb.AppendLine($"device        {deviceName}: {G(total)} total, {G(deviceFree ?? total)} free");
            long free = deviceFree ?? total;
            foreach (var (name, w) in new[] { ("bf16", WeightBytesBf16), ("fp8", WeightBytesFp8), ("int4", WeightBytesInt4) })
            {
                long need = w + kvBf16;
                sb.AppendLine($"  {name,-5} weights + bf16 kv: {G(need),10}  {(need <= free ? "fits" : $"does NOT fit (short by {G(need - free)})")}");
            }
        }
        else sb.AppendLine("device        unknown (no device available): cannot say whether it fits");
        if (c.Defaulted.Count > 0) sb.AppendLine($"defaults      {string.Join("; ", c.Defaulted)}");
        return sb.ToString();
    }
}
