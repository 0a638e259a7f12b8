using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Llama4Native.Interop;

/// <summary>NCCL status codes (<c>ncclResult_t</c>, NCCL 2.x).</summary>
internal enum ncclResult_t
{
    ncclSuccess = 0,
    /// <summary>A CUDA call inside NCCL failed (no device, a bad stream, out of memory…).</summary>
    ncclUnhandledCudaError = 1,
    /// <summary>A system call failed (sockets, shared memory, /dev/shm too small in a container…).</summary>
    ncclSystemError = 2,
    ncclInternalError = 3,
    /// <summary>A bad argument: a null communicator or buffer, an unknown datatype or reduction.</summary>
    ncclInvalidArgument = 4,
    /// <summary>The calls do not match the rules: mismatched collectives across ranks, one thread driving several
    /// devices outside ncclGroupStart/ncclGroupEnd, a communicator used after destroy.</summary>
    ncclInvalidUsage = 5,
    /// <summary>Another rank failed or went away (network, a crashed process).</summary>
    ncclRemoteError = 6,
    /// <summary>A non-blocking communicator is still initialising or running the call.</summary>
    ncclInProgress = 7,
}

/// <summary><c>ncclDataType_t</c>.</summary>
internal enum ncclDataType_t
{
    ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5,
    ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9,
}

/// <summary><c>ncclRedOp_t</c> (the built-in ones).</summary>
internal enum ncclRedOp_t { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 }

/// <summary>An NCCL communicator handle (<c>ncclComm_t</c>): one rank's membership of a group.</summary>
internal readonly record struct ncclComm_t(nint Value)
{
    public bool IsNull => Value == 0;
}

/// <summary><c>ncclUniqueId</c>: 128 opaque bytes made by rank 0 (<see cref="Nccl.ncclGetUniqueId"/>) and given to
/// every rank before <see cref="Nccl.ncclCommInitRank"/> (over our TCP rendezvous when ranks are processes).</summary>
[InlineArray(128)]
internal struct ncclUniqueId
{
    byte _b;

    /// <summary>The id's 128 bytes (what the rendezvous sends).</summary>
    public readonly byte[] ToBytes() => ((ReadOnlySpan<byte>)this).ToArray();

    /// <summary>The id from the 128 bytes rank 0 sent; anything else is an error (rank 0 sent no NCCL id).</summary>
    public static ncclUniqueId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != 128)
            throw new ArgumentException($"an NCCL unique id is 128 bytes, the rendezvous gave {bytes.Length}: is rank 0 on a CUDA device with NCCL?");
        var id = new ncclUniqueId();
        bytes.CopyTo(id);
        return id;
    }
}

/// <summary>
/// Our bindings to NCCL (<c>nccl.h</c>, NCCL 2.22). The library is found by <see cref="NcclLocator"/> when the first
/// call binds; if it is not found that call throws <see cref="NcclNotFoundException"/> listing every place searched.
/// All collectives are asynchronous on the CUDA stream given; a single thread driving several devices must bracket
/// its per-device calls with <see cref="ncclGroupStart"/>/<see cref="ncclGroupEnd"/> (or they deadlock). Buffers are
/// device pointers; counts are elements of <c>datatype</c>. How NCCL fails: every call returns an
/// <see cref="ncclResult_t"/>; <see cref="Check"/> turns it into an <see cref="NcclException"/> naming the result, NCCL's
/// own text (<see cref="ncclGetErrorString"/>), its last error message and the fix.
/// </summary>
internal static partial class Nccl
{
    static Nccl() => NativeLibraryResolver.EnsureRegistered();

    /// <summary>Every entry point these bindings use: all must be exported by the library (a test checks the ELF).</summary>
    public static readonly IReadOnlyList<string> Symbols =
    [
        "ncclGetVersion", "ncclGetErrorString", "ncclGetLastError", "ncclGetUniqueId", "ncclCommInitRank", "ncclCommInitAll",
        "ncclCommDestroy", "ncclCommAbort", "ncclCommCount", "ncclCommCuDevice", "ncclCommUserRank", "ncclCommGetAsyncError",
        "ncclAllReduce", "ncclAllGather", "ncclReduceScatter", "ncclBroadcast", "ncclSend", "ncclRecv", "ncclGroupStart", "ncclGroupEnd",
    ];

    /// <summary>Throws <see cref="NcclException"/> unless <paramref name="r"/> is ncclSuccess.</summary>
    public static void Check(ncclResult_t r, [CallerArgumentExpression(nameof(r))] string expr = "")
    {
        if (r != ncclResult_t.ncclSuccess) throw new NcclException(r, expr, LastError(default));
    }

    /// <summary>The loaded library's version, e.g. 22203 for 2.22.3 (answers without a GPU).</summary>
    public static int Version
    {
        get { NcclLocator.Load(); Check(ncclGetVersion(out int v)); return v; }
    }

    /// <summary>NCCL's text for a result, e.g. "invalid argument".</summary>
    public static string ErrorString(ncclResult_t r)
    {
        NcclLocator.Load();
        return Marshal.PtrToStringUTF8(ncclGetErrorString(r)) ?? "";
    }

