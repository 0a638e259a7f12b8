using Llama4Native.Devices;
using Llama4Native.Kernels;
using Llama4Native.Tensors;

namespace Llama4Native.Model;

/// <summary>How a <see cref="KvCache"/> stores keys and values: <see cref="Default"/> = the compute dtype (bf16 or f32);
/// <see cref="Fp8"/> = e4m3 codes with one f32 scale per (token, kv head), quantized when written (half of bf16's bytes + 1/d).</summary>
public enum KvCacheFormat
{
    /// <summary>Keys and values in the compute dtype (exact).</summary>
    Default,
    /// <summary>Keys and values as FP8 e4m3 with a scale per token and kv head: about half the memory of bf16, a small accuracy cost.</summary>
    Fp8,
}

/// <summary>The prompt plus generated tokens would exceed the context the KV cache was sized for.</summary>
public sealed class ContextLengthException : Exception
{
    internal ContextLengthException(string message) : base(message) { }
}

/// <summary>
/// Keys and values of one sequence for every layer, preallocated, laid out [slot, Hkv, d] per layer.
/// <para>
/// NoPE (global) layers keep the full history: <c>maxContext</c> slots, slot = position; a piece that would
/// pass the end is refused with <see cref="ContextLengthException"/> before anything is written.
/// RoPE (chunked) layers only ever attend inside their chunk, so they keep the current chunk and the piece
/// being prefilled: <c>C + maxPiece</c> slots from the chunk's start (the "base"), whatever the context
/// length — their memory is bounded. After each piece the base moves to the chunk of the next position and
/// the keys of that chunk already seen are moved to slot 0 (one copy; source and destination never overlap,
/// since the base moves by whole chunks and fewer than C keys remain).
/// </para>
/// The per-piece descriptors (lengths, positions) are uploaded by <see cref="BeginPiece"/> for a prefill piece, or
/// advanced on the device by <see cref="Step.Decode"/> for a captured decode step (<see cref="BeginDeviceStep"/>);
/// keys and values are appended by a kernel at the slot the descriptor implies, so nothing in a step is host-addressed.
/// </summary>
internal sealed class KvCache : IDisposable
{
    readonly Device dev;
    readonly TextConfig cfg;
    readonly DeviceBuffer[] k, v;
    readonly DeviceBuffer?[] ks, vs; // FP8 KV: one f32 scale per (slot, kv head); null for a float cache
    readonly int[] capacity;
    readonly DeviceBuffer meta;      // two descriptor sets: [0] RoPE layers, [1] NoPE layers
    readonly DeviceBuffer splitWorkspace; // partials of the split-KV decode attention (long histories)
    readonly int rowBytes;           // bytes of one slot: Hkv·d elements
    readonly int scaleRowBytes;      // FP8: bytes of one slot's scales (Hkv f32); 0 otherwise
    int ropeBase;                    // absolute position of RoPE slot 0
    int pieceTokens = -1;

    public int MaxContext { get; }
    public int MaxPiece { get; }
    public int Chunk { get; }
    /// <summary>Tokens consumed so far = the position of the next token.</summary>
    public int Position { get; private set; }
    /// <summary>The activations' dtype (the pieces' K/V as projected); <see cref="KvDType"/> is how they are stored.</summary>
    public DType DType { get; }
    /// <summary>Storage: <see cref="DType"/> (default) or <see cref="DType.F8E4M3"/> (e4m3 codes + an f32 scale per (token, kv head)).</summary>
    public DType KvDType { get; }
    /// <summary>Device bytes of keys and values (FP8: codes plus scales).</summary>
    public long Bytes { get; }

