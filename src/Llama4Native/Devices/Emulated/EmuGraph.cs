using System.Runtime.InteropServices;

namespace Llama4Native.Devices.Emulated;

/// <summary>
/// A captured launch list on the emulated device: each launch with a copy of its argument VALUES (the caller's
/// `void**` points at its own stack), device copies and fills in order. <see cref="Launch"/> replays them, so the
/// path a CUDA graph takes (fixed addresses, sizes read from device memory) runs here too.
/// </summary>
internal sealed unsafe class EmuGraph(EmuDevice dev, EmuGraph.Node[] nodes) : DeviceGraph
{
    public override int Nodes => nodes.Length;

    public override void Launch(DeviceStream? stream = null)
    {
        foreach (var n in nodes) dev.Replay(n);
    }

    public override void Dispose() { foreach (var n in nodes) n.Free(); }

    internal sealed class Node
    {
        KernelFunction? fn; Dim3 grid, block; uint shared;
        byte* blob; int count; int[] offsets = [];
        DevicePtr src, dst; long bytes; int fill = -1;

        public static Node Launch(KernelFunction f, Dim3 grid, Dim3 block, uint shared, void** args)
        {
            var sizes = ParamSizes(f);
            var n = new Node { fn = f, grid = grid, block = block, shared = shared, count = sizes.Length, offsets = new int[sizes.Length] };
            int total = 0;
            for (int i = 0; i < sizes.Length; i++) { n.offsets[i] = total; total += (sizes[i] + 15) / 16 * 16; }
            n.blob = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(16, total), 16);
            for (int i = 0; i < sizes.Length; i++) Buffer.MemoryCopy(args[i], n.blob + n.offsets[i], sizes[i], sizes[i]);
            return n;
        }

        public static Node Copy(DevicePtr src, DevicePtr dst, long bytes) => new() { src = src, dst = dst, bytes = bytes };
        public static Node Fill(DevicePtr dst, byte value, long bytes) => new() { dst = dst, bytes = bytes, fill = value };

        public void Run(EmuDevice dev, EmuRuntime rt)
        {
            if (fn is not null)
            {
                void** args = stackalloc void*[Math.Max(1, count)];
                for (int i = 0; i < count; i++) args[i] = blob + offsets[i];
                dev.LaunchObserver?.Invoke(fn, grid, block, shared);
                rt.Launch(fn, grid, block, shared, args, dev.Check);
            }
            else
            {
                if (fill >= 0) NativeMemory.Fill((void*)dst.Value, (nuint)bytes, (byte)fill);
                else Buffer.MemoryCopy((void*)src.Value, (void*)dst.Value, bytes, bytes);
                dev.Written(dst, bytes);
            }
        }

        public void Free() { if (blob != null) { NativeMemory.AlignedFree(blob); blob = null; } }
    }

    static readonly System.Collections.Concurrent.ConcurrentDictionary<nint, int[]> sizesByFunction = new();

    /// <summary>Sizes of a kernel's parameters, from the trampoline's probe (kernels/emu/module.h, L4EMU_PROBE).</summary>
    static int[] ParamSizes(KernelFunction f) => sizesByFunction.GetOrAdd(f.Handle, h =>
    {
        // l4emu_kernel = { const char* name; void (*entry)(void**); unsigned max_threads; }
        var entry = (delegate* unmanaged<void**, void>)((nint*)h)[1];
        uint* out_ = stackalloc uint[129];
        out_[0] = 0;
        void** probe = stackalloc void*[3];
        probe[0] = null; probe[1] = (void*)0x4c34454d5550524fUL; probe[2] = out_;
        entry(probe);
        if (out_[0] == 0 || out_[0] > 128)
            throw new NotSupportedException($"kernel {f.Name}: its parameter sizes are unknown (a kernel without parameters, or a module built before the probe); it cannot be captured");
        var s = new int[out_[0]];
        for (int i = 0; i < s.Length; i++) s[i] = (int)out_[i + 1];
        return s;
    });
}
