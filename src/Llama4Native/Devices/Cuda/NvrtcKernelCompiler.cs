using Llama4Native.Interop;
using Llama4Native.Kernels;

namespace Llama4Native.Devices.Cuda;

/// <summary>
/// Compiles `kernels/*.cu` with NVRTC to a CUBIN for one exact target (e.g. sm_90a), caching it on disk.
/// The cache file name carries everything that decides the output — source hash with includes, defines,
/// options, target — and the NVRTC version, so a newer NVRTC recompiles. When NVRTC cannot be loaded at
/// all, a CUBIN made for the same inputs by any NVRTC version is used as is (how the GPU bundle ships
/// precompiled kernels).
/// </summary>
internal sealed class NvrtcKernelCompiler(string target, KernelCache? cache = null) : IKernelCompiler
{
    /// <summary>Options for every kernel. -v: registers/spills/shared memory land in the log (the `kernels` verb reads them).</summary>
    public static readonly string[] CommonOptions = ["--std=c++17", "--ptxas-options=-v", "-lineinfo"];

    readonly KernelCache cache = cache ?? KernelCache.Default;
    public string Target { get; } = target;

    public CompiledModule Compile(string file, KernelDefines defines) => CompileWithInfo(file, defines).Module;

    public (CompiledModule Module, IReadOnlyList<PtxasKernelInfo> Info) CompileWithInfo(string file, KernelDefines defines)
    {
        var options = CommonOptions.Concat([$"-arch={Target}"]).Concat(defines.AsOptions()).ToList();
        var key = KernelCache.Digest(KernelSources.Hash(file), defines.Key, string.Join(' ', options), Target);
        var stem = $"{Path.GetFileNameWithoutExtension(file)}-{key}";
        (int major, int minor) version;
        try { version = Nvrtc.Version; }
        catch (Exception e) when (e is DllNotFoundException or InvalidOperationException or EntryPointNotFoundException or FileNotFoundException)
        {
            // No NVRTC here: a precompiled CUBIN for exactly these inputs is still good.
            var dir = Path.Combine(cache.Root, Target);
            var found = Directory.Exists(dir) ? Directory.GetFiles(dir, stem + "-nvrtc*.cubin").Order().LastOrDefault() : null;
            if (found is null) throw new KernelCompileException(file, Target, "nvrtc " + string.Join(' ', options),
                $"NVRTC is not available ({e.Message}) and no precompiled CUBIN is cached under {dir}. Install the CUDA toolkit's NVRTC or set LLAMA4_NVRTC.", e);
            return (new CompiledModule(file, key, File.ReadAllBytes(found), null, "(precompiled: " + Path.GetFileName(found) + ")"), []);
        }
        var name = $"{stem}-nvrtc{version.major}.{version.minor}.cubin";
        if (cache.TryRead(Target, name, out var cached))
        {
            cache.TryRead(Target, name + ".log", out var logBytes);
            var log = System.Text.Encoding.UTF8.GetString(logBytes);
            return (new CompiledModule(file, key, cached, null, log), PtxasInfo.Parse(log));
        }
        var headers = KernelSources.Includes(file).Select(h => (h, KernelSources.Get(h))).ToList();
        NvrtcCompileResult r;
        try { r = NvrtcCompiler.Compile(KernelSources.Get(file), file, headers, options, wantCubin: true); }
        catch (NvrtcException e) { throw new KernelCompileException(file, Target, "nvrtc " + string.Join(' ', options), e.Message, e); }
        if (r.Cubin is not { Length: > 0 } cubin)
            throw new KernelCompileException(file, Target, "nvrtc " + string.Join(' ', options), "NVRTC produced no CUBIN\n" + r.Log);
        cache.Write(Target, name, cubin);
        cache.Write(Target, name + ".log", System.Text.Encoding.UTF8.GetBytes(r.Log));
        return (new CompiledModule(file, key, cubin, null, r.Log), r.KernelInfo);
    }
}
