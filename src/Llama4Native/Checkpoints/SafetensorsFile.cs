using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Llama4Native.Checkpoints;

/// <summary>
/// One safetensors file, memory-mapped read-only. The header is parsed and validated on open
/// (<see cref="SafetensorsHeader"/>); tensor data is handed out as pointers/spans straight into the
/// mapping — no copies. The mapping lives until Dispose; pointers must not outlive it.
/// </summary>
internal sealed unsafe class SafetensorsFile : IDisposable
{
    public string Path { get; }
    public long Length { get; }
    public SafetensorsHeader Header { get; }
    public IReadOnlyList<TensorEntry> Tensors => Header.Tensors;

    readonly MemoryMappedFile map;
    readonly MemoryMappedViewAccessor view;
    readonly byte* basePtr;
    readonly long dataStart;
    bool disposed;

    SafetensorsFile(string path, long length, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr,
                    SafetensorsHeader header, long dataStart)
    {
        Path = path; Length = length; this.map = map; this.view = view; this.basePtr = basePtr;
        Header = header; this.dataStart = dataStart;
    }

    /// <summary>Maps <paramref name="path"/> and validates its header; throws <see cref="CheckpointException"/>.</summary>
    public static SafetensorsFile Open(string path)
    {
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        }
        catch (FileNotFoundException) { throw new CheckpointException(path, null, "file not found"); }
        catch (DirectoryNotFoundException) { throw new CheckpointException(path, null, "file not found (its directory does not exist)"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException(path, null, $"cannot open it: {e.Message}", e);
        }
        long length = fs.Length;
        if (length < 8)
        {
            fs.Dispose();
            SafetensorsHeader.ReadHeaderLength([], length, path); // throws the "too short" error
        }
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* p = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            long n = SafetensorsHeader.ReadHeaderLength(new ReadOnlySpan<byte>(p, 8), length, path);
            var header = SafetensorsHeader.Parse(new ReadOnlySpan<byte>(p + 8, (int)n), length - 8 - n, path);
            return new SafetensorsFile(path, length, map, view, p, header, 8 + n);
        }
        catch
        {
            if (p != null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            if (map is null) fs.Dispose();
            map?.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => Header.ByName.ContainsKey(name);

    public TensorEntry Get(string name) =>
        Header.ByName.TryGetValue(name, out var t) ? t : throw new CheckpointException(Path, name, "is not in this file");

    /// <summary>Pointer to the tensor's first byte inside the mapping (valid until Dispose).</summary>
    public byte* Pointer(TensorEntry t)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        return basePtr + dataStart + t.Begin;
    }

    /// <summary>Pointer to the start of the data section.</summary>
    public byte* DataPointer => basePtr + dataStart;
    public long DataOffset => dataStart;

    /// <summary>The tensor's bytes as a span into the mapping (tensors up to 2 GiB; use <see cref="Pointer"/> beyond).</summary>
    public ReadOnlySpan<byte> Bytes(TensorEntry t)
    {
        if (t.Bytes > int.MaxValue)
            throw new InvalidOperationException($"{Path}: tensor '{t.Name}' is {t.Bytes} bytes, too large for a span; use Pointer()");
        return new ReadOnlySpan<byte>(Pointer(t), (int)t.Bytes);
    }

    public ReadOnlySpan<T> Span<T>(TensorEntry t) where T : unmanaged => MemoryMarshal.Cast<byte, T>(Bytes(t));

    /// <summary>Hints the kernel that [offset, offset+bytes) of the data section will be read soon, sequentially.</summary>
    public void Prefetch(long offset, long bytes) => Madvise.WillNeed(basePtr + dataStart + offset, bytes);

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        map.Dispose();
    }
}

/// <summary>madvise on Linux; a no-op elsewhere or when libc says no. Purely a performance hint.</summary>
static unsafe partial class Madvise
{
    const int MADV_SEQUENTIAL = 2, MADV_WILLNEED = 3;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int madvise(nint addr, nuint length, int advice);

    static bool unavailable = !OperatingSystem.IsLinux();

    public static void WillNeed(byte* p, long bytes) => Advise(p, bytes, MADV_WILLNEED);
    public static void Sequential(byte* p, long bytes) => Advise(p, bytes, MADV_SEQUENTIAL);

    static void Advise(byte* p, long bytes, int advice)
    {
        if (unavailable || bytes <= 0) return;
        const long page = 4096;
        long start = (long)p & ~(page - 1);
        long len = (long)p + bytes - start;
        try { madvise((nint)start, (nuint)len, advice); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { unavailable = true; }
    }
}
