namespace Llama4Native.Interop;

/// <summary>
/// The native libraries we bind, in one place. The names in <c>[LibraryImport]</c> are logical: the
/// assembly's import resolver (<see cref="NativeLibraryResolver"/>) maps them to a real file, because
/// neither has a name the default probing finds everywhere (the driver is versioned, NVRTC's soname
/// changes with every CUDA major release and often lives outside the loader path).
/// </summary>
internal static class NativeLibraryNames
{
    /// <summary>Logical name of the CUDA driver API library.</summary>
    public const string Cuda = "llama4native-cuda";

    /// <summary>Logical name of NVRTC, the runtime CUDA C++ compiler.</summary>
    public const string Nvrtc = "llama4native-nvrtc";

    /// <summary>Logical name of NCCL, NVIDIA's collective communication library (several devices).</summary>
    public const string Nccl = "llama4native-nccl";

    /// <summary>
    /// The driver library file. It ships with the NVIDIA display driver, not the toolkit: on Linux
    /// always the soname <c>libcuda.so.1</c> (never the unversioned dev symlink, which may be a stub).
    /// </summary>
    public static string CudaDriverFile => OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";

    /// <summary>NVRTC library names the default loader may find, newest CUDA major first.</summary>
    public static IReadOnlyList<string> NvrtcSonames => OperatingSystem.IsWindows()
        ? ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"]
        : ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"];

    /// <summary>NCCL library names the default loader may find (NCCL 2 keeps soname .so.2).</summary>
    public static IReadOnlyList<string> NcclSonames => ["libnccl.so.2", "libnccl.so"];
}
