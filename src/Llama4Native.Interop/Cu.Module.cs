using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>Options of cuModuleLoadDataEx (<c>CUjit_option</c>), the subset we pass.</summary>
internal enum CUjit_option
{
    /// <summary>Value: unsigned int, max registers per thread for the JIT.</summary>
    CU_JIT_MAX_REGISTERS = 0,
    /// <summary>Value out: float, milliseconds the JIT took.</summary>
    CU_JIT_WALL_TIME = 2,
    /// <summary>Value: char*, buffer for informational messages.</summary>
    CU_JIT_INFO_LOG_BUFFER = 3,
    /// <summary>Value in: buffer size in bytes (as a pointer-sized integer); out: bytes written.</summary>
    CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
    /// <summary>Value: char*, buffer for error messages.</summary>
    CU_JIT_ERROR_LOG_BUFFER = 5,
    /// <summary>Value in: buffer size in bytes; out: bytes written.</summary>
    CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
    /// <summary>Value: unsigned int 0-4 (default 4).</summary>
    CU_JIT_OPTIMIZATION_LEVEL = 7,
    /// <summary>Value: int, 1 = verbose log (ptxas -v style).</summary>
    CU_JIT_LOG_VERBOSE = 12,
    /// <summary>Value: int, 1 = line info for profilers.</summary>
    CU_JIT_GENERATE_LINE_INFO = 13,
}

/// <summary>Kernel attributes (<c>CUfunction_attribute</c>). Read-only unless noted; all are ints.</summary>
internal enum CUfunction_attribute
{
    /// <summary>Largest block this kernel can launch with, given its register use.</summary>
    CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0,
    /// <summary>Bytes of static shared memory.</summary>
    CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1,
    /// <summary>Bytes of user constant memory.</summary>
    CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES = 2,
    /// <summary>Bytes of local memory per thread (stack frame + spills).</summary>
    CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3,
    /// <summary>Registers per thread.</summary>
    CU_FUNC_ATTRIBUTE_NUM_REGS = 4,
    /// <summary>PTX ISA version × 10 it was compiled from.</summary>
    CU_FUNC_ATTRIBUTE_PTX_VERSION = 5,
    /// <summary>SASS architecture × 10 (90 = sm_90).</summary>
    CU_FUNC_ATTRIBUTE_BINARY_VERSION = 6,
    CU_FUNC_ATTRIBUTE_CACHE_MODE_CA = 7,
    /// <summary>
    /// Settable. Bytes of dynamic shared memory a launch may request. Default 48 KiB minus static; raise
    /// it (up to the device's MAX_SHARED_MEMORY_PER_BLOCK_OPTIN minus static) before launching with more,
    /// or the launch fails with CUDA_ERROR_INVALID_VALUE.
    /// </summary>
    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
    /// <summary>Settable. Preferred L1/shared split, percent of max shared (hint).</summary>
    CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 9,
    CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET = 10,
    CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH = 11,
    CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT = 12,
    CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH = 13,
    /// <summary>Settable. Allow cluster sizes above 8 (sm_90: up to 16).</summary>
    CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14,
    CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE = 15,
}

internal static partial class Cu
{
    /// <summary>
    /// Loads a CUBIN, fatbin or NUL-terminated PTX image into the current context (PTX is JIT-compiled
    /// here, which can take seconds). Fails with CUDA_ERROR_NO_BINARY_FOR_GPU (CUBIN for another arch),
    /// CUDA_ERROR_INVALID_PTX, CUDA_ERROR_UNSUPPORTED_PTX_VERSION (driver older than the PTX ISA),
    /// CUDA_ERROR_INVALID_IMAGE. The image is copied; the buffer may be freed after return.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuModuleLoadData(out CUmodule module, void* image);

    /// <summary>
    /// cuModuleLoadData with JIT options: how we get the JIT's error log when PTX fails to load.
    /// <paramref name="optionValues"/> holds, per option, either a pointer or an integer cast to a pointer;
    /// size options are overwritten with the bytes written.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static unsafe partial CUresult cuModuleLoadDataEx(out CUmodule module, void* image, uint numOptions,
                                                            CUjit_option* options, void** optionValues);

    /// <summary>Unloads a module; its CUfunctions become invalid. Waits for none of its running kernels — synchronise first.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuModuleUnload(CUmodule hmod);

    /// <summary>
    /// Finds a kernel by its (mangled) name. CUDA_ERROR_NOT_FOUND if absent: C++ kernels need
    /// <c>extern "C"</c> or their mangled name.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda, StringMarshalling = StringMarshalling.Utf8)]
    public static partial CUresult cuModuleGetFunction(out CUfunction hfunc, CUmodule hmod, string name);

    /// <summary>Reads a kernel attribute (note the C argument order: value first, function last).</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuFuncGetAttribute(out int value, CUfunction_attribute attrib, CUfunction hfunc);

    /// <summary>Sets a settable kernel attribute; CUDA_ERROR_INVALID_VALUE for a value out of range.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value);
}
