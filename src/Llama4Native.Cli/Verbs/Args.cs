using System.Globalization;
using System.Text;
using Llama4Native.Checkpoints;
using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Cli.Verbs;

/// <summary>One option of a verb: <c>--name VALUE</c> (or a flag when <paramref name="Value"/> is null), its help
/// line, and whether it may be given several times (otherwise a second occurrence is a usage error).</summary>
internal sealed record Opt(string Name, string? Value, string Help, bool Many = false)
{
    public bool IsFlag => Value is null;
}

/// <summary>A verb's command line: its name, a one-line summary, optional details, and every option it accepts.
/// `llama4 VERB --help` prints it; the parser accepts nothing else.</summary>
internal sealed class VerbSpec(string name, string summary, IEnumerable<Opt> options, string? details = null)
{
    public string Name { get; } = name;
    public string Summary { get; } = summary;
    public string? Details { get; } = details;
    public IReadOnlyList<Opt> Options { get; } = [.. options, new Opt("help", null, "print this help and exit (also -h)")];

    public string Help()
    {
        var sb = new StringBuilder();
        sb.Append("usage: llama4 ").Append(Name).Append(" [options]\n\n").Append(Summary).Append('\n');
        if (Details is not null) sb.Append('\n').Append(Details.TrimEnd()).Append('\n');
        sb.Append("\noptions:\n");
        int w = Options.Max(o => o.Name.Length + (o.Value?.Length + 1 ?? 0)) + 4;
        foreach (var o in Options)
        {
            var left = "--" + o.Name + (o.Value is null ? "" : " " + o.Value);
            sb.Append("  ").Append(left.PadRight(w)).Append(o.Help).Append(o.Many ? " (repeatable)" : "").Append('\n');
        }
        return sb.ToString();
    }
}

/// <summary>`--help` or `-h` was given: Commands prints the verb's help on stdout and exits 0.</summary>
internal sealed class HelpRequested(VerbSpec spec) : Exception("help requested")
{
    public VerbSpec Spec { get; } = spec;
}

/// <summary>
/// A strict parser over a <see cref="VerbSpec"/>: `--name value`, `--name=value`, `--flag`. Unknown options,
/// positional arguments, a missing value, a value given twice, a value on a flag — all are usage errors (exit 2)
/// naming the fix. Numbers are parsed culture-invariantly with no thousands separators (`0,5` is an error, not 5),
/// and non-finite numbers are rejected.
/// </summary>
internal sealed class Args
{
    readonly Dictionary<string, List<string>> values = new(StringComparer.Ordinal);
    readonly HashSet<string> flags = new(StringComparer.Ordinal);
    public VerbSpec Spec { get; }

    public Args(string[] argv, VerbSpec spec)
    {
        Spec = spec;
        var byName = spec.Options.ToDictionary(o => o.Name, StringComparer.Ordinal);
        string hint = $"run 'llama4 {spec.Name} --help' for the options";
        for (int i = 0; i < argv.Length; i++)
        {
            var a = argv[i];
            if (a is "-h" or "--help" or "-?") throw new HelpRequested(spec);
            if (a.StartsWith("--", StringComparison.Ordinal) && a.Length > 2)
            {
                var eq = a.IndexOf('=');
                var name = eq > 0 ? a[2..eq] : a[2..];
                if (!byName.TryGetValue(name, out var opt))
                {
                    var near = Nearest(name, byName.Keys);
                    throw new UsageException($"unknown option '{(eq > 0 ? a[..eq] : a)}'{(near is null ? "" : $" (did you mean --{near}?)")}; {hint}");
                }
                if (opt.IsFlag)
                {
                    if (eq > 0) throw new UsageException($"--{name} is a flag and takes no value (got '{a[(eq + 1)..]}')");
                    flags.Add(name);
                    continue;
                }
                string v = eq > 0 ? a[(eq + 1)..]
                    : i + 1 < argv.Length && !(argv[i + 1].StartsWith("--", StringComparison.Ordinal) && argv[i + 1].Length > 2) ? argv[++i]
                    : throw new UsageException($"option --{name} needs a value ({opt.Value})");
                if (!values.TryGetValue(name, out var list)) values[name] = list = [];
                if (list.Count > 0 && !opt.Many) throw new UsageException($"--{name} was given twice ('{list[0]}' and '{v}'); give it once");
                list.Add(v);
            }
            else if (a.StartsWith('-') && a.Length > 1)
                throw new UsageException($"unknown option '{a}' (options are spelled --name; {hint})");
            else
                throw new UsageException($"unexpected argument '{a}': this verb takes no positional arguments (did you forget an option name before it?); {hint}");
        }
    }

