using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native;

/// <summary>How to load a model.</summary>
/// <param name="Device">"auto" (the first GPU, else the emulator), "cuda", "cuda:N" or "emu".</param>
/// <param name="Compute">fp32 (exact parity) or bf16 (production); null = bf16 on a GPU, fp32 on the emulator.</param>
/// <param name="MaxContext">Tokens a session can hold (prompt + generated); sizes the KV cache of NoPE layers.</param>
/// <param name="MaxPrefillPiece">The largest piece a prompt is fed in; 0 (the default) = auto: the largest of 2048/1024/512/256
/// whose KV ring and activations fit the device's free memory when a session opens (serving engines interleave pieces with
/// decode steps and take 256 for auto).</param>
/// <param name="Codec">The text side (tokenizer + chat format); null = the checkpoint's own Llama 4 tokenizer
/// (`original/tokenizer.model`, `tokenizer.model` or `tokenizer.json`), loaded when the first session starts.</param>
/// <param name="Quantize">On-the-fly weight quantization at load: int4 (int4_mixed, W4A16) or fp8 (fp8_mixed).</param>
/// <param name="Int4GroupSize">Input elements per int4 scale (G); K of every int4 weight must be a multiple of it.</param>
/// <param name="KvCache">How keys and values are stored: the compute dtype (default) or FP8 (e4m3 + a scale per token and kv head).</param>
/// <param name="Devices">Several devices driven by this process, tensor- and expert-parallel: "emu:N", "cuda:0-7" or "cuda:0,1"
/// (NCCL between GPUs; see docs/multi-device.md). Each device holds only its slice of the weights and its own KV cache.
/// null (the default) = the one device of <paramref name="Device"/>, which is ignored when this is set.</param>
public sealed record Llama4ModelOptions(string Device = "auto", ComputeMode? Compute = null, int MaxContext = 8192, int MaxPrefillPiece = 0,
                                        Action<LoadProgress>? Progress = null, ITextCodec? Codec = null,
                                        QuantizeMode Quantize = QuantizeMode.None, int Int4GroupSize = 128,
                                        KvCacheFormat KvCache = KvCacheFormat.Default, string? Devices = null)
{
    /// <summary>The piece serving engines feed prompts in: <see cref="MaxPrefillPiece"/>, or 256 for auto (a step mixes a
    /// piece with every running sequence's decode row, so pieces stay short there).</summary>
    internal int ServingPrefillPiece => MaxPrefillPiece > 0 ? MaxPrefillPiece : 256;
}

/// <summary>
/// A Llama 4 checkpoint loaded on a device: the entry point of the library.
/// <code>
/// using var model = Llama4Model.Load("/models/Llama-4-Scout-17B-16E-Instruct");
/// using var chat = model.CreateSession();
/// await foreach (var piece in chat.GenerateAsync("Why is the sky blue?")) Console.Write(piece.Text);
/// </code>
/// For hosts on Microsoft.Extensions.AI, <see cref="AsChatClient"/> gives an <c>IChatClient</c>.
/// </summary>
public sealed class Llama4Model : IDisposable
{
    readonly bool ownsDevice;
    // Live sessions: Dispose disposes them first (each cancels and waits for its running step), then the weights.
    readonly HashSet<ChatSession> sessions = [];
    bool disposed;

    /// <summary>The (first) device this process drives.</summary>
    internal Device Device { get; }
    /// <summary>One device's weights: the whole model, or (several devices) local rank 0's slices.</summary>
    internal ModelWeights Weights { get; }
    /// <summary>Several devices: every local rank's weights, the plan and the group (null on one device).</summary>
    internal Distributed.ShardedWeights? Sharded { get; }
    readonly bool ownsGroup;
    internal Llama4Config Config => Weights.Config;
    /// <summary>The activation precision in use: <see cref="Llama4ModelOptions.Compute"/>, or its default for the device.</summary>
    public ComputeMode Compute { get; }
    /// <summary>The options the model was loaded with.</summary>
    public Llama4ModelOptions Options { get; }
    /// <summary>The checkpoint folder the weights came from (after resolving a Hugging Face hub cache folder).</summary>
    public string Path { get; }
    /// <summary>The name of the device the weights live on, e.g. "emu" or "cuda:0 (NVIDIA H100 80GB HBM3)".</summary>
    /// <remarks>With <see cref="Llama4ModelOptions.Devices"/>: the group, e.g. "emu:2 (2 devices; this process drives 2: emulated device, …)".</remarks>
    public string DeviceName => Sharded is { } sw ? $"{sw.Group.Spec} ({sw.Group.World} devices; this process drives {sw.Group.Size}: {Device.Name}{(sw.Group.Size > 1 ? ", …" : "")})" : Device.Name;
    /// <summary>The checkpoint's generation_config.json defaults (HF semantics; see <see cref="GenerationConfig"/>),
    /// used when a generation passes no options; plain <see cref="GenerationOptions"/> defaults when it has none.</summary>
    public GenerationOptions GenerationDefaults { get; }

