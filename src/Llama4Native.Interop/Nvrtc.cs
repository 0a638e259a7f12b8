using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>NVRTC status codes (<c>nvrtcResult</c>, through CUDA 13).</summary>
internal enum nvrtcResult
{
    NVRTC_SUCCESS = 0,
    NVRTC_ERROR_OUT_OF_MEMORY = 1,
    NVRTC_ERROR_PROGRAM_CREATION_FAILURE = 2,
    NVRTC_ERROR_INVALID_INPUT = 3,
    NVRTC_ERROR_INVALID_PROGRAM = 4,
    /// <summary>An option is unknown or malformed (e.g. <c>--gpu-arch=</c>; the spelling is <c>--gpu-architecture=</c>).</summary>
    NVRTC_ERROR_INVALID_OPTION = 5,
    /// <summary>The source did not compile: the program log says why.</summary>
    NVRTC_ERROR_COMPILATION = 6,
    /// <summary>Usually: libnvrtc-builtins for this NVRTC version could not be loaded.</summary>
    NVRTC_ERROR_BUILTIN_OPERATION_FAILURE = 7,
    NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION = 8,
    NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION = 9,
    NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID = 10,
    NVRTC_ERROR_INTERNAL_ERROR = 11,
    NVRTC_ERROR_TIME_FILE_WRITE_FAILED = 12,
    NVRTC_ERROR_NO_PCH_CREATE_ATTEMPTED = 13,
    NVRTC_ERROR_PCH_CREATE_HEAP_EXHAUSTED = 14,
    NVRTC_ERROR_PCH_CREATE = 15,
    NVRTC_ERROR_CANCELLED = 16,
    NVRTC_ERROR_TIME_TRACE_FILE_WRITE_FAILED = 17,
    /// <summary>CUDA 13.</summary>
    NVRTC_ERROR_BUSY = 18,
}

/// <summary>
/// NVRTC, the runtime CUDA C++ → PTX/CUBIN compiler. Needs no GPU and no driver. Calls on different
/// programs may run concurrently; one program must not be used from two threads at once. The library is
/// found by <see cref="NvrtcLocator"/> when the first call binds (its builtins are preloaded then too);
/// if it is not found that first call throws <see cref="NvrtcNotFoundException"/> listing every place
/// searched. Nothing is cached on failure, so setting <see cref="NvrtcLocator.ExplicitPath"/> and
/// retrying works.
/// </summary>
internal static partial class Nvrtc
{
    static Nvrtc() => NativeLibraryResolver.EnsureRegistered();

    /// <summary>Throws <see cref="NvrtcException"/> unless <paramref name="r"/> is NVRTC_SUCCESS.</summary>
    public static void Check(nvrtcResult r, [CallerArgumentExpression(nameof(r))] string expr = "")
    {
        if (r != nvrtcResult.NVRTC_SUCCESS) throw new NvrtcException(r, expr);
    }

    /// <summary>The loaded NVRTC's version, e.g. (12, 4).</summary>
    public static (int Major, int Minor) Version
    {
        get
        {
            NvrtcLocator.Load();
            Check(nvrtcVersion(out int major, out int minor));
            return (major, minor);
        }
    }

    /// <summary>
    /// The real architectures this NVRTC can target, as numbers (75, 80, 86, 89, 90, ...; "a" variants
    /// are not listed separately). Use it to pick a CUBIN target or fall back to PTX for a newer GPU.
    /// </summary>
    public static unsafe IReadOnlyList<int> SupportedArchs
    {
        get
        {
            NvrtcLocator.Load();
            Check(nvrtcGetNumSupportedArchs(out int n));
            var archs = new int[n];
            fixed (int* p = archs) Check(nvrtcGetSupportedArchs(p));
            return archs;
        }
    }

    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nvrtcResult nvrtcGetNumSupportedArchs(out int numArchs);

    /// <summary>Fills a buffer of nvrtcGetNumSupportedArchs ints, ascending.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static unsafe partial nvrtcResult nvrtcGetSupportedArchs(int* supportedArchs);