    /// <param name="kvDType">null = <paramref name="dtype"/>; <see cref="DType.F8E4M3"/> = the FP8 KV cache (quantized when written)</param>
    /// <param name="heads">several devices: this rank's (query heads, KV heads) from its <see cref="Distributed.ShardingPlan"/>; null = the config's</param>
    public KvCache(Device device, TextConfig config, DType dtype, int maxContext, int maxPiece, DType? kvDType = null, (int Q, int Kv)? heads = null)
    {
        (qHeads, kvHeads) = heads ?? (config.NumAttentionHeads, config.NumKeyValueHeads);
        KvDType = kvDType ?? dtype;
        if (KvDType != dtype && KvDType != DType.F8E4M3)
            throw new ArgumentException($"kv cache: stores {dtype} pieces as {dtype} or F8E4M3, not {KvDType}");
        if (maxPiece < 1 || maxContext < 1 || maxPiece > maxContext)
            throw new ArgumentException($"kv cache: need 1 ≤ maxPiece ({maxPiece}) ≤ maxContext ({maxContext})");
        dev = device; cfg = config; DType = dtype; MaxContext = maxContext; MaxPiece = maxPiece;
        Chunk = config.AttentionChunkSize;
        int layers = config.NumHiddenLayers;
        k = new DeviceBuffer[layers]; v = new DeviceBuffer[layers]; capacity = new int[layers];
        ks = new DeviceBuffer?[layers]; vs = new DeviceBuffer?[layers];
        rowBytes = kvHeads * config.HeadDim * KvDType.Size();
        scaleRowBytes = KvDType == DType.F8E4M3 ? kvHeads * 4 : 0;
        try
        {
            for (int i = 0; i < layers; i++)
            {
                capacity[i] = Chunked(i) ? Math.Min(maxContext, Chunk + maxPiece) : maxContext;
                k[i] = dev.Allocate((long)capacity[i] * rowBytes);
                v[i] = dev.Allocate((long)capacity[i] * rowBytes);
                Bytes += 2L * capacity[i] * rowBytes;
                if (scaleRowBytes > 0)
                {
                    ks[i] = dev.Allocate((long)capacity[i] * scaleRowBytes);
                    vs[i] = dev.Allocate((long)capacity[i] * scaleRowBytes);
                    Bytes += 2L * capacity[i] * scaleRowBytes;
                }
            }
            meta = dev.Allocate(2 * DescriptorBytes);
            // Decode steps over long histories split the keys across blocks (the prefill kernel would use one
            // block per head): partials for up to SplitRows query rows at the longest capacity.
            splitWorkspace = dev.Allocate(Attention.WorkspaceBytes(Math.Min(SplitRows, maxPiece), qHeads, config.HeadDim, capacity.Max()));
        }
        catch
        {
            foreach (var b in k.Concat(v).Concat(ks).Concat(vs)) b?.Dispose();
            throw;
        }
    }

    readonly int qHeads, kvHeads;

    bool Chunked(int layer) => cfg.UsesRope[layer] && Chunk > 0;

    const int SplitRows = 8;
    // q_start {0, T} | kv_len | q_pos0 | kv_pos0 | pad | kv_off (int64)
    const int DescriptorBytes = 32;

    /// <summary>Starts a piece of <paramref name="tokens"/> tokens at <see cref="Position"/>: checks room, uploads descriptors.</summary>
    public void BeginPiece(int tokens)
    {
        if (tokens < 1 || tokens > MaxPiece) throw new ArgumentException($"kv cache: a piece of {tokens} tokens (1..{MaxPiece} allowed)");
        if ((long)Position + tokens > MaxContext)   // long: no wrap near 2^31
            throw new ContextLengthException($"the sequence would reach {(long)Position + tokens} tokens but the context is {MaxContext}: " +
                                             "shorten the prompt or max new tokens, or load the model with a larger max context");
        int p0 = Position;
        int[] rope = [0, tokens, p0 + tokens - ropeBase, p0, ropeBase, 0];
        int[] nope = [0, tokens, p0 + tokens, p0, 0, 0];
        Span<byte> bytes = stackalloc byte[2 * DescriptorBytes];
        bytes.Clear();
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(rope.AsSpan()).CopyTo(bytes);
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(nope.AsSpan()).CopyTo(bytes[DescriptorBytes..]);
        dev.Upload<byte>(bytes, meta.Ptr);
        pieceTokens = tokens;
    }

    /// <summary>Keys of attention-length bound: a kernel's grid is sized for the length rounded up to this many keys
    /// (the kernels read the true length from the descriptor), so a captured decode step stays valid for up to
    /// <see cref="KvBucket"/> tokens and is re-captured (or picked from those captured) when the bound moves.</summary>
    public const int KvBucket = 256;

    int Bound(int kvLen, int layerCapacity) => (int)Math.Min(layerCapacity, ((long)kvLen + KvBucket - 1) / KvBucket * KvBucket);

    /// <summary>Writes the piece's keys and values of <paramref name="layer"/> into the cache, then attends q over it.
    /// Every length a kernel needs comes from the device descriptor; the host only sizes grids from the bounds.</summary>
    /// <param name="q">[T, H, d]</param><param name="kNew">[T, Hkv, d]</param><param name="vNew">[T, Hkv, d]</param><param name="o">[T, H, d]</param>
    public void StoreAndAttend(int layer, Tensor q, Tensor kNew, Tensor vNew, Tensor o, float scale, DeviceStream? stream)
    {
        if (pieceTokens < 0) throw new InvalidOperationException("kv cache: BeginPiece was not called");
        bool chunked = Chunked(layer);
        long slot = chunked ? Position - ropeBase : Position;
        int hkv = kvHeads, d = cfg.HeadDim, t = pieceTokens;
        var p = meta.Ptr + (chunked ? 0 : DescriptorBytes);
        var (kc, vc) = Stored(layer);
        Step.KvAppend(dev, kNew.Reshape(t, (long)hkv * d), vNew.Reshape(t, (long)hkv * d),
                      ks[layer] is null ? kc.Reshape(capacity[layer], (long)hkv * d) : kc,
                      vs[layer] is null ? vc.Reshape(capacity[layer], (long)hkv * d) : vc, p, t, stream);
        int kvLen = (int)(slot + t);
        var batch = new Attention.Batch(p, p + 8, p + 12, p + 16, p + 24, Count: 1, MaxQ: t, MaxKv: Bound(kvLen, capacity[layer]));
        // Auto: split-KV for decode over long histories, tensor cores for bf16 prefill, CUDA cores for fp32 (and FP8 KV).
        Attention.Run(dev, q, kc, vc, o, batch,
                      new Attention.KvLayout(hkv, hkv * d, d), chunked ? Chunk : 0, stream,
                      Attention.Variant.Auto, scale, splitWorkspace.Ptr, splitWorkspace.Bytes);
    }

