using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Tensors;

namespace Llama4Native.Model;

/// <summary>
/// The attention kernel's per-sequence descriptors for the simplest batch: one sequence whose keys are this
/// call's own keys, packed [T, Hkv, d], at positions 0..T-1. (The generation work replaces this with
/// descriptors over KV caches and several sequences; the kernels already take them.)
/// </summary>
internal sealed class AttentionBatch : IDisposable
{
    readonly DeviceBuffer meta;
    readonly Attention.Batch batch;

    AttentionBatch(DeviceBuffer meta, Attention.Batch batch) { this.meta = meta; this.batch = batch; }

    public static AttentionBatch Single(Device dev, int tokens)
    {
        // One small buffer: q_start {0, T} | kv_len {T} | q_pos0 {0} | kv_pos0 {0} | pad | kv_off {0L}.
        int[] ints = [0, tokens, tokens, 0, 0, 0];
        var buf = dev.Allocate(ints.Length * 4 + 8);
        dev.Upload<int>(ints, buf.Ptr);
        dev.Upload<long>([0L], buf.Ptr + ints.Length * 4);
        var p = buf.Ptr;
        return new AttentionBatch(buf, new Attention.Batch(p, p + 8, p + 12, p + 16, p + 24, Count: 1, MaxQ: tokens, MaxKv: tokens));
    }

    /// <param name="q">[T, H, d]</param><param name="k">[T, Hkv, d]</param><param name="v">[T, Hkv, d]</param><param name="o">[T, H, d]</param>
    public void Run(Device dev, Tensor q, Tensor k, Tensor v, Tensor o, int chunk, float scale, DeviceStream? stream)
    {
        int hkv = (int)k.Shape[1], d = (int)k.Shape[2];
        Attention.Run(dev, q, k, v, o, batch, new Attention.KvLayout(hkv, hkv * d, d), chunk, stream, Attention.Variant.Auto, scale);
    }

    public void Dispose() => meta.Dispose();
}
