using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Distributed;
using Llama4Native.Graph;
using Llama4Native.Kernels;
using Llama4Native.Tensors;
using GemmBLayout = Llama4Native.Reference.GemmBLayout;

namespace Llama4Native.Model;

/// <summary>How activations are stored. Accumulation is fp32 in both.</summary>
public enum ComputeMode
{
    /// <summary>fp32 activations, bf16 weights read as they are (exactly representable): the exact-parity path.</summary>
    F32,
    /// <summary>bf16 activations and weights, fp32 accumulation: the production path.</summary>
    BF16,
}

/// <summary>
/// The Llama 4 text decoder described ONCE as a graph of named nodes, built from the config:
/// <code>
///   x = tok_embd[ids]                                     "embed"            [T, D]
///   x[img_idx[j]] = img_rows[j]  (multimodal models)      "embed.image"      early fusion: &lt;|patch|&gt; rows
///   for each layer i:
///     h  = x + Attn(RMSNorm_in(x))                        "blk.i.attn_qkv" (views attn_q|k|v), "blk.i.attn_*", "blk.i.attn_res"
///                                                         (each residual add runs fused with the norm after it: add_rmsnorm)
///     x  = h + FFN(RMSNorm_post(h))                        "blk.i.ffn_gate_up", "blk.i.ffn_*" or "blk.i.moe.*", "blk.i.out"
///   logits = lm_head(RMSNorm(x))                          "output_norm", "output"
/// </code>
/// Attn: q/k/v projections; RoPE layers rotate q, k (then the weightless QK norm when the config asks) and
/// attend within their chunk; NoPE layers scale q by the temperature and attend causally over everything.
/// FFN: dense layers gate/up/SiLU/down; MoE layers the shared expert plus the routed experts (router → top-k
/// → sigmoid-scaled inputs → grouped expert GEMMs → combine). Nothing here knows about a fixture's shapes:
/// every size comes from <see cref="TextConfig"/>.
/// <para>
/// Several devices: with a <see cref="RankContext"/> the same description builds ONE RANK's graph from the
/// <see cref="ShardingPlan"/>: local head / intermediate / expert / vocab counts, the rank's weight slices, and the
/// collectives as named nodes through <see cref="Communicator"/> — "embed.allreduce", "blk.i.attn_o.allreduce",
/// "blk.i.ffn_down.allreduce" or "blk.i.moe.allreduce" (shared + routed experts together), "output.allgather" and
/// "output.gather" (the vocab slices back into [T, V] order). After each all-reduce every rank holds the same x, so
/// norms, residuals and the router run replicated. <see cref="ShardedTextGraph"/> runs the ranks' graphs in lockstep.
/// </para>
/// </summary>
internal sealed class Llama4TextGraph : IDisposable
{
    public ComputeGraph Graph { get; }
    public GraphPlan Plan { get; }
    public int Tokens { get; }
    public ComputeMode Mode { get; }
    public Value Ids { get; }
    public Value Positions { get; }
    public Value Logits { get; }
    /// <summary>Early fusion inputs (multimodal checkpoints only): projected image rows [T, D] and their positions [T] int32.</summary>
    public Value? ImageRows { get; }
    public Value? ImageIndex { get; }
    /// <summary>The current run leaves the logits unwritten (<see cref="Run"/>'s <c>logits: false</c>; lastLogitsOnly graphs).</summary>
    bool skipLogits;
    /// <summary>Image rows scattered by the current run (0: the "embed.image" node does nothing).</summary>
    int imageCount;
    readonly int imageToken;
    readonly AttentionBatch? batch;
    readonly KvCache? cache;
    readonly PagedKvCache? paged;
    /// <summary>Paged (batched) graphs: the sequences of a step, one logits row each.</summary>
    public int Sequences { get; }
    /// <summary>Paged graphs: each sequence's last row in the step [B] int32 (the rows whose logits are computed).</summary>
    public Value? LastRows { get; }
    readonly Moe.Workspace? moe;
    readonly DeviceBuffer freqs;
    readonly Device dev;
    readonly float ub;
    readonly DeviceBuffer? fp8Scratch;
    readonly Tensor fp8Rows, fp8Scales;
    readonly RankContext? shard;
    readonly HashSet<string> collectives = new(StringComparer.Ordinal);
    /// <summary>The collective nodes of this graph (empty on one device): a lockstep runner brackets them across ranks.</summary>
    public IReadOnlySet<string> CollectiveNodes => collectives;
    /// <summary>This rank's place in a device group, or null on one device.</summary>
    public RankContext? Shard => shard;

