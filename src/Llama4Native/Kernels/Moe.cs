using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Kernels;

/// <summary>
/// `kernels/moe.cu`: Llama 4's routed mixture-of-experts FFN in five device steps (six launches) with no host round trip
/// (capturable in a CUDA graph): <see cref="Router"/> (logits, top-k, sigmoid), <see cref="Align"/> (group the
/// (token, slot) pairs by expert, padded to <see cref="BM"/>-row tiles), <see cref="GateUp"/> (grouped GEMM with
/// the score applied to the gathered input rows and SiLU×up fused), <see cref="Down"/> (grouped GEMM), and
/// <see cref="Combine"/> (deterministic gather-sum into y, optionally onto the shared expert's output).
/// <see cref="Forward"/> runs all five with a <see cref="Workspace"/> sized once for the largest T.
/// Activations f32 (exact parity: CUDA-core kernels) or bf16 (tensor cores); weights bf16.
/// </summary>
internal static class Moe
{
    public const string File = "moe.cu";
    public enum Variant { Auto, Mma, Simple }

    /// <summary>MOE_BM of the default tile: the grouped GEMM's row tile; every tile of the padded rows belongs to one
    /// expert. The largest row tile any <see cref="Config"/> here uses, so it sizes the <see cref="Workspace"/>.</summary>
    public const int BM = 64;

    /// <summary>
    /// The grouped GEMMs' compile-time tile (part of the JIT cache key); the grouping must pad to the same BM.
    /// <see cref="Default"/> (64×64, 4 warps) for prefill; <see cref="Decode"/> (16×32, 2 warps, 4 stages) when few
    /// rows are routed (T·k ≤ <see cref="DecodeMaxRows"/>): a 64-row tile would spend ¾ of its tensor-core work on
    /// padding, and narrower column tiles put twice as many blocks on the weight stream, which decode is bound by.
    /// </summary>
    public sealed record Config(int BM = 64, int BN = 64, int BK = 32, int WM = 2, int WN = 2, int Stages = 3)
    {
        public static readonly Config Default = new();
        public static readonly Config Decode = new(16, 32, 32, 1, 2, 4);
        public int Threads => 32 * WM * WN;
        public uint GateUpShared => (uint)(Stages * 2 * (BM * (BK + 8) + 2 * BK * (BN + 8)));
        public uint DownShared => (uint)(Stages * 2 * (BM * (BK + 8) + BK * (BN + 8)));
        public KernelDefines Defines => this == Default ? KernelDefines.None
            : KernelDefines.Of(("MOE_BM", BM), ("MOE_BN", BN), ("MOE_BK", BK), ("MOE_WM", WM), ("MOE_WN", WN), ("MOE_STAGES", Stages));
        public override string ToString() => $"{BM}x{BN}x{BK} w{WM}x{WN} s{Stages}";
    }

    /// <summary>Up to this many routed rows (T·k) <see cref="For"/> picks <see cref="Config.Decode"/>.</summary>
    public const int DecodeMaxRows = 32;
    public static Config For(long tokens, int k) => tokens * k <= DecodeMaxRows ? Config.Decode : Config.Default;
    /// <summary>From this many tokens (bf16) the router's logits come from gemm.cu's tensor-core GEMM + moe_topk.</summary>
    public const int RouterGemmTokens = 32;
    const int RouterThreads = 256, AlignThreads = 1024, CombineThreads = 256, SimpleTile = 16;

    /// <summary>Padded rows in the worst case: T·k + min(E, T·k)·(bm − 1) (only non-empty experts are padded).</summary>
    public static long MaxRows(long tokens, int k, int experts, int bm = BM) => tokens * k + Math.Min(experts, tokens * k) * (bm - 1);
    public static long MaxTiles(long tokens, int k, int experts, int bm = BM) => (MaxRows(tokens, k, experts, bm) + bm - 1) / bm;

    /// <summary>Device scratch for one MoE layer at up to <see cref="Tokens"/> tokens (allocate once, reuse every step).</summary>
    public sealed class Workspace : IDisposable
    {
        readonly DeviceBuffer[] buffers;
        /// <summary>The device allocations behind the tensors (owned by the workspace).</summary>
        public IReadOnlyList<DeviceBuffer> Buffers => buffers;
        public int Tokens { get; } public int K { get; } public int Experts { get; } public int Dim { get; } public int Inter { get; }
        public DType Act { get; }
        public Tensor Logits { get; }        // [T, E] act
        public Tensor TopkIdx { get; }       // [T, k] i32
        public Tensor TopkScore { get; }     // [T, k] f32
        public Tensor SortedSlots { get; }   // [R] i32
        public Tensor SlotRow { get; }       // [T, k] i32
        public Tensor TileExpert { get; }    // [tiles] i32
        public Tensor ExpertOffsets { get; } // [E + 1] i32
        public Tensor H { get; }             // [R, I] act
        public Tensor Out { get; }           // [R, D] act
        /// <summary>FP8 experts only (else default): the gathered rows quantized per row, [R, max(D, I)] F8E4M3, and their scales [R] f32.</summary>
        public Tensor Q { get; }
        public Tensor QScale { get; }
        /// <summary>FP8's activation scale upper bound (<c>activation_scale_ub</c>).</summary>
        public float ActivationScaleUb { get; }
        /// <summary>Expert parallelism: the model index of this device's first expert (its <see cref="Experts"/> follow).</summary>
        public int FirstExpert { get; init; }

