using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Graph;
using Llama4Native.Kernels;
using Llama4Native.Tensors;
using GemmBLayout = Llama4Native.Reference.GemmBLayout;

namespace Llama4Native.Model;

/// <summary>
/// The Llama 4 vision tower, pixel-shuffle adapter and multimodal projector as ONE graph of named nodes, built
/// from the config, for every tile of every image of a prompt at once (tiles = a run-time count ≤ the planned
/// <see cref="MaxTiles"/>; tiles never attend to each other):
/// <code>
///   cols = unfold(pixels)                          "v.patch_unfold"   [tiles·N, C·P·P]
///   x    = cols · W_patchᵀ                         "v.patch_embd"     [tiles·N, Dv]
///   x    = [x; cls] + pos   (class token LAST)     "v.embed"          [tiles·(N+1), Dv]
///   x    = LayerNorm_pre(x)                        "v.pre_norm"
///   for each layer i ("v.blk.i."):
///     h = LN(x); q,k,v = h·Wᵀ + b                  "attn_norm", "attn_q|attn_k|attn_v"
///     q,k = RoPE2d(q,k) (class token unrotated)    "attn_q.rope", "attn_k.rope"
///     x += (Attn(q,k,v) per tile)·W_oᵀ + b_o       "attn", "attn_o", "attn_res"
///     x += fc2(GELU(fc1(LN(x))))                   "ffn_norm", "ffn_up" (fc1 + bias + GELU), "ffn_down", "out"
///   x    = LayerNorm_post(x)                       "v.post_norm"      [tiles·(N+1), Dv]
///   x    = pixel_shuffle(x without class rows, r)  "v.shuffle"        [tiles·n, Dv/r²]
///   x    = GELU(x·W_fc1ᵀ)                          "v.adapter_fc1"    [tiles·n, Pin]
///   f    = GELU(x·W_fc2ᵀ)                          "v.adapter"        [tiles·n, Vo]   = image_features
///   out  = f·W_projᵀ (+ b)                         "mm.proj"          [tiles·n, D]    replaces the &lt;|patch|&gt; embeddings
/// </code>
/// A node that needs a bias or an activation after its GEMM runs both launches (Gemm, then BiasAct: in place in
/// fp32; in bf16 from an f32 "name.mm" node, so the result is rounded once as torch's bf16 linear does), so a
/// dumped node is always the tensor HF has at that point. Same executor, arena planning and dumps as the text
/// graph; no host synchronisation between nodes (the tile count is a host scalar fixed before the run).
/// </summary>
internal sealed class Llama4VisionGraph : IDisposable
{
    public ComputeGraph Graph { get; }
    public GraphPlan Plan { get; }
    public ComputeMode Mode { get; }
    /// <summary>The most tiles one run can take (the arena is planned for it).</summary>
    public int MaxTiles { get; }
    /// <summary>Image tokens per tile after the pixel shuffle: (S/P)²·r².</summary>
    public int TokensPerTile { get; }
    /// <summary>The tiles of the last (or current) run.</summary>
    public int Tiles { get; private set; }
    /// <summary>Input [MaxTiles, C, S, S], the activation dtype.</summary>
    public Value Pixels { get; }
    /// <summary>"v.adapter": image_features [MaxTiles·n, Vo].</summary>
    public Value Features { get; }
    /// <summary>"mm.proj": the projected rows [MaxTiles·n, D].</summary>
    public Value Projected { get; }
    readonly DeviceBuffer meta;    // attention descriptors: one sequence per tile, MaxTiles of them
    readonly Attention.Batch batch;
    readonly Device dev;
    readonly VisionConfig cfg;

