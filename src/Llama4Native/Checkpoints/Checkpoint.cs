using System.Runtime.InteropServices;
using System.Text.Json;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Checkpoints;

/// <summary>A checkpoint tensor bound to its row of the name table and to its bytes in a mapped shard.</summary>
internal sealed record CheckpointTensor(ExpectedTensor Expected, SafetensorsFile File, TensorEntry Entry)
{
    public string Name => Expected.Ours;
    public DType DType => Entry.DType;
    public long[] Shape => Entry.Shape;
    public long Bytes => Entry.Bytes;
}

/// <summary>
/// A Hugging Face model directory, opened and fully validated: <c>config.json</c> (see <see cref="Llama4Config"/>),
/// <c>model.safetensors.index.json</c> + shards (or a single <c>model.safetensors</c>), every shard
/// memory-mapped with its header checked, and every tensor matched against the name table and the config
/// (dtype and shape). Opening fails with one <see cref="CheckpointException"/> listing ALL missing, ALL
/// unexpected and ALL mismatched tensors. The shards stay mapped until Dispose.
/// </summary>
internal sealed class Checkpoint : IDisposable
{
    public const string IndexFile = "model.safetensors.index.json";
    public const string SingleFile = "model.safetensors";

    public string Directory { get; }
    public Llama4Config Config { get; }
    public IReadOnlyList<SafetensorsFile> Shards { get; }
    /// <summary>Tensors by our name, in checkpoint order (shard, then offset): the order the loader streams them.</summary>
    public IReadOnlyList<CheckpointTensor> Tensors { get; }
    readonly Dictionary<string, CheckpointTensor> byName;