        /// <param name="fp8">also allocate the activation-quantization scratch that FP8 routed experts need</param>
        /// <param name="activationScaleUb">FP8's activation scale upper bound</param>
        public Workspace(Device dev, int tokens, int k, int experts, int dim, int inter, DType act, bool fp8 = false, float activationScaleUb = 1200f)
        {
            (Tokens, K, Experts, Dim, Inter, Act) = (tokens, k, experts, dim, inter, act);
            // rows: the largest BM pads the most; tiles: a smaller BM can need more (every config here fits)
            long r = MaxRows(tokens, k, experts), tiles = new[] { BM, Config.Decode.BM, MoeFp8.Config.Decode.BM, MoeFp8.MmaBM }.Max(bm => MaxTiles(tokens, k, experts, bm));
            var list = new List<DeviceBuffer>();
            Tensor Make(DType t, params long[] shape)
            {
                var s = new Shape(shape);
                var b = dev.Allocate(Math.Max(16, s.Elements * t.Size()));
                list.Add(b);
                return new Tensor(b.Ptr, t, s);
            }
            Logits = Make(act, tokens, experts);
            TopkIdx = Make(DType.I32, tokens, k);
            TopkScore = Make(DType.F32, tokens, k);
            SortedSlots = Make(DType.I32, r);
            SlotRow = Make(DType.I32, tokens, k);
            TileExpert = Make(DType.I32, tiles);
            ExpertOffsets = Make(DType.I32, experts + 1);
            H = Make(act, r, inter);
            Out = Make(act, r, dim);
            ActivationScaleUb = activationScaleUb;
            if (fp8)
            {
                var scratch = dev.Allocate(MoeFp8.ScratchBytes(r, dim, inter));
                list.Add(scratch);
                (Q, QScale) = MoeFp8.Scratch(scratch.Ptr, r, dim, inter);
            }
            buffers = [.. list];
        }

        public void Dispose() { foreach (var b in buffers) b.Dispose(); }
    }

    /// <summary>The whole routed MoE: y (+)= Σ_chosen expert_e(x · sigmoid(logit_e)).</summary>
    /// <param name="x">[T, D] f32 or bf16</param><param name="wr">[E, D] bf16</param><param name="wgu">[E, D, 2I] bf16</param>
    /// <param name="wd">[E, I, D] bf16</param><param name="y">[T, D], same dtype as x</param>
    /// <param name="accumulate">add into y (the shared expert's output) instead of overwriting it</param>
    /// <param name="fused">route with <see cref="Route"/> (one block: logits, top-k, grouping; decode sizes only)</param>
    public static void Forward(Device dev, Tensor x, Tensor wr, Tensor wgu, Tensor wd, Tensor y, Workspace ws, bool accumulate,
                               DeviceStream? stream = null, Variant variant = Variant.Auto, Config? config = null, bool fused = false)
    {
        int t = KernelCheck.Int("moe", "T", x.Shape.Rows);
        if (t > ws.Tokens) throw new ArgumentException($"moe: T = {t} exceeds the workspace's {ws.Tokens} tokens");
        var idx = Rows(ws.TopkIdx, t); var score = Rows(ws.TopkScore, t); var slotRow = Rows(ws.SlotRow, t);
        var cfg = config ?? For(t, ws.K);
        if (cfg.BM > BM) throw new ArgumentException($"moe: tile {cfg} has BM > {BM}, which the workspace is sized for");
        if (fused) Route(dev, x, wr, ws, cfg.BM, stream);
        else
        {
            Router(dev, x, wr, Rows(ws.Logits, t), idx, score, stream);
            Align(dev, idx, ws.Experts, ws.SortedSlots, slotRow, ws.TileExpert, ws.ExpertOffsets, stream, cfg.BM, ws.FirstExpert);
        }
        GateUp(dev, x, score, ws.SortedSlots, ws.TileExpert, ws.ExpertOffsets, wgu, ws.H, stream, variant, cfg);
        Down(dev, ws.H, ws.TileExpert, ws.ExpertOffsets, wd, ws.Out, t, idx.Shape[1], stream, variant, cfg, ws.SortedSlots);
        Combine(dev, ws.Out, slotRow, idx, y, accumulate, stream);
    }

