using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Kernels;

namespace Llama4Native.Bench;

/// <summary>
/// Checkpoint load throughput vs memcpy, same machine, same run, same byte count.
///
/// Setup writes (once per benchmark process) a ≥ 4 GB synthetic checkpoint at Scout width — D 5120, 40/8
/// heads, I 8192, 4 experts, 3 layers, V 32000, text only, 1 GB shards — unless LLAMA4_BENCH_MODEL names an
/// existing checkpoint, then reads it once so the runs are page-cached. <see cref="Load"/> is the whole
/// <see cref="WeightLoader"/> path (mapped pages → pinned staging → device arena) onto a host-memory device
/// (so here it measures the host side: page-cache reads and staging copies); <see cref="Memcpy"/> copies
/// the same number of bytes between two touched 1 GiB host buffers, single-threaded, as the baseline. The
/// Ratio column is load GB/s as a fraction of memcpy GB/s. On a GPU machine `llama4 bench-load` measures end to end.
/// </summary>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5)]
public class LoadBench
{
    public const string ConfigJson = """
        {
          "architectures": ["Llama4ForCausalLM"], "model_type": "llama4_text",
          "attention_chunk_size": 8192, "attn_scale": 0.1, "attn_temperature_tuning": true, "floor_scale": 8192,
          "head_dim": 128, "hidden_size": 5120, "interleave_moe_layer_step": 1, "intermediate_size": 8192,
          "intermediate_size_mlp": 16384, "max_position_embeddings": 10485760, "no_rope_layer_interval": 4,
          "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 3, "num_key_value_heads": 8,
          "num_local_experts": 4, "rms_norm_eps": 1e-05, "hidden_act": "silu",
          "rope_scaling": {"factor": 16.0, "high_freq_factor": 1.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "rope_theta": 500000.0, "use_qk_norm": true, "vocab_size": 32000, "tie_word_embeddings": false
        }
        """;

    string dir = "";
    bool ownDir;
    Checkpoint? ckpt;
    HostMemoryDevice? device;
    unsafe void* src, dst;
    long bytes, chunk;

    [GlobalSetup]
    public unsafe void Setup()
    {
        dir = Environment.GetEnvironmentVariable("LLAMA4_BENCH_MODEL") ?? "";
        if (dir.Length == 0)
        {
            dir = Path.Combine(Path.GetTempPath(), $"llama4-loadbench-{Environment.ProcessId}");
            ownDir = true;
            Synth.Write(ConfigJson, dir, new SynthOptions(Seed: 1, MaxShardBytes: 1_000_000_000));
        }
        ckpt = Checkpoint.Open(dir);
        bytes = ckpt.TotalBytes;
        long sum = 0;
        foreach (var s in ckpt.Shards)
            for (long i = 0; i < s.Header.DataLength; i += 4096) sum += s.DataPointer[i];
        Console.WriteLine($"// checkpoint {dir}: {ckpt.Tensors.Count} tensors, {bytes / 1e9:0.00} GB in {ckpt.Shards.Count} shards (warm, {sum & 1})");
        device = new HostMemoryDevice();
        // 1 GiB buffers copied repeatedly up to the checkpoint's byte count: same bytes, bounded memory.
        chunk = Math.Min(bytes, 1L << 30);
        src = NativeMemory.AlignedAlloc((nuint)chunk, 4096);
        dst = NativeMemory.AlignedAlloc((nuint)chunk, 4096);
        NativeMemory.Fill(src, (nuint)chunk, 1);
        NativeMemory.Fill(dst, (nuint)chunk, 2);
    }

    [Benchmark(Baseline = true)]
    public unsafe void Memcpy()
    {
        for (long done = 0; done < bytes; done += chunk)
        {
            long n = Math.Min(chunk, bytes - done);
            Buffer.MemoryCopy(src, dst, n, n);
        }
    }

    [Benchmark]
    public void Load()
    {
        using var w = WeightLoader.Load(ckpt!, device!);
    }

    [GlobalCleanup]
    public unsafe void Cleanup()
    {
        ckpt?.Dispose();
        NativeMemory.AlignedFree(src);
        NativeMemory.AlignedFree(dst);
        if (ownDir) Directory.Delete(dir, true);
    }
}

