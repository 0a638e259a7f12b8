using Llama4Native.Tensors;

namespace Llama4Native.Model;

/// <summary>
/// How long a context fits in a device's memory: the bytes a <see cref="KvCache"/> allocates for a context (NoPE layers
/// hold every token; chunked RoPE layers at most their chunk plus one prefill piece), and the largest context whose cache
/// fits a budget. Used by the CLI's default --max-context ("what fits") and by `llama4 plan` / `inspect`.
/// </summary>
internal static class ContextFit
{
    /// <summary>Kept free for activation arenas, MoE/attention/sampler workspaces and the allocator when sizing a default
    /// context: `llama4 plan` measures ≈ 0.2 GiB for Scout at pieces of 256, so 1 GiB leaves room for larger pieces.</summary>
    public const long ReserveBytes = 1L << 30;

    /// <summary>Bytes of one cache slot (K and V of every kv head) as stored: the activation dtype, or e4m3 + an f32 scale per kv head.</summary>
    public static long SlotBytes(TextConfig c, DType act, KvCacheFormat format) =>
        format == KvCacheFormat.Fp8 ? 2L * c.NumKeyValueHeads * (c.HeadDim + 4) : 2L * c.NumKeyValueHeads * c.HeadDim * act.Size();

    /// <summary>The KV cache's bytes for <paramref name="context"/> tokens and prefill pieces of ≤ <paramref name="maxPiece"/>
    /// (as <see cref="KvCache"/>'s one-slot <see cref="PagedKvCache"/> allocates them: whole pages, the RoPE layers' ring and
    /// the block tables; its small descriptors and split-KV workspace aside).</summary>
    public static long KvBytes(TextConfig c, long context, int maxPiece, DType act, KvCacheFormat format) =>
        context < 1 ? 0 : PagedKvCache.BytesFor(c, context, (int)Math.Min(maxPiece, context), act, format == KvCacheFormat.Fp8 ? DType.F8E4M3 : act,
                                            pageSize: KvCache.PageSizeFor(c.AttentionChunkSize));

    /// <summary>The largest context in [0, <paramref name="cap"/>] whose cache fits <paramref name="budget"/> bytes (0 if none does).</summary>
    public static long Largest(TextConfig c, long budget, int maxPiece, DType act, KvCacheFormat format, long cap = int.MaxValue)
    {
        if (budget <= 0 || cap <= 0) return 0;
        long lo = 0, hi = cap;
        while (lo < hi)
        {
            long mid = lo + (hi - lo + 1) / 2;
            if (KvBytes(c, mid, maxPiece, act, format) <= budget) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>The default context of a loaded model: what fits in the device's free memory less <see cref="ReserveBytes"/>,
    /// shared by <paramref name="sequences"/> caches, at most the model's max_position_embeddings (when it has one) and 2^31 − 1.</summary>
    public static int Default(Llama4Model model, int sequences = 1)
    {
        var c = model.Config.Text;
        long cap = c.MaxPositionEmbeddings > 0 ? c.MaxPositionEmbeddings : int.MaxValue;
        long budget = (model.Device.FreeMemory - ReserveBytes) / Math.Max(1, sequences);
        var act = model.Compute == ComputeMode.F32 ? DType.F32 : DType.BF16;
        int piece = model.Options.MaxPrefillPiece > 0 ? model.Options.MaxPrefillPiece : Generation.TokenGenerator.AutoPieces[0]; // auto: room for the largest ring
        return (int)Math.Min(int.MaxValue, Largest(c, budget, piece, act, model.Options.KvCache, cap));
    }
}