    /// <summary>
    /// Builds and plans the graph for pieces of <paramref name="tokens"/> tokens of one sequence. Without a
    /// <paramref name="cache"/> a run is a whole prompt at positions 0..T-1 (attention over its own keys); with
    /// one, each run continues the sequence at the cache's position, writing keys and values into it.
    /// With <paramref name="lastLogitsOnly"/> the lm_head runs on the last position only (logits [1, V]): all a
    /// generation step needs, and at V = 202,048 the largest GEMM of a prefill piece otherwise.
    /// </summary>
    /// <param name="rank">several devices: this rank's plan, index and communicator; <paramref name="w"/> then holds its slices</param>
    public Llama4TextGraph(ModelWeights w, int tokens, ComputeMode mode, KvCache? cache = null, bool lastLogitsOnly = false, RankContext? rank = null)
        : this(w, tokens, mode, cache, lastLogitsOnly, null, 0, rank) { }

    /// <summary>
    /// A graph over a BATCH: <paramref name="tokens"/> rows from <paramref name="sequences"/> sequences of a
    /// <see cref="PagedKvCache"/> (decode rows and prefill pieces mixed), each row at its own sequence's position;
    /// the dense layers and the MoE take the rows as they are, attention goes through the cache's pages. Logits are
    /// [B, V]: each sequence's last row. Run it with <see cref="RunBatch"/>.
    /// </summary>
    public Llama4TextGraph(ModelWeights w, int tokens, int sequences, ComputeMode mode, PagedKvCache paged)
        : this(w, tokens, mode, null, false, paged ?? throw new ArgumentNullException(nameof(paged)), sequences, null) { }

