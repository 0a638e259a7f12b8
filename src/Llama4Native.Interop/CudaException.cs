namespace Llama4Native.Interop;

/// <summary>
/// A CUDA driver call failed. The message reads like
/// <c>cuMemAlloc_v2(out p, bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)</c>.
/// </summary>
public sealed class CudaException : Exception
{
    internal CudaException(CUresult result, string expression, string? detail = null)
        : this(result, expression, detail, Cu.DescribeResult(result)) { }

    private CudaException(CUresult result, string expression, string? detail, (string Name, string Text) d)
        : base(Format(expression, d.Name, d.Text, detail))
    {
        Result = result;
        ResultName = d.Name;
        ResultText = d.Text;
        Expression = expression;
        Detail = detail;
    }

    internal CUresult Result { get; }
    /// <summary>The driver's numeric error code (the <c>CUresult</c> value, e.g. 2 for out of memory).</summary>
    public int ErrorCode => (int)Result;
    /// <summary>"CUDA_ERROR_OUT_OF_MEMORY" (from cuGetErrorName when the driver is loaded).</summary>
    public string ResultName { get; }
    /// <summary>"out of memory" (from cuGetErrorString; empty when the driver is not loaded).</summary>
    public string ResultText { get; }
    /// <summary>The failing call's source text, or a description such as the launched kernel.</summary>
    public string Expression { get; }
    /// <summary>Extra context: the JIT log of a failed module load, the kernel blamed by a debug sync, ...</summary>
    public string? Detail { get; }
    /// <summary>The context is corrupt after this error; only a new process recovers.</summary>
    public bool IsSticky => Result.IsSticky();

    private static string Format(string expr, string name, string text, string? detail)
    {
        var msg = text.Length > 0 ? $"{expr} failed: {name} ({text})" : $"{expr} failed: {name}";
        return string.IsNullOrEmpty(detail) ? msg : $"{msg}\n{detail}";
    }
}

/// <summary>No usable CUDA driver or device; <see cref="Exception.Message"/> is <see cref="CudaDriver.TryLoad"/>'s reason.</summary>
public sealed class CudaUnavailableException(string reason) : InvalidOperationException(reason);