    public Llama4VisionGraph(ModelWeights w, int maxTiles, ComputeMode mode)
    {
        var vc = w.Config.Vision ?? throw new InvalidOperationException($"{w.Config.Architecture} has no vision tower (vision_config is absent)");
        if (maxTiles < 1) throw new ArgumentException($"maxTiles must be ≥ 1, got {maxTiles}");
        cfg = vc;
        dev = w.Device;
        Mode = mode;
        MaxTiles = maxTiles;
        Tiles = maxTiles;
        int dv = vc.HiddenSize, rows = vc.NumPatches + 1;
        TokensPerTile = vc.TokensPerTile;
        int shufDim = (int)Math.Round(dv / (vc.PixelShuffleRatio * vc.PixelShuffleRatio));
        var act = mode == ComputeMode.F32 ? DType.F32 : DType.BF16;
        float eps = (float)vc.NormEps, theta = (float)vc.RopeTheta;
        double ratio = vc.PixelShuffleRatio;
        int hidden = w.Config.Text.HiddenSize;

        // Device constants: one attention sequence per tile (bidirectional: queries at position N+1, keys at 0..N,
        // so every key is visible; tiles never see each other). The descriptors of the first t tiles serve a run of t.
        //   q_start [T+1] | kv_len [T] | q_pos0 [T] | kv_pos0 [T] | (pad to 8) | kv_off [T] int64
        var ints = new List<int>();
        for (int t = 0; t <= maxTiles; t++) ints.Add(t * rows);
        for (int t = 0; t < maxTiles; t++) ints.Add(rows);
        for (int t = 0; t < maxTiles; t++) ints.Add(rows);
        for (int t = 0; t < maxTiles; t++) ints.Add(0);
        if (ints.Count % 2 == 1) ints.Add(0);
        long offBytes = ints.Count * 4L;
        meta = dev.Allocate(offBytes + 8L * maxTiles);
        dev.Upload<int>(ints.ToArray(), meta.Ptr);
        dev.Upload<long>(Enumerable.Range(0, maxTiles).Select(t => (long)t * rows * dv).ToArray(), meta.Ptr + offBytes);
        var mp = meta.Ptr;
        batch = new Attention.Batch(mp, mp + 4L * (maxTiles + 1), mp + 4L * (2 * maxTiles + 1), mp + 4L * (3 * maxTiles + 1), mp + offBytes,
                                    Count: maxTiles, MaxQ: rows, MaxKv: rows);

        try
        {
            (Graph, Pixels, Features, Projected, Plan) = Build(w, act, eps, theta, ratio, hidden, shufDim);
        }
        catch
        {
            meta.Dispose();
            throw;
        }
    }

