namespace Llama4Native.Kernels;

/// <summary>A kernel failed to compile (NVRTC or g++). Carries the command/options and the full log.</summary>
internal sealed class KernelCompileException(string file, string target, string command, string log, Exception? inner = null)
    : Exception($"compiling kernels/{file} for {target} failed.\ncommand: {command}\n{log}", inner)
{
    public string File { get; } = file;
    public string Target { get; } = target;
    public string Command { get; } = command;
    public string Log { get; } = log;
}
