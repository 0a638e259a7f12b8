using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>Flags of cuMemHostAlloc (<c>CU_MEMHOSTALLOC_*</c>).</summary>
[Flags]
internal enum CuMemHostAllocFlags : uint
{
    None = 0,
    /// <summary>Pinned for every context, not just the current one.</summary>
    Portable = 0x1,
    /// <summary>Also mapped into the device address space (cuMemHostGetDevicePointer).</summary>
    DeviceMap = 0x2,
    /// <summary>Write-combined: fast host writes and PCIe reads, very slow host reads.</summary>
    WriteCombined = 0x4,
}

/// <summary>Flags of cuMemHostRegister (<c>CU_MEMHOSTREGISTER_*</c>).</summary>
[Flags]
internal enum CuMemHostRegisterFlags : uint
{
    None = 0,
    Portable = 0x1,
    DeviceMap = 0x2,
    IoMemory = 0x4,
    ReadOnly = 0x8,
}

internal static partial class Cu
{
    /// <summary>
    /// Allocates <paramref name="bytesize"/> bytes of device memory in the current context, aligned to at
    /// least 256 bytes; not cleared. CUDA_ERROR_OUT_OF_MEMORY when it does not fit;
    /// CUDA_ERROR_INVALID_VALUE for 0 bytes.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuMemAlloc_v2(out CUdeviceptr dptr, nuint bytesize);

    /// <summary>
    /// Frees memory from cuMemAlloc_v2. Implicitly synchronises the device (waits for in-flight work), so
    /// do not free on hot paths. CUDA_ERROR_INVALID_VALUE for a pointer it did not allocate.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuMemFree_v2(CUdeviceptr dptr);

    /// <summary>Free and total device memory in bytes, as the driver sees it now (other processes included).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuMemGetInfo_v2(out nuint free, out nuint total);

    /// <summary>
    /// Copies host → device, ordered on <paramref name="hStream"/>. Truly asynchronous only from pinned
    /// host memory; from pageable memory the call returns once the source has been staged, so the source
    /// may be reused after return either way. Errors of the copy itself may surface later.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, void* srcHost, nuint byteCount, CUstream hStream);

    /// <summary>
    /// Copies device → host, ordered on <paramref name="hStream"/>. The destination is valid only after the
    /// stream is synchronised (pinned destination) — treat it as asynchronous always.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuMemcpyDtoHAsync_v2(void* dstHost, CUdeviceptr srcDevice, nuint byteCount, CUstream hStream);

    /// <summary>Copies device → device (same context) on <paramref name="hStream"/>; asynchronous.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, nuint byteCount, CUstream hStream);

    /// <summary>Sets <paramref name="n"/> bytes to <paramref name="value"/> on <paramref name="hStream"/>; asynchronous. (No _v2 exists.)</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuMemsetD8Async(CUdeviceptr dstDevice, byte value, nuint n, CUstream hStream);

    /// <summary>
    /// Allocates page-locked host memory (the fast path for async copies). Pinning too much starves the
    /// OS; fails with CUDA_ERROR_OUT_OF_MEMORY. Needs a current context. (No _v2 exists.)
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuMemHostAlloc(void** pp, nuint bytesize, CuMemHostAllocFlags flags);

    /// <summary>Frees memory from cuMemHostAlloc; synchronises like cuMemFree_v2.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuMemFreeHost(void* p);

    /// <summary>
    /// Page-locks an existing host range (e.g. a memory-mapped weight file) so copies from it run at full
    /// speed. Expensive (ms per GiB). CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED if any part is registered;
    /// CUDA_ERROR_NOT_PERMITTED / CUDA_ERROR_NOT_SUPPORTED for some mappings.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuMemHostRegister_v2(void* p, nuint bytesize, CuMemHostRegisterFlags flags);

    /// <summary>Undoes cuMemHostRegister_v2 (same base pointer); CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED otherwise.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuMemHostUnregister(void* p);
}