    (ComputeGraph, Value, Value, Value, GraphPlan) Build(ModelWeights w, DType act, float eps, float theta, double ratio, int hidden, int shufDim)
    {
        var vc = cfg;
        int C = vc.NumChannels, S = vc.ImageSize, P = vc.PatchSize, side = vc.PatchesPerSide, N = vc.NumPatches, dv = vc.HiddenSize;
        int heads = vc.NumAttentionHeads, hd = vc.HeadDim, inter = vc.IntermediateSize, rows = N + 1, n = vc.TokensPerTile;
        long T = MaxTiles, R = T * rows;
        var g = new ComputeGraph();
        var pixels = g.Input("v.pixels", act, new Shape(T, C, S, S));
        Value W(string name) => g.Bind(name + ".weight", w[name].Tensor);
        Value B(string name) => g.Bind(name + ".bias.weight", w[name + ".bias"].Tensor);
        // Node `name`: y = x·Wᵀ with the weight `weight` (default: the node's name), then (bias, activation) in place when asked.
        Value Linear(string name, Value input, long rowsMax, long outF, bool bias, BiasAct.Activation a = BiasAct.Activation.None, string? weight = null)
        {
            weight ??= name;
            bool post = bias || a != BiasAct.Activation.None;
            if (post && act == DType.BF16)
            {
                // torch's bf16 linear rounds once, after the bias: keep the GEMM's sums in f32 ("name.mm"), and let
                // BiasAct add the bias, apply the activation and round to bf16 in one step.
                var mm = g.Node(name + ".mm", DType.F32, new Shape(rowsMax, outF), [input, W(weight)], (in NodeContext c) =>
                    Gemm.Run(c.Device, Cut(c[0]), c[1], Cut(c.Output), GemmBLayout.NK, c.Stream));
                Value[] post2 = bias ? [mm, B(weight)] : [mm];
                return g.Node(name, act, new Shape(rowsMax, outF), post2, (in NodeContext c) =>
                    BiasAct.Run(c.Device, Cut(c[0]), c.Inputs.Length > 1 ? c[1] : null, Cut(c.Output), a, c.Stream));
            }
            Value[] ins = bias ? [input, W(weight), B(weight)] : [input, W(weight)];
            return g.Node(name, act, new Shape(rowsMax, outF), ins, (in NodeContext c) =>
            {
                var y = Cut(c.Output);
                Gemm.Run(c.Device, Cut(c[0]), c[1], y, GemmBLayout.NK, c.Stream);
                if (post) BiasAct.Run(c.Device, y, c.Inputs.Length > 2 ? c[2] : null, y, a, c.Stream);
            });
        }
        Value Norm(string name, Value input, string weight, Value? inPlace = null) =>
            g.Node(name, act, new Shape(R, dv), [input, W(weight), B(weight)], (in NodeContext c) =>
                LayerNorm.Run(c.Device, Cut(c[0]), c[1], c[2], Cut(c.Output), eps, c.Stream), inPlaceOf: inPlace);

        var cols = g.Node("v.patch_unfold", act, new Shape(T * N, (long)C * P * P), [pixels], (in NodeContext c) =>
            PatchUnfold.Run(c.Device, Cut(c[0]), Cut(c.Output), P, c.Stream));
        var patches = Linear("v.patch_embd", cols, T * N, dv, bias: false);
        var x = g.Node("v.embed", act, new Shape(R, dv), [patches, W("v.cls_embd"), W("v.pos_embd")], (in NodeContext c) =>
            VisionEmbed.Run(c.Device, Cut(c[0]).Reshape(Tiles, N, dv), c[1], c[2], Cut(c.Output).Reshape(Tiles, rows, dv), c.Stream));
        x = Norm("v.pre_norm", x, "v.pre_norm", inPlace: x);
        float scale = 1f / MathF.Sqrt(hd);
        for (int i = 0; i < vc.NumHiddenLayers; i++)
        {
            string p = $"v.blk.{i}.";
            var hn = Norm(p + "attn_norm", x, p + "attn_norm");
            var q = Linear(p + "attn_q", hn, R, dv, bias: true);
            var k = Linear(p + "attn_k", hn, R, dv, bias: true);
            var v = Linear(p + "attn_v", hn, R, dv, bias: true);
            q = g.Node(p + "attn_q.rope", act, new Shape(R, dv), [q], (in NodeContext c) =>
                VisionRope.Run(c.Device, Cut(c.Output).Reshape(Tiles * rows, heads, hd), rows, side, theta, c.Stream), inPlaceOf: q);
            k = g.Node(p + "attn_k.rope", act, new Shape(R, dv), [k], (in NodeContext c) =>
                VisionRope.Run(c.Device, Cut(c.Output).Reshape(Tiles * rows, heads, hd), rows, side, theta, c.Stream), inPlaceOf: k);
            var att = g.Node(p + "attn", act, new Shape(R, dv), [q, k, v], (in NodeContext c) =>
            {
                long r = Tiles * (long)rows;
                Attention.Run(c.Device, Cut(c[0]).Reshape(r, heads, hd), Cut(c[1]), Cut(c[2]), Cut(c.Output).Reshape(r, heads, hd),
                              batch with { Count = Tiles }, new Attention.KvLayout(heads, dv, hd), 0, c.Stream, Attention.Variant.Auto, scale);
            });
            var o = Linear(p + "attn_o", att, R, dv, bias: true);
            x = g.Node(p + "attn_res", act, new Shape(R, dv), [x, o],
                       (in NodeContext c) => Add.Run(c.Device, Cut(c[0]), Cut(c[1]), Cut(c.Output), c.Stream), inPlaceOf: x);
            var fn = Norm(p + "ffn_norm", x, p + "ffn_norm");
            var up = Linear(p + "ffn_up", fn, R, inter, bias: true, BiasAct.Activation.GeluErf);
            var down = Linear(p + "ffn_down", up, R, dv, bias: true);
            x = g.Node(p + "out", act, new Shape(R, dv), [x, down],
                       (in NodeContext c) => Add.Run(c.Device, Cut(c[0]), Cut(c[1]), Cut(c.Output), c.Stream), inPlaceOf: x);
        }
        x = Norm("v.post_norm", x, "v.post_norm");
        // The class rows are dropped by the shuffle itself (it skips each tile's last row).
        var shuffled = g.Node("v.shuffle", act, new Shape(T * n, shufDim), [x], (in NodeContext c) =>
            PixelShuffle.Run(c.Device, Cut(c[0]).Reshape(Tiles, rows, dv), Cut(c.Output).Reshape(Tiles, n, shufDim), ratio, c.Stream, dropClassToken: true));
        var a1 = Linear("v.adapter_fc1", shuffled, T * n, vc.ProjectorInputDim, bias: false, BiasAct.Activation.GeluErf);
        var features = Linear("v.adapter", a1, T * n, vc.ProjectorOutputDim, bias: false, BiasAct.Activation.GeluErf, weight: "v.adapter_fc2");
        var projected = Linear("mm.proj", features, T * n, hidden, bias: vc.MultiModalProjectorBias);
        g.Output(features);
        g.Output(projected);
        return (g, pixels, features, projected, g.Plan(dev));
    }