    /// <summary>Layer <paramref name="layer"/>'s keys and values as stored, [capacity, Hkv, d] (FP8: quantized tensors, scales [capacity, Hkv]).</summary>
    public (Tensor K, Tensor V) Stored(int layer)
    {
        var shape = new Shape(capacity[layer], kvHeads, cfg.HeadDim);
        if (ks[layer] is null) return (new Tensor(k[layer].Ptr, KvDType, shape), new Tensor(v[layer].Ptr, KvDType, shape));
        return (Tensor.Quantized(k[layer].Ptr, KvDType, shape, ks[layer]!.Ptr, cfg.HeadDim),
                Tensor.Quantized(v[layer].Ptr, KvDType, shape, vs[layer]!.Ptr, cfg.HeadDim));
    }

    /// <summary>
    /// Starts a one-token step whose descriptors a device kernel writes (<see cref="Step.Decode"/>, from those the
    /// previous piece left): checks room, uploads nothing. The host still tracks the position.
    /// </summary>
    public void BeginDeviceStep()
    {
        if ((long)Position + 1 > MaxContext)
            throw new ContextLengthException($"the sequence would reach {(long)Position + 1} tokens but the context is {MaxContext}: " +
                                             "shorten the prompt or max new tokens, or load the model with a larger max context");
        pieceTokens = 1;
    }

    /// <summary>The device descriptors of the RoPE (chunked) and NoPE layers (<see cref="Step.DescriptorBytes"/> each).</summary>
    public DevicePtr RopeDescriptor => meta.Ptr;
    public DevicePtr NopeDescriptor => meta.Ptr + DescriptorBytes;

    /// <summary>The grid bounds a one-token step at the current position uses, (chunked layers, full layers): a captured
    /// step is valid exactly while this is unchanged.</summary>
    public (int Rope, int Nope) StepBounds()
    {
        int ropeCap = 0, nopeCap = 0;
        for (int i = 0; i < capacity.Length; i++) { if (Chunked(i)) ropeCap = capacity[i]; else nopeCap = capacity[i]; }
        return (ropeCap == 0 ? 0 : Bound(Position - ropeBase + 1, ropeCap), nopeCap == 0 ? 0 : Bound(Position + 1, nopeCap));
    }

    /// <summary>Ends the piece: advances the position and moves the RoPE layers to the chunk of the next token.</summary>
    public void EndPiece(DeviceStream? stream = null)
    {
        if (pieceTokens < 0) throw new InvalidOperationException("kv cache: EndPiece without BeginPiece");
        Position += pieceTokens;
        pieceTokens = -1;
        if (Chunk <= 0) return;
        int newBase = Position / Chunk * Chunk;
        if (newBase == ropeBase) return;
        long keep = Position - newBase, from = newBase - ropeBase;
        if (keep > 0)
            for (int i = 0; i < cfg.NumHiddenLayers; i++)
            {
                if (!Chunked(i)) continue;
                dev.CopyDeviceToDevice(k[i].Ptr + from * rowBytes, k[i].Ptr, keep * rowBytes, stream);
                dev.CopyDeviceToDevice(v[i].Ptr + from * rowBytes, v[i].Ptr, keep * rowBytes, stream);
                if (ks[i] is null) continue;
                dev.CopyDeviceToDevice(ks[i]!.Ptr + from * scaleRowBytes, ks[i]!.Ptr, keep * scaleRowBytes, stream);
                dev.CopyDeviceToDevice(vs[i]!.Ptr + from * scaleRowBytes, vs[i]!.Ptr, keep * scaleRowBytes, stream);
            }
        ropeBase = newBase;
    }

    /// <summary>Drops a piece that failed mid-way: the position does not move (slots past it are simply rewritten later).</summary>
    public void AbortPiece() => pieceTokens = -1;

    /// <summary>Forgets the sequence (a new conversation); memory is kept.</summary>
    public void Reset() { Position = 0; ropeBase = 0; pieceTokens = -1; }

    public void Dispose()
    {
        foreach (var b in k.Concat(v)) b.Dispose();
        foreach (var b in ks.Concat(vs)) b?.Dispose();
        meta.Dispose();
        splitWorkspace.Dispose();
    }
}
