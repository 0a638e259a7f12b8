namespace Llama4Native.Interop;

/// <summary>
/// Every status code of the CUDA driver API (cuda.h, through CUDA 13). Member names are cuda.h's, so
/// <c>ToString()</c> gives the same text as <c>cuGetErrorName</c> even when no driver is loaded.
/// Codes marked "sticky" leave the context unusable: the process must exit to use the device again.
/// </summary>
internal enum CUresult
{
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    /// <summary>cuInit has not been called (or failed).</summary>
    CUDA_ERROR_NOT_INITIALIZED = 3,
    /// <summary>The driver is shutting down (seen from finalizers at process exit).</summary>
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_PROFILER_DISABLED = 5,
    CUDA_ERROR_PROFILER_NOT_INITIALIZED = 6,
    CUDA_ERROR_PROFILER_ALREADY_STARTED = 7,
    CUDA_ERROR_PROFILER_ALREADY_STOPPED = 8,
    /// <summary>The loaded libcuda is the toolkit's link stub, not the real driver.</summary>
    CUDA_ERROR_STUB_LIBRARY = 34,
    CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_DEVICE_NOT_LICENSED = 102,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_CONTEXT_ALREADY_CURRENT = 202,
    CUDA_ERROR_MAP_FAILED = 205,
    CUDA_ERROR_UNMAP_FAILED = 206,
    CUDA_ERROR_ARRAY_IS_MAPPED = 207,
    CUDA_ERROR_ALREADY_MAPPED = 208,
    /// <summary>The module has neither SASS for this GPU nor PTX the driver can JIT.</summary>
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_ALREADY_ACQUIRED = 210,
    CUDA_ERROR_NOT_MAPPED = 211,
    CUDA_ERROR_NOT_MAPPED_AS_ARRAY = 212,
    CUDA_ERROR_NOT_MAPPED_AS_POINTER = 213,
    CUDA_ERROR_ECC_UNCORRECTABLE = 214,
    CUDA_ERROR_UNSUPPORTED_LIMIT = 215,
    CUDA_ERROR_CONTEXT_ALREADY_IN_USE = 216,
    CUDA_ERROR_PEER_ACCESS_UNSUPPORTED = 217,
    /// <summary>The driver's PTX JIT failed (see the JIT log).</summary>
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_GRAPHICS_CONTEXT = 219,
    CUDA_ERROR_NVLINK_UNCORRECTABLE = 220,
    CUDA_ERROR_JIT_COMPILER_NOT_FOUND = 221,
    /// <summary>The PTX ISA version is newer than this driver understands (e.g. PTX 8.4 on a pre-R550 driver).</summary>
    CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
    CUDA_ERROR_JIT_COMPILATION_DISABLED = 223,
    CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY = 224,
    CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC = 225,
    /// <summary>Sticky (CUDA 12.8+).</summary>
    CUDA_ERROR_CONTAINED = 226,
    CUDA_ERROR_INVALID_SOURCE = 300,
    CUDA_ERROR_FILE_NOT_FOUND = 301,
    CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND = 302,
    CUDA_ERROR_SHARED_OBJECT_INIT_FAILED = 303,
    CUDA_ERROR_OPERATING_SYSTEM = 304,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_ILLEGAL_STATE = 401,
    CUDA_ERROR_LOSSY_QUERY = 402,
    /// <summary>A named symbol (e.g. a kernel in cuModuleGetFunction) does not exist.</summary>
    CUDA_ERROR_NOT_FOUND = 500,
    /// <summary>Not an error for queries: the work is still running.</summary>
    CUDA_ERROR_NOT_READY = 600,
    /// <summary>Sticky. A kernel read or wrote outside any allocation.</summary>
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    /// <summary>Too many registers or too much shared memory for the requested block size.</summary>
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    /// <summary>Sticky. Watchdog timeout (display GPUs).</summary>
    CUDA_ERROR_LAUNCH_TIMEOUT = 702,
    CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING = 703,
    CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704,
    CUDA_ERROR_PEER_ACCESS_NOT_ENABLED = 705,
    CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE = 708,
    CUDA_ERROR_CONTEXT_IS_DESTROYED = 709,
    /// <summary>Sticky. A device-side assert fired.</summary>
    CUDA_ERROR_ASSERT = 710,
    CUDA_ERROR_TOO_MANY_PEERS = 711,
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
    /// <summary>Sticky.</summary>
    CUDA_ERROR_HARDWARE_STACK_ERROR = 714,
    /// <summary>Sticky.</summary>
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715,
    /// <summary>Sticky. E.g. a 16-byte vector load from an address that is not 16-byte aligned.</summary>
    CUDA_ERROR_MISALIGNED_ADDRESS = 716,
    /// <summary>Sticky.</summary>
    CUDA_ERROR_INVALID_ADDRESS_SPACE = 717,
    /// <summary>Sticky.</summary>
    CUDA_ERROR_INVALID_PC = 718,
    /// <summary>Sticky. An unspecified exception while a kernel ran.</summary>
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720,
    /// <summary>Sticky (CUDA 12.8+). A kernel exited holding tensor memory.</summary>
    CUDA_ERROR_TENSOR_MEMORY_LEAK = 721,
    CUDA_ERROR_NOT_PERMITTED = 800,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_SYSTEM_NOT_READY = 802,
    /// <summary>The kernel module and the user-space driver (libcuda) are different versions.</summary>
    CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803,
    CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE = 804,
    CUDA_ERROR_MPS_CONNECTION_FAILED = 805,
    CUDA_ERROR_MPS_RPC_FAILURE = 806,
    CUDA_ERROR_MPS_SERVER_NOT_READY = 807,
    CUDA_ERROR_MPS_MAX_CLIENTS_REACHED = 808,
    CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED = 809,
    CUDA_ERROR_MPS_CLIENT_TERMINATED = 810,
    CUDA_ERROR_CDP_NOT_SUPPORTED = 811,
    CUDA_ERROR_CDP_VERSION_MISMATCH = 812,
    /// <summary>The call is not allowed while its stream is being captured.</summary>
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    /// <summary>An earlier error invalidated the capture; cuStreamEndCapture reports it.</summary>
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    CUDA_ERROR_STREAM_CAPTURE_MERGE = 902,
    CUDA_ERROR_STREAM_CAPTURE_UNMATCHED = 903,
    CUDA_ERROR_STREAM_CAPTURE_UNJOINED = 904,
    CUDA_ERROR_STREAM_CAPTURE_ISOLATION = 905,
    /// <summary>Work on the legacy NULL stream during a capture (use our own streams).</summary>
    CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906,
    CUDA_ERROR_CAPTURED_EVENT = 907,
    CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908,
    CUDA_ERROR_TIMEOUT = 909,
    CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE = 910,
    CUDA_ERROR_EXTERNAL_DEVICE = 911,
    CUDA_ERROR_INVALID_CLUSTER_SIZE = 912,
    CUDA_ERROR_FUNCTION_NOT_LOADED = 913,
    CUDA_ERROR_INVALID_RESOURCE_TYPE = 914,
    CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION = 915,
    CUDA_ERROR_KEY_ROTATION = 916,
    /// <summary>CUDA 13.1+.</summary>
    CUDA_ERROR_STREAM_DETACHED = 917,
    /// <summary>CUDA 13.x.</summary>
    CUDA_ERROR_GRAPH_RECAPTURE_FAILURE = 918,
    CUDA_ERROR_UNKNOWN = 999,
}

internal static class CUresultExtensions
{
    /// <summary>
    /// True for the errors after which the context is corrupt: every later call on it fails with the same
    /// code, so the only recovery is a new process.
    /// </summary>
    public static bool IsSticky(this CUresult r) => r is CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        or CUresult.CUDA_ERROR_LAUNCH_TIMEOUT or CUresult.CUDA_ERROR_ASSERT
        or CUresult.CUDA_ERROR_HARDWARE_STACK_ERROR or CUresult.CUDA_ERROR_ILLEGAL_INSTRUCTION
        or CUresult.CUDA_ERROR_MISALIGNED_ADDRESS or CUresult.CUDA_ERROR_INVALID_ADDRESS_SPACE
        or CUresult.CUDA_ERROR_INVALID_PC or CUresult.CUDA_ERROR_LAUNCH_FAILED
        or CUresult.CUDA_ERROR_CONTAINED or CUresult.CUDA_ERROR_TENSOR_MEMORY_LEAK
        or CUresult.CUDA_ERROR_ECC_UNCORRECTABLE or CUresult.CUDA_ERROR_NVLINK_UNCORRECTABLE;
}