    Llama4TextGraph(ModelWeights w, int tokens, ComputeMode mode, KvCache? cache, bool lastLogitsOnly, PagedKvCache? paged, int sequences, RankContext? rank)
    {
        var cfg = w.Config.Text;
        dev = w.Device;
        Tokens = tokens;
        Mode = mode;
        shard = rank is { Plan.World: > 1 } ? rank : null;
        var sp = shard?.Plan;
        // Local sizes: the whole model on one device, this rank's part of it on several.
        int t = tokens, d = cfg.HiddenSize, h = sp?.Heads ?? cfg.NumAttentionHeads, hkv = sp?.KvHeads ?? cfg.NumKeyValueHeads, hd = cfg.HeadDim;
        int interMoe = sp?.Inter ?? cfg.IntermediateSize, interMlp = sp?.InterMlp ?? cfg.IntermediateSizeMlp;
        var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
        float eps = (float)cfg.RmsNormEps;
        var g = Graph = new ComputeGraph();

        // Inputs the caller fills: token ids and absolute positions.
        Ids = g.Input("ids", DType.I32, new Shape(t));
        Positions = g.Input("pos", DType.I32, new Shape(t));
        this.cache = cache;
        this.paged = paged;
        Sequences = paged is null ? 1 : sequences;
        if (paged is not null)
        {
            if (paged.DType != act || tokens > paged.MaxStepTokens || sequences < 1 || sequences > Math.Min(tokens, paged.Slots))
                throw new ArgumentException($"the paged kv cache holds {paged.DType} steps of ≤ {paged.MaxStepTokens} rows and {paged.Slots} sequences; " +
                                            $"this graph needs {act}, {tokens} rows and {sequences} sequences (1 ≤ B ≤ rows)");
        }
        else if (cache is null) batch = AttentionBatch.Single(dev, t);
        else if (cache.DType != act || tokens > cache.MaxPiece)
            throw new ArgumentException($"the kv cache holds {cache.DType} pieces of ≤ {cache.MaxPiece} tokens; this graph needs {act} and {tokens}");
        freqs = Ops.DeviceData.Upload(dev, cfg.RopeInvFreq, DType.F32);
        var invFreq = new Tensor(freqs.Ptr, DType.F32, new Shape(cfg.RopeInvFreq.Length));
        ub = w.ActivationScaleUb;
        if (cfg.NumMoeLayers > 0)
            moe = new Moe.Workspace(dev, t, cfg.NumExpertsPerTok, sp?.Experts ?? cfg.NumLocalExperts, d, cfg.IntermediateSize, act,
                                    fp8: w.Tensors.Values.Any(x => x.DType == DType.F8E4M3 && x.Shape.Rank == 3), activationScaleUb: ub)
                  { FirstExpert = sp?.ExpertStart(shard!.Rank) ?? 0 };
        // Dense FP8 linears (FbgemmFp8Linear) quantize their input rows per token: one scratch for all of them.
        long fp8K = w.Tensors.Values.Where(x => x.DType == DType.F8E4M3 && x.Shape.Rank == 2).Select(x => x.Shape.Inner).DefaultIfEmpty(0).Max();
        if (fp8K > 0)
        {
            fp8Scratch = dev.Allocate(t * fp8K + 256 + 4L * t);
            fp8Rows = new Tensor(fp8Scratch.Ptr, DType.F8E4M3, new Shape(t, fp8K));
            fp8Scales = new Tensor(fp8Scratch.Ptr + ((t * fp8K + 255) & ~255L), DType.F32, new Shape(t));
        }

        Value W(string name) => g.Bind(name + ".weight", w[name].Tensor); // values are named; nodes keep the bare name
        Value Linear(string name, Value input, Value weight, long outFeatures) =>
            g.Node(name, act, new Shape(t, outFeatures), [input, weight], (in NodeContext c) => Project(c));
        // Row-parallel outputs are partial sums on several devices: one all-reduce (in place) completes them.
        var comm = shard?.Comm;
        Value AllReduce(string name, Value partial)
        {
            if (comm is null) return partial;
            collectives.Add(name);
            return g.Node(name, act, new Shape(t, d), [partial], (in NodeContext c) => comm.AllReduceSum(c[0], c.Output, c.Stream), inPlaceOf: partial);
        }

        // Projections that share an input (q|k|v, gate|up): the loader placed their weights back to back, so the node
        // "blk.i.attn_qkv" reads the input once with one [ΣN, K] weight. Its output holds the parts' blocks one after
        // another ([T, N_q] then [T, N_k] ...; at T = 1, a decode step, exactly the row [1, ΣN] ONE launch writes); a
        // longer piece runs one projection per part into its block (prefill GEMMs are compute-bound). The parts are
        // views named as before ("blk.i.attn_q"), so consumers and dumps see contiguous [T, N] tensors.
        (Value? All, Value[] Parts) Projections(string prefix, string fused, string[] parts, Value input)
        {
            var names = parts.Select(m => prefix + m).ToArray();
            var ns = names.Select(n => w[n].Shape[0]).ToArray();
            if (w.Concat(names) is not { } cat)
                return (null, names.Select((n, j) => Linear(n, input, W(n), ns[j])).ToArray());
            long total = ns.Sum();
            var all = g.Node(prefix + fused, act, new Shape(t * total), [input, g.Bind(prefix + fused + ".weight", cat)], (in NodeContext c) =>
            {
                if (t == 1) { Project(new NodeContext(c.Device, c.Stream, [c[0], c[1]], c.Output.Reshape(1, total))); return; }
                long row = 0;
                foreach (long n in ns)
                {
                    var block = new Tensor(c.Output.Ptr + act.BytesOf(t * row), act, new Shape(t, n));
                    Project(new NodeContext(c.Device, c.Stream, [c[0], c[1].Slice(row, n)], block));
                    row += n;
                }
            });
            long at = 0;
            var views = new Value[names.Length];
            for (int j = 0; j < names.Length; j++) { views[j] = g.View(names[j], all, t * at, new Shape(t, ns[j])); at += ns[j]; }
            return (all, views);
        }

        var x = g.Node("embed", act, new Shape(t, d), [Ids, W("tok_embd")],
                       (in NodeContext c) => Embedding.Run(c.Device, c[0], c[1], c.Output, DevicePtr.Null, c.Stream));
        // Vocab-parallel: this rank's ids are shifted to its rows, the others out of range (zero rows); the sum is the lookup.
        x = AllReduce("embed.allreduce", x);
        imageToken = w.Config.ImageTokenIndex;
        if (w.Config.IsMultimodal)
        {
            // Early fusion: the projected image rows replace the <|patch|> embeddings (the host computes where they are).
            ImageRows = g.Input("img_rows", act, new Shape(t, d));
            ImageIndex = g.Input("img_idx", DType.I32, new Shape(t));
            x = g.Node("embed.image", act, new Shape(t, d), [x, ImageRows.Value, ImageIndex.Value], (in NodeContext c) =>
            {
                if (imageCount > 0) ScatterRows.Run(c.Device, c[1].Slice(0, imageCount), c[2].Slice(0, imageCount), c.Output, c.Stream);
            }, inPlaceOf: x);
        }
        // Residual add + the next RMSNorm in one launch: `norm` computes x += pending (in place: the residual stream)
        // and h = RMSNorm(x)·w; the updated x is then the view named as the add used to be ("blk.i.attn_res",
        // "blk.i.out"), so dumps and consumers see the same values. Without a pending addend, the plain norm.
        (Value pending, string name)? residual = null;
        Value Norm(string name, string weight)
        {
            if (residual is not { } r)
                return g.Node(name, act, new Shape(t, d), [x, W(weight)],
                              (in NodeContext c) => RmsNorm.Run(c.Device, c[0], c[1], c.Output, eps, c.Stream));
            var hn = g.Node(name, act, new Shape(t, d), [x, r.pending, W(weight)],
                            (in NodeContext c) => AddRmsNorm.Run(c.Device, c[0], c[1], c[2], c.Output, eps, c.Stream));
            x = g.View(r.name, x, 0, new Shape(t, d));
            residual = null;
            return hn;
        }

        for (int i = 0; i < cfg.NumHiddenLayers; i++)
        {
            string p = $"blk.{i}.";
            bool rope = cfg.UsesRope[i];
            // --- attention
            var hn = Norm(p + "attn_norm", p + "attn_norm");
            var (qkv, qkvParts) = Projections(p, "attn_qkv", ["attn_q", "attn_k", "attn_v"], hn);
            var (q, k, v) = (qkvParts[0], qkvParts[1], qkvParts[2]);
            if (rope && qkv is { } all)
            {
                // q and k are the first two blocks of the fused projection (q [t, H·d], then k [t, Hkv·d]; at t = 1 one
                // [1, H + Hkv, d] row) — one RoPE (+ QK norm) launch for both, at any t.
                bool qkNorm = cfg.UseQkNorm;
                var qkShape = t == 1 ? new Shape(1, h + hkv, hd) : new Shape((long)t * (h + hkv), hd);
                var qk = g.View(p + "attn_qk", all, 0, qkShape);
                qk = g.Node(p + "attn_qk.rope", act, qkShape, [qk, Positions], (in NodeContext c) =>
                    Rope.ApplyQk(c.Device, c.Output, t, h, hkv, c[1], invFreq, qkNorm, eps, c.Stream), inPlaceOf: qk);
                q = g.View(p + "attn_q.rope", qk, 0, new Shape(t, (long)h * hd));
                k = g.View(p + "attn_k.rope", qk, (long)t * h * hd, new Shape(t, (long)hkv * hd));
            }
            else if (rope)
            {
                bool qkNorm = cfg.UseQkNorm;
                q = g.Node(p + "attn_q.rope", act, new Shape(t, (long)h * hd), [q, Positions], (in NodeContext c) =>
                    Rope.Apply(c.Device, c.Output.Reshape(t, h, hd), c[1], invFreq, qkNorm, eps, c.Stream), inPlaceOf: q);
                k = g.Node(p + "attn_k.rope", act, new Shape(t, (long)hkv * hd), [k, Positions], (in NodeContext c) =>
                    Rope.Apply(c.Device, c.Output.Reshape(t, hkv, hd), c[1], invFreq, qkNorm, eps, c.Stream), inPlaceOf: k);
            }
            else if (cfg.AttnTemperatureTuning)
            {
                float attnScale = (float)cfg.AttnScale, floorScale = (float)cfg.FloorScale;
                q = g.Node(p + "attn_q.temp", act, new Shape(t, (long)h * hd), [q, Positions], (in NodeContext c) =>
                    Rope.Temperature(c.Device, c.Output.Reshape(t, h, hd), c[1], attnScale, floorScale, c.Stream), inPlaceOf: q);
            }
            int chunk = rope ? cfg.AttentionChunkSize : 0;
            float scale = 1f / MathF.Sqrt(hd);
            int layer = i;
            var att = g.Node(p + "attn", act, new Shape(t, (long)h * hd), [q, k, v], (in NodeContext c) =>
            {
                if (paged is not null)
                    paged.StoreAndAttend(layer, c[0].Reshape(t, h, hd), c[1].Reshape(t, hkv, hd), c[2].Reshape(t, hkv, hd), c.Output.Reshape(t, h, hd), scale, c.Stream);
                else if (cache is not null)
                    cache.StoreAndAttend(layer, c[0].Reshape(t, h, hd), c[1].Reshape(t, hkv, hd), c[2].Reshape(t, hkv, hd), c.Output.Reshape(t, h, hd), scale, c.Stream);
                else
                    batch!.Run(c.Device, c[0].Reshape(t, h, hd), c[1].Reshape(t, hkv, hd), c[2].Reshape(t, hkv, hd),
                               c.Output.Reshape(t, h, hd), chunk, scale, c.Stream);
            });
            var o = AllReduce(p + "attn_o.allreduce", Linear(p + "attn_o", att, W(p + "attn_o"), d));
            residual = (o, p + "attn_res");

            // --- feed-forward
            var fn = Norm(p + "ffn_norm", p + "ffn_norm");
            Value ffn;
            if (cfg.IsMoeLayer[i])
            {
                int inter = interMoe;
                var ws = moe!;
                // A decode step routes in one launch (moe_route: logits, top-k and the grouping for the experts' tiles).
                int topK = cfg.NumExpertsPerTok, bm = Moe.AlignBm(w[p + "moe.gate_up_exps"].Tensor, t, topK);
                bool routed = shard is null && Moe.CanRoute(t, cfg.NumLocalExperts, topK); // expert-parallel ranks route with Router + Align
                var logits = g.Node(p + "moe.router", act, new Shape(t, cfg.NumLocalExperts), [fn, W(p + "moe.router")], (in NodeContext c) =>
                {
                    if (routed) Moe.Route(c.Device, c[0], c[1], ws, bm, c.Stream, c.Output);
                    else Moe.Router(c.Device, c[0], c[1], c.Output, ws.TopkIdx.Slice(0, t), ws.TopkScore.Slice(0, t), c.Stream);
                });
                var (_, sgu) = Projections(p, "moe.shexp_gate_up", ["moe.shexp_gate", "moe.shexp_up"], fn);
                var (sg, su) = (sgu[0], sgu[1]);
                var sa = g.Node(p + "moe.shexp_act", act, new Shape(t, inter), [sg, su],
                                (in NodeContext c) => SiluMul.Run(c.Device, c[0], c[1], c.Output, c.Stream));
                var shared = Linear(p + "moe.shexp_down", sa, W(p + "moe.shexp_down"), d);
                Value wgu = W(p + "moe.gate_up_exps"), wdn = W(p + "moe.down_exps");
                // The routed experts add onto the shared expert's output (HF: out = shared(x); out += Σ experts).
                ffn = g.Node(p + "moe.experts", act, new Shape(t, d), [fn, shared, logits, wgu, wdn], (in NodeContext c) =>
                    Moe.Experts(c.Device, c[0], c[3], c[4], c.Output, ws, accumulate: true, c.Stream, routed), inPlaceOf: shared);
                // Expert-parallel routed experts and the row-parallel shared expert are both partial: one all-reduce.
                ffn = AllReduce(p + "moe.allreduce", ffn);
            }
            else
            {
                int inter = interMlp;
                var (_, gu) = Projections(p, "ffn_gate_up", ["ffn_gate", "ffn_up"], fn);
                var (gt, up) = (gu[0], gu[1]);
                var a = g.Node(p + "ffn_act", act, new Shape(t, inter), [gt, up],
                               (in NodeContext c) => SiluMul.Run(c.Device, c[0], c[1], c.Output, c.Stream));
                ffn = AllReduce(p + "ffn_down.allreduce", Linear(p + "ffn_down", a, W(p + "ffn_down"), d));
            }
            residual = (ffn, p + "out");
        }
        var xn = Norm("output_norm", "output_norm");
        var head = w.TryGet("output", out var lm) ? lm.Tensor : w["tok_embd"].Tensor; // tied embeddings
        long vocab = sp?.Vocab ?? cfg.VocabSize; // vocab-parallel: this rank's rows (the last zero-padded)
        int rows = lastLogitsOnly ? 1 : t;
        Value outLogits;
        if (paged is not null)
        {   // each sequence's last row (a gather through the embedding kernel), then the lm_head on B rows
            if (shard is not null) throw new NotSupportedException("a batched (paged) graph on several devices is not implemented yet");
            int b = Sequences;
            LastRows = g.Input("last_rows", DType.I32, new Shape(b));
            var last = g.Node("output_norm.last", act, new Shape(b, d), [xn, LastRows.Value],
                              (in NodeContext c) => Embedding.Run(c.Device, c[1], c[0], c.Output, DevicePtr.Null, c.Stream));
            outLogits = g.Node("output", DType.F32, new Shape(b, cfg.VocabSize), [last, g.Bind("lm_head", head)], (in NodeContext c) => Project(c));
        }
        else outLogits = lastLogitsOnly
            ? g.Node("output", DType.F32, new Shape(1, vocab), [xn, g.Bind("lm_head", head)], (in NodeContext c) =>
              {
                  if (skipLogits) return; // a prefill piece that is not the prompt's last: nobody reads its logits
                  Project(new NodeContext(c.Device, c.Stream, [c[0].Slice(c[0].Shape[0] - 1, 1), c[1]], c.Output));
              })
            : g.Node("output", DType.F32, new Shape(t, vocab), [xn, g.Bind("lm_head", head)], (in NodeContext c) => Project(c));
        if (comm is not null)
        {
            int n = sp!.World;
            collectives.Add("output.allgather");
            var gathered = g.Node("output.allgather", DType.F32, new Shape(n, rows, vocab), [outLogits],
                                  (in NodeContext c) => comm.AllGather(c[0], c.Output, c.Stream));
            // [n, rows, Vr] → [rows, V]: each rank's real columns of each row (one device copy per rank and row).
            var plan = sp;
            outLogits = g.Node("output.gather", DType.F32, new Shape(rows, cfg.VocabSize), [gathered], (in NodeContext c) =>
            {
                for (int r = 0; r < n; r++)
                    for (int i = 0; i < rows; i++)
                        c.Device.CopyDeviceToDevice(c[0].Ptr + ((long)r * rows + i) * vocab * 4, c.Output.Ptr + ((long)i * cfg.VocabSize + plan.VocabStart(r)) * 4,
                                                    plan.VocabCount(r) * 4, c.Stream);
            });
        }
        Logits = outLogits;
        g.Output(Logits);
        Plan = g.Plan(dev);
    }

