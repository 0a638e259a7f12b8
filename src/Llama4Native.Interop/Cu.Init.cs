using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>
/// The CUDA driver API, one partial file per area (Init, Device, Context, Memory, Stream, Event, Module,
/// Launch, Graph). Methods carry the exact exported symbol names (<c>_v2</c> where the ABI has one), so
/// a grep for the C name finds the binding and <see cref="Check"/>'s message names the real entry point.
/// Every call returns a <see cref="CUresult"/>; wrap it in <see cref="Check"/> unless the code is a
/// normal outcome. Almost every call needs a current context on the calling thread (cuCtxSetCurrent):
/// without one they fail with CUDA_ERROR_INVALID_CONTEXT. Any call may also return an earlier
/// asynchronous error (a faulting kernel) — sticky ones (<see cref="CUresultExtensions.IsSticky"/>) then
/// come back from every call on that context.
/// </summary>
internal static partial class Cu
{
    static Cu() => NativeLibraryResolver.EnsureRegistered();

    /// <summary>Throws <see cref="CudaException"/> unless <paramref name="r"/> is CUDA_SUCCESS.</summary>
    /// <param name="r">The status a driver call returned.</param>
    /// <param name="expr">The call's source text, filled in by the compiler.</param>
    public static void Check(CUresult r, [CallerArgumentExpression(nameof(r))] string expr = "")
    {
        if (r != CUresult.CUDA_SUCCESS) throw new CudaException(r, expr);
    }

    /// <summary>
    /// Initialises the driver; must precede every other call except the version and error-name queries.
    /// <paramref name="flags"/> must be 0. Fails with CUDA_ERROR_NO_DEVICE (driver but no GPU),
    /// CUDA_ERROR_STUB_LIBRARY, CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (kernel module vs libcuda) or
    /// CUDA_ERROR_INVALID_DEVICE / CUDA_ERROR_NOT_PERMITTED in restricted containers. Idempotent.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuInit(uint flags);

    /// <summary>Driver's CUDA version as 1000*major + 10*minor (13000 = CUDA 13.0). Needs no cuInit.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuDriverGetVersion(out int driverVersion);

    /// <summary>
    /// The code's name ("CUDA_ERROR_OUT_OF_MEMORY") as a static NUL-terminated string owned by the driver.
    /// Returns CUDA_ERROR_INVALID_VALUE, with <paramref name="pStr"/> = null, for a code it does not know.
    /// </summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGetErrorName(CUresult error, out nint pStr);

    /// <summary>The code's description ("out of memory"); same ownership and failure as cuGetErrorName.</summary>
    [LibraryImport(NativeLibraryNames.Cuda)]
    public static partial CUresult cuGetErrorString(CUresult error, out nint pStr);

    /// <summary>
    /// Name and description of a code from the driver when it is loaded, else from our enum (name only).
    /// Never throws, so it is safe inside exception constructors and finalizers.
    /// </summary>
    public static (string Name, string Text) DescribeResult(CUresult r)
    {
        string name = Enum.IsDefined(r) ? r.ToString() : $"CUresult({(int)r})";
        string text = "";
        if (!CudaDriver.IsLibraryLoaded) return (name, text);
        try
        {
            if (cuGetErrorName(r, out var pn) == CUresult.CUDA_SUCCESS && pn != 0)
                name = Marshal.PtrToStringUTF8(pn) ?? name;
            if (cuGetErrorString(r, out var ps) == CUresult.CUDA_SUCCESS && ps != 0)
                text = Marshal.PtrToStringUTF8(ps) ?? "";
        }
        catch (EntryPointNotFoundException)
        {
            // A driver too old to have the name functions (pre-CUDA 6): keep our enum's name.
        }
        return (name, text);
    }
}