    Checkpoint(string dir, Llama4Config config, List<SafetensorsFile> shards, List<CheckpointTensor> tensors)
    {
        Directory = dir; Config = config; Shards = shards; Tensors = tensors;
        byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public CheckpointTensor this[string ours] => byName.TryGetValue(ours, out var t) ? t
        : throw new KeyNotFoundException($"{Directory}: no tensor named '{ours}' (our names: see TensorNames)");
    public bool TryGet(string ours, out CheckpointTensor t) => byName.TryGetValue(ours, out t!);
    public long TotalBytes => Tensors.Sum(t => t.Bytes);

    /// <summary>
    /// Where a model lives, as users keep it: a checkpoint folder as is; a Hugging Face hub cache repo folder
    /// (<c>models--org--name</c>, holding <c>refs/</c>, <c>snapshots/</c>, <c>blobs/</c>) becomes the snapshot
    /// <c>refs/main</c> names (or its only snapshot). A file, or a folder that does not exist, is a
    /// <see cref="CheckpointException"/> saying what to pass instead.
    /// </summary>
    public static string ResolveModelDirectory(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (File.Exists(path))
        {
            string parent = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? ".";
            throw new CheckpointException(path, null,
                $"is a file, not a model folder: pass the folder that holds config.json and the *.safetensors shards (here probably '{parent}')");
        }
        if (!System.IO.Directory.Exists(path))
            throw new CheckpointException(path, null, "model directory not found");
        if (File.Exists(System.IO.Path.Combine(path, "config.json"))) return path;
        string snapshots = System.IO.Path.Combine(path, "snapshots");
        if (!System.IO.Directory.Exists(snapshots)) return path;   // not a hub repo: Llama4Config reports the missing config.json
        string refMain = System.IO.Path.Combine(path, "refs", "main");
        if (File.Exists(refMain))
        {
            string rev = File.ReadAllText(refMain).Trim();
            if (rev.Length == 0 || rev.IndexOfAny(['/', '\\', '\0']) >= 0 || rev is "." or "..")
                throw new CheckpointException(refMain, null, $"is not a revision hash ('{rev}'); pass a folder under {snapshots} instead");
            string snap = System.IO.Path.Combine(snapshots, rev);
            if (!System.IO.Directory.Exists(snap))
                throw new CheckpointException(refMain, null, $"names revision {rev} but {snap} does not exist (an interrupted download? run the download again)");
            return snap;
        }
        var all = System.IO.Directory.GetDirectories(snapshots);
        return all.Length == 1 ? all[0]
            : throw new CheckpointException(path, null, all.Length == 0
                ? "is a Hugging Face hub cache folder with no snapshot (an interrupted download?)"
                : $"is a Hugging Face hub cache folder with {all.Length} snapshots and no refs/main; pass one of {string.Join(", ", all.Select(System.IO.Path.GetFileName))} under {snapshots}");
    }

    /// <summary>
    /// The folder a model directory's files may resolve into: the directory itself, or — for a Hugging Face hub
    /// cache snapshot (<c>…/models--org--name/snapshots/REV</c>, files symlinked into <c>../../blobs/</c>) — the
    /// cache repo folder <c>models--org--name</c>. Links leaving it are still refused.
    /// </summary>
    internal static string ContainmentRoot(string dir)
    {
        var full = System.IO.Path.GetFullPath(dir).TrimEnd(System.IO.Path.DirectorySeparatorChar);
        var snapshots = System.IO.Path.GetDirectoryName(full);
        var repo = snapshots is null ? null : System.IO.Path.GetDirectoryName(snapshots);
        if (repo is not null && System.IO.Path.GetFileName(snapshots) == "snapshots" &&
            System.IO.Path.GetFileName(repo).StartsWith("models--", StringComparison.Ordinal) &&
            System.IO.Directory.Exists(System.IO.Path.Combine(repo, "blobs")))
            return repo;
        return dir;
    }

    /// <summary>Opens and validates a model directory. Throws <see cref="ConfigException"/> or <see cref="CheckpointException"/>.</summary>
    public static Checkpoint Open(string directory)
    {
        directory = ResolveModelDirectory(directory);
        var config = Llama4Config.Load(directory);
        var shards = OpenShards(directory, out var weightMap);
        try
        {
            var tensors = Bind(directory, config, shards, weightMap);
            return new Checkpoint(directory, config, shards, tensors);
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            throw;
        }
    }

    /// <summary>Opens the shards named by the index (or the single file) and cross-checks the index against their headers.</summary>
    static List<SafetensorsFile> OpenShards(string dir, out Dictionary<string, string>? weightMap)
    {
        string indexPath = Path.Combine(dir, IndexFile);
        weightMap = null;
        var shards = new List<SafetensorsFile>();
        if (!File.Exists(indexPath))
        {
            string single = Path.Combine(dir, SingleFile);
            if (!File.Exists(single))
                throw new CheckpointException(dir, null,
                    $"no {IndexFile} and no {SingleFile}; expected a Hugging Face checkpoint directory (run 'llama4 synth' to make one)");
            CheckInside(dir, SingleFile, single, indexPath: null);
            shards.Add(SafetensorsFile.Open(single));
            return shards;
        }

        weightMap = ReadIndex(indexPath);
        var problems = new List<string>();
        var shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        try
        {
            foreach (string shard in shardNames)
            {
                string full = Path.Combine(dir, shard);
                CheckInside(dir, shard, full, indexPath);
                if (!File.Exists(full))
                {
                    var listed = weightMap.Where(kv => kv.Value == shard).Select(kv => kv.Key).Take(3).ToList();
                    problems.Add($"shard '{shard}' is missing (the index maps {weightMap.Count(kv => kv.Value == shard)} tensors to it, e.g. '{listed[0]}'); copy or re-download it into {dir}");
                    continue;
                }
                shards.Add(SafetensorsFile.Open(full));
            }
            if (problems.Count > 0) throw new CheckpointException(indexPath, problems);

            // Cross-check: each tensor is in exactly the shard the index names, and each shard tensor is indexed.
            var where = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var s in shards)
                foreach (var t in s.Tensors)
                {
                    string shard = Path.GetFileName(s.Path);
                    if (where.TryGetValue(t.Name, out var other))
                        problems.Add($"tensor '{t.Name}' is stored in two shards, '{other}' and '{shard}'; a checkpoint stores each tensor once");
                    else where[t.Name] = shard;
                }
            foreach (var (name, shard) in weightMap)
            {
                if (!where.TryGetValue(name, out var actual))
                    problems.Add($"tensor '{name}' is listed in shard '{shard}' but no shard contains it; the index and the shards disagree — re-download the checkpoint");
                else if (actual != Path.GetFileName(shard))
                    problems.Add($"tensor '{name}' is listed in shard '{shard}' but is stored in '{actual}'; fix the index's weight_map or re-download the checkpoint");
            }
            foreach (var (name, shard) in where)
                if (!weightMap.ContainsKey(name))
                    problems.Add($"tensor '{name}' is stored in shard '{shard}' but the index does not list it; regenerate {IndexFile}");
            if (problems.Count > 0) throw new CheckpointException(indexPath, problems);
            return shards;
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            throw;
        }
    }