/// <summary>
/// Host-memory stand-in device for the benchmark (the emulated device needs the kernel toolchain). Its memory
/// behaves like GPU memory: resident once allocated. Freed blocks are kept and handed out again (pre-faulted),
/// because first-touch page faults on fresh anonymous memory — about 0.27 GB/s on a Firecracker/PVM guest —
/// would otherwise dominate and measure the hypervisor, not the loader. <see cref="FirstTouch"/> = true turns
/// the pool off to measure that too.
/// </summary>
internal sealed unsafe class HostMemoryDevice(bool firstTouch = false) : Device
{
    public bool FirstTouch { get; } = firstTouch;
    readonly Dictionary<long, Stack<nint>> pool = new();

    nint Take(long bytes, int align)
    {
        lock (pool)
            if (!FirstTouch && pool.TryGetValue(bytes, out var st) && st.Count > 0) return st.Pop();
        return (nint)NativeMemory.AlignedAlloc((nuint)Math.Max(1, bytes), (nuint)align);
    }

    void Give(nint p, long bytes)
    {
        if (FirstTouch) { NativeMemory.AlignedFree((void*)p); return; }
        lock (pool)
        {
            if (!pool.TryGetValue(bytes, out var st)) pool[bytes] = st = new Stack<nint>();
            st.Push(p);
        }
    }

    public override DeviceKind Kind => DeviceKind.Emulated;
    public override string Name => "host memory" + (FirstTouch ? " (fresh pages)" : " (resident pages)");
    public override string Arch => "host";
    public override long TotalMemory => long.MaxValue;
    public override long FreeMemory => long.MaxValue;
    public override DeviceStream DefaultStream { get; } = new NopStream();
    public override DeviceStream CreateStream() => new NopStream();
    public override DeviceEvent CreateEvent(bool timing = false) => new NopEvent();
    public override DeviceBuffer Allocate(long bytes) => new Buf(this, bytes);
    public override HostBuffer AllocatePinned(long bytes) => new HostBuf(this, bytes);
    public override void CopyHostToDevice(void* src, DevicePtr dst, long bytes, DeviceStream? s = null) => Buffer.MemoryCopy(src, (void*)dst.Value, bytes, bytes);
    public override void CopyDeviceToHost(DevicePtr src, void* dst, long bytes, DeviceStream? s = null) => Buffer.MemoryCopy((void*)src.Value, dst, bytes, bytes);
    public override void CopyDeviceToDevice(DevicePtr src, DevicePtr dst, long bytes, DeviceStream? s = null) => Buffer.MemoryCopy((void*)src.Value, (void*)dst.Value, bytes, bytes);
    public override void Memset(DevicePtr dst, byte value, long bytes, DeviceStream? s = null) => NativeMemory.Fill((void*)dst.Value, (nuint)bytes, value);
    public override KernelModule LoadModule(CompiledModule compiled) => throw new NotSupportedException();
    public override void Launch(KernelFunction f, Dim3 g, Dim3 b, uint sh, void** args, DeviceStream? s = null) => throw new NotSupportedException();
    public override void Synchronize() { }
    public override KernelLibrary Kernels => throw new NotSupportedException();
    protected override void Dispose(bool disposing)
    {
        lock (pool)
            foreach (var st in pool.Values)
                while (st.Count > 0) NativeMemory.AlignedFree((void*)st.Pop());
    }

    sealed class Buf(HostMemoryDevice dev, long bytes) : DeviceBuffer
    {
        nint p = dev.Take(bytes, 256);
        public override Device Device => dev;
        public override DevicePtr Ptr => new((ulong)p);
        public override long Bytes => bytes;
        public override void Dispose() { if (p != 0) { dev.Give(p, bytes); p = 0; } }
    }
    sealed class HostBuf(HostMemoryDevice dev, long bytes) : HostBuffer
    {
        nint p = dev.Take(bytes, 4096);
        public override void* Pointer => (void*)p;
        public override long Bytes => bytes;
        public override void Dispose() { if (p != 0) { dev.Give(p, bytes); p = 0; } }
    }
    sealed class NopStream : DeviceStream { public override void Synchronize() { } public override nint Handle => 0; public override void Dispose() { } }
    sealed class NopEvent : DeviceEvent
    {
        public override void Record(DeviceStream? s = null) { }
        public override void Synchronize() { }
        public override float ElapsedMs(DeviceEvent end) => 0;
        public override void Dispose() { }
    }
}