    /// <summary>y = x·Wᵀ for a linear node; the weight's format picks the kernel. int4 (W4A16) and FP8 (row-wise, the
    /// input rows quantized per token first) have their own GEMM/GEMV pairs. A bf16 decode step (≤ Gemv.MaxRows tokens)
    /// is memory-bound: the GEMV streams the weight once with 16-byte loads instead of padding a tensor-core tile to
    /// 16+ rows. The fp32 parity mode keeps upcast f32 weights, which only the GEMM takes.</summary>
    void Project(in NodeContext c)
    {
        var w = c[1];
        if (w.DType == DType.I4) { GemmInt4.Run(c.Device, c[0], w, c.Output, c.Stream); return; }
        if (w.DType == DType.F8E4M3)
        {
            long m = c[0].Shape[0];
            GemmFp8.Linear(c.Device, c[0], w, c.Output, new Tensor(fp8Rows.Ptr, DType.F8E4M3, new Shape(m, w.Shape.Inner)), fp8Scales.Slice(0, m), ub, c.Stream);
            return;
        }
        if (w.DType == DType.BF16 && paged is not null && Mode == ComputeMode.F32)
        {   // A batched fp32 graph: GEMV in chunks of Gemv.MaxRows rows whatever the row count, so a row's sums run in the
            // same order alone and in any batch (batch invariance, bit for bit); at ≤ 8 rows this is the decode path itself.
            long m = c[0].Shape[0];
            for (long r = 0; r < m; r += Gemv.MaxRows)
            {
                long n = Math.Min(Gemv.MaxRows, m - r);
                Gemv.Run(c.Device, c[0].Slice(r, n), c[1], c.Output.Slice(r, n), c.Stream);
            }
        }
        else if (w.DType == DType.BF16 && c[0].Shape[0] <= Gemv.MaxRows)
            Gemv.Run(c.Device, c[0], c[1], c.Output, c.Stream);
        else
            Gemm.Run(c.Device, c[0], c[1], c.Output, GemmBLayout.NK, c.Stream);
    }