    static Dictionary<string, string> ReadIndex(string indexPath)
    {
        var info = new FileInfo(indexPath);
        if (info.Length > 64 << 20)
            throw new CheckpointException(indexPath, null, $"is {info.Length} bytes; an index is at most a few MB (limit 64 MiB) — the file is corrupt");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(indexPath), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new CheckpointException(indexPath, null, $"is not valid JSON ({e.Message}); regenerate or re-download it", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object ||
                !doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(indexPath, null, "has no \"weight_map\" object; expected {\"metadata\": …, \"weight_map\": {tensor: shard file}}");
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            var problems = new List<string>();
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(p.Value.GetString()))
                    problems.Add($"weight_map[\"{p.Name}\"] is {p.Value.GetRawText()}; expected a shard file name");
                else if (!map.TryAdd(p.Name, p.Value.GetString()!))
                    problems.Add($"weight_map lists tensor '{p.Name}' twice");
            }
            if (map.Count == 0 && problems.Count == 0) problems.Add("weight_map is empty; expected every tensor mapped to its shard");
            if (problems.Count > 0) throw new CheckpointException(indexPath, problems);
            return map;
        }
    }

    /// <summary>
    /// A shard name must stay inside the model directory: relative, no '..' segment, and — after resolving
    /// symbolic links — still under the directory's real path.
    /// </summary>
    static void CheckInside(string dir, string shard, string full, string? indexPath)
    {
        string file = indexPath ?? dir;
        string fix = "shard names must be plain file names inside the model directory";
        if (Path.IsPathRooted(shard) || shard.StartsWith('/') || shard.StartsWith('\\'))
            throw new CheckpointException(file, null, $"shard '{shard}' is an absolute path; {fix}");
        if (shard.Split('/', '\\').Any(seg => seg == ".."))
            throw new CheckpointException(file, null, $"shard '{shard}' climbs out of the model directory ('..'); {fix}");
        if (shard.Contains('\0'))
            throw new CheckpointException(file, null, $"shard name contains a NUL character; {fix}");
        string root = RealPath(Path.GetFullPath(ContainmentRoot(dir)));
        string target = Path.GetFullPath(full);
        if (!File.Exists(target) && !System.IO.Directory.Exists(target) && new FileInfo(target).LinkTarget is null) return; // missing: reported by the caller
        string real = RealPath(target);
        string rootSlash = root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar;
        if (!real.StartsWith(rootSlash, StringComparison.Ordinal))
            throw new CheckpointException(file, null,
                $"shard '{shard}' resolves to '{real}', outside the model directory '{root}' (a symbolic link out); {fix} — copy the file in instead of linking it" +
                (root != RealPath(Path.GetFullPath(dir)) ? " (in a Hugging Face hub cache, links may point into the repo's blobs/ only)" : ""));
    }

    static string RealPath(string path)
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            nint p = Native.realpath(path, 0);
            if (p != 0)
            {
                try { return Marshal.PtrToStringUTF8(p) ?? path; }
                finally { Native.free(p); }
            }
            // A dangling link: resolve by hand.
        }
        var fi = new FileInfo(path);
        var t = fi.ResolveLinkTarget(returnFinalTarget: true);
        return t?.FullName ?? Path.GetFullPath(path);
    }

    static class Native
    {
        [DllImport("libc", EntryPoint = "realpath", CharSet = CharSet.Ansi)]
        public static extern nint realpath(string path, nint resolved);
        [DllImport("libc", EntryPoint = "free")]
        public static extern void free(nint p);
    }

    /// <summary>Matches the shards' tensors against the name table for this config. Collects every problem.</summary>
    static List<CheckpointTensor> Bind(string dir, Llama4Config config, List<SafetensorsFile> shards, Dictionary<string, string>? weightMap)
    {
        var actual = new Dictionary<string, (SafetensorsFile File, TensorEntry Entry)>(StringComparer.Ordinal);
        foreach (var s in shards)
            foreach (var t in s.Tensors)
                actual.TryAdd(t.Name, (s, t));

        var missing = new List<string>();
        var wrong = new List<string>();
        var bound = new List<CheckpointTensor>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        var quant = config.Quantization;

        void Check(ExpectedTensor e)
        {
            if (!actual.TryGetValue(e.Hf, out var a))
            {
                missing.Add($"{e.Hf} → {e.Ours} {Formula(e.IsScale ? e.Rule.ScaleShapeDoc : e.Rule.ShapeDoc)} = [{string.Join(", ", e.Shape)}]" + (e.IsScale ? " F32 (FP8 scale)" : ""));
                return;
            }
            used.Add(e.Hf);
            string shard = Path.GetFileName(a.File.Path);
            bool ok = true;
            if (!a.Entry.Shape.SequenceEqual(e.Shape))
            {
                wrong.Add($"{e.Hf} in {shard}: shape {a.Entry.ShapeString}; config.json implies {Formula(e.IsScale ? e.Rule.ScaleShapeDoc : e.Rule.ShapeDoc)} = [{string.Join(", ", e.Shape)}]");
                ok = false;
            }
            var dt = a.Entry.DType;
            if (e.IsScale)
            {
                if (dt != DType.F32) { wrong.Add($"{e.Hf} in {shard}: dtype {dt.SafetensorsName()}; FP8 scales must be F32"); ok = false; }
            }
            else if (dt == DType.F8E4M3)
            {
                string? why = e.Rule.ScaleShape is null ? "this tensor cannot be FP8 (only linear weights and routed experts can)"
                    : quant is null ? "config.json has no quantization_config (expected quant_method \"fbgemm_fp8\" for an FP8 checkpoint)"
                    : quant.IsExcluded(e.Module) ? $"quantization_config.modules_to_not_convert lists '{e.Module}', so it must stay in a float dtype"
                    : null;
                if (why is not null) { wrong.Add($"{e.Hf} in {shard}: dtype F8_E4M3 but {why}"); ok = false; }
                else if (TensorNames.ScaleFor(config, e) is { } scale) Check(scale);
            }
            else if (!TensorNames.IsFloat(dt))
            {
                wrong.Add($"{e.Hf} in {shard}: dtype {dt.SafetensorsName()}; expected BF16, F16 or F32" +
                          (e.Rule.ScaleShape is not null ? " (or F8_E4M3 with a scale)" : ""));
                ok = false;
            }
            if (ok) bound.Add(new CheckpointTensor(e, a.File, a.Entry));
        }

        foreach (var e in TensorNames.Expected(config)) Check(e);
        var unexpected = actual.Keys.Where(k => !used.Contains(k)).Order(StringComparer.Ordinal)
            .Select(k => $"{k} ({Path.GetFileName(actual[k].File.Path)}, {actual[k].Entry.DType.SafetensorsName()} {actual[k].Entry.ShapeString})").ToList();

        if (missing.Count + unexpected.Count + wrong.Count > 0)
        {
            var problems = new List<string>();
            if (missing.Count > 0)
                problems.Add($"{missing.Count} missing tensor{(missing.Count == 1 ? "" : "s")} (config.json requires them):\n      " + string.Join("\n      ", missing));
            if (unexpected.Count > 0)
                problems.Add($"{unexpected.Count} unexpected tensor{(unexpected.Count == 1 ? "" : "s")} (not in the name table for this config.json — wrong config or wrong model?):\n      " + string.Join("\n      ", unexpected));
            if (wrong.Count > 0)
                problems.Add($"{wrong.Count} tensor{(wrong.Count == 1 ? "" : "s")} with the wrong shape or dtype:\n      " + string.Join("\n      ", wrong));
            throw new CheckpointException(dir, problems);
        }
        // Checkpoint order: shard order, then offset — the order the loader streams.
        var shardIndex = shards.Select((s, i) => (s, i)).ToDictionary(x => x.s, x => x.i);
        bound.Sort((a, b) => shardIndex[a.File] != shardIndex[b.File] ? shardIndex[a.File].CompareTo(shardIndex[b.File]) : a.Entry.Begin.CompareTo(b.Entry.Begin));
        return bound;
    }

    /// <summary>"[H·d, D] (attention_bias)" → "[H·d, D]".</summary>
    static string Formula(string? doc) => doc is null ? "?" : doc.Contains(" (") ? doc[..doc.IndexOf(" (", StringComparison.Ordinal)] : doc;

    public void Dispose()
    {
        foreach (var s in Shards) s.Dispose();
    }
}