    /// <summary>
    /// The routed experts given the router's choice (<see cref="Workspace.TopkIdx"/>/<see cref="Workspace.TopkScore"/> of
    /// the first T rows, as <see cref="Router"/> left them): align, gate_up, down, combine — y (+)= Σ_chosen expert_e(x · score).
    /// The weights' format decides the kernels: bf16 ([E, D, 2I] / [E, I, D] as HF stores them), int4 or FP8
    /// (output-major [E, 2I, D] / [E, D, I] with scales; see <see cref="Tensor"/>). FP8 needs a workspace made with fp8 scratch.
    /// </summary>
    /// <param name="routed">the grouping is done too (<see cref="Route"/> with <see cref="AlignBm"/>): no align here</param>
    public static void Experts(Device dev, Tensor x, Tensor wgu, Tensor wd, Tensor y, Workspace ws, bool accumulate, DeviceStream? stream = null,
                               bool routed = false)
    {
        int t = KernelCheck.Int("moe", "T", x.Shape.Rows);
        if (t > ws.Tokens) throw new ArgumentException($"moe: T = {t} exceeds the workspace's {ws.Tokens} tokens");
        var idx = Rows(ws.TopkIdx, t); var score = Rows(ws.TopkScore, t); var slotRow = Rows(ws.SlotRow, t);
        if (wgu.DType == DType.F8E4M3)
        {
            if (ws.Q.Ptr.IsNull) throw new InvalidOperationException("moe: FP8 experts need a workspace made with fp8: true (activation-quantization scratch)");
            var cfg = MoeFp8.For(t, ws.K);
            if (!routed) Align(dev, idx, ws.Experts, ws.SortedSlots, slotRow, ws.TileExpert, ws.ExpertOffsets, stream, cfg.BM, ws.FirstExpert);
            MoeFp8.GateUp(dev, x, score, ws.SortedSlots, ws.TileExpert, ws.ExpertOffsets, wgu, ws.H, ws.Q, ws.QScale, ws.ActivationScaleUb, stream, cfg);
            MoeFp8.Down(dev, ws.H, ws.SortedSlots, ws.TileExpert, ws.ExpertOffsets, wd, ws.Out, t, ws.K, ws.Q, ws.QScale, ws.ActivationScaleUb, stream, cfg);
        }
        else
        {
            // bf16 (moe.cu) and int4 (moe_int4.cu, dispatched inside GateUp/Down) share the tile configs.
            var cfg = For(t, ws.K);
            if (!routed) Align(dev, idx, ws.Experts, ws.SortedSlots, slotRow, ws.TileExpert, ws.ExpertOffsets, stream, cfg.BM, ws.FirstExpert);
            GateUp(dev, x, score, ws.SortedSlots, ws.TileExpert, ws.ExpertOffsets, wgu, ws.H, stream, Variant.Auto, cfg);
            Down(dev, ws.H, ws.TileExpert, ws.ExpertOffsets, wd, ws.Out, t, ws.K, stream, Variant.Auto, cfg, ws.SortedSlots);
        }
        Combine(dev, ws.Out, slotRow, idx, y, accumulate, stream);
    }

    /// <summary>The tile height <see cref="Experts"/> groups the rows for with experts <paramref name="wgu"/> at T tokens.</summary>
    public static int AlignBm(Tensor wgu, long tokens, int k) => wgu.DType == DType.F8E4M3 ? MoeFp8.For(tokens, k).BM : For(tokens, k).BM;

    /// <summary>Experts up to this many are routed inside <see cref="Route"/>'s block (Scout: 16); more (Maverick: 128)
    /// stream Wr [E, D] through the multi-block logits kernel first — one block would read 1.3 MB alone.</summary>
    public const int RouteInlineExperts = 32;

    /// <summary>Whether <see cref="Route"/> takes T tokens (a decode step: T·k ≤ <see cref="DecodeMaxRows"/>, T·E ≤ 2048).</summary>
    public static bool CanRoute(long tokens, int experts, int k) => tokens >= 1 && tokens * k <= DecodeMaxRows && tokens * experts <= 2048;

