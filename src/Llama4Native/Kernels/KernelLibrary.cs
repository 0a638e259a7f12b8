namespace Llama4Native.Kernels;

/// <summary>Placeholder; replaced by the JIT-backed library.</summary>
public abstract class KernelLibrary { }
