using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>`kernels/step.cu`: the decode step's state advanced on the device (ids, positions, attention descriptors)
/// and the KV append at the slot the descriptor implies — what lets a decode step be captured and replayed.</summary>
internal static class Step
{
    public const string File = "step.cu";
    const int Threads = 128; // STEP_THREADS default

    /// <summary>Descriptor bytes (kernels/attention.cu's per-sequence arrays, one sequence): q_start {0,T} | kv_len | q_pos0 | kv_pos0 | pad | kv_off.</summary>
    public const int DescriptorBytes = 32;

    /// <summary>ids[0] = *sampled; p = nope.q_pos0 + nope's piece length; pos[0] = p; both descriptors for one token at p.</summary>
    public static unsafe void Decode(Device dev, DevicePtr sampled, Tensor ids, Tensor pos, DevicePtr ropeDesc, DevicePtr nopeDesc, int chunk,
                                     DeviceStream? stream = null)
    {
        const string op = "step_decode";
        if (ids.DType != DType.I32 || pos.DType != DType.I32 || ids.Elements != 1 || pos.Elements != 1)
            throw new ArgumentException($"{op}: ids {ids.DType}{ids.Shape} and pos {pos.DType}{pos.Shape} must be one i32 each (a decode step)");
        if (sampled.IsNull || ropeDesc.IsNull || nopeDesc.IsNull) throw new ArgumentException($"{op}: sampled id and descriptors are required");
        if (chunk < 0) throw new ArgumentException($"{op}: chunk = {chunk} must be ≥ 0");
        ulong sp = sampled.Value, ip = ids.Ptr.Value, pp = pos.Ptr.Value, rp = ropeDesc.Value, np = nopeDesc.Value;
        void** args = stackalloc void*[] { &sp, &ip, &pp, &rp, &np, &chunk };
        dev.Cost(4 + 4 + 4 + 2 * 2 * DescriptorBytes, 0);
        dev.Launch(dev.Kernels.Get(File, "step_decode"), 1, 32, 0, args, stream);
    }

    /// <summary>Most blocks an append grid gets (its threads stride past that): rows are on the x dimension, so any row count works.</summary>
    const long MaxAppendBlocks = 1 << 16;

    /// <summary>Copies the piece's rows of <paramref name="kNew"/>/<paramref name="vNew"/> [T, E] to rows kv_len − T.. of the caches [S, E]
    /// (an FP8 cache, <c>Tensor.Quantized(codes, F8E4M3, [S, Hkv, d], scales [S, Hkv], group d)</c>: quantized per (token, kv head) row).</summary>
    /// <param name="maxRows">the bound on T the grid is sized for (the piece length, read from <paramref name="desc"/>, may be less)</param>
    public static unsafe void KvAppend(Device dev, Tensor kNew, Tensor vNew, Tensor kCache, Tensor vCache, DevicePtr desc, int maxRows,
                                       DeviceStream? stream = null)
    {
        const string op = "kv_append";
        KernelCheck.Same(op, "k_new", kNew, "v_new", vNew);
        KernelCheck.Same(op, "k_cache", kCache, "v_cache", vCache);
        long e = kNew.Shape.Inner;
        bool f8 = kCache.DType == DType.F8E4M3; // [S, Hkv, d] with a scale per (slot, kv head): E = Hkv·d per slot
        if (kNew.Shape.Rank != 2 || (f8 ? kCache.Shape.Rank != 3 || kCache.Shape[1] * kCache.Shape[2] != e : kCache.Shape.Inner != e || kCache.Shape.Rank != 2))
            throw new ArgumentException($"{op}: k_new {kNew.Shape} and k_cache {kCache.Shape} must be [T, E] and [S, E] with one E");
        if (kNew.DType != vNew.DType || kCache.DType != vCache.DType || kNew.DType is not (DType.F32 or DType.BF16)
            || (kCache.DType != kNew.DType && kCache.DType != DType.F8E4M3))
            throw KernelCheck.Unsupported(op, $"{kNew.DType}>{kCache.DType}");
        if (maxRows < 1 || maxRows > kNew.Shape[0]) throw new ArgumentException($"{op}: maxRows = {maxRows} must be in [1, {kNew.Shape[0]}]");
        if (desc.IsNull) throw new ArgumentException($"{op}: the descriptor is required");
        if (kCache.DType == DType.F8E4M3)
        {   // the FP8 KV cache: k_cache/v_cache are Tensor.Quantized with Group = d (one scale per (slot, kv head) row)
            int hd = kCache.Group, heads = (int)(e / Math.Max(hd, 1));
            if (hd < 1 || e % hd != 0 || kCache.Scale.IsNull || vCache.Scale.IsNull || vCache.Group != hd)
                throw new ArgumentException($"{op}: an FP8 cache needs scales and Group = head dim dividing E = {e} (got {hd}, {vCache.Group}); build it with Tensor.Quantized");
            ulong kn8 = kNew.Ptr.Value, vn8 = vNew.Ptr.Value, kc8 = kCache.Ptr.Value, vc8 = vCache.Ptr.Value, ks8 = kCache.Scale.Value, vs8 = vCache.Scale.Value, dp8 = desc.Value;
            void** a8 = stackalloc void*[] { &kn8, &vn8, &kc8, &vc8, &ks8, &vs8, &dp8, &heads, &hd, &maxRows };
            dev.Cost(2L * maxRows * (kNew.DType.BytesOf(e) + e + 4L * heads) + DescriptorBytes, 6.0 * maxRows * e);
            dev.Launch(dev.Kernels.Get(File, $"kv_append_{KernelCheck.Name(kNew.DType)}_f8"),
                       KernelCheck.Blocks((long)maxRows * heads, Threads / 32, MaxAppendBlocks), Threads, 0, a8, stream); // warps stride over (row, head)
            return;
        }
        ulong kn = kNew.Ptr.Value, vn = vNew.Ptr.Value, kc = kCache.Ptr.Value, vc = vCache.Ptr.Value, dp = desc.Value;
        void** args = stackalloc void*[] { &kn, &vn, &kc, &vc, &dp, &e, &maxRows };
        long rowBytes = kNew.DType.BytesOf(e);
        dev.Cost(4L * rowBytes * maxRows + DescriptorBytes, 0);
        dev.Launch(dev.Kernels.Get(File, "kv_append_" + KernelCheck.Name(kNew.DType)),
                   KernelCheck.Blocks((long)maxRows * e, 8L * Threads, MaxAppendBlocks), Threads, 0, args, stream); // threads stride over the piece
    }
}