    Llama4Model(string path, Device device, bool ownsDevice, ModelWeights weights, Llama4ModelOptions options, GenerationOptions? defaults, ITextCodec? codec,
                Distributed.ShardedWeights? sharded = null, bool ownsGroup = false)
    {
        Path = path; Device = device; this.ownsDevice = ownsDevice; Weights = weights; Options = options; Sharded = sharded; this.ownsGroup = ownsGroup;
        GenerationDefaults = defaults ?? new GenerationOptions();
        this.codec = codec;
        Compute = options.Compute ?? (device.Kind == DeviceKind.Cuda ? ComputeMode.BF16 : ComputeMode.F32);
    }

    /// <summary>
    /// Loads the checkpoint in <paramref name="path"/> onto a device (validated config, every tensor checked).
    /// <paramref name="path"/> may also be a Hugging Face hub cache snapshot or repo folder
    /// (<see cref="Checkpoint.ResolveModelDirectory"/>). Everything cheap is checked before any weight is read: the
    /// options, the config, generation_config.json, and the tokenizer when the checkpoint has one (against the
    /// model's vocabulary).
    /// </summary>
    /// <param name="path">The checkpoint folder (config.json, *.safetensors, optionally a tokenizer and generation_config.json).</param>
    /// <param name="options">How to load it; null = the defaults of <see cref="Llama4ModelOptions"/>.</param>
    /// <returns>The loaded model; dispose it to free its device memory.</returns>
    /// <exception cref="CheckpointException">The folder is not a valid Llama 4 checkpoint (the message names the file and the problem).</exception>
    /// <exception cref="ConfigException">config.json or generation_config.json is invalid.</exception>
    /// <exception cref="DeviceOutOfMemoryException">The weights do not fit on the device.</exception>
    /// <exception cref="ArgumentException">An option is out of range, or <see cref="Llama4ModelOptions.Devices"/> is misspelt or
    /// names a device count the model cannot be split over (the message names the dimension).</exception>
    public static Llama4Model Load(string path, Llama4ModelOptions? options = null) => Load(path, options, null);