    /// <summary>The one candidate that <paramref name="word"/> is a prefix of, or within 2 edits of; null if none or several.</summary>
    public static string? Nearest(string word, IEnumerable<string> candidates)
    {
        var list = candidates.ToList();
        var prefix = list.Where(k => k.StartsWith(word, StringComparison.Ordinal)).ToList();
        if (word.Length >= 3 && prefix.Count == 1) return prefix[0];
        var close = list.Select(k => (k, d: Distance(word, k))).Where(x => x.d <= Math.Min(2, Math.Max(1, word.Length / 3))).OrderBy(x => x.d).ToList();
        return close.Count > 0 && (close.Count == 1 || close[0].d < close[1].d) ? close[0].k : null;
    }

    static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }

    public bool Flag(string name) => flags.Contains(name);
    /// <summary>A flag that was given, or a value option that was given.</summary>
    public bool Has(string name) => flags.Contains(name) || values.ContainsKey(name);
    public string Require(string name, string what) => Get(name) ?? throw new UsageException($"--{name} {what} is required");
    public string? Get(string name) => values.TryGetValue(name, out var l) ? l[^1] : null;
    public IReadOnlyList<string> All(string name) => values.TryGetValue(name, out var l) ? l : [];
    public string Get(string name, string fallback) => Get(name) ?? fallback;

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public long Long(string name, long fallback, long min = long.MinValue, long max = long.MaxValue)
    {
        var s = Get(name);
        if (s is null) return fallback;
        return ParseLong($"--{name}", s, min, max);
    }

    public static long ParseLong(string what, string s, long min, long max)
    {
        string range = $"[{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}]";
        if (!long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v))
            throw new UsageException(s.Length > 0 && s.TrimStart('-', '+').All(char.IsAsciiDigit) && s.TrimStart('-', '+').Length > 0
                ? $"{what} {s} is out of range {range}" : $"{what} expects an integer in {range}, got '{s}'");
        if (v < min || v > max) throw new UsageException($"{what} {s} is out of range {range}");
        return v;
    }

    public int GetInt(string name, int fallback, int min = int.MinValue, int max = int.MaxValue) => (int)Long(name, fallback, min, max);

    /// <summary>A 64-bit unsigned integer (seeds): digits only, 0 to 18446744073709551615.</summary>
    public ulong ULong(string name, ulong fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        if (ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) return v;
        throw new UsageException(s.StartsWith('-') ? $"--{name} must be ≥ 0 (0 to {ulong.MaxValue}), got '{s}'"
                                 : $"--{name} expects an integer from 0 to {ulong.MaxValue}, got '{s}'");
    }

    /// <summary>A finite number (no NaN, no infinity, no thousands separators: `0,5` is an error).</summary>
    public double GetDouble(string name, double fallback)
    {
        var s = Get(name);
        if (s is null) return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
            throw new UsageException($"--{name} expects a number like 0.5 (a dot, no separators), got '{s}'");
        if (!double.IsFinite(v)) throw new UsageException($"--{name} must be a finite number, got '{s}'");
        return v;
    }

    /// <summary>A float for a sampling option: finite in double and in float.</summary>
    public float GetFloat(string name, float fallback)
    {
        double d = GetDouble(name, fallback);
        if (!float.IsFinite((float)d)) throw new UsageException($"--{name} {Get(name)} is out of range");
        return (float)d;
    }

    /// <summary>One of <paramref name="choices"/> (exact spelling).</summary>
    public string Choice(string name, string fallback, params string[] choices)
    {
        var s = Get(name) ?? fallback;
        return choices.Contains(s, StringComparer.Ordinal) ? s : throw new UsageException($"--{name} must be {string.Join(", ", choices.SkipLast(1))} or {choices[^1]}, not '{s}'");
    }

    /// <summary>A byte size: 80GiB, 141GiB, 80GB, 512MiB, 1.5TiB, 1000000 (bytes); positive.</summary>
    public long? Size(string name)
    {
        var s = Get(name);
        if (s is null) return null;
        long v;
        try { v = Synth.ParseSize(s); }
        catch (FormatException e) { throw new UsageException($"--{name}: {e.Message}"); }
        catch (OverflowException) { throw new UsageException($"--{name} {s} is too large"); }
        return v > 0 ? v : throw new UsageException($"--{name} must be a positive size (e.g. 80GiB), got '{s}'");
    }
}