    /// <summary>
    /// The router's top-k expert indices [T, k] of the MoE layer whose "blk.i.moe.router" node ran last (one
    /// workspace serves every layer): read it from a dump callback of that node.
    /// </summary>
    public Tensor RouterTopK => moe?.TopkIdx.Slice(0, Tokens) ?? throw new InvalidOperationException("this model has no MoE layers");

    /// <summary>
    /// Runs <paramref name="ids"/>: the whole prompt at positions 0..T-1 without a cache, or the next piece of the
    /// cache's sequence. Returns logits [T, V]. Dumps the nodes <paramref name="dumpWhere"/> selects.
    /// <para>
    /// Early fusion: <paramref name="imageRows"/> [n, D] (device, the activation dtype; e.g. a slice of
    /// <see cref="Llama4VisionGraph.ProjectedRows"/>) are the rows for exactly the n &lt;|patch|&gt; tokens of THIS
    /// piece, in order; they are copied into the graph and scattered over those tokens' embeddings. Without
    /// them, &lt;|patch|&gt; tokens keep their ordinary embedding.
    /// </para>
    /// </summary>
    public float[] Forward(ReadOnlySpan<int> ids, Func<string, bool>? dumpWhere = null, Action<string, Tensor, float[]>? dump = null,
                           Tensor? imageRows = null)
    {
        var logits = Run(ids, dumpWhere, dump, imageRows);
        return Ops.DeviceData.Download(dev, logits.Ptr, logits.Elements, DType.F32);
    }

