using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/moe_fp8.cu`: the grouped expert GEMMs of the routed MoE with FP8 (FBGEMM row-wise e4m3) expert weights —
/// drop-in for <see cref="Moe.GateUp"/> / <see cref="Moe.Down"/> (routing, <see cref="Moe.Align"/> and
/// <see cref="Moe.Combine"/> are unchanged; align with bm = <see cref="For"/>(T, k).BM). Each GEMM quantizes its input
/// rows first (a = x·score, then h), FBGEMM style, into caller-provided scratch (no allocation per call;
/// <see cref="ScratchBytes"/>). Weights: F8E4M3 output-major, wgu [E, 2I, D] (rows 0..I−1 gate, I..2I−1 up; scales
/// [E, 2I]), wd [E, D, I] (scales [E, D]). Activations f32 (the FP8 GEMM outputs still bf16-rounded) or bf16.
/// </summary>
internal static class MoeFp8
{
    public const string File = "moe_fp8.cu";

    /// <summary>
    /// The grouped GEMMs' shape: <see cref="Prefill"/> = tensor-core tiles of <see cref="MmaBM"/> rows (the grouping must
    /// pad to 64); <see cref="Decode"/> = GEMV kernels over tiles of 8 rows (T·k ≤ <see cref="DecodeMaxRows"/>), each
    /// routed row streaming its expert's weights with 16-byte loads. <see cref="BM"/> is what <see cref="Moe.Align"/> needs.
    /// </summary>
    public sealed record Config(bool Gemv, int BM)
    {
        public static readonly Config Prefill = new(false, MmaBM);
        public static readonly Config Decode = new(true, 8);
        public override string ToString() => Gemv ? $"gemv bm{BM}" : $"mma bm{BM}";
    }
    public const int MmaBM = 64;                      // MF8_BM
    public const int DecodeMaxRows = 32;
    public static Config For(long tokens, int k) => tokens * k <= DecodeMaxRows ? Config.Decode : Config.Prefill;

    const int BN = 64, BK = 64, Stages = 3, MmaThreads = 128, QuantThreads = 128, GemvThreads = 64, GemvCols = 4;  // MF8_* defaults
    const uint GateUpShared = Stages * (MmaBM + 2 * BN) * (BK + 16), DownShared = Stages * (MmaBM + BN) * (BK + 16);

    /// <summary>
    /// Bytes of one (codes, scales) scratch pair for up to <paramref name="maxRows"/> padded rows (Moe.MaxRows with bm 64):
    /// codes [maxRows, max(D, I)] F8E4M3 (ld rounded up to 16), then scales [maxRows] f32 at a 16-byte aligned offset.
    /// GateUp's (aq, aScale) and Down's (hq, hScale) may share it: they run in order on one stream.
    /// </summary>
    public static long ScratchBytes(long maxRows, int d, int i) => CodesBytes(maxRows, d, i) + (maxRows * 4 + 15) / 16 * 16;
    /// <summary>The row stride the scratch layout of <see cref="ScratchBytes"/> uses: max(D, I) rounded up to 16.</summary>
    public static int ScratchLd(int d, int i) => (Math.Max(d, i) + 15) / 16 * 16;
    static long CodesBytes(long maxRows, int d, int i) => maxRows * ScratchLd(d, i);
    /// <summary>Views of a scratch buffer of <see cref="ScratchBytes"/> bytes: (codes [maxRows, ld] F8E4M3, scales [maxRows] f32).</summary>
    public static (Tensor Codes, Tensor Scales) Scratch(DevicePtr buffer, long maxRows, int d, int i) =>
        (new Tensor(buffer, DType.F8E4M3, new Shape(maxRows, ScratchLd(d, i))), new Tensor(buffer + CodesBytes(maxRows, d, i), DType.F32, new Shape(maxRows)));

    /// <summary>h = silu(gate)·up for every padded row, gate/up = f8f8bf16_rowwise(quantize(x[token]·score), Wgu[e]).</summary>
    /// <param name="x">[T, D] f32/bf16</param><param name="topkScore">[T, k] f32</param><param name="sortedSlots">[≥ MaxRows] i32</param>
    /// <param name="tileExpert">[≥ MaxTiles] i32</param><param name="expertOffsets">[E + 1] i32</param>
    /// <param name="wgu">F8E4M3 [E, 2I, D], scales [E, 2I]</param><param name="h">[≥ MaxRows, I], x's dtype</param>
    /// <param name="aq">scratch F8E4M3 [≥ MaxRows, ≥ D]</param><param name="aScale">scratch f32 [≥ MaxRows]</param>
    /// <param name="ub">activation_scale_ub (1200 for the Llama 4 releases)</param>
    public static unsafe void GateUp(Device dev, Tensor x, Tensor topkScore, Tensor sortedSlots, Tensor tileExpert, Tensor expertOffsets,
                                     Tensor wgu, Tensor h, Tensor aq, Tensor aScale, float ub, DeviceStream? stream = null,
                                     Config? config = null, bool viaBf16 = false)
    {
        const string op = "moe_fp8.gate_up";
        Matrix(op, "x", x); Matrix(op, "topk_score", topkScore); Matrix(op, "h", h);
        int t = KernelCheck.Int(op, "T", x.Shape[0]), d = KernelCheck.Int(op, "D", x.Shape[1]), k = KernelCheck.Int(op, "k", topkScore.Shape[1]);
        var (e, i2) = Weight(op, "wgu", wgu, d);
        if (i2 % 2 != 0) throw new ArgumentException($"{op}: wgu {wgu.Shape} must be [E, 2I, D]: 2I = {i2} is odd");
        int i = i2 / 2;
        var cfg = config ?? For(t, k);
        KernelCheck.Dims(op, "topk_score", topkScore, t, k);
        long rows = Common(op, cfg, t, k, e, sortedSlots, tileExpert, expertOffsets);
        if (h.Shape[1] != i || h.Shape[0] < rows) throw new ArgumentException($"{op}: h {h.Shape} must be [≥ {rows}, {i}]");
        if (x.DType is not (DType.F32 or DType.BF16) || h.DType != x.DType || topkScore.DType != DType.F32)
            throw KernelCheck.Unsupported(op, $"x {x.DType}, h {h.DType}, score {topkScore.DType} (x and h f32 or bf16, score f32)");
        int lda = ScratchCheck(op, "aq", aq, "a_scale", aScale, rows, d);
        if (!(ub > 0)) throw new ArgumentException($"{op}: ub = {ub} must be > 0");
        if (t == 0 || i == 0) return;
        string ta = KernelCheck.Name(x.DType);
        ulong xp = x.Ptr.Value, sp = topkScore.Ptr.Value, ssp = sortedSlots.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value,
              aqp = aq.Ptr.Value, asp = aScale.Ptr.Value, wp = wgu.Ptr.Value, wsp = wgu.Scale.Value, hp = h.Ptr.Value;
        int bm = cfg.BM;
        void** qa = stackalloc void*[] { &xp, &sp, &ssp, &op_, &aqp, &asp, &k, &d, &lda, &e, &ub };
        long routed = (long)t * k;
        dev.Cost(x.DType.BytesOf(routed * d) + topkScore.Bytes + routed * (d + 4L), 3.0 * routed * d);
        dev.Launch(dev.Kernels.Get(File, "moe_fp8_quant_gather_" + ta), QuantGrid(rows), QuantThreads, 0, qa, stream);
        // Routing model (KernelCost.ExpectedExperts): the experts T tokens touch, each read once (codes + scales); the routed rows in and out.
        dev.Cost((long)(KernelCost.ExpectedExperts(t, k, e) * ((wgu.Bytes + wgu.ScaleBytes) / e)) + routed * (d + 4L) + h.DType.BytesOf(routed * i),
                 2.0 * routed * d * 2 * i);
        if (cfg.Gemv)
        {
            void** ga = stackalloc void*[] { &aqp, &asp, &ssp, &tp, &op_, &wp, &wsp, &hp, &lda, &d, &i, &e, &bm };
            dev.Launch(dev.Kernels.Get(File, "moe_fp8_gate_up_gemv_" + ta),
                       new Dim3(KernelCheck.Blocks(i, GemvThreads / 32 * (GemvCols / 2)), Grid(op, rows, bm)), GemvThreads, 0, ga, stream);
        }
        else
        {
            void** ga = stackalloc void*[] { &aqp, &asp, &tp, &op_, &wp, &wsp, &hp, &lda, &d, &i, &e };
            dev.Launch(dev.Kernels.Get(File, "moe_fp8_gate_up_mma_" + ta, Defines(viaBf16)),
                       new Dim3(KernelCheck.Blocks(i, BN), Grid(op, rows, bm)), MmaThreads, GateUpShared, ga, stream);
        }
    }

    /// <summary>out = f8f8bf16_rowwise(quantize(h), Wd[e]) for the padded rows of <paramref name="tokens"/>·<paramref name="k"/> pairs.</summary>
    /// <param name="h">[≥ MaxRows, I] f32/bf16</param><param name="sortedSlots">[≥ MaxRows] i32 (padding rows are skipped)</param>
    /// <param name="wd">F8E4M3 [E, D, I], scales [E, D]</param><param name="output">[≥ MaxRows, D], h's dtype</param>
    /// <param name="hq">scratch F8E4M3 [≥ MaxRows, ≥ I]</param><param name="hScale">scratch f32 [≥ MaxRows]</param>
    public static unsafe void Down(Device dev, Tensor h, Tensor sortedSlots, Tensor tileExpert, Tensor expertOffsets, Tensor wd, Tensor output,
                                   long tokens, long k, Tensor hq, Tensor hScale, float ub, DeviceStream? stream = null,
                                   Config? config = null, bool viaBf16 = false)
    {
        const string op = "moe_fp8.down";
        Matrix(op, "h", h); Matrix(op, "out", output);
        int i = KernelCheck.Int(op, "I", h.Shape[1]);
        var (e, d) = Weight(op, "wd", wd, i);
        int t = KernelCheck.Int(op, "T", tokens), kk = KernelCheck.Int(op, "k", k);
        var cfg = config ?? For(t, kk);
        long rows = Common(op, cfg, t, kk, e, sortedSlots, tileExpert, expertOffsets);
        if (h.Shape[0] < rows) throw new ArgumentException($"{op}: h {h.Shape} must be [≥ {rows}, {i}]");
        if (output.Shape[1] != d || output.Shape[0] < rows) throw new ArgumentException($"{op}: out {output.Shape} must be [≥ {rows}, {d}]");
        if (h.DType is not (DType.F32 or DType.BF16) || output.DType != h.DType) throw KernelCheck.Unsupported(op, $"h {h.DType}, out {output.DType}");
        int ldq = ScratchCheck(op, "hq", hq, "h_scale", hScale, rows, i);
        if (!(ub > 0)) throw new ArgumentException($"{op}: ub = {ub} must be > 0");
        if (t == 0 || d == 0) return;
        string ta = KernelCheck.Name(h.DType);
        ulong hp = h.Ptr.Value, ssp = sortedSlots.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value,
              hqp = hq.Ptr.Value, hsp = hScale.Ptr.Value, wp = wd.Ptr.Value, wsp = wd.Scale.Value, outp = output.Ptr.Value;
        int bm = cfg.BM;
        void** qa = stackalloc void*[] { &hp, &ssp, &op_, &hqp, &hsp, &i, &ldq, &e, &ub };
        long routedRows = (long)t * kk;
        dev.Cost(h.DType.BytesOf(routedRows * i) + routedRows * (i + 4L), 3.0 * routedRows * i);
        dev.Launch(dev.Kernels.Get(File, "moe_fp8_quant_h_" + ta), QuantGrid(rows), QuantThreads, 0, qa, stream);
        dev.Cost((long)(KernelCost.ExpectedExperts(t, kk, e) * ((wd.Bytes + wd.ScaleBytes) / e)) + routedRows * (i + 4L) + output.DType.BytesOf(routedRows * d),
                 2.0 * routedRows * i * d);
        if (cfg.Gemv)
        {
            void** ga = stackalloc void*[] { &hqp, &hsp, &ssp, &tp, &op_, &wp, &wsp, &outp, &ldq, &i, &d, &e, &bm };
            dev.Launch(dev.Kernels.Get(File, "moe_fp8_down_gemv_" + ta),
                       new Dim3(KernelCheck.Blocks(d, GemvThreads / 32 * GemvCols), Grid(op, rows, bm)), GemvThreads, 0, ga, stream);
        }
        else
        {
            void** ga = stackalloc void*[] { &hqp, &hsp, &tp, &op_, &wp, &wsp, &outp, &ldq, &i, &d, &e };
            dev.Launch(dev.Kernels.Get(File, "moe_fp8_down_mma_" + ta, Defines(viaBf16)),
                       new Dim3(KernelCheck.Blocks(d, BN), Grid(op, rows, bm)), MmaThreads, DownShared, ga, stream);
        }
    }

    static KernelDefines Defines(bool viaBf16) => viaBf16 ? KernelDefines.Of(("FP8_MMA_VIA_BF16", 1)) : KernelDefines.None;

    static uint QuantGrid(long rows) => (uint)Math.Clamp(rows, 1, 65535 * 16);

    static (int E, int N) Weight(string op, string name, Tensor w, int k)
    {
        if (w.DType != DType.F8E4M3 || w.Shape.Rank != 3 || w.Scale.IsNull || w.Group != w.Shape.Inner)
            throw new ArgumentException($"{op}: {name} {w} must be an F8E4M3 weight [E, N, K] with scales [E, N] (Tensor.Quantized)");
        if (w.Shape[2] != k) throw new ArgumentException($"{op}: {name} {w.Shape} must have K = {k} (output-major [E, N, K])");
        return (KernelCheck.Int(op, "E", w.Shape[0]), KernelCheck.Int(op, "N", w.Shape[1]));
    }

    static long Common(string op, Config cfg, int t, int k, int e, Tensor sortedSlots, Tensor tileExpert, Tensor expertOffsets)
    {
        if (!cfg.Gemv && cfg.BM != MmaBM) throw new ArgumentException($"{op}: the mma kernels need the grouping padded to bm = {MmaBM}, got {cfg}");
        if (cfg.BM < 1) throw new ArgumentException($"{op}: bm = {cfg.BM} must be ≥ 1");
        KernelCheck.Dims(op, "expert_offsets", expertOffsets, e + 1);
        long rows = Moe.MaxRows(t, k, e, cfg.BM);
        if (sortedSlots.Elements < rows) throw new ArgumentException($"{op}: sorted_slots {sortedSlots.Shape} must hold at least {rows} elements");
        if (tileExpert.Elements < Moe.MaxTiles(t, k, e, cfg.BM)) throw new ArgumentException($"{op}: tile_expert {tileExpert.Shape} must hold at least {Moe.MaxTiles(t, k, e, cfg.BM)} elements");
        foreach (var a in new[] { sortedSlots, tileExpert, expertOffsets })
            if (a.DType != DType.I32) throw KernelCheck.Unsupported(op, $"{a.DType} index tensors (i32)");
        return rows;
    }

    static int ScratchCheck(string op, string qn, Tensor q, string sn, Tensor s, long rows, int cols)
    {
        if (q.DType != DType.F8E4M3 || q.Shape.Rank != 2 || s.DType != DType.F32)
            throw new ArgumentException($"{op}: scratch {qn} {q} must be F8E4M3 [rows, ld] and {sn} {s} f32 (see MoeFp8.Scratch)");
        if (q.Shape[0] < rows || q.Shape[1] < cols || s.Elements < rows)
            throw new ArgumentException($"{op}: scratch {qn} {q.Shape} must be [≥ {rows}, ≥ {cols}] and {sn} {s.Shape} hold ≥ {rows}");
        return KernelCheck.Int(op, qn + " ld", q.Shape[1]);
    }

    static uint Grid(string op, long rows, int tile)
    {
        long g = (rows + tile - 1) / tile;
        if (g > 65535) throw new ArgumentException($"{op}: {rows} padded rows need {g} row tiles; at most 65535 (split the tokens)");
        return (uint)Math.Max(1, g);
    }

    static void Matrix(string op, string name, Tensor a)
    {
        if (a.Shape.Rank != 2) throw new ArgumentException($"{op}: {name} {a.Shape} must be a matrix");
    }
}