/// <summary>Options shared by several verbs, with their parsing: one spelling and one help line everywhere.</summary>
internal static class Common
{
    public static readonly Opt Model = new("model", "DIR", "checkpoint folder (config.json + *.safetensors), a Hugging Face hub cache snapshot, or a hub cache repo folder (models--org--name)");
    public static readonly Opt Device = new("device", "SPEC", "auto (first GPU, else the emulator), cuda, cuda:N or emu (default auto)");
    public static readonly Opt ComputeOpt = new("compute", "MODE", "fp32 or bf16 (default: bf16 on a GPU, fp32 on the emulator)");
    public static readonly Opt Quantize = new("quantize", "MODE", "none, int4 (W4A16 experts) or fp8 (row-wise FP8 routed experts): weights quantized at load (default none)");
    public static readonly Opt Int4Group = new("int4-group-size", "G", "input elements per int4 scale, a positive integer (default 128; with --quantize int4)");
    public static readonly Opt Devices = new("devices", "SPEC", "several devices driven by this process, tensor- and expert-parallel: emu:N, cuda:0-7 or cuda:0,1 (NCCL between GPUs)");
    public static readonly Opt DevicesCount = new("devices", "N", "plan for N devices (a count, or a spec such as cuda:0-7): the sharding, memory per device and collectives per step");
    public static readonly Opt KvCache = new("kv-cache", "FORMAT", "bf16 (keys and values in the compute dtype: bf16, or fp32 with --compute fp32) or fp8 " +
                                                                  "(e4m3 + one f32 scale per token and kv head: about half the bytes) (default bf16)");

    public static readonly Opt MaxPiece = new("max-piece", "N|auto", "largest prefill piece in tokens, 1 to 1048576, or auto: the largest of 2048/1024/512/256 whose " +
                                                                   "KV ring and activations fit the device's free memory (default auto; serve: auto = 256)");

    /// <summary>--max-piece N|auto: 0 = auto.</summary>
    public static int MaxPieceValue(Args a) => a.Get("max-piece") switch
    {
        null or "auto" => 0,
        var s when s.TrimStart('-', '+').Length > 0 && s.TrimStart('-', '+').All(char.IsAsciiDigit) => a.GetInt("max-piece", 256, 1, 1 << 20),
        var s => throw new UsageException($"--max-piece expects a number of tokens or 'auto', got '{s}'"),
    };
    public static readonly Opt Rank = new("rank", "R", "this process's rank in a multi-process group, 0 to W-1 (with --world-size and --init; one device per process: --device)");
    public static readonly Opt WorldSize = new("world-size", "W", "processes (devices) in the group, over every node, 1 to 4096 (with --rank and --init)");
    public static readonly Opt Init = new("init", "URL", "tcp://HOST:PORT where rank 0 listens and the others connect (HOST: rank 0's node as the others reach it)");
    public static readonly Opt InitTimeout = new("init-timeout", "S", "seconds a rank waits for the others at --init and in each collective, 1 to 86400 (default 300)");

