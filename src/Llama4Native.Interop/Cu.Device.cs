using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>
/// The device attributes we read (values from cuda.h's <c>CUdevice_attribute</c>). All are ints;
/// units are in the comments.
/// </summary>
internal enum CUdevice_attribute
{
    CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1,
    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X = 2,
    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y = 3,
    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z = 4,
    CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X = 5,
    CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y = 6,
    CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z = 7,
    /// <summary>Bytes of static+dynamic shared memory a block gets without opting in (48 KiB).</summary>
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8,
    /// <summary>Bytes.</summary>
    CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY = 9,
    CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10,
    /// <summary>32-bit registers.</summary>
    CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK = 12,
    /// <summary>Peak SM clock, kHz.</summary>
    CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13,
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_INTEGRATED = 18,
    CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY = 19,
    CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS = 31,
    CU_DEVICE_ATTRIBUTE_ECC_ENABLED = 32,
    CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33,
    CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34,
    /// <summary>Peak memory clock, kHz.</summary>
    CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36,
    /// <summary>Global memory bus width, bits.</summary>
    CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37,
    /// <summary>Bytes.</summary>
    CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38,
    CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR = 39,
    CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT = 40,
    CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING = 41,
    CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    /// <summary>Bytes per SM.</summary>
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81,
    CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR = 82,
    CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY = 83,
    CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH = 95,
    /// <summary>Bytes a block may use after cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) (227 KiB on H100).</summary>
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
    CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED = 99,
    CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR = 106,
    /// <summary>Bytes.</summary>
    CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE = 108,
    CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED = 115,
}

internal static partial class Cu
{
    /// <summary>Number of devices this process may use (after CUDA_VISIBLE_DEVICES). 0 is a success.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDeviceGetCount(out int count);

    /// <summary>Handle of device <paramref name="ordinal"/>; CUDA_ERROR_INVALID_DEVICE when out of range.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDeviceGet(out CUdevice device, int ordinal);

    /// <summary>
    /// Writes the NUL-terminated product name into <paramref name="name"/> (at most <paramref name="len"/>
    /// bytes, truncated if longer). CUDA_ERROR_INVALID_VALUE for a null buffer or len &lt;= 0.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuDeviceGetName(byte* name, int len, CUdevice dev);

    /// <summary>One attribute value; CUDA_ERROR_INVALID_VALUE for an attribute this driver does not know.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDeviceGetAttribute(out int value, CUdevice_attribute attrib, CUdevice dev);

    /// <summary>Total device memory in bytes (the _v2 ABI returns size_t).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDeviceTotalMem_v2(out nuint bytes, CUdevice dev);
}
