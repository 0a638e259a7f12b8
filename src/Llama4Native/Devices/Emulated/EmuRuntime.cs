using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Emulated;

/// <summary>The emulator runtime (`libl4emu.so`): its C ABI, bound by function pointer once per process.</summary>
internal sealed unsafe class EmuRuntime
{
    static readonly ConcurrentDictionary<string, EmuRuntime> loaded = new();
    public static EmuRuntime Get(string path) => loaded.GetOrAdd(path, p => new EmuRuntime(p));

    readonly delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, void**, int> launch;
    readonly delegate* unmanaged<byte*> lastError;
    readonly delegate* unmanaged<int, void> setThreads;

    EmuRuntime(string path)
    {
        var h = NativeLibrary.Load(path);
        launch = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, void**, int>)NativeLibrary.GetExport(h, "l4emu_launch");
        lastError = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(h, "l4emu_last_error");
        setThreads = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(h, "l4emu_set_threads");
        var version = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(h, "l4emu_version");
        Version = Marshal.PtrToStringUTF8((nint)version()) ?? "l4emu";
    }

    public string Version { get; }
    public void SetThreads(int n) => setThreads(n);

    public void Launch(KernelFunction f, Dim3 grid, Dim3 block, uint shared, void** args)
    {
        if (grid.Count == 0 || block.Count == 0)
            throw new EmulatorException($"kernel {f.Name}: empty launch (grid {grid}, block {block})");
        int rc = launch(f.Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, shared, args);
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

/// <summary>A failure on the emulated device: a kernel's misuse (partial barrier, partial warp) or a bad launch.</summary>
public sealed class EmulatorException(string message) : Exception(message);