    public static readonly Opt[] ModelOptions =
    [
        Model, Device, Devices, Rank, WorldSize, Init, InitTimeout, ComputeOpt,
        new("tokenizer", "PATH", "tokenizer.model, tokenizer.json, or a folder holding one (default: the checkpoint's own)"),
        new("max-context", "N", "tokens a conversation can hold, prompt + reply, 1 to 2147483647 (default: what fits in the device's free memory " +
                                "after the weights, less 1 GiB, in the chosen --kv-cache format, at most the model's max_position_embeddings)"),
        Quantize, Int4Group, KvCache, MaxPiece,
    ];

    public static readonly Opt[] SamplingOptions =
    [
        new("max-new-tokens", "N", "most tokens to generate, 0 to 2147483647 (default: generation_config.json's max_new_tokens, else 256)"),
        new("temperature", "T", $"0 = greedy; up to {GenerationOptions.MaxTemperature} (default: generation_config.json, else 0)"),
        new("top-p", "P", "nucleus sampling, in (0, 1] (1 = off)"),
        new("top-k", "K", "keep the K most likely tokens, ≥ 0 (0 = off)"),
        new("min-p", "P", "drop tokens below P × the top probability, in [0, 1) (0 = off)"),
        new("repetition-penalty", "R", $"CTRL-style penalty on generated tokens, in (0, {GenerationOptions.MaxRepetitionPenalty}] (1 = off)"),
        new("frequency-penalty", "F", $"subtracted per earlier occurrence, in [-{GenerationOptions.MaxAdditivePenalty}, {GenerationOptions.MaxAdditivePenalty}] (0 = off)"),
        new("presence-penalty", "P", $"subtracted once a token occurred, in [-{GenerationOptions.MaxAdditivePenalty}, {GenerationOptions.MaxAdditivePenalty}] (0 = off)"),
        new("seed", "S", "sampler seed, 0 to 18446744073709551615 (the whole 64 bits are used; default 0)"),
        new("stop", "TEXT", "stop when the output contains TEXT", Many: true),
        new("stop-token", "ID", "stop at token id ID (0 ≤ ID < the model's vocabulary), besides the model's own stop tokens", Many: true),
    ];

    /// <summary>--model resolved (hub cache layouts) and checked: a file or a missing folder is a usage error.</summary>
    public static string ModelDir(Args a) => ModelDir(a.Require("model", "DIR"));

    public static string ModelDir(string path)
    {
        try { return Checkpoint.ResolveModelDirectory(path); }
        catch (CheckpointException e) { throw new UsageException($"--model {e.Message}"); }
    }

    /// <summary>--device, checked for its spelling before anything is opened.</summary>
    public static string DeviceSpec(Args a)
    {
        var s = a.Get("device", "auto");
        if (s is "auto" or "emu" or "cuda") return s;
        if (s.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(s[5..], NumberStyles.None, CultureInfo.InvariantCulture, out _)) return s;
        throw new UsageException($"--device must be auto, cuda, cuda:N (N = 0, 1, …) or emu, not '{s}'");
    }

