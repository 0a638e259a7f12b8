using System.Runtime.InteropServices;
using System.Text;

namespace Llama4Native.Interop;

/// <summary>
/// Whether this machine can run CUDA, asked politely. <see cref="TryLoad"/> never throws: the runtime uses
/// it to choose between the CUDA device and the emulator. Everything else here requires it to have
/// succeeded (<see cref="EnsureAvailable"/>).
/// </summary>
internal static class CudaDriver
{
    private static readonly Lock Gate = new();
    private static nint _library;
    private static bool _libraryTried;
    private static bool? _usable;
    private static string _reason = "";

    /// <summary>True once the driver library is loaded (not necessarily initialised).</summary>
    public static bool IsLibraryLoaded => Volatile.Read(ref _library) != 0;

    /// <summary>
    /// Loads the driver library, runs cuInit(0) and counts devices — once per process, the outcome is
    /// cached. False, with a one-line <paramref name="reason"/>, when there is no driver library, cuInit
    /// fails or there are no devices.
    /// </summary>
    public static bool TryLoad(out string reason)
    {
        lock (Gate)
        {
            if (_usable is null)
            {
                _usable = Probe(out _reason);
            }
            reason = _reason;
            return _usable.Value;
        }
    }

    /// <summary>Throws <see cref="CudaUnavailableException"/> with <see cref="TryLoad"/>'s reason unless CUDA is usable.</summary>
    public static void EnsureAvailable()
    {
        if (!TryLoad(out var reason)) throw new CudaUnavailableException(reason);
    }

    /// <summary>The driver's CUDA version, e.g. (13, 0).</summary>
    public static (int Major, int Minor) Version
    {
        get
        {
            EnsureAvailable();
            Cu.Check(Cu.cuDriverGetVersion(out int v));
            return (v / 1000, v % 1000 / 10);
        }
    }

    /// <summary>Number of visible devices (at least 1 once <see cref="TryLoad"/> succeeded).</summary>
    public static int DeviceCount
    {
        get
        {
            EnsureAvailable();
            Cu.Check(Cu.cuDeviceGetCount(out int n));
            return n;
        }
    }

    /// <summary>Name and the attributes we tune by, for device <paramref name="ordinal"/>. Needs no context.</summary>
    public static unsafe CudaDeviceInfo GetDeviceInfo(int ordinal)
    {
        EnsureAvailable();
        Cu.Check(Cu.cuDeviceGet(out var dev, ordinal));
        byte* name = stackalloc byte[256];
        Cu.Check(Cu.cuDeviceGetName(name, 256, dev));
        Cu.Check(Cu.cuDeviceTotalMem_v2(out nuint total, dev));
        int A(CUdevice_attribute a) { Cu.Check(Cu.cuDeviceGetAttribute(out int v, a, dev), $"cuDeviceGetAttribute({a})"); return v; }
        return new CudaDeviceInfo(
            Ordinal: ordinal,
            Device: dev,
            Name: Marshal.PtrToStringUTF8((nint)name) ?? "",
            ComputeCapabilityMajor: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            ComputeCapabilityMinor: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            MultiprocessorCount: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            TotalMemoryBytes: (long)total,
            MaxThreadsPerBlock: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            WarpSize: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_WARP_SIZE),
            MaxSharedMemoryPerBlockBytes: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK),
            MaxSharedMemoryPerBlockOptinBytes: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
            MaxSharedMemoryPerMultiprocessorBytes: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR),
            RegistersPerMultiprocessor: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR),
            L2CacheBytes: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
            ClockKHz: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
            MemoryClockKHz: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
            MemoryBusWidthBits: A(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH));
    }

    /// <summary>The loaded driver library for the import resolver; loads it on first use (no cuInit).</summary>
    internal static bool TryGetLibraryHandle(out nint handle)
    {
        lock (Gate)
        {
            if (!_libraryTried)
            {
                _libraryTried = true;
                if (NativeLibrary.TryLoad(NativeLibraryNames.CudaDriverFile, out var h)) Volatile.Write(ref _library, h);
            }
            handle = _library;
            return handle != 0;
        }
    }

    private static bool Probe(out string reason)
    {
        if (!TryGetLibraryHandle(out _))
        {
            reason = $"CUDA driver library {NativeLibraryNames.CudaDriverFile} not found: no NVIDIA driver on this machine";
            return false;
        }
        try
        {
            var r = Cu.cuInit(0);
            if (r != CUresult.CUDA_SUCCESS)
            {
                reason = Describe("cuInit(0)", r);
                return false;
            }
            r = Cu.cuDeviceGetCount(out int n);
            if (r != CUresult.CUDA_SUCCESS)
            {
                reason = Describe("cuDeviceGetCount", r);
                return false;
            }
            if (n == 0)
            {
                reason = "the CUDA driver reports 0 devices (check CUDA_VISIBLE_DEVICES)";
                return false;
            }
            reason = $"{n} CUDA device(s)";
            return true;
        }
        catch (EntryPointNotFoundException e)
        {
            // A libcuda.so.1 too old for the symbols we bind.
            reason = $"CUDA driver library {NativeLibraryNames.CudaDriverFile} lacks an entry point we need: {e.Message}";
            return false;
        }
    }

    private static string Describe(string call, CUresult r)
    {
        var (name, text) = Cu.DescribeResult(r);
        var sb = new StringBuilder($"{call} failed: {name}");
        if (text.Length > 0) sb.Append($" ({text})");
        return sb.ToString();
    }
}

/// <summary>What we know about one device. Sizes in bytes, clocks in kHz.</summary>
internal sealed record CudaDeviceInfo(
    int Ordinal, CUdevice Device, string Name,
    int ComputeCapabilityMajor, int ComputeCapabilityMinor,
    int MultiprocessorCount, long TotalMemoryBytes,
    int MaxThreadsPerBlock, int WarpSize,
    int MaxSharedMemoryPerBlockBytes, int MaxSharedMemoryPerBlockOptinBytes, int MaxSharedMemoryPerMultiprocessorBytes,
    int RegistersPerMultiprocessor, int L2CacheBytes,
    int ClockKHz, int MemoryClockKHz, int MemoryBusWidthBits)
{
    /// <summary>The plain SASS target, e.g. "sm_90" (append "a" for arch-specific features such as wgmma).</summary>
    public string SmArch => $"sm_{ComputeCapabilityMajor}{ComputeCapabilityMinor}";

    /// <summary>Theoretical DRAM bandwidth, bytes/s: 2 transfers per clock × bus width (≈3.35e12 on H100 SXM).</summary>
    public double PeakMemoryBandwidthBytesPerSecond => 2.0 * MemoryClockKHz * 1000.0 * MemoryBusWidthBits / 8.0;
}
