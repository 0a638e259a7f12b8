using System.Collections.Concurrent;
using Llama4Native.Devices;

namespace Llama4Native.Kernels;

/// <summary>Turns a kernel file plus its defines into loadable code for one target (NVRTC or g++).</summary>
internal interface IKernelCompiler
{
    /// <summary>The target, e.g. "sm_90a" or "emu"; also the cache sub-folder.</summary>
    string Target { get; }
    CompiledModule Compile(string file, KernelDefines defines);
}

/// <summary>
/// A device's kernels: compiled at first use for the device's exact target, cached on disk by the
/// compiler and in memory here, one loaded module per (file, defines). Thread-safe.
/// </summary>
internal sealed class KernelLibrary(Device device, IKernelCompiler compiler) : IDisposable
{
    readonly ConcurrentDictionary<(string File, KernelDefines Defines), Lazy<KernelModule>> modules = new();
    readonly ConcurrentDictionary<(string File, KernelDefines Defines, string Entry), KernelFunction> functions = new();

    public IKernelCompiler Compiler { get; } = compiler;

    /// <summary>The entry point <paramref name="entry"/> of `kernels/<paramref name="file"/>`, compiled with <paramref name="defines"/>.</summary>
    public KernelFunction Get(string file, string entry, KernelDefines defines = default) =>
        functions.GetOrAdd((file, defines, entry), k => Module(k.File, k.Defines).GetFunction(k.Entry));

    public KernelModule Module(string file, KernelDefines defines = default) =>
        modules.GetOrAdd((file, defines), k => new Lazy<KernelModule>(
            () => device.LoadModule(Compiler.Compile(k.File, k.Defines)), LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    public void Dispose()
    {
        foreach (var m in modules.Values) if (m.IsValueCreated) m.Value.Dispose();
        modules.Clear();
        functions.Clear();
    }
}