    /// <summary>--devices as a group spec, checked for its spelling before anything is opened (null when absent).</summary>
    public static string? DevicesSpec(Args a)
    {
        if (a.Get("devices") is not { } s) return null;
        try { Distributed.DeviceGroup.Parse(s); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        return s;
    }

    /// <summary>--rank/--world-size/--init (all three or none), checked before anything opens: a rank in range, a tcp://HOST:PORT
    /// address, one device per process. Null when this process is the whole group.</summary>
    public static Multi? MultiProcess(Args a)
    {
        int given = new[] { "rank", "world-size", "init" }.Count(a.Has);
        if (given == 0)
        {
            if (a.Has("init-timeout")) throw new UsageException("--init-timeout goes with --rank, --world-size and --init");
            return null;
        }
        if (given < 3) throw new UsageException("give --rank R, --world-size W and --init tcp://HOST:PORT together (one process per device; see docs/multi-device.md)");
        int world = a.GetInt("world-size", 1, 1, 4096);
        var rs = a.Get("rank")!;
        if (!int.TryParse(rs, NumberStyles.None, CultureInfo.InvariantCulture, out int rank) || rank >= world)
            throw new UsageException($"--rank {rs} is out of range for --world-size {world}: ranks are 0 to {world - 1}");
        try { Distributed.TcpRendezvous.ParseInit(a.Get("init")!); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        if (a.Get("devices") is { } d && DevicesSpec(a) is not null && Distributed.DeviceGroup.Parse(d).Count > 1)
            throw new UsageException($"--devices {d} with --rank: each process of a multi-process group drives one device; pass --device cuda:N (or emu) instead");
        int timeout = a.GetInt("init-timeout", 300, 1, 86400);
        return new Multi(rank, world, a.Get("init")!, TimeSpan.FromSeconds(timeout));
    }

    /// <summary>This process's place in a multi-process group (--rank, --world-size, --init, --init-timeout).</summary>
    public sealed record Multi(int Rank, int World, string Init, TimeSpan Timeout);

    /// <summary>--devices as a count (a number, or the size of a spec); 1 when absent.</summary>
    public static int DeviceCount(Args a)
    {
        if (a.Get("devices") is not { } s) return 1;
        if (int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n))
            return n is >= 1 and <= 4096 ? n : throw new UsageException($"--devices {s} is out of range 1 to 4096");
        try { return Distributed.DeviceGroup.Parse(s).Count; }
        catch (ArgumentException e) { throw new UsageException(e.Message + " (or a count: --devices 8)"); }
    }

    /// <summary>The sharding plan for <paramref name="n"/> devices, or a usage error naming the dimension it cannot split.</summary>
    public static Distributed.ShardingPlan Sharding(Model.Llama4Config config, int n)
    {
        try { return Distributed.ShardingPlan.Create(config, n); }
        catch (Distributed.ShardingException e) { throw new UsageException($"--devices: {e.Message}"); }
    }

    public static Model.ComputeMode? Compute(Args a, Model.ComputeMode? fallback = null) => a.Get("compute") switch
    {
        null => fallback,
        "fp32" => Llama4Native.Model.ComputeMode.F32,
        "bf16" => Llama4Native.Model.ComputeMode.BF16,
        var c => throw new UsageException($"--compute must be fp32 or bf16, not '{c}'"),
    };

    /// <summary>--kv-cache: bf16 (the compute dtype; the default) or fp8.</summary>
    public static KvCacheFormat KvFormat(Args a) => a.Get("kv-cache") switch
    {
        null or "bf16" => KvCacheFormat.Default,
        "fp8" => KvCacheFormat.Fp8,
        var s => throw new UsageException($"--kv-cache must be bf16 or fp8, not '{s}'"),
    };

    /// <summary>--quantize and --int4-group-size as the loader's options.</summary>
    public static QuantizeOptions Quantization(Args a)
    {
        var mode = QuantizeMode.None;
        if (a.Get("quantize") is { } q && !QuantizeOptions.TryParseMode(q, out mode))
            throw new UsageException($"--quantize must be none, int4 or fp8, not '{q}'");
        int g = a.GetInt("int4-group-size", 128, 1, 1 << 20);
        if (a.Has("int4-group-size") && mode != QuantizeMode.Int4)
            throw new UsageException("--int4-group-size applies to --quantize int4 only");
        return new QuantizeOptions(mode, g);
    }
}
