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
/// The KV cache of ONE sequence: a thin view over a one-slot <see cref="PagedKvCache"/> (one KV design for serving and
/// single-sequence generation; issue #15). The view keeps the piece-by-piece interface TokenGenerator, the text graph, decode
/// capture and the sharded graph use; storage, appends and attention are the paged cache's (kernels/paged_attention.cu).
/// <para>
/// NoPE (global) layers keep the full history in pages of <see cref="PagedKvCache.DefaultPageSize"/> positions, all
/// reserved when the sequence begins (the block table never changes under a captured step); chunked RoPE layers keep a
/// ring of pages for their chunk plus one piece (bounded memory whatever the context; moving to the next chunk costs no
/// copy). A piece that would pass the end is refused with <see cref="ContextLengthException"/> before anything is written.
/// </para>
/// The per-piece descriptors are uploaded by <see cref="BeginPiece"/> for a prefill piece, or advanced on the device by
/// <see cref="Step.Decode"/> for a captured decode step (<see cref="BeginDeviceStep"/>); keys and values are appended by a
/// kernel at the page the descriptor implies, so nothing in a step is host-addressed.
/// </summary>
internal sealed class KvCache : IDisposable
{
    /// <summary>The one-slot paged cache this view runs on.</summary>
    public PagedKvCache Paged { get; }

    public int MaxContext => Paged.MaxContext;
    public int MaxPiece { get; }
    public int Chunk => Paged.Chunk;
    /// <summary>Tokens consumed so far = the position of the next token.</summary>
    public int Position => Paged.Length(0);
    /// <summary>The activations' dtype (the pieces' K/V as projected); <see cref="KvDType"/> is how they are stored.</summary>
    public DType DType => Paged.DType;
    /// <summary>Storage: <see cref="DType"/> (default) or <see cref="DType.F8E4M3"/> (e4m3 codes + an f32 scale per (token, kv head)).</summary>
    public DType KvDType => Paged.KvDType;
    /// <summary>Device bytes of keys and values (FP8: codes plus scales) and the block tables.</summary>
    public long Bytes => Paged.Bytes;

    /// <param name="kvDType">null = <paramref name="dtype"/>; <see cref="DType.F8E4M3"/> = the FP8 KV cache (quantized when written)</param>
    /// <param name="heads">several devices: this rank's (query heads, KV heads) from its <see cref="Distributed.ShardingPlan"/>; null = the config's</param>
    public KvCache(Device device, TextConfig config, DType dtype, int maxContext, int maxPiece, DType? kvDType = null, (int Q, int Kv)? heads = null)
    {
        if (kvDType is { } kt && kt != dtype && kt != DType.F8E4M3)
            throw new ArgumentException($"kv cache: stores {dtype} pieces as {dtype} or F8E4M3, not {kt}");
        if (maxPiece < 1 || maxContext < 1 || maxPiece > maxContext)
            throw new ArgumentException($"kv cache: need 1 ≤ maxPiece ({maxPiece}) ≤ maxContext ({maxContext})");
        MaxPiece = maxPiece;
        Paged = new PagedKvCache(device, config, dtype, slots: 1, maxContext, maxPiece, kvDType: kvDType, heads: heads, batchInvariant: false,
                                 pageSize: PageSizeFor(config.AttentionChunkSize));
        try { Start(); }
        catch { Paged.Dispose(); throw; }
    }

    /// <summary>Pages of <see cref="PagedKvCache.DefaultPageSize"/> positions, or a quarter chunk when chunks are shorter (the
    /// scaled-down test configs): a ring then wastes at most a quarter chunk to page rounding.</summary>
    public static int PageSizeFor(int chunk) =>
        chunk <= 0 ? PagedKvCache.DefaultPageSize : (int)Math.Clamp(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, chunk / 4) + 1) / 2, 1, PagedKvCache.DefaultPageSize);

    void Start() { Paged.Begin(0); Paged.Reserve(0, MaxContext); }

    /// <summary>Starts a piece of <paramref name="tokens"/> tokens at <see cref="Position"/>: checks room, uploads descriptors.</summary>
    public void BeginPiece(int tokens)
    {
        if (tokens < 1 || tokens > MaxPiece) throw new ArgumentException($"kv cache: a piece of {tokens} tokens (1..{MaxPiece} allowed)");
        Paged.BeginStep([(0, tokens)]);
    }

    /// <summary>Keys of attention-length bound: a kernel's grid is sized for the length rounded up to this many keys
    /// (the kernels read the true length from the descriptor), so a captured decode step stays valid for up to
    /// <see cref="KvBucket"/> tokens and is re-captured (or picked from those captured) when the bound moves.</summary>
    public const int KvBucket = 256;

    /// <summary>Writes the piece's keys and values of <paramref name="layer"/> into the cache, then attends q over it.</summary>
    /// <param name="q">[T, H, d]</param><param name="kNew">[T, Hkv, d]</param><param name="vNew">[T, Hkv, d]</param><param name="o">[T, H, d]</param>
    public void StoreAndAttend(int layer, Tensor q, Tensor kNew, Tensor vNew, Tensor o, float scale, DeviceStream? stream) =>
        Paged.StoreAndAttend(layer, q, kNew, vNew, o, scale, stream);

    /// <summary>
    /// Starts a one-token step whose descriptors a device kernel writes (<see cref="Step.Decode"/>, from those the
    /// previous piece left): checks room, uploads nothing. The host still tracks the position.
    /// </summary>
    public void BeginDeviceStep() => Paged.BeginDeviceStep(KvBucket);

    /// <summary>The device descriptors <see cref="Step.Decode"/> advances (<see cref="Step.DescriptorBytes"/> each).</summary>
    public DevicePtr RopeDescriptor => Paged.StepDescriptors.Rope;
    public DevicePtr NopeDescriptor => Paged.StepDescriptors.Nope;

    /// <summary>The grid bound a one-token step at the current position uses: a captured step is valid exactly while this is unchanged.</summary>
    public int StepBound() => Paged.DeviceStepBound(KvBucket);

    /// <summary>Ends the piece: advances the position (chunked layers move on by ring, no copy).</summary>
    public void EndPiece(DeviceStream? stream = null) => Paged.EndStep();

    /// <summary>Drops a piece that failed mid-way: the position does not move (slots past it are simply rewritten later).</summary>
    public void AbortPiece() => Paged.AbortStep();

    /// <summary>Forgets the sequence (a new conversation); memory is kept.</summary>
    public void Reset() { Paged.AbortStep(); Paged.End(0); Start(); }

    public void Dispose() => Paged.Dispose();
}
