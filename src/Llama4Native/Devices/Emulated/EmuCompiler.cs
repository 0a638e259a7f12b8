using System.Diagnostics;
using System.Text;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Emulated;

/// <summary>
/// Compiles the SAME `kernels/*.cu` source with g++ against the host shim in `kernels/emu/` (force-included
/// `emu.h`, `-DCUDA_EMU`): one shared object per (file, defines), linked to the emulator runtime
/// `libl4emu.so`. Results live in the kernel cache under `emu/`, keyed by the sources (the kernel, its
/// includes and the emulator), the defines, the flags and the compiler's version.
/// </summary>
internal sealed class EmuCompiler : IKernelCompiler
{
    /// <summary>Flags shared by the runtime and every module. -fno-strict-aliasing: kernels pun bits (bf16, fp8).</summary>
    public static readonly string[] CommonFlags = ["-O2", "-std=c++17", "-fPIC", "-shared", "-fno-strict-aliasing", "-pthread"];

    readonly KernelCache cache;
    readonly Lazy<string> compilerVersion;
    readonly Lazy<string> sourceDir;
    readonly Lazy<string> runtimePath;

    /// <summary>Extra flags of the checked variant: every load/store calls the emulator's checker hooks
    /// (g++'s ThreadSanitizer instrumentation, linked WITHOUT libtsan: kernels/emu/runtime.cpp defines the
    /// __tsan_* hooks), and DWARF line tables so a report names the source line. Sibling calls stay on: the sync
    /// check compares barriers by the source line each `__syncthreads()` passes (emu.h), so a barrier g++ turned into a
    /// tail call or duplicated is still one barrier (it used to need -fno-optimize-sibling-calls).</summary>
    public static readonly string[] CheckedFlags = ["-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0", "-g"];

    readonly IReadOnlyDictionary<string, string>? overrides;

    /// <param name="cache">Where compiled modules live (default: the user's kernel cache).</param>
    /// <param name="cxx">The C++ compiler (default: LLAMA4_CXX or g++).</param>
    /// <param name="instrumented">Build the checked variant of each module (see <see cref="CheckedFlags"/>);
    /// unchecked modules keep their speed, the two variants are cached side by side.</param>
    /// <param name="sourceOverrides">Kernel sources that replace the embedded ones (path relative to
    /// `kernels/` → text), e.g. a kernel with a planted bug in a test.</param>
    public EmuCompiler(KernelCache? cache = null, string? cxx = null, bool instrumented = false,
                       IReadOnlyDictionary<string, string>? sourceOverrides = null)
    {
        this.cache = cache ?? KernelCache.Default;
        Instrumented = instrumented;
        overrides = sourceOverrides is { Count: > 0 } ? sourceOverrides : null;
        Cxx = cxx ?? Environment.GetEnvironmentVariable("LLAMA4_CXX") ?? "g++";
        compilerVersion = new(() => RunChecked(Cxx, ["-dumpfullversion", "-dumpversion"], "(version probe)").Trim());
        sourceDir = new(ExtractSources);
        runtimePath = new(BuildRuntime);
    }

    public string Target => "emu";
    public string Cxx { get; }
    /// <summary>True for the checked variant (instrumented loads/stores).</summary>
    public bool Instrumented { get; }
    public string CompilerVersion => compilerVersion.Value;

    /// <summary>The emulator runtime shared object, built on first use.</summary>
    public string RuntimePath => runtimePath.Value;

    static IEnumerable<string> EmuFiles => KernelSources.All.Keys.Where(k => k.StartsWith("emu/", StringComparison.Ordinal)).Order(StringComparer.Ordinal);