    /// <summary>
    /// The router → top-k → grouping chain in one launch (moe_route: one block; with E &gt; <see cref="RouteInlineExperts"/>
    /// the logits kernel runs first and the block reads its logits): the same results as <see cref="Router"/> then
    /// <see cref="Align"/>, bit for bit. Fills ws.Logits, TopkIdx, TopkScore, SlotRow (first T rows), SortedSlots,
    /// TileExpert, ExpertOffsets for tiles of <paramref name="bm"/> rows.
    /// </summary>
    /// <param name="x">[T, D] f32 or bf16</param><param name="wr">[E, D] bf16</param>
    /// <param name="logits">[T, E] in x's dtype, where the logits go (default: the workspace's)</param>
    public static unsafe void Route(Device dev, Tensor x, Tensor wr, Workspace ws, int bm, DeviceStream? stream = null, Tensor? logits = null)
    {
        const string op = "moe.route";
        Matrix(op, "x", x); Matrix(op, "wr", wr);
        int t = KernelCheck.Int(op, "T", x.Shape[0]), d = KernelCheck.Int(op, "D", x.Shape[1]), e = KernelCheck.Int(op, "E", wr.Shape[0]), k = ws.K;
        if (wr.Shape[1] != d) throw new ArgumentException($"{op}: wr {wr.Shape} must be [E, {d}] for x {x.Shape}");
        if (e != ws.Experts) throw new ArgumentException($"{op}: wr has {e} experts, the workspace {ws.Experts}");
        if (ws.FirstExpert != 0) throw new ArgumentException($"{op}: an expert-parallel workspace (first expert {ws.FirstExpert}) routes with Router and Align");
        if (t > ws.Tokens) throw new ArgumentException($"{op}: T = {t} exceeds the workspace's {ws.Tokens} tokens");
        if (!CanRoute(t, e, k)) throw new ArgumentException($"{op}: T = {t}, E = {e}, k = {k} is not a decode size (T·k ≤ {DecodeMaxRows}, T·E ≤ 2048): use Router and Align");
        if (k > e) throw new ArgumentException($"{op}: k = {k} must be in [1, E = {e}]");
        if (bm < 1 || bm > BM) throw new ArgumentException($"{op}: bm = {bm} must be in [1, {BM}]");
        var lg = logits ?? Rows(ws.Logits, t);
        KernelCheck.Dims(op, "logits", lg, t, e);
        if (x.DType is not (DType.F32 or DType.BF16) || wr.DType != DType.BF16 || lg.DType != x.DType)
            throw KernelCheck.Unsupported(op, $"x {x.DType}, wr {wr.DType}, logits {lg.DType}");
        int given = e > RouteInlineExperts ? 1 : 0;
        if (given == 1)
        {
            ulong xp0 = x.Ptr.Value, wp0 = wr.Ptr.Value, lp0 = lg.Ptr.Value;
            void** a0 = stackalloc void*[] { &xp0, &wp0, &lp0, &t, &d, &e };
            dev.Cost(x.Bytes + wr.Bytes + lg.Bytes, 2.0 * t * e * d);
            dev.Launch(dev.Kernels.Get(File, "moe_router_logits_" + KernelCheck.Name(x.DType)),
                       new Dim3(KernelCheck.Blocks(e, RouterThreads / 32), (uint)Math.Min(t, 65535)), RouterThreads, 0, a0, stream);
        }
        ulong xp = x.Ptr.Value, wp = wr.Ptr.Value, lp = lg.Ptr.Value, ip = ws.TopkIdx.Ptr.Value, sp = ws.TopkScore.Ptr.Value,
              ssp = ws.SortedSlots.Ptr.Value, rp = ws.SlotRow.Ptr.Value, tp = ws.TileExpert.Ptr.Value, op_ = ws.ExpertOffsets.Ptr.Value;
        void** args = stackalloc void*[] { &xp, &wp, &lp, &ip, &sp, &ssp, &rp, &tp, &op_, &t, &d, &e, &k, &bm, &given };
        long n = (long)t * k;
        dev.Cost((given == 1 ? 2 * lg.Bytes : x.Bytes + wr.Bytes + lg.Bytes) + 8 * n + 4 * n + 4L * (e + 1)
                 + 4L * MaxRows(t, k, e, bm) + 4L * MaxTiles(t, k, e, bm), given == 1 ? (double)t * e * k : 2.0 * t * e * d);
        dev.Launch(dev.Kernels.Get(File, "moe_route_" + KernelCheck.Name(x.DType)), 1, AlignThreads, (uint)(8 * t * e + 4 * (2 * e + 1)), args, stream);
    }

    static Tensor Rows(Tensor a, long rows) => new(a.Ptr, a.DType, new Shape(rows, a.Shape[1]));

