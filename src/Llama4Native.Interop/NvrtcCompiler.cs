using System.Runtime.InteropServices;
using System.Text;

namespace Llama4Native.Interop;

/// <summary>What one NVRTC compilation produced.</summary>
/// <param name="Ptx">PTX exactly as NVRTC gives it: ASCII ending in one NUL byte (what cuModuleLoadData wants).</param>
/// <param name="Cubin">The CUBIN (ELF) when asked for, else null.</param>
/// <param name="Log">The program log — warnings and, with <c>--ptxas-options=-v</c>, register/spill/shared use. Always set, also on success.</param>
/// <param name="NvrtcMajor">NVRTC version that compiled it (part of any cache key).</param>
/// <param name="NvrtcMinor">Minor version of that NVRTC (part of any cache key too).</param>
internal sealed record NvrtcCompileResult(byte[] Ptx, byte[]? Cubin, string Log, int NvrtcMajor, int NvrtcMinor)
{
    /// <summary>The PTX as text, without the trailing NUL.</summary>
    public string PtxText => Encoding.ASCII.GetString(Ptx.AsSpan().TrimEnd((byte)0));

    /// <summary>Per-kernel resource use parsed from <see cref="Log"/> (empty without <c>--ptxas-options=-v</c> and an sm_ target).</summary>
    public IReadOnlyList<PtxasKernelInfo> KernelInfo => PtxasInfo.Parse(Log);
}

/// <summary>
/// Compiles CUDA C++ with NVRTC. Remember what NVRTC does not give us (see NOTES-gpu.md): no toolkit
/// headers at all (no cuda_bf16.h, stdint.h, ...), so kernels bring their own small common header via
/// <c>headers</c>. Options are spelled <c>-arch=sm_90a</c> or <c>--gpu-architecture=compute_90a</c>.
/// Thread-safe: each call owns its program.
/// </summary>
internal static class NvrtcCompiler
{
    /// <summary>
    /// Compiles <paramref name="source"/> (file name <paramref name="name"/> in diagnostics) with in-memory
    /// <paramref name="headers"/> (what <c>#include "name"</c> resolves to) and NVRTC
    /// <paramref name="options"/>. With <paramref name="wantCubin"/> the options must target a real
    /// architecture (<c>-arch=sm_XX</c>); a virtual <c>compute_XX</c> target yields no CUBIN.
    /// Throws <see cref="NvrtcException"/> carrying the full log when compilation fails, and
    /// <see cref="NvrtcNotFoundException"/> when there is no NVRTC.
    /// </summary>
    public static unsafe NvrtcCompileResult Compile(string source, string name,
                                                    IReadOnlyList<(string Name, string Source)> headers,
                                                    IReadOnlyList<string> options, bool wantCubin)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(name);
        if (wantCubin && !options.Any(IsRealArchOption))
            throw new ArgumentException("a CUBIN needs a real architecture option such as -arch=sm_90a", nameof(options));

        var location = NvrtcLocator.Load();
        using var strings = new Utf8Strings();
        byte* src = strings.Add(source);
        byte* fileName = strings.Add(name);
        byte** headerSources = strings.AddArray(headers.Select(h => h.Source));
        byte** headerNames = strings.AddArray(headers.Select(h => h.Name));
        byte** opts = strings.AddArray(options);

        Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out var prog, src, fileName, headers.Count, headerSources, headerNames),
                    $"nvrtcCreateProgram({name})");
        try
        {
            var r = Nvrtc.nvrtcCompileProgram(prog, options.Count, opts);
            string log = GetLog(prog);
            if (r != nvrtcResult.NVRTC_SUCCESS)
                throw new NvrtcException(r, $"nvrtcCompileProgram({name}, {string.Join(' ', options)})", log);

            Nvrtc.Check(Nvrtc.nvrtcGetPTXSize(prog, out var ptxSize));
            var ptx = new byte[(int)ptxSize];
            fixed (byte* p = ptx) Nvrtc.Check(Nvrtc.nvrtcGetPTX(prog, p));

            byte[]? cubin = null;
            if (wantCubin)
            {
                Nvrtc.Check(Nvrtc.nvrtcGetCUBINSize(prog, out var cubinSize));
                if (cubinSize == 0)
                    throw new NvrtcException(nvrtcResult.NVRTC_ERROR_INVALID_OPTION,
                        $"nvrtcGetCUBINSize({name}) returned 0: the options target no real architecture (use -arch=sm_XX)", log);
                cubin = new byte[(int)cubinSize];
                fixed (byte* p = cubin) Nvrtc.Check(Nvrtc.nvrtcGetCUBIN(prog, p));
            }
            return new NvrtcCompileResult(ptx, cubin, log, location.Major, location.Minor);
        }
        finally
        {
            Nvrtc.nvrtcDestroyProgram(ref prog);
        }
    }

    /// <summary>Overload without headers.</summary>
    public static NvrtcCompileResult Compile(string source, string name, IReadOnlyList<string> options, bool wantCubin = false) =>
        Compile(source, name, [], options, wantCubin);

    private static bool IsRealArchOption(string o) =>
        o.StartsWith("-arch=sm_", StringComparison.Ordinal) || o.StartsWith("--gpu-architecture=sm_", StringComparison.Ordinal)
        || o.StartsWith("-arch sm_", StringComparison.Ordinal);

    private static unsafe string GetLog(nvrtcProgram prog)
    {
        Nvrtc.Check(Nvrtc.nvrtcGetProgramLogSize(prog, out var size));
        if (size <= 1) return "";
        var buf = new byte[(int)size];
        fixed (byte* p = buf) Nvrtc.Check(Nvrtc.nvrtcGetProgramLog(prog, p));
        return Encoding.UTF8.GetString(buf.AsSpan().TrimEnd((byte)0));
    }

    /// <summary>NUL-terminated UTF-8 copies of managed strings in native memory, freed together.</summary>
    private sealed unsafe class Utf8Strings : IDisposable
    {
        private readonly List<nint> _blocks = [];

        public byte* Add(string s)
        {
            int n = Encoding.UTF8.GetByteCount(s);
            var p = (byte*)NativeMemory.Alloc((nuint)n + 1);
            _blocks.Add((nint)p);
            Encoding.UTF8.GetBytes(s, new Span<byte>(p, n));
            p[n] = 0;
            return p;
        }

        public byte** AddArray(IEnumerable<string> items)
        {
            var list = items.ToList();
            if (list.Count == 0) return null;
            var arr = (byte**)NativeMemory.Alloc((nuint)list.Count, (nuint)sizeof(byte*));
            _blocks.Add((nint)arr);
            for (int i = 0; i < list.Count; i++) arr[i] = Add(list[i]);
            return arr;
        }

        public void Dispose()
        {
            foreach (var b in _blocks) NativeMemory.Free((void*)b);
            _blocks.Clear();
        }
    }
}
