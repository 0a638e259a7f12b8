using Llama4Native.Devices.Cuda;
using Llama4Native.Interop;
using Llama4Native.Kernels;

namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 kernels`: compiles every kernel file with NVRTC for each target (default sm_90a and sm_80) and
/// prints, per entry point, registers, spill bytes, shared memory and stack from ptxas. Fails on any
/// compile error or any spill: every kernel we ship is a hot kernel. The CUBINs land in the kernel cache,
/// which is how the GPU bundle gets its precompiled kernels.
/// </summary>
internal static class KernelsVerb
{
    public static readonly VerbSpec Spec = new("kernels", "compile every kernel with NVRTC (sm_90a, sm_80); print registers/spills/smem; fail on errors or spills",
        [new("arch", "SM", "a target such as sm_90a or sm_80 (default both)", Many: true),
         new("filter", "TEXT", "only kernel files whose name contains TEXT"),
         new("quiet", null, "print only problems")]);

    /// <summary>
    /// Every compile-time specialisation the runtime can request, per kernel file (the defaults for every file,
    /// plus these): attention's head dims (Attention.TableHeadDims: 16, 64, 88 (vision), 128), the GEMM tile
    /// config, MoE's prefill and decode tile configs. A wrapper that gains a define must add it here.
    /// </summary>
    public static IEnumerable<KernelDefines> Specializations(string file)
    {
        var list = new List<KernelDefines> { KernelDefines.None };
        switch (file)
        {
            case "attention.cu": list.AddRange(Attention.TableHeadDims.Select(Attention.Defines)); break;
            case "paged_attention.cu": list.AddRange(Attention.TableHeadDims.Select(PagedAttention.Defines)); break;
            case "gemm.cu": list.Add(Gemm.MmaConfig.Default.Defines); break;
            case "moe.cu": list.Add(Moe.Config.Default.Defines); list.Add(Moe.Config.Decode.Defines); break;
        }
        return list.Distinct();
    }

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        var arches = a.All("arch").Count > 0 ? a.All("arch") : ["sm_90a", "sm_80"];
        var (major, minor) = Nvrtc.Version;
        if (!a.Flag("quiet")) stdout.WriteLine($"NVRTC {major}.{minor} ({NvrtcLocator.Chosen?.Describe() ?? "?"})");
        int errors = 0, spilling = 0, kernels = 0;
        foreach (var arch in arches)
        {
            var compiler = new NvrtcKernelCompiler(arch);
            if (!a.Flag("quiet"))
            {
                stdout.WriteLine($"\n{arch}");
                stdout.WriteLine($"  {"file",-14} {"kernel",-34} {"regs",5} {"spill st/ld",12} {"smem",7} {"stack",6}");
            }
            foreach (var file in KernelSources.KernelFiles.Where(f => a.Get("filter") is not { } flt || f.Contains(flt, StringComparison.Ordinal)))
            foreach (var defines in Specializations(file))
            {
                try
                {
                    var (module, info) = compiler.CompileWithInfo(file, defines);
                    if (!a.Flag("quiet") && defines.Key.Length > 0) stdout.WriteLine($"  {file} with {defines}");
                    // NVRTC warnings are errors here: a warning in a kernel is a bug on some target.
                    var warnings = module.Log.Split('\n').Where(l => l.Contains("warning", StringComparison.OrdinalIgnoreCase)).ToList();
                    if (warnings.Count > 0)
                    {
                        errors++;
                        stderr.WriteLine($"  {file} ({defines}): {warnings.Count} warning(s) for {arch}:\n    " + string.Join("\n    ", warnings));
                    }
                    foreach (var k in info.OrderBy(k => k.Name, StringComparer.Ordinal))
                    {
                        kernels++;
                        if (k.Spills) spilling++;
                        if (!a.Flag("quiet"))
                            stdout.WriteLine($"  {file,-14} {k.Name,-34} {k.Registers,5} {$"{k.SpillStoreBytes}/{k.SpillLoadBytes}",12} {k.SharedMemoryBytes,7} {k.StackFrameBytes,6}{(k.Spills ? "  SPILLS" : "")}");
                    }
                }
                catch (KernelCompileException e)
                {
                    errors++;
                    stderr.WriteLine($"  {file} ({defines}): compile error for {arch}\n{e.Log}");
                }
            }
        }
        stdout.WriteLine($"kernels: {kernels} entry points compiled for {string.Join(", ", arches)}; {errors} files with compile errors or warnings; {spilling} with spills");
        return errors == 0 && spilling == 0 ? 0 : 1;
    }
}