    /// <summary>
    /// Like <see cref="Forward"/> but leaves the logits [T, V] f32 on the device (the plan's buffer: valid until
    /// the next run of this graph), so a decode step can sample there and bring back one id instead of V floats.
    /// </summary>
    /// <param name="logits">false: a prefill piece whose logits nobody reads (not the prompt's last) — a graph built with
    /// lastLogitsOnly then skips the lm_head (V = 202,048 rows of D: the largest weight a piece reads once more).</param>
    public Tensor Run(ReadOnlySpan<int> ids, Func<string, bool>? dumpWhere = null, Action<string, Tensor, float[]>? dump = null,
                      Tensor? imageRows = null, bool logits = true)
    {
        if (paged is not null) throw new InvalidOperationException("this graph runs a batch over a paged kv cache: use RunBatch");
        if (shard is not null)
            throw new InvalidOperationException($"this is rank {shard.Rank} of {shard.Plan.World}: its collectives need the other ranks' graphs, so it runs through ShardedTextGraph");
        return Begin(ids, dumpWhere, dump, imageRows, logits);
    }

    /// <summary>Several devices: uploads this rank's ids and positions and begins the cache's piece; the lockstep runner
    /// then runs the nodes and calls <see cref="EndRun"/>.</summary>
    internal void BeginRank(ReadOnlySpan<int> ids, Tensor? imageRows = null) => Begin(ids, null, null, imageRows);

