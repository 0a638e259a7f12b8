using System.Runtime.InteropServices;
using Llama4Native.Devices;
using Llama4Native.Kernels;

namespace Llama4Native.Tests.Checkpoints;

/// <summary>
/// A minimal host-memory device for the loader tests: allocations are aligned host memory, copies are
/// memcpy, streams and events are no-ops, and a capacity is enforced. It runs no kernels, so it needs no
/// compiler; the upload path it exercises is the same one CUDA and the emulator run.
/// </summary>
internal sealed unsafe class HostTestDevice(long capacity = 1L << 34) : Device
{
    long used;
    readonly Nop stream = new();
    public long Allocations { get; private set; }
    public long Copies { get; private set; }

    public override DeviceKind Kind => DeviceKind.Emulated;
    public override string Name => "host test device";
    public override string Arch => "host";
    public override long TotalMemory => capacity;
    public override long FreeMemory => capacity - used;
    public override DeviceStream DefaultStream => stream;
    public override DeviceStream CreateStream() => new Nop();
    public override DeviceEvent CreateEvent(bool timing = false) => new NopEvent();

    public override DeviceBuffer Allocate(long bytes)
    {
        if (used + bytes > capacity)
            throw new DeviceOutOfMemoryException($"out of device memory on the host test device: asked for {bytes} bytes, {FreeMemory} free", bytes, FreeMemory);
        used += bytes;
        Allocations++;
        return new Buf(this, NativeMemory.AlignedAlloc((nuint)Math.Max(1, bytes), 256), bytes);
    }

    public override HostBuffer AllocatePinned(long bytes) => new Host(bytes);
    public override void CopyHostToDevice(void* src, DevicePtr dst, long bytes, DeviceStream? s = null) { Copies++; Buffer.MemoryCopy(src, (void*)dst.Value, bytes, bytes); }
    public override void CopyDeviceToHost(DevicePtr src, void* dst, long bytes, DeviceStream? s = null) => Buffer.MemoryCopy((void*)src.Value, dst, bytes, bytes);
    public override void CopyDeviceToDevice(DevicePtr src, DevicePtr dst, long bytes, DeviceStream? s = null) => Buffer.MemoryCopy((void*)src.Value, (void*)dst.Value, bytes, bytes);
    public override void Memset(DevicePtr dst, byte value, long bytes, DeviceStream? s = null) => NativeMemory.Fill((void*)dst.Value, (nuint)bytes, value);
    public override KernelModule LoadModule(CompiledModule compiled) => throw new NotSupportedException("the host test device runs no kernels");
    public override void Launch(KernelFunction function, Dim3 grid, Dim3 block, uint sharedBytes, void** args, DeviceStream? s = null) =>
        throw new NotSupportedException("the host test device runs no kernels");
    public override void Synchronize() { }
    public override KernelLibrary Kernels => throw new NotSupportedException("the host test device runs no kernels");
    protected override void Dispose(bool disposing) { }

    sealed class Buf(HostTestDevice dev, void* p, long bytes) : DeviceBuffer
    {
        void* ptr = p;
        public override Device Device => dev;
        public override DevicePtr Ptr => new((ulong)ptr);
        public override long Bytes => bytes;
        public override void Dispose()
        {
            if (ptr == null) return;
            NativeMemory.AlignedFree(ptr);
            ptr = null;
            dev.used -= bytes;
        }
    }

    sealed class Host(long bytes) : HostBuffer
    {
        void* p = NativeMemory.AlignedAlloc((nuint)Math.Max(1, bytes), 4096);
        public override void* Pointer => p;
        public override long Bytes => bytes;
        public override void Dispose() { if (p != null) { NativeMemory.AlignedFree(p); p = null; } }
    }

    sealed class Nop : DeviceStream
    {
        public override void Synchronize() { }
        public override nint Handle => 0;
        public override void Dispose() { }
    }

    sealed class NopEvent : DeviceEvent
    {
        public override void Record(DeviceStream? s = null) { }
        public override void Synchronize() { }
        public override float ElapsedMs(DeviceEvent end) => 0;
        public override void Dispose() { }
    }
}