    /// <summary>As <see cref="Load(string, Llama4ModelOptions?)"/>, on a device the caller owns (tests, benchmarks, tools).</summary>
    internal static Llama4Model Load(string path, Llama4ModelOptions? options, Device? device)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= new Llama4ModelOptions();
        if (options.MaxContext < 1 || options.MaxPrefillPiece < 0)
            throw new ArgumentException($"max context ({options.MaxContext}) must be ≥ 1 and max prefill piece ({options.MaxPrefillPiece}) ≥ 0 (0 = auto)");
        if (options.Int4GroupSize < 1)
            throw new ArgumentException($"the int4 group size ({options.Int4GroupSize}) must be ≥ 1");
        path = Checkpoint.ResolveModelDirectory(path);
        var config = Llama4Config.Load(path);
        var defaults = GenerationConfig.Load(path);
        ITextCodec? codec = options.Codec;
        if (codec is null)
        {
            try { codec = Text.Llama4TextCodec.Load(path, config); }
            catch (FileNotFoundException) { }   // no tokenizer: an error only when a session needs one
        }
        if (device is null && options.Devices is { } spec && Distributed.DeviceGroup.Parse(spec).Count > 1)
        {
            // a count that cannot split the model fails before any device opens, naming the dimension
            try { Distributed.ShardingPlan.Create(config, Distributed.DeviceGroup.Parse(spec).Count); }
            catch (Distributed.ShardingException e) { throw new ArgumentException($"Devices '{spec}': {e.Message}", nameof(options), e); }
            return Load(path, options, Distributed.DeviceGroup.Create(spec), ownsGroup: true);
        }
        bool owns = device is null;
        var dev = device ?? DeviceFactory.Create(options.Devices is { } one ? Distributed.DeviceGroup.Parse(one)[0] : options.Device);
        try
        {
            var w = WeightLoader.Load(path, dev, new LoadOptions(Progress: options.Progress,
                                                                 Quantize: new QuantizeOptions(options.Quantize, options.Int4GroupSize)));
            return new Llama4Model(path, dev, owns, w, options, defaults, codec);
        }
        catch
        {
            if (owns) dev.Dispose();
            throw;
        }
    }

    /// <summary>
    /// As <see cref="Load(string, Llama4ModelOptions?)"/>, over the ranks of <paramref name="group"/> this process drives: all
    /// of a one-process group, or one rank of a multi-process group (<see cref="Distributed.DeviceGroup.Join"/>). Each rank
    /// loads only its slices. With <paramref name="ownsGroup"/> the model disposes the group (also when the load fails).
    /// </summary>
    internal static Llama4Model Load(string path, Llama4ModelOptions? options, Distributed.DeviceGroup group, bool ownsGroup)
    {
        try
        {
            options ??= new Llama4ModelOptions();
            path = Checkpoint.ResolveModelDirectory(path);
            var defaults = GenerationConfig.Load(path);
            using var ckpt = Checkpoint.Open(path);
            ITextCodec? codec = options.Codec;
            if (codec is null)
            {
                try { codec = Text.Llama4TextCodec.Load(path, ckpt.Config); }
                catch (FileNotFoundException) { }
            }
            var sw = Distributed.ShardedWeights.Load(ckpt, group, new LoadOptions(Progress: options.Progress,
                                                                                  Quantize: new QuantizeOptions(options.Quantize, options.Int4GroupSize)));
            return new Llama4Model(path, group.Devices[0], false, sw.Ranks[0], options, defaults, codec, sw, ownsGroup);
        }
        catch
        {
            if (ownsGroup) group.Dispose();
            throw;
        }
    }

    ITextCodec? codec;

    /// <summary>The text side: <see cref="Llama4ModelOptions.Codec"/>, else the checkpoint's tokenizer.</summary>
    public ITextCodec Codec
    {
        get
        {
            if (codec is not null) return codec;
            try { return codec = Text.Llama4TextCodec.Load(Path, Config); }
            catch (FileNotFoundException e)
            {
                throw new InvalidOperationException(
                    $"{e.Message}: this checkpoint has no tokenizer. Copy the release's original/tokenizer.model next to config.json, " +
                    "or pass your own ITextCodec as Llama4ModelOptions.Codec", e);
            }
        }
    }

    /// <summary>This model (the same weights and device) with sessions of <paramref name="maxContext"/> tokens by default.
    /// The returned model owns what this one owned; dispose only it.</summary>
    public Llama4Model WithMaxContext(int maxContext)
    {
        if (maxContext < 1) throw new ArgumentOutOfRangeException(nameof(maxContext), maxContext, "the maximum context must be ≥ 1 token");
        lock (sessions)
            if (sessions.Count > 0) throw new InvalidOperationException("WithMaxContext: sessions are open on this model");
        return new Llama4Model(Path, Device, ownsDevice, Weights, Options with { MaxContext = maxContext }, GenerationDefaults, codec, Sharded, ownsGroup);
    }

    /// <summary>A new conversation with its own KV cache. Throws <see cref="ObjectDisposedException"/> after <see cref="Dispose"/>.</summary>
    public ChatSession CreateSession(int? maxContext = null)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed), this);
        int ctx = maxContext ?? Options.MaxContext;
        if (ctx < 1) throw new ArgumentOutOfRangeException(nameof(maxContext), ctx, "the maximum context must be ≥ 1 token");
        var codec = Codec;
        var images = Config.Vision is { } v ? Vision.Llama4ImageProcessor.FromConfig(v) : null;
        lock (sessions)
        {
            // Checked again under the lock: a concurrent Dispose either sees this session or makes this call throw.
            ObjectDisposedException.ThrowIf(disposed, this);
            var gen = Sharded is { } sw ? new TokenGenerator(sw, Compute, ctx, Options.MaxPrefillPiece > 0 ? Math.Min(Options.MaxPrefillPiece, ctx) : 0, kvCache: Options.KvCache)
                                        : new TokenGenerator(Weights, Compute, ctx, Options.MaxPrefillPiece > 0 ? Math.Min(Options.MaxPrefillPiece, ctx) : 0, kvCache: Options.KvCache);
            var s = new ChatSession(gen, codec, images, Forget, GenerationDefaults);
            sessions.Add(s);
            return s;
        }
    }

    void Forget(ChatSession s) { lock (sessions) sessions.Remove(s); }

    /// <summary>Whether <see cref="Dispose"/> has been called.</summary>
    public bool IsDisposed => Volatile.Read(ref disposed);

    /// <summary>This model as a Microsoft.Extensions.AI chat client (one conversation, reusing its cache across turns).</summary>
    public Microsoft.Extensions.AI.IChatClient AsChatClient() => new Llama4ChatClient(this);

    /// <summary>
    /// Frees the model's device memory, once. Safe from any thread while sessions generate: every live session is
    /// disposed first (its generation is cancelled and awaited, then ends with <see cref="ObjectDisposedException"/>),
    /// and only then are the weights (and the device, when the model opened it) freed.
    /// </summary>
    public void Dispose()
    {
        ChatSession[] live;
        lock (sessions)
        {
            if (disposed) return;
            Volatile.Write(ref disposed, true);
            live = [.. sessions];
        }
        foreach (var s in live) s.Dispose();
        if (Sharded is { } sw)
        {
            sw.Dispose();
            if (ownsGroup) sw.Group.Dispose();
            return;
        }
        Weights.Dispose();
        if (ownsDevice) Device.Dispose();
    }
}
