using System.Text;

namespace Llama4Native.Interop;

/// <summary>An owned loaded module (cuModuleLoadDataEx / cuModuleUnload) and its kernels.</summary>
internal sealed class CudaModule : CudaContextResource
{
    private const int LogBytes = 16 * 1024;

    private CudaModule(CudaContext context, CUmodule m, string jitInfoLog) : base(context, m.Value) => JitInfoLog = jitInfoLog;

    public CUmodule Handle => new(Raw);

    /// <summary>What the driver's JIT said while loading PTX (empty for CUBIN).</summary>
    public string JitInfoLog { get; }

    /// <summary>
    /// Loads a CUBIN (ELF) or PTX image. PTX must be NUL-terminated for the driver; one that is not gets a
    /// terminated copy. On failure the <see cref="CudaException.Detail"/> carries the JIT error log.
    /// </summary>
    public static unsafe CudaModule Load(CudaContext context, ReadOnlySpan<byte> image)
    {
        if (image.IsEmpty) throw new ArgumentException("empty module image", nameof(image));
        bool isElf = image.Length >= 4 && image[0] == 0x7f && image[1] == (byte)'E' && image[2] == (byte)'L' && image[3] == (byte)'F';
        byte[]? terminated = null;
        if (!isElf && image[^1] != 0)
        {
            terminated = new byte[image.Length + 1];
            image.CopyTo(terminated);
            image = terminated;
        }

        byte* info = stackalloc byte[LogBytes];
        byte* error = stackalloc byte[LogBytes];
        info[0] = 0;
        error[0] = 0;
        CUjit_option* options = stackalloc CUjit_option[]
        {
            CUjit_option.CU_JIT_INFO_LOG_BUFFER, CUjit_option.CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            CUjit_option.CU_JIT_ERROR_LOG_BUFFER, CUjit_option.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        };
        // Values are pointers or integers widened to pointer size, per the cuModuleLoadDataEx contract.
        void** values = stackalloc void*[] { info, (void*)LogBytes, error, (void*)LogBytes };

        context.MakeCurrent();
        CUresult r;
        CUmodule module;
        fixed (byte* p = image) r = Cu.cuModuleLoadDataEx(out module, p, 4, options, values);
        string infoLog = ReadLog(info, (nint)values[1]);
        if (r != CUresult.CUDA_SUCCESS)
        {
            string errorLog = ReadLog(error, (nint)values[3]);
            var detail = new StringBuilder();
            if (errorLog.Length > 0) detail.Append("JIT error log:\n").Append(errorLog);
            if (infoLog.Length > 0) detail.Append(detail.Length > 0 ? "\n" : "").Append("JIT info log:\n").Append(infoLog);
            throw new CudaException(r, $"cuModuleLoadDataEx({(isElf ? "CUBIN" : "PTX")}, {image.Length} bytes)", detail.ToString());
        }
        return new CudaModule(context, module, infoLog);
    }

    /// <summary>Finds a kernel by name; throws CUDA_ERROR_NOT_FOUND (use <c>extern "C"</c> kernels).</summary>
    public CudaFunction GetFunction(string name)
    {
        Context.MakeCurrentForResource();
        var r = Cu.cuModuleGetFunction(out var f, Handle, name);
        if (r != CUresult.CUDA_SUCCESS) throw new CudaException(r, $"cuModuleGetFunction(\"{name}\")");
        return new CudaFunction(this, f, name);
    }

    protected override CUresult Destroy(nint h) => Cu.cuModuleUnload(new CUmodule(h));

    private static unsafe string ReadLog(byte* buffer, nint written)
    {
        // The size slot comes back as the bytes written (including the NUL on some drivers); trust the NUL.
        int max = (int)Math.Clamp(written, 0, LogBytes);
        int n = new ReadOnlySpan<byte>(buffer, LogBytes).IndexOf((byte)0);
        if (n < 0) n = LogBytes;
        if (max > 0) n = Math.Min(n, max);
        return Encoding.UTF8.GetString(buffer, n).TrimEnd();
    }
}

/// <summary>
/// A kernel of a loaded module. Not owned: valid while <see cref="Module"/> is loaded.
/// </summary>
internal sealed class CudaFunction
{
    internal CudaFunction(CudaModule module, CUfunction handle, string name)
    {
        Module = module;
        Handle = handle;
        Name = name;
    }

    public CudaModule Module { get; }
    public CUfunction Handle { get; }
    public string Name { get; }

    public int GetAttribute(CUfunction_attribute attribute)
    {
        Module.Context.MakeCurrentForResource();
        Cu.Check(Cu.cuFuncGetAttribute(out int v, attribute, Handle), $"cuFuncGetAttribute({attribute}, {Name})");
        return v;
    }

    public void SetAttribute(CUfunction_attribute attribute, int value)
    {
        Module.Context.MakeCurrentForResource();
        Cu.Check(Cu.cuFuncSetAttribute(Handle, attribute, value), $"cuFuncSetAttribute({Name}, {attribute}, {value})");
    }

    /// <summary>Registers per thread.</summary>
    public int Registers => GetAttribute(CUfunction_attribute.CU_FUNC_ATTRIBUTE_NUM_REGS);

    /// <summary>
    /// Opts the kernel in to <paramref name="bytes"/> of dynamic shared memory per block — required before
    /// any launch asking for more than 48 KiB (static + dynamic).
    /// </summary>
    public void SetMaxDynamicSharedMemory(int bytes) =>
        SetAttribute(CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);

    /// <summary>
    /// Launches the kernel on <paramref name="stream"/>. <paramref name="args"/> follows cuLaunchKernel's
    /// convention (see <see cref="Cu.cuLaunchKernel"/>): <c>void** args = stackalloc void*[] { &amp;x, &amp;n };</c>.
    /// With <see cref="CudaDebug.SyncAfterLaunch"/> on, synchronises and blames this kernel on failure.
    /// </summary>
    public unsafe void Launch(LaunchDims grid, LaunchDims block, uint dynamicSharedBytes, CUstream stream, void** args)
    {
        Module.Context.MakeCurrentForResource();
        var r = Cu.cuLaunchKernel(Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z,
                                  dynamicSharedBytes, stream, args, null);
        if (r != CUresult.CUDA_SUCCESS)
            throw new CudaException(r, $"cuLaunchKernel({Name}, grid {grid}, block {block}, {dynamicSharedBytes} B dynamic shared)");
        if (CudaDebug.SyncAfterLaunch) CudaDebug.SynchronizeAfterLaunch(stream, Name);
    }

    public override string ToString() => Name;
}