    /// <summary>The first <see cref="Tiles"/> tiles' rows of a value planned for <see cref="MaxTiles"/> (every value's leading dimension scales with the tiles).</summary>
    Tensor Cut(Tensor t) => Tiles == MaxTiles ? t : t.Slice(0, t.Shape[0] / MaxTiles * Tiles);

    /// <summary>
    /// Encodes <paramref name="tiles"/> processed tiles, <paramref name="pixels"/> [tiles, C, S, S] (every image of the
    /// prompt, in prompt order; the processor's bf16 values are exact in either mode). Returns the projected rows
    /// [tiles·n, D] on the device, in the activation dtype — valid until the next run — ready for
    /// <see cref="Llama4TextGraph.Forward"/> or <see cref="Generation.TokenGenerator.Generate(IReadOnlyList{int}, Generation.GenerationOptions, ImageTiles?, CancellationToken)"/>.
    /// Dumps (node names as in the class comment) see only the run's tiles.
    /// </summary>
    public Tensor Forward(ReadOnlySpan<float> pixels, int tiles, Func<string, bool>? dumpWhere = null, Action<string, Tensor, float[]>? dump = null)
    {
        long perTile = (long)cfg.NumChannels * cfg.ImageSize * cfg.ImageSize;
        if (tiles < 1 || tiles > MaxTiles)
            throw new ArgumentException($"this vision graph takes 1..{MaxTiles} tiles, got {tiles}");
        if (pixels.Length != tiles * perTile)
            throw new ArgumentException($"pixel values hold {pixels.Length} values; {tiles} tiles of [{cfg.NumChannels}, {cfg.ImageSize}, {cfg.ImageSize}] need {tiles * perTile}");
        var input = Plan[Pixels];
        if (input.DType == DType.F32) dev.Upload(pixels, input.Ptr);
        else
        {
            var bits = new ushort[pixels.Length];
            Reference.BF16.FromFloat(pixels, bits);
            dev.Upload<ushort>(bits, input.Ptr);
        }
        Tiles = tiles;
        Action<string, Tensor, float[]>? cut = dump is null ? null : (name, t, data) =>
        {
            long r = t.Shape[0] / MaxTiles * tiles;
            dump(name, t.Slice(0, r), data.AsSpan(0, (int)(data.Length / MaxTiles * tiles)).ToArray());
        };
        Plan.Run(null, dumpWhere, cut);
        return ProjectedRows;
    }

    /// <summary>The projected rows [Tiles·n, D] of the last run (device memory of this graph).</summary>
    public Tensor ProjectedRows => Plan[Projected].Slice(0, (long)Tiles * TokensPerTile);

    /// <summary>image_features [Tiles·n, Vo] of the last run, on the host.</summary>
    public float[] DownloadFeatures() => Plan.Download(Plan[Features].Slice(0, (long)Tiles * TokensPerTile));

    /// <summary>The projected rows [Tiles·n, D] of the last run, on the host.</summary>
    public float[] DownloadProjected() => Plan.Download(ProjectedRows);

    public void Dispose()
    {
        Plan.Dispose();
        meta.Dispose();
    }
}