    /// <summary>Router logits, top-k and sigmoid scores.</summary>
    /// <param name="x">[T, D] f32 or bf16</param><param name="wr">[E, D] bf16</param><param name="logits">[T, E], x's dtype</param>
    /// <param name="topkIdx">[T, k] i32</param><param name="topkScore">[T, k] f32</param>
    public static unsafe void Router(Device dev, Tensor x, Tensor wr, Tensor logits, Tensor topkIdx, Tensor topkScore, DeviceStream? stream = null)
    {
        const string op = "moe.router";
        Matrix(op, "x", x); Matrix(op, "wr", wr);
        int t = KernelCheck.Int(op, "T", x.Shape[0]), d = KernelCheck.Int(op, "D", x.Shape[1]), e = KernelCheck.Int(op, "E", wr.Shape[0]);
        if (wr.Shape[1] != d) throw new ArgumentException($"{op}: wr {wr.Shape} must be [E, {d}] for x {x.Shape}");
        KernelCheck.Dims(op, "logits", logits, t, e);
        int k = KernelCheck.Int(op, "k", topkIdx.Shape.Rank == 2 ? topkIdx.Shape[1] : -1);
        if (k < 1 || k > e) throw new ArgumentException($"{op}: k = {k} must be in [1, E = {e}]");
        KernelCheck.Dims(op, "topk_idx", topkIdx, t, k);
        KernelCheck.Dims(op, "topk_score", topkScore, t, k);
        if (x.DType is not (DType.F32 or DType.BF16) || wr.DType != DType.BF16 || logits.DType != x.DType
            || topkIdx.DType != DType.I32 || topkScore.DType != DType.F32)
            throw KernelCheck.Unsupported(op, $"x {x.DType}, wr {wr.DType}, logits {logits.DType}, idx {topkIdx.DType}, score {topkScore.DType}");
        if (t == 0) return;
        if (x.DType == DType.BF16 && t >= RouterGemmTokens)
        {   // prefill: a tensor-core GEMM reads Wr once per tile instead of once per token
            Gemm.Run(dev, x, wr, logits, Reference.GemmBLayout.NK, stream);
        }
        else
        {
            ulong xp = x.Ptr.Value, wp = wr.Ptr.Value, lp = logits.Ptr.Value;
            void** args = stackalloc void*[] { &xp, &wp, &lp, &t, &d, &e };
            dev.Cost(x.Bytes + wr.Bytes + logits.Bytes, 2.0 * t * e * d);
            dev.Launch(dev.Kernels.Get(File, "moe_router_logits_" + KernelCheck.Name(x.DType)),
                       new Dim3(KernelCheck.Blocks(e, RouterThreads / 32), (uint)Math.Min(t, 65535)), RouterThreads, 0, args, stream);
        }
        TopK(dev, logits, topkIdx, topkScore, stream);
    }

    /// <summary>Top-k and sigmoid scores of given logits (ties to the lower expert index, NaN largest).</summary>
    /// <param name="logits">[T, E] f32 or bf16</param><param name="topkIdx">[T, k] i32</param><param name="topkScore">[T, k] f32</param>
    public static unsafe void TopK(Device dev, Tensor logits, Tensor topkIdx, Tensor topkScore, DeviceStream? stream = null)
    {
        const string op = "moe.topk";
        Matrix(op, "logits", logits); Matrix(op, "topk_idx", topkIdx);
        int t = KernelCheck.Int(op, "T", logits.Shape[0]), e = KernelCheck.Int(op, "E", logits.Shape[1]), k = KernelCheck.Int(op, "k", topkIdx.Shape[1]);
        if (k < 1 || k > e) throw new ArgumentException($"{op}: k = {k} must be in [1, E = {e}]");
        KernelCheck.Dims(op, "topk_idx", topkIdx, t, k);
        KernelCheck.Dims(op, "topk_score", topkScore, t, k);
        if (logits.DType is not (DType.F32 or DType.BF16) || topkIdx.DType != DType.I32 || topkScore.DType != DType.F32)
            throw KernelCheck.Unsupported(op, $"logits {logits.DType}, idx {topkIdx.DType}, score {topkScore.DType}");
        if (t == 0) return;
        ulong lp = logits.Ptr.Value, ip = topkIdx.Ptr.Value, sp = topkScore.Ptr.Value;
        void** args = stackalloc void*[] { &lp, &ip, &sp, &t, &e, &k };
        dev.Cost(logits.Bytes + topkIdx.Bytes + topkScore.Bytes, (double)t * e * k);
        dev.Launch(dev.Kernels.Get(File, "moe_topk_" + KernelCheck.Name(logits.DType)), (uint)t, 32, (uint)(8 * e), args, stream);
    }

