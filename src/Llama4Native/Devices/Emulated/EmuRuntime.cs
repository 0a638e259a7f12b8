using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Emulated;

/// <summary>The emulator runtime (`libl4emu.so`): its C ABI, bound by function pointer once per process.</summary>
internal sealed unsafe class EmuRuntime
{
    static readonly ConcurrentDictionary<string, EmuRuntime> loaded = new();
    public static EmuRuntime Get(string path) => loaded.GetOrAdd(path, p => new EmuRuntime(p));

    readonly delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, void**, uint, int> launch;
    readonly delegate* unmanaged<void*, nuint, nuint, int> memRegister;
    readonly delegate* unmanaged<void*, void> memUnregister;
    readonly delegate* unmanaged<void*, nuint, void> memWritten;
    readonly delegate* unmanaged<int, byte*> analysisReport;
    readonly delegate* unmanaged<byte*> lastError;
    readonly delegate* unmanaged<int, void> setThreads;

    EmuRuntime(string path)
    {
        var h = NativeLibrary.Load(path);
        launch = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, void**, uint, int>)NativeLibrary.GetExport(h, "l4emu_launch_ex");
        memRegister = (delegate* unmanaged<void*, nuint, nuint, int>)NativeLibrary.GetExport(h, "l4emu_mem_register");
        memUnregister = (delegate* unmanaged<void*, void>)NativeLibrary.GetExport(h, "l4emu_mem_unregister");
        memWritten = (delegate* unmanaged<void*, nuint, void>)NativeLibrary.GetExport(h, "l4emu_mem_written");
        analysisReport = (delegate* unmanaged<int, byte*>)NativeLibrary.GetExport(h, "l4emu_analysis_report");
        lastError = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(h, "l4emu_last_error");
        setThreads = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(h, "l4emu_set_threads");
        var version = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(h, "l4emu_version");
        Version = Marshal.PtrToStringUTF8((nint)version()) ?? "l4emu";
    }

    public string Version { get; }
    public void SetThreads(int n) => setThreads(n);

    public bool RegisterMemory(void* p, long bytes, long guard) => memRegister(p, (nuint)bytes, (nuint)guard) == 0;
    public void UnregisterMemory(void* p) => memUnregister(p);
    public void MarkWritten(void* p, long bytes) => memWritten(p, (nuint)bytes);
    public string AnalysisReport(bool reset) => Marshal.PtrToStringUTF8((nint)analysisReport(reset ? 1 : 0)) ?? "";

    public void Launch(KernelFunction f, Dim3 grid, Dim3 block, uint shared, void** args, EmuCheck check = EmuCheck.None)
    {
        if (grid.Count == 0 || block.Count == 0)
            throw new EmulatorException($"kernel {f.Name}: empty launch (grid {grid}, block {block})");
        int rc = launch(f.Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, shared, args, (uint)check);
        if (rc != 0)
        {
            var msg = Marshal.PtrToStringUTF8((nint)lastError()) ?? "(no message)";
            throw new EmulatorException($"kernel {f.Name} failed on the emulated device (code {rc}): {msg}");
        }
    }
}

/// <summary>One kernel file compiled for the emulator: a shared object exporting its entry points.</summary>
internal sealed unsafe class EmuModule : KernelModule
{
    readonly nint lib;
    readonly delegate* unmanaged<byte*, nint> getFunction;
    readonly CompiledModule compiled;

    public EmuModule(CompiledModule compiled, EmuRuntime rt)
    {
        this.compiled = compiled;
        lib = NativeLibrary.Load(compiled.LibraryPath ?? throw new ArgumentException("emulator module without a library path"));
        getFunction = (delegate* unmanaged<byte*, nint>)NativeLibrary.GetExport(lib, "l4emu_get_function");
    }

    public override KernelFunction GetFunction(string name)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(name + "\0");
        nint h;
        fixed (byte* p = bytes) h = getFunction(p);
        if (h == 0)
            throw new EmulatorException($"kernels/{compiled.SourceName} has no kernel named '{name}' (entry points: {string.Join(", ", KernelSources.EntryPoints(compiled.SourceName))})");
        return new KernelFunction(name, h, this);
    }

    // Shared objects stay loaded for the process: function handles may still be referenced by callers.
    public override void Dispose() { }
}

/// <summary>A failure on the emulated device: a kernel's misuse (partial barrier, partial warp), a bad launch,
/// or a checker report ("check race: …", see <see cref="EmuCheck"/>).</summary>
public sealed partial class EmulatorException(string message) : Exception(message)
{
    /// <summary>The check that fired ("race", "memory", "sync", "init"), or null for other failures.</summary>
    public string? Check => CheckRegex().Match(Message) is { Success: true } m ? m.Groups[1].Value : null;
    /// <summary>The first source site named by the report ("rmsnorm.cu:45"), or null.</summary>
    public string? Site => SiteRegex().Match(Message) is { Success: true } m ? m.Groups[1].Value : null;

    [System.Text.RegularExpressions.GeneratedRegex(@"check (race|memory|sync|init):")]
    private static partial System.Text.RegularExpressions.Regex CheckRegex();
    [System.Text.RegularExpressions.GeneratedRegex(@"\bat ([A-Za-z0-9_.]+:\d+)")]
    private static partial System.Text.RegularExpressions.Regex SiteRegex();
}

/// <summary>The emulator's checks (kernels/emu/runtime.cpp, "checker"); combine with |.</summary>
[Flags]
internal enum EmuCheck : uint
{
    None = 0,
    /// <summary>Two threads of a block touch the same bytes between two barriers, at least one writes, not both atomics.</summary>
    Race = 1,
    /// <summary>Global access outside every live allocation (guard zones), shared access past the launch's size, misalignment.</summary>
    Memory = 2,
    /// <summary>Barriers reached at different call sites by one block; warp collectives with inconsistent masks.</summary>
    Sync = 4,
    /// <summary>Reads of device or shared memory never written.</summary>
    Init = 8,
    /// <summary>Memory-efficiency analysis (coalescing, bank conflicts); not a check.</summary>
    Analyze = 16,
    All = Race | Memory | Sync | Init,
}

/// <summary>Parses L4EMU_CHECK-style text: "race,memory,sync,init", "all", "none" or "".</summary>
internal static class EmuChecks
{
    public static EmuCheck Parse(string? spec)
    {
        var r = EmuCheck.None;
        foreach (var raw in (spec ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            r |= raw.ToLowerInvariant() switch
            {
                "all" => EmuCheck.All,
                "race" => EmuCheck.Race,
                "memory" => EmuCheck.Memory,
                "sync" => EmuCheck.Sync,
                "init" => EmuCheck.Init,
                "analyze" => EmuCheck.Analyze,
                "none" or "0" or "off" => EmuCheck.None,
                _ => throw new ArgumentException($"unknown emulator check '{raw}' in '{spec}': use race, memory, sync, init, all or none (comma-separated)"),
            };
        return r;
    }

    /// <summary>The checks L4EMU_CHECK asks for (None when unset).</summary>
    public static EmuCheck FromEnvironment() => Parse(Environment.GetEnvironmentVariable("L4EMU_CHECK"));
}