    public CompiledModule Compile(string file, KernelDefines defines)
    {
        var entries = KernelSources.EntryPoints(file);
        if (entries.Count == 0) throw new KernelCompileException(file, Target, "(scan)", "no __global__ functions found");
        var flags = Instrumented ? CommonFlags.Concat(CheckedFlags).ToArray() : CommonFlags;
        var srcHash = KernelSources.Hash(file, EmuFiles);
        if (overrides != null) srcHash = KernelCache.Digest(srcHash, string.Join("\0", overrides.OrderBy(o => o.Key, StringComparer.Ordinal).Select(o => o.Key + "\0" + o.Value)));
        var key = KernelCache.Digest(srcHash, defines.Key, string.Join(' ', flags), CompilerVersion);
        var name = $"{Path.GetFileNameWithoutExtension(file)}-{(Instrumented ? "checked-" : "")}{key}.so";
        var path = cache.PathFor(Target, name);
        if (File.Exists(path)) return new CompiledModule(file, key, [], path, "(cached)");

        var rt = RuntimePath;
        var src = overrides == null ? sourceDir.Value : OverrideDir(key);
        // The registration unit (written by kernels/emu/gen_module.sh, the same generator the shell build
        // uses): the kernel file, then one line per entry point, so the module exports them by name with a
        // trampoline that unpacks cuLaunchKernel-style void** args and knows each kernel's launch bounds.
        var unit = Path.Combine(src, $"module-{key}.cpp");
        RunChecked("bash", [Path.Combine(src, "emu", "gen_module.sh"), Path.Combine(src, file), unit], file + " (module generator)");
        var tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var rtDir = Path.GetDirectoryName(rt)!;
        // Hidden visibility and no GNU-unique symbols: a function-local __shared__ (a thread_local) in an inline
        // or template function must not be merged with the same symbol of a module built with other defines.
        var args = new List<string>(CommonFlags) { "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-fno-gnu-unique",
                                                   "-include", Path.Combine(src, "emu", "emu.h"), "-DCUDA_EMU", "-I", src };
        args.AddRange(defines.AsOptions());
        string log;
        if (Instrumented)
        {
            // Compile instrumented, link plain: g++ would add libtsan at a -fsanitize=thread link, and the
            // hooks must be the emulator's.
            var obj = tmp + ".o";
            args.AddRange(CheckedFlags);
            args.AddRange(["-c", unit, "-o", obj]);
            log = RunChecked(Cxx, args, file);
            try
            {
                log += RunChecked(Cxx, ["-shared", "-fPIC", "-pthread", obj, "-o", tmp, "-L", rtDir, "-l:libl4emu.so", $"-Wl,-rpath,{rtDir}"], file + " (link)");
            }
            finally { File.Delete(obj); }
        }
        else
        {
            args.AddRange([unit, "-o", tmp, "-L", rtDir, "-l:libl4emu.so", $"-Wl,-rpath,{rtDir}"]);
            log = RunChecked(Cxx, args, file);
        }
        File.Move(tmp, path, overwrite: true);
        return new CompiledModule(file, key, [], path, log);
    }

    // The embedded sources with the overrides written over them, in a folder of their own.
    string OverrideDir(string key)
    {
        var dir = cache.PathFor(Target, "src-override-" + key);
        if (Directory.Exists(dir)) return dir;
        var tmp = dir + "." + Guid.NewGuid().ToString("N") + ".tmp";
        foreach (var (rel, text) in KernelSources.All.Concat(overrides!).GroupBy(kv => kv.Key).Select(g => g.Last()))
        {
            var p = Path.Combine(tmp, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(p)!);
            File.WriteAllText(p, text);
        }
        try { Directory.Move(tmp, dir); }
        catch (IOException) when (Directory.Exists(dir)) { Directory.Delete(tmp, true); }
        return dir;
    }

    string ExtractSources()
    {
        var all = string.Join("\0", KernelSources.All.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => k.Key + "\0" + k.Value));
        var dir = cache.PathFor(Target, "src-" + KernelCache.Digest(all));
        if (Directory.Exists(dir)) return dir;
        var tmp = dir + "." + Guid.NewGuid().ToString("N") + ".tmp";
        foreach (var (rel, text) in KernelSources.All)
        {
            var p = Path.Combine(tmp, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(p)!);
            File.WriteAllText(p, text);
        }
        try { Directory.Move(tmp, dir); }
        catch (IOException) when (Directory.Exists(dir)) { Directory.Delete(tmp, true); } // another process won
        return dir;
    }

    string BuildRuntime()
    {
        var files = EmuFiles.Where(f => f.EndsWith(".cpp", StringComparison.Ordinal) || f.EndsWith(".S", StringComparison.Ordinal)).ToList();
        var key = KernelCache.Digest(string.Join("\0", EmuFiles.Select(f => f + "\0" + KernelSources.Get(f))), string.Join(' ', CommonFlags), CompilerVersion);
        var path = cache.PathFor(Target, Path.Combine("rt-" + key, "libl4emu.so"));
        if (File.Exists(path)) return path;
        var src = sourceDir.Value;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        var args = new List<string>(CommonFlags) { "-I", src };
        args.AddRange(files.Select(f => Path.Combine(src, f)));
        args.AddRange(["-Wl,-soname,libl4emu.so", "-o", tmp]);
        RunChecked(Cxx, args, "emu runtime");
        File.Move(tmp, path, overwrite: true);
        return path;
    }

    string RunChecked(string exe, IReadOnlyList<string> args, string what)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var cmd = exe + " " + string.Join(' ', args.Select(a => a.Contains(' ') ? $"'{a}'" : a));
        Process p;
        try { p = Process.Start(psi) ?? throw new InvalidOperationException("Process.Start returned null"); }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            throw new KernelCompileException(what, Target, cmd,
                $"cannot run the C++ compiler '{exe}': {e.Message}. The emulated device needs g++ (apt-get install g++), or set LLAMA4_CXX.", e);
        }
        using (p)
        {
            var err = new StringBuilder();
            p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (err) err.AppendLine(e.Data); };
            p.BeginErrorReadLine();
            var stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            string log; lock (err) log = err.ToString();
            if (p.ExitCode != 0) throw new KernelCompileException(what, Target, cmd, log + stdout);
            return stdout + log;
        }
    }
}