    /// <summary>Groups the T·k (token, slot) pairs by expert: padded row order, tile → expert, slot → row, offsets.</summary>
    /// <param name="topkIdx">[T, k] i32</param><param name="sortedSlots">[≥ MaxRows] i32</param><param name="slotRow">[T, k] i32</param>
    /// <param name="tileExpert">[≥ MaxTiles] i32</param><param name="expertOffsets">[E + 1] i32</param>
    /// <param name="firstExpert">expert parallelism: this device holds experts [firstExpert, firstExpert + E) of the model;
    /// topk ids are global, pairs routed elsewhere are dropped (slot_row −1)</param>
    public static unsafe void Align(Device dev, Tensor topkIdx, int experts, Tensor sortedSlots, Tensor slotRow, Tensor tileExpert,
                                    Tensor expertOffsets, DeviceStream? stream = null, int bm = BM, int firstExpert = 0)
    {
        const string op = "moe.align";
        Matrix(op, "topk_idx", topkIdx);
        int t = KernelCheck.Int(op, "T", topkIdx.Shape[0]), k = KernelCheck.Int(op, "k", topkIdx.Shape[1]), e = experts;
        if (bm < 1) throw new ArgumentException($"{op}: bm = {bm} must be ≥ 1");
        if (e < 1) throw new ArgumentException($"{op}: E = {e} must be ≥ 1");
        if ((long)t * k > int.MaxValue / 2) throw new ArgumentException($"{op}: T·k = {(long)t * k} too large");
        KernelCheck.Dims(op, "slot_row", slotRow, t, k);
        KernelCheck.Dims(op, "expert_offsets", expertOffsets, e + 1);
        AtLeast(op, "sorted_slots", sortedSlots, MaxRows(t, k, e, bm));
        AtLeast(op, "tile_expert", tileExpert, MaxTiles(t, k, e, bm));
        foreach (var a in new[] { topkIdx, sortedSlots, slotRow, tileExpert, expertOffsets })
            if (a.DType != DType.I32) throw KernelCheck.Unsupported(op, $"{a.DType} index tensors");
        var fn = dev.Kernels.Get(File, "moe_align");
        ulong ip = topkIdx.Ptr.Value, sp = sortedSlots.Ptr.Value, rp = slotRow.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value;
        int e0 = firstExpert;
        if (e0 < 0) throw new ArgumentException($"{op}: firstExpert = {e0} must be ≥ 0");
        void** args = stackalloc void*[] { &ip, &sp, &rp, &tp, &op_, &t, &k, &e, &bm, &e0 };
        dev.Cost(topkIdx.Bytes + slotRow.Bytes + 4L * (e + 1) + 4L * MaxRows(t, k, e, bm) + 4L * MaxTiles(t, k, e, bm), 0);
        dev.Launch(fn, 1, AlignThreads, (uint)(4 * (2 * e + 1)), args, stream);
    }