    /// <summary>NCCL's last error message (for <paramref name="comm"/>, or the thread's); empty when none or when NCCL is not loaded.</summary>
    public static string LastError(ncclComm_t comm)
    {
        if (NcclLocator.Chosen is null) return "";
        try { return Marshal.PtrToStringUTF8(ncclGetLastError(comm)) ?? ""; }
        catch (EntryPointNotFoundException) { return ""; }
    }

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclGetVersion(out int version);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial nint ncclGetErrorString(ncclResult_t result);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial nint ncclGetLastError(ncclComm_t comm);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclGetUniqueId(out ncclUniqueId uniqueId);

    /// <summary>Joins rank <paramref name="rank"/> of <paramref name="nranks"/> on the current CUDA context's device;
    /// blocks until every rank has called it with the same id.</summary>
    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommInitRank(out ncclComm_t comm, int nranks, ncclUniqueId commId, int rank);

    /// <summary>One process, <paramref name="ndev"/> devices: one communicator per device ordinal in <paramref name="devlist"/>.</summary>
    [LibraryImport(NativeLibraryNames.Nccl)]
    public static unsafe partial ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, int* devlist);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommDestroy(ncclComm_t comm);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommAbort(ncclComm_t comm);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommCount(ncclComm_t comm, out int count);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommCuDevice(ncclComm_t comm, out int device);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommUserRank(ncclComm_t comm, out int rank);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, out ncclResult_t asyncError);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclAllReduce(ulong sendbuff, ulong recvbuff, nuint count, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, nint stream);

    /// <summary>recvbuff holds nranks × sendcount elements, rank r's at r·sendcount.</summary>
    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclAllGather(ulong sendbuff, ulong recvbuff, nuint sendcount, ncclDataType_t datatype, ncclComm_t comm, nint stream);

    /// <summary>sendbuff holds nranks × recvcount elements; rank r receives the sum of every rank's block r.</summary>
    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclReduceScatter(ulong sendbuff, ulong recvbuff, nuint recvcount, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, nint stream);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclBroadcast(ulong sendbuff, ulong recvbuff, nuint count, ncclDataType_t datatype, int root, ncclComm_t comm, nint stream);

    /// <summary>Point-to-point (all-to-all(v) is a group of sends and receives, as NCCL documents it).</summary>
    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclSend(ulong sendbuff, nuint count, ncclDataType_t datatype, int peer, ncclComm_t comm, nint stream);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclRecv(ulong recvbuff, nuint count, ncclDataType_t datatype, int peer, ncclComm_t comm, nint stream);

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclGroupStart();

    [LibraryImport(NativeLibraryNames.Nccl)]
    public static partial ncclResult_t ncclGroupEnd();
}

/// <summary>
/// An NCCL call failed. The message reads like
/// <c>ncclAllReduce(…) failed: ncclInvalidUsage (invalid usage): …. Fix: …</c>.
/// </summary>
internal sealed class NcclException : Exception
{
    public NcclException(ncclResult_t result, string expression, string? lastError = null)
        : base(Format(result, expression, lastError))
    {
        Result = result; Expression = expression; LastError = lastError ?? "";
    }

    public ncclResult_t Result { get; }
    public string Expression { get; }
    /// <summary>NCCL's <c>ncclGetLastError</c> text at the time (often names the cause precisely).</summary>
    public string LastError { get; }

    /// <summary>What to do about a result, in one sentence.</summary>
    public static string Fix(ncclResult_t r) => r switch
    {
        ncclResult_t.ncclUnhandledCudaError => "a CUDA call inside NCCL failed: check that every rank's device exists and is not out of memory (LLAMA4_CUDA_SYNC=1, NCCL_DEBUG=WARN)",
        ncclResult_t.ncclSystemError => "a system call failed: check /dev/shm size (docker --shm-size), open file limits and the network interface (NCCL_SOCKET_IFNAME); NCCL_DEBUG=INFO says which",
        ncclResult_t.ncclInternalError => "NCCL hit an internal error: rerun with NCCL_DEBUG=INFO and report it with that log",
        ncclResult_t.ncclInvalidArgument => "a null communicator or buffer, or a count/datatype/root out of range was passed: this is a bug in the caller",
        ncclResult_t.ncclInvalidUsage => "ranks issued different collectives, or one thread drove several devices outside ncclGroupStart/End: every rank must issue the same collectives in the same order",
        ncclResult_t.ncclRemoteError => "another rank failed or its process/network went away: look at that rank's log first",
        ncclResult_t.ncclInProgress => "the communicator is non-blocking and still busy: poll ncclCommGetAsyncError",
        _ => "see NCCL_DEBUG=INFO",
    };

    static string Format(ncclResult_t r, string expr, string? last)
    {
        string text = "";
        try { if (NcclLocator.Chosen is not null) text = Nccl.ErrorString(r); } catch (Exception) { /* described without NCCL's text */ }
        var msg = text.Length > 0 ? $"{expr} failed: {r} ({text})" : $"{expr} failed: {r}";
        if (!string.IsNullOrWhiteSpace(last)) msg += $": {last.Trim()}";
        return $"{msg}. Fix: {Fix(r)}.";
    }
}
