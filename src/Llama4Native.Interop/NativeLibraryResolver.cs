using System.Reflection;
using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>
/// Maps the logical names of <see cref="NativeLibraryNames"/> to loaded libraries. Registered once per
/// process from the static constructors of <see cref="Cu"/> and <see cref="Nvrtc"/>, which run before
/// their first native call.
/// </summary>
internal static class NativeLibraryResolver
{
    private static int _registered;

    public static void EnsureRegistered()
    {
        // SetDllImportResolver throws if called twice for one assembly.
        if (Interlocked.Exchange(ref _registered, 1) == 0)
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) => libraryName switch
    {
        // Zero lets the runtime throw DllNotFoundException; CudaDriver.TryLoad is the polite way to ask first.
        NativeLibraryNames.Cuda => CudaDriver.TryGetLibraryHandle(out var cuda) ? cuda : 0,
        // The locator throws its own exception listing every place searched; callers reach NVRTC through
        // Nvrtc/NvrtcCompiler, which call NvrtcLocator.Load() first, so this is only the backstop.
        NativeLibraryNames.Nvrtc => NvrtcLocator.Load().Handle,
        // Same for NCCL: Nccl's static constructor loads it first (NcclNotFoundException lists the places).
        NativeLibraryNames.Nccl => NcclLocator.Load().Handle,
        _ => 0,
    };
}