    /// <summary>h = silu(a·Wg[e]) ⊙ (a·Wu[e]) for every padded row, a = x[token] · score (rows for up to T = x's rows).</summary>
    /// <param name="x">[T, D]</param><param name="topkScore">[T, k] f32</param><param name="sortedSlots">[≥ MaxRows] i32</param>
    /// <param name="tileExpert">[≥ MaxTiles] i32</param><param name="expertOffsets">[E + 1] i32</param>
    /// <param name="wgu">[E, D, 2I] bf16</param><param name="h">[≥ MaxRows, I], x's dtype</param>
    public static unsafe void GateUp(Device dev, Tensor x, Tensor topkScore, Tensor sortedSlots, Tensor tileExpert, Tensor expertOffsets,
                                     Tensor wgu, Tensor h, DeviceStream? stream = null, Variant variant = Variant.Auto, Config? config = null)
    {
        if (wgu.DType == DType.I4)  // int4 experts (output-major [E, 2I, D]): kernels/moe_int4.cu
        { MoeInt4.GateUp(dev, x, topkScore, sortedSlots, tileExpert, expertOffsets, wgu, h, stream, (MoeInt4.Variant)variant, config); return; }
        var cfg = config ?? Config.Default;
        const string op = "moe.gate_up";
        Matrix(op, "x", x); Matrix(op, "topk_score", topkScore); Matrix(op, "h", h);
        if (wgu.Shape.Rank != 3) throw new ArgumentException($"{op}: wgu {wgu.Shape} must be [E, D, 2I]");
        int t = KernelCheck.Int(op, "T", x.Shape[0]), d = KernelCheck.Int(op, "D", x.Shape[1]), k = KernelCheck.Int(op, "k", topkScore.Shape[1]);
        int e = KernelCheck.Int(op, "E", wgu.Shape[0]), i = KernelCheck.Int(op, "I", wgu.Shape[2] / 2), bm = cfg.BM;
        if (wgu.Shape[1] != d || wgu.Shape[2] % 2 != 0) throw new ArgumentException($"{op}: wgu {wgu.Shape} must be [E, {d}, 2I] for x {x.Shape}");
        KernelCheck.Dims(op, "topk_score", topkScore, t, k);
        KernelCheck.Dims(op, "expert_offsets", expertOffsets, e + 1);
        long rows = MaxRows(t, k, e, bm);
        AtLeast(op, "sorted_slots", sortedSlots, rows); AtLeast(op, "tile_expert", tileExpert, MaxTiles(t, k, e, bm));
        if (h.Shape[1] != i || h.Shape[0] < rows) throw new ArgumentException($"{op}: h {h.Shape} must be [≥ {rows}, {i}]");
        bool mma = Pick(op, x.DType, variant);
        if (h.DType != x.DType || wgu.DType != DType.BF16 || topkScore.DType != DType.F32)
            throw KernelCheck.Unsupported(op, $"x {x.DType}, wgu {wgu.DType}, h {h.DType}, score {topkScore.DType}");
        if (t == 0 || i == 0) return;
        ulong xp = x.Ptr.Value, sp = topkScore.Ptr.Value, ssp = sortedSlots.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value,
              wp = wgu.Ptr.Value, hp = h.Ptr.Value;
        // Routing model (KernelCost.ExpectedExperts): the experts T tokens touch, each read once; the routed rows in and out.
        dev.Cost((long)(KernelCost.ExpectedExperts(t, k, e) * (wgu.Bytes / e)) + x.Bytes + topkScore.Bytes + h.DType.BytesOf((long)t * k * i),
                 2.0 * t * k * d * 2L * i);
        if (mma)
        {
            void** args = stackalloc void*[] { &xp, &sp, &ssp, &tp, &op_, &wp, &hp, &k, &d, &i, &e };
            dev.Launch(dev.Kernels.Get(File, "moe_gate_up_mma_bf16", cfg.Defines), new Dim3(KernelCheck.Blocks(i, cfg.BN), Grid(op, rows, bm)),
                       cfg.Threads, cfg.GateUpShared, args, stream);
        }
        else
        {
            void** args = stackalloc void*[] { &xp, &sp, &ssp, &tp, &op_, &wp, &hp, &k, &d, &i, &e, &bm };
            dev.Launch(dev.Kernels.Get(File, "moe_gate_up_simple_" + KernelCheck.Name(x.DType)),
                       new Dim3(KernelCheck.Blocks(i, SimpleTile), Grid(op, rows, SimpleTile)), new Dim3(SimpleTile, SimpleTile), 0, args, stream);
        }
    }

    /// <summary>out = h · Wd[e] for the padded rows of <paramref name="tokens"/>·<paramref name="k"/> pairs.</summary>
    /// <param name="h">[≥ MaxRows, I]</param><param name="wd">[E, I, D] bf16</param><param name="output">[≥ MaxRows, D], h's dtype</param>
    /// <param name="sortedSlots">optional, int4 weights only: lets the decode GEMV skip padding rows (see <see cref="MoeInt4.Down"/>)</param>
    public static unsafe void Down(Device dev, Tensor h, Tensor tileExpert, Tensor expertOffsets, Tensor wd, Tensor output, long tokens, long k,
                                   DeviceStream? stream = null, Variant variant = Variant.Auto, Config? config = null, Tensor sortedSlots = default)
    {
        if (wd.DType == DType.I4)  // int4 experts (output-major [E, D, I]): kernels/moe_int4.cu
        { MoeInt4.Down(dev, h, tileExpert, expertOffsets, wd, output, tokens, k, stream, (MoeInt4.Variant)variant, config, sortedSlots); return; }
        const string op = "moe.down";
        var cfg = config ?? Config.Default;
        Matrix(op, "h", h); Matrix(op, "out", output);
        if (wd.Shape.Rank != 3) throw new ArgumentException($"{op}: wd {wd.Shape} must be [E, I, D]");
        int e = KernelCheck.Int(op, "E", wd.Shape[0]), i = KernelCheck.Int(op, "I", wd.Shape[1]), d = KernelCheck.Int(op, "D", wd.Shape[2]), bm = cfg.BM;
        long rows = MaxRows(tokens, (int)k, e, bm);
        if (h.Shape[1] != i || h.Shape[0] < rows) throw new ArgumentException($"{op}: h {h.Shape} must be [≥ {rows}, {i}]");
        if (output.Shape[1] != d || output.Shape[0] < rows) throw new ArgumentException($"{op}: out {output.Shape} must be [≥ {rows}, {d}]");
        KernelCheck.Dims(op, "expert_offsets", expertOffsets, e + 1);
        AtLeast(op, "tile_expert", tileExpert, MaxTiles(tokens, (int)k, e, bm));
        bool mma = Pick(op, h.DType, variant);
        if (output.DType != h.DType || wd.DType != DType.BF16) throw KernelCheck.Unsupported(op, $"h {h.DType}, wd {wd.DType}, out {output.DType}");
        if (tokens == 0 || d == 0) return;
        ulong hp = h.Ptr.Value, tp = tileExpert.Ptr.Value, op_ = expertOffsets.Ptr.Value, wp = wd.Ptr.Value, outp = output.Ptr.Value;
        dev.Cost((long)(KernelCost.ExpectedExperts(tokens, (int)k, e) * (wd.Bytes / e)) + h.DType.BytesOf(tokens * k * i) + output.DType.BytesOf(tokens * k * d),
                 2.0 * tokens * k * i * d);
        if (mma)
        {
            void** args = stackalloc void*[] { &hp, &tp, &op_, &wp, &outp, &i, &d, &e };
            dev.Launch(dev.Kernels.Get(File, "moe_down_mma_bf16", cfg.Defines), new Dim3(KernelCheck.Blocks(d, cfg.BN), Grid(op, rows, bm)),
                       cfg.Threads, cfg.DownShared, args, stream);
        }
        else
        {
            void** args = stackalloc void*[] { &hp, &tp, &op_, &wp, &outp, &i, &d, &e, &bm };
            dev.Launch(dev.Kernels.Get(File, "moe_down_simple_" + KernelCheck.Name(h.DType)),
                       new Dim3(KernelCheck.Blocks(d, SimpleTile), Grid(op, rows, SimpleTile)), new Dim3(SimpleTile, SimpleTile), 0, args, stream);
        }
    }