    Tensor Begin(ReadOnlySpan<int> ids, Func<string, bool>? dumpWhere, Action<string, Tensor, float[]>? dump, Tensor? imageRows, bool logits = true)
    {
        if (ids.Length != Tokens) throw new ArgumentException($"this graph was built for {Tokens} tokens, got {ids.Length}");
        int vocab = (int)Plan[Logits].Shape[1];
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocab)
                throw new ArgumentException($"token id {ids[i]} at position {i} is out of range [0, {vocab}) for this model");
        imageCount = 0;
        if (imageRows is { } rows)
        {
            if (ImageRows is not { } slot) throw new InvalidOperationException("image rows were given but this model has no vision tower");
            var dst = Plan[slot];
            if (rows.DType != dst.DType || rows.Shape.Rank != 2 || rows.Shape[1] != dst.Shape[1])
                throw new ArgumentException($"image rows are {rows.DType}{rows.Shape}; this graph takes {dst.DType}[n, {dst.Shape[1]}]");
            var at = Llama4Native.Model.EarlyFusion.PatchPositions(ids, imageToken);
            if (at.Length != rows.Shape[0])
                throw new ImageTokenMismatchException($"this piece has {at.Length} <|patch|> tokens but {rows.Shape[0]} image rows were given for it", at.Length, (int)rows.Shape[0]);
            if (at.Length > 0)
            {
                dev.CopyDeviceToDevice(rows.Ptr, dst.Ptr, rows.Bytes);
                dev.Upload<int>(at, Plan[ImageIndex!.Value].Ptr);
            }
            imageCount = at.Length;
        }
        int p0 = cache?.Position ?? 0;
        cache?.BeginPiece(Tokens);
        var pos = new int[Tokens];
        for (int i = 0; i < pos.Length; i++) pos[i] = p0 + i;
        dev.Upload<int>(LocalIds(ids), Plan[Ids].Ptr);
        dev.Upload<int>(pos, Plan[Positions].Ptr);
        if (shard is not null) return Plan[Logits]; // the lockstep runner runs the nodes, then EndRun
        skipLogits = !logits;
        try { Plan.Run(null, dumpWhere, dump); }
        catch { cache?.AbortPiece(); throw; }
        finally { skipLogits = false; }
        cache?.EndPiece();
        return Plan[Logits];
    }

    /// <summary>Several devices: the ids as this rank's embedding slice sees them — its rows shifted to 0, every other
    /// id out of range (the embedding kernel writes a zero row for it, and the all-reduce adds the owner's row).</summary>
    int[] LocalIds(ReadOnlySpan<int> ids)
    {
        if (shard is null) return ids.ToArray();
        long v0 = shard.Plan.VocabStart(shard.Rank), n = shard.Plan.VocabCount(shard.Rank);
        var local = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++) local[i] = ids[i] - v0 is var l && l >= 0 && l < n ? (int)l : -1;
        return local;
    }

    /// <summary>Several devices: ends the piece <see cref="Run"/> began once the lockstep runner ran every node
    /// (<paramref name="ok"/> false: it failed, the cache forgets the piece).</summary>
    internal void EndRun(bool ok)
    {
        if (ok) cache?.EndPiece(); else cache?.AbortPiece();
    }

    /// <summary>
    /// Runs one step of a batch (a paged graph): <paramref name="pieces"/> = (slot, tokens) per sequence — a prefill
    /// piece or the one token to decode — whose rows are packed in this order; each continues its slot's sequence in the
    /// paged cache. Returns logits [B, V] f32 on the device (row b = pieces[b]'s last token; valid until the next run).
    /// Early fusion: <paramref name="imageRows"/>[b] (or null) holds the projected image rows [n, D] (device, the
    /// activation dtype) for exactly the n &lt;|patch|&gt; tokens of pieces[b], in order; they are scattered over those
    /// rows' embeddings as <see cref="Run"/> does for one sequence. Dumps the nodes <paramref name="dumpWhere"/> selects.
    /// </summary>
    public Tensor RunBatch(ReadOnlySpan<(int Slot, ReadOnlyMemory<int> Ids)> pieces, Func<string, bool>? dumpWhere = null,
                           Action<string, Tensor, float[]>? dump = null, Tensor?[]? imageRows = null)
    {
        BeginBatch(pieces, imageRows);
        try { Plan.Run(null, dumpWhere, dump); }
        catch { paged!.AbortStep(); throw; }
        paged!.EndStep();
        return Plan[Logits];
    }

    /// <summary>
    /// <see cref="RunBatch"/> in three parts, for a captured step: <see cref="BeginBatch"/> uploads the ids, positions,
    /// last rows, image rows and the cache's descriptors and begins the cache's step (<paramref name="kvBucket"/>: see
    /// <see cref="PagedKvCache.BeginStep"/>); <see cref="RunBatchNodes"/> runs the nodes only (no upload, allocation or
    /// synchronisation: what a capture records); <see cref="EndBatch"/> ends (or aborts) the cache's step.
    /// </summary>
    public void BeginBatch(ReadOnlySpan<(int Slot, ReadOnlyMemory<int> Ids)> pieces, Tensor?[]? imageRows = null, int kvBucket = 0)
    {
        if (imageRows is not null && imageRows.Length != pieces.Length)
            throw new ArgumentException($"{imageRows.Length} image-row entries for {pieces.Length} pieces (one per piece, null for none)");
        if (paged is null) throw new InvalidOperationException("RunBatch needs a graph built over a PagedKvCache");
        if (pieces.Length != Sequences) throw new ArgumentException($"this graph was built for {Sequences} sequences, got {pieces.Length}");
        int vocab = (int)Plan[Logits].Shape[1];
        var ids = new int[Tokens];
        var pos = new int[Tokens];
        var last = new int[pieces.Length];
        var seqs = new (int Slot, int Rows)[pieces.Length];
        int n = 0;
        for (int b = 0; b < pieces.Length; b++)
        {
            var (slot, tokens) = pieces[b];
            if (tokens.Length < 1) throw new ArgumentException($"sequence {b} (slot {slot}) has no tokens in this step");
            if (n + tokens.Length > Tokens) throw new ArgumentException($"the pieces hold more than the {Tokens} rows this graph was built for");
            int p0 = paged.Length(slot);
            var span = tokens.Span;
            for (int i = 0; i < span.Length; i++)
            {
                if ((uint)span[i] >= (uint)vocab) throw new ArgumentException($"token id {span[i]} of slot {slot} is out of range [0, {vocab}) for this model");
                ids[n] = span[i]; pos[n] = p0 + i; n++;
            }
            last[b] = n - 1;
            seqs[b] = (slot, span.Length);
        }
        if (n != Tokens) throw new ArgumentException($"this graph was built for {Tokens} rows, the pieces hold {n}");
        imageCount = 0;
        if (imageRows is not null && imageRows.Any(r => r is not null)) BatchImageRows(pieces, imageRows, last);
        paged.BeginStep(seqs, kvBucket);
        try
        {
            dev.Upload<int>(ids, Plan[Ids].Ptr);
            dev.Upload<int>(pos, Plan[Positions].Ptr);
            dev.Upload<int>(last, Plan[LastRows!.Value].Ptr);
        }
        catch { paged.AbortStep(); throw; }
    }

    /// <summary>Runs the nodes of a step begun with <see cref="BeginBatch"/>; the logits [B, V] are <see cref="Plan"/>[<see cref="Logits"/>].</summary>
    public void RunBatchNodes(DeviceStream? stream = null)
    {
        if (paged is null) throw new InvalidOperationException("RunBatchNodes needs a graph built over a PagedKvCache");
        Plan.Run(stream, (Func<string, bool>?)null, null);
    }

    /// <summary>Ends the step <see cref="BeginBatch"/> began: the sequences advance (<paramref name="ok"/>), or nothing moves.</summary>
    public void EndBatch(bool ok)
    {
        if (paged is null) throw new InvalidOperationException("EndBatch needs a graph built over a PagedKvCache");
        if (ok) paged.EndStep(); else paged.AbortStep();
    }

    /// <summary>Copies each piece's image rows into the graph's image input, back to back, with the packed rows of their
    /// &lt;|patch|&gt; tokens as the scatter index; sets <see cref="imageCount"/>.</summary>
    void BatchImageRows(ReadOnlySpan<(int Slot, ReadOnlyMemory<int> Ids)> pieces, Tensor?[] imageRows, int[] lastRow)
    {
        if (ImageRows is not { } slot) throw new InvalidOperationException("image rows were given but this model has no vision tower");
        var dst = Plan[slot];
        var index = new List<int>();
        long at = 0;
        for (int b = 0; b < pieces.Length; b++)
        {
            int start = lastRow[b] - pieces[b].Ids.Length + 1;
            var where = Llama4Native.Model.EarlyFusion.PatchPositions(pieces[b].Ids.Span, imageToken);
            if (imageRows[b] is not { } rows) continue; // no rows: <|patch|> tokens keep their embedding, as in Run
            if (rows.DType != dst.DType || rows.Shape.Rank != 2 || rows.Shape[1] != dst.Shape[1])
                throw new ArgumentException($"image rows of slot {pieces[b].Slot} are {rows.DType}{rows.Shape}; this graph takes {dst.DType}[n, {dst.Shape[1]}]");
            if (where.Length != rows.Shape[0])
                throw new ImageTokenMismatchException($"slot {pieces[b].Slot}: this piece has {where.Length} <|patch|> tokens but {rows.Shape[0]} image rows were given for it", where.Length, (int)rows.Shape[0]);
            if (where.Length == 0) continue;
            dev.CopyDeviceToDevice(rows.Ptr, dst.Ptr + dst.DType.BytesOf(at * dst.Shape[1]), rows.Bytes);
            foreach (int i in where) index.Add(start + i);
            at += where.Length;
        }
        if (index.Count > 0) dev.Upload<int>(index.ToArray(), Plan[ImageIndex!.Value].Ptr);
        imageCount = index.Count;
    }

    /// <summary>
    /// Runs the nodes only: ids, positions and the cache's descriptors are already on the device (written by
    /// <see cref="Step.Decode"/>), and the cache's piece was begun with <see cref="KvCache.BeginDeviceStep"/>. No
    /// upload, allocation or synchronisation: this is what a decode step captures. No image rows.
    /// </summary>
    public void RunOnDevice(DeviceStream? stream = null)
    {
        if (cache is null) throw new InvalidOperationException("RunOnDevice continues a cached sequence; this graph has no kv cache");
        if (shard is not null) throw new NotSupportedException("on several devices a step runs through ShardedTextGraph (the ids are shifted per rank on the host); device-side decode steps are one device only");
        imageCount = 0;
        Plan.Run(stream, (Func<string, bool>?)null, null);
    }

    public void Dispose()
    {
        Plan.Dispose();
        moe?.Dispose();
        fp8Scratch?.Dispose();
        batch?.Dispose();
        freqs.Dispose();
    }
}