    /// <summary>Static string for a code ("NVRTC_ERROR_COMPILATION"); never fails.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nint nvrtcGetErrorString(nvrtcResult result);

    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nvrtcResult nvrtcVersion(out int major, out int minor);

    /// <summary>
    /// Creates a program from NUL-terminated UTF-8 <paramref name="src"/>. <paramref name="name"/> is the
    /// file name used in diagnostics (may be null). <paramref name="headers"/>/<paramref name="includeNames"/>
    /// are parallel arrays of <paramref name="numHeaders"/> in-memory headers: <c>#include "name"</c>
    /// resolves to them first. NVRTC copies everything. NVRTC_ERROR_INVALID_INPUT for null src.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static unsafe partial nvrtcResult nvrtcCreateProgram(out nvrtcProgram prog, byte* src, byte* name,
                                                                int numHeaders, byte** headers, byte** includeNames);

    /// <summary>Destroys a program and nulls the handle. NVRTC_ERROR_INVALID_PROGRAM for a bad handle.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nvrtcResult nvrtcDestroyProgram(ref nvrtcProgram prog);

    /// <summary>
    /// Compiles. NVRTC_ERROR_COMPILATION for source errors and NVRTC_ERROR_INVALID_OPTION for bad options
    /// — the program log has the details in both cases. Typically 0.3-1 s.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static unsafe partial nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int numOptions, byte** options);

    /// <summary>PTX size in bytes, including the terminating NUL.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, out nuint ptxSizeRet);

    /// <summary>Copies the NUL-terminated PTX into a buffer of at least nvrtcGetPTXSize bytes.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static unsafe partial nvrtcResult nvrtcGetPTX(nvrtcProgram prog, byte* ptx);

    /// <summary>CUBIN size in bytes; 0 when the target was a virtual <c>compute_XX</c> (CUBIN needs <c>-arch=sm_XX</c>).</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, out nuint cubinSizeRet);

    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static unsafe partial nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, byte* cubin);

    /// <summary>Log size in bytes including the NUL (1 for an empty log).</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static partial nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, out nuint logSizeRet);

    [LibraryImport(NativeLibraryNames.Nvrtc)]
    public static unsafe partial nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, byte* log);

    /// <summary>Registers a C++ name expression (e.g. <c>"&amp;gemm&lt;128&gt;"</c>) before compiling, to look up its mangled name after.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nvrtcResult nvrtcAddNameExpression(nvrtcProgram prog, string nameExpression);

    /// <summary>The mangled name of a registered expression; the string is owned by the program.</summary>
    [LibraryImport(NativeLibraryNames.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nvrtcResult nvrtcGetLoweredName(nvrtcProgram prog, string nameExpression, out nint loweredName);
}

/// <summary>An NVRTC call failed; for compile failures <see cref="Log"/> is the full program log.</summary>
public sealed class NvrtcException : Exception
{
    internal NvrtcException(nvrtcResult result, string expression, string? log = null)
        : base(Format(result, expression, log))
    {
        Result = result;
        Expression = expression;
        Log = log ?? "";
    }

    internal nvrtcResult Result { get; }
    /// <summary>The NVRTC status name, e.g. "NVRTC_ERROR_COMPILATION".</summary>
    public string ResultName => Enum.IsDefined(Result) ? Result.ToString() : $"nvrtcResult({(int)Result})";
    /// <summary>The failing call's source text.</summary>
    public string Expression { get; }
    /// <summary>The program log (compiler diagnostics with file:line), or empty.</summary>
    public string Log { get; }

    private static string Format(nvrtcResult r, string expr, string? log)
    {
        var name = Enum.IsDefined(r) ? r.ToString() : $"nvrtcResult({(int)r})";
        var msg = $"{expr} failed: {name}";
        if (r == nvrtcResult.NVRTC_ERROR_BUILTIN_OPERATION_FAILURE)
            msg += $" (is libnvrtc-builtins for this NVRTC loadable? located: {NvrtcLocator.Chosen?.Describe() ?? "nothing"})";
        return string.IsNullOrWhiteSpace(log) ? msg : $"{msg}\n{log.TrimEnd()}";
    }
}
