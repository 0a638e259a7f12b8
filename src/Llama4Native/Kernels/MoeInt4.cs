using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/moe_int4.cu`: the grouped expert GEMMs of <see cref="Moe"/> for int4 expert weights (<see cref="DType.I4"/>,
/// output-major): wgu [E, 2I, D] (rows 0..I-1 gate, I..2I-1 up; scales [E, 2I, D/G]) and wd [E, D, I] (scales [E, D, I/G]).
/// Same arguments and semantics as <see cref="Moe.GateUp"/> / <see cref="Moe.Down"/> (which forward here when the weight
/// is I4): the padded rows of <see cref="Moe.Align"/>, score-scaled gathered rows rounded to the activation dtype, SiLU·up
/// fused, HF's bf16 rounding points, zero rows for padding. Paths: tensor cores (bf16, prefill; weights enter as
/// bf16(q·s)), a GEMV per tile (bf16, T·k ≤ <see cref="Moe.DecodeMaxRows"/>: bound by the expert's int4 weight stream),
/// and plain fp32 loops (f32 activations: exact parity, Σ a·(q·s)).
/// </summary>
internal static class MoeInt4
{
    public const string File = "moe_int4.cu";
    /// <summary>Auto: f32 → Simple; bf16 → Gemv when T·k ≤ <see cref="Moe.DecodeMaxRows"/> (and G % 8 == 0), else Mma.
    /// The first three values match <see cref="Moe.Variant"/>.</summary>
    public enum Variant { Auto, Mma, Simple, Gemv }

    const int SimpleTile = 16, GemvThreads = 128;

    /// <summary>h = silu(a·Wgᵀ) ⊙ (a·Wuᵀ) for every padded row, a = x[token] · score.</summary>
    /// <param name="x">[T, D] f32 or bf16</param><param name="topkScore">[T, k] f32</param><param name="sortedSlots">[≥ MaxRows] i32</param>
    /// <param name="tileExpert">[≥ MaxTiles] i32</param><param name="expertOffsets">[E + 1] i32</param>
    /// <param name="wgu">I4 [E, 2I, D]</param><param name="h">[≥ MaxRows, I], x's dtype</param>
    /// <param name="config">the tile the rows were aligned with (its BM); <see cref="Moe.Config.Default"/> if null</param>
    public static unsafe void GateUp(Device dev, Tensor x, Tensor topkScore, Tensor sortedSlots, Tensor tileExpert, Tensor expertOffsets,
                                     Tensor wgu, Tensor h, DeviceStream? stream = null, Variant variant = Variant.Auto, Moe.Config? config = null)
    {
        const string op = "moe_int4.gate_up";
        var cfg = config ?? Moe.Config.Default;
        Matrix(op, "x", x); Matrix(op, "topk_score", topkScore); Matrix(op, "h", h);
        if (wgu.Shape.Rank != 3) throw new ArgumentException($"{op}: wgu {wgu.Shape} must be I4 [E, 2I, D]");
        GemmInt4.CheckGroup(op, "wgu", wgu);
        int t = KernelCheck.Int(op, "T", x.Shape[0]), d = KernelCheck.Int(op, "D", x.Shape[1]), k = KernelCheck.Int(op, "k", topkScore.Shape[1]);
        int e = KernelCheck.Int(op, "E", wgu.Shape[0]), i = KernelCheck.Int(op, "I", wgu.Shape[1] / 2), bm = cfg.BM, g = wgu.Group;
        if (wgu.Shape[2] != d || wgu.Shape[1] % 2 != 0) throw new ArgumentException($"{op}: wgu {wgu.Shape} must be [E, 2I, {d}] (output-major) for x {x.Shape}");
        KernelCheck.Dims(op, "topk_score", topkScore, t, k);
        KernelCheck.Dims(op, "expert_offsets", expertOffsets, e + 1);
        long rows = Moe.MaxRows(t, k, e, bm);
        AtLeast(op, "sorted_slots", sortedSlots, rows); AtLeast(op, "tile_expert", tileExpert, Moe.MaxTiles(t, k, e, bm));
        if (h.Shape[1] != i || h.Shape[0] < rows) throw new ArgumentException($"{op}: h {h.Shape} must be [≥ {rows}, {i}]");
        if (h.DType != x.DType || x.DType is not (DType.F32 or DType.BF16) || topkScore.DType != DType.F32)
            throw KernelCheck.Unsupported(op, $"x {x.DType}, wgu {wgu.DType}, h {h.DType}, score {topkScore.DType}");
        var path = Pick(op, x.DType, variant, (long)t * k, g, cfg);
        if (t == 0 || i == 0) return;
        bool one = (long)t * k == 1;  // one routed row: the GEMV's one-row build
        ulong xp = x.Ptr.Value, sp = topkScore.Ptr.Value, ssp = sortedSlots.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value,
              wp = wgu.Ptr.Value, wsp = wgu.Scale.Value, hp = h.Ptr.Value;
        // Routing model (KernelCost.ExpectedExperts): the experts T tokens touch, each read once (packed + scales); the routed rows in and out.
        dev.Cost((long)(KernelCost.ExpectedExperts(t, k, e) * ((wgu.Bytes + wgu.ScaleBytes) / e)) + x.Bytes + topkScore.Bytes + h.DType.BytesOf((long)t * k * i),
                 2.0 * t * k * d * 2 * i);
        switch (path)
        {
            case Variant.Mma:
            {
                void** args = stackalloc void*[] { &xp, &sp, &ssp, &tp, &op_, &wp, &wsp, &hp, &k, &d, &i, &e, &g };
                var (bn, threads, shared) = MmaTile(cfg, gated: true);
                dev.Launch(dev.Kernels.Get(File, $"moe_int4_gate_up_mma{bm}_bf16"), new Dim3(KernelCheck.Blocks(i, bn), Grid(op, rows, bm)),
                           threads, shared, args, stream);
                break;
            }
            case Variant.Gemv:
            {
                void** args = stackalloc void*[] { &xp, &sp, &ssp, &tp, &op_, &wp, &wsp, &hp, &k, &d, &i, &e, &bm, &g };
                dev.Launch(dev.Kernels.Get(File, $"moe_int4_gate_up_gemv{(g % 32 == 0 ? 32 : 8)}{(one ? "_m1" : "")}_bf16"),
                           new Dim3(KernelCheck.Blocks(i, GemvThreads / 32 * 2), Grid(op, rows, bm)), GemvThreads, 0, args, stream);
                break;
            }
            default:
            {
                void** args = stackalloc void*[] { &xp, &sp, &ssp, &tp, &op_, &wp, &wsp, &hp, &k, &d, &i, &e, &bm, &g };
                dev.Launch(dev.Kernels.Get(File, "moe_int4_gate_up_simple_" + KernelCheck.Name(x.DType)),
                           new Dim3(KernelCheck.Blocks(i, SimpleTile), Grid(op, rows, SimpleTile)), new Dim3(SimpleTile, SimpleTile), 0, args, stream);
                break;
            }
        }
    }

    /// <summary>out = h · Wdᵀ for the padded rows of <paramref name="tokens"/>·<paramref name="k"/> pairs.</summary>
    /// <param name="h">[≥ MaxRows, I]</param><param name="wd">I4 [E, D, I]</param><param name="output">[≥ MaxRows, D], h's dtype</param>
    /// <param name="sortedSlots">optional (the align step's [≥ MaxRows] i32): lets the decode GEMV skip the padding rows of each
    /// tile (it writes zeros there); without it every row of a tile is computed (same result, more work)</param>
    public static unsafe void Down(Device dev, Tensor h, Tensor tileExpert, Tensor expertOffsets, Tensor wd, Tensor output, long tokens, long k,
                                   DeviceStream? stream = null, Variant variant = Variant.Auto, Moe.Config? config = null, Tensor sortedSlots = default)
    {
        const string op = "moe_int4.down";
        var cfg = config ?? Moe.Config.Default;
        Matrix(op, "h", h); Matrix(op, "out", output);
        if (wd.Shape.Rank != 3) throw new ArgumentException($"{op}: wd {wd.Shape} must be I4 [E, D, I]");
        GemmInt4.CheckGroup(op, "wd", wd);
        int e = KernelCheck.Int(op, "E", wd.Shape[0]), d = KernelCheck.Int(op, "D", wd.Shape[1]), i = KernelCheck.Int(op, "I", wd.Shape[2]);
        int bm = cfg.BM, g = wd.Group;
        long rows = Moe.MaxRows(tokens, (int)k, e, bm);
        if (h.Shape[1] != i || h.Shape[0] < rows) throw new ArgumentException($"{op}: h {h.Shape} must be [≥ {rows}, {i}] for wd {wd.Shape} (I4 [E, D, I])");
        if (output.Shape[1] != d || output.Shape[0] < rows) throw new ArgumentException($"{op}: out {output.Shape} must be [≥ {rows}, {d}]");
        KernelCheck.Dims(op, "expert_offsets", expertOffsets, e + 1);
        AtLeast(op, "tile_expert", tileExpert, Moe.MaxTiles(tokens, (int)k, e, bm));
        if (!sortedSlots.Ptr.IsNull) AtLeast(op, "sorted_slots", sortedSlots, rows);
        if (output.DType != h.DType || h.DType is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, $"h {h.DType}, wd {wd.DType}, out {output.DType}");
        var path = Pick(op, h.DType, variant, tokens * k, g, cfg);
        if (tokens == 0 || d == 0) return;
        bool one = tokens * k == 1;
        ulong hp = h.Ptr.Value, ssp = sortedSlots.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value, wp = wd.Ptr.Value,
              wsp = wd.Scale.Value, outp = output.Ptr.Value;
        dev.Cost((long)(KernelCost.ExpectedExperts(tokens, (int)k, e) * ((wd.Bytes + wd.ScaleBytes) / e)) + h.DType.BytesOf(tokens * k * i) + output.DType.BytesOf(tokens * k * d),
                 2.0 * tokens * k * i * d);
        switch (path)
        {
            case Variant.Mma:
            {
                void** args = stackalloc void*[] { &hp, &tp, &op_, &wp, &wsp, &outp, &i, &d, &e, &g };
                var (bn, threads, shared) = MmaTile(cfg, gated: false);
                dev.Launch(dev.Kernels.Get(File, $"moe_int4_down_mma{bm}_bf16"), new Dim3(KernelCheck.Blocks(d, bn), Grid(op, rows, bm)),
                           threads, shared, args, stream);
                break;
            }
            case Variant.Gemv:
            {
                void** args = stackalloc void*[] { &hp, &ssp, &tp, &op_, &wp, &wsp, &outp, &i, &d, &e, &bm, &g };
                dev.Launch(dev.Kernels.Get(File, $"moe_int4_down_gemv{(g % 32 == 0 ? 32 : 8)}{(one ? "_m1" : "")}_bf16"),
                           new Dim3(KernelCheck.Blocks(d, GemvThreads / 32 * 4), Grid(op, rows, bm)), GemvThreads, 0, args, stream);
                break;
            }
            default:
            {
                void** args = stackalloc void*[] { &hp, &tp, &op_, &wp, &wsp, &outp, &i, &d, &e, &bm, &g };
                dev.Launch(dev.Kernels.Get(File, "moe_int4_down_simple_" + KernelCheck.Name(h.DType)),
                           new Dim3(KernelCheck.Blocks(d, SimpleTile), Grid(op, rows, SimpleTile)), new Dim3(SimpleTile, SimpleTile), 0, args, stream);
                break;
            }
        }
    }

    static Variant Pick(string op, DType act, Variant variant, long routedRows, int g, Moe.Config cfg)
    {
        var path = variant != Variant.Auto ? variant
                 : act == DType.F32 ? Variant.Simple
                 : routedRows <= Moe.DecodeMaxRows && g % 8 == 0 ? Variant.Gemv : Variant.Mma;
        if (path is Variant.Mma or Variant.Gemv && act != DType.BF16)
            throw KernelCheck.Unsupported($"{op} ({path.ToString().ToLowerInvariant()})", KernelCheck.Name(act) + " activations (f32 takes the simple path)");
        if (path == Variant.Gemv && g % 8 != 0) throw new ArgumentException($"{op}: the GEMV path needs a group size that is a multiple of 8; got {g}");
        if (path == Variant.Mma && cfg != Moe.Config.Default && cfg != Moe.Config.Decode)
            throw new ArgumentException($"{op}: the int4 tensor-core tiles are Moe.Config.Default and Moe.Config.Decode; got {cfg}");
        return path;
    }

    /// <summary>BN, threads and dynamic shared bytes of the mma tile with the config's BM (moe_int4.cu's Tile64 / Tile16).</summary>
    static (int BN, int Threads, uint Shared) MmaTile(Moe.Config cfg, bool gated)
    {
        int nb = gated ? 2 : 1;
        return cfg.BM == 64
            ? (64, 128, (uint)(3 * (2 * 64 * 40 + nb * 64 * 16)))
            : (32, 64, (uint)(4 * (2 * 16 * 40 + nb * 32 * 16)));
    }

    static uint Grid(string op, long rows, int tile)
    {
        long gy = (rows + tile - 1) / tile;
        if (gy > 65535) throw new ArgumentException($"{op}: {rows} padded rows need {gy} row tiles; at most 65535 (split the tokens)");
        return (uint)Math.Max(1, gy);
    }

    static void Matrix(string op, string name, Tensor a)
    {
        if (a.Shape.Rank != 2) throw new ArgumentException($"{op}: {name} {a.Shape} must be a matrix");
    }

    static void AtLeast(string op, string name, Tensor a, long n)
    {
        if (a.Elements < n) throw new ArgumentException($"{op}: {name} {a.Shape} must hold at least {n} elements");
    }
}