    /// <summary>y[t] (+)= Σ over t's slots (ascending expert order) of out[slot_row[t, s]]; no atomics.</summary>
    /// <param name="output">[rows, D]</param><param name="slotRow">[T, k] i32</param><param name="topkIdx">[T, k] i32</param><param name="y">[T, D]</param>
    public static unsafe void Combine(Device dev, Tensor output, Tensor slotRow, Tensor topkIdx, Tensor y, bool accumulate, DeviceStream? stream = null)
    {
        const string op = "moe.combine";
        Matrix(op, "out", output); Matrix(op, "y", y); Matrix(op, "slot_row", slotRow);
        int t = KernelCheck.Int(op, "T", y.Shape[0]), d = KernelCheck.Int(op, "D", y.Shape[1]), k = KernelCheck.Int(op, "k", slotRow.Shape[1]);
        int acc = accumulate ? 1 : 0;
        KernelCheck.Dims(op, "slot_row", slotRow, t, k);
        KernelCheck.Dims(op, "topk_idx", topkIdx, t, k);
        if (output.Shape[1] != d) throw new ArgumentException($"{op}: out {output.Shape} must have {d} columns like y {y.Shape}");
        if (output.DType != y.DType || y.DType is not (DType.F32 or DType.BF16) || slotRow.DType != DType.I32 || topkIdx.DType != DType.I32)
            throw KernelCheck.Unsupported(op, $"out {output.DType}, y {y.DType}");
        if (t == 0 || d == 0) return;
        ulong op_ = output.Ptr.Value, rp = slotRow.Ptr.Value, ip = topkIdx.Ptr.Value, yp = y.Ptr.Value;
        void** args = stackalloc void*[] { &op_, &rp, &ip, &yp, &t, &d, &k, &acc };
        dev.Cost(output.DType.BytesOf((long)t * k * d) + (accumulate ? 2 : 1) * y.Bytes + slotRow.Bytes + topkIdx.Bytes, (double)t * k * d);
        dev.Launch(dev.Kernels.Get(File, "moe_combine_" + KernelCheck.Name(y.DType)),
                   new Dim3(KernelCheck.Blocks(d, CombineThreads), (uint)Math.Min(t, 65535)), CombineThreads, 0, args, stream);
    }

    static bool Pick(string op, DType act, Variant variant)
    {
        if (act is not (DType.F32 or DType.BF16)) throw KernelCheck.Unsupported(op, act.ToString());
        if (variant == Variant.Mma && act != DType.BF16) throw KernelCheck.Unsupported(op + " (mma)", KernelCheck.Name(act));
        return variant == Variant.Mma || (variant == Variant.Auto && act == DType.BF16);
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

    static void AtLeast(string op, string name, Tensor a, long n)
    {
        if (a.Elements < n) throw new ArgumentException($"{op}: {name} {a.Shape} must hold at least {n} elements");
    }
}
