namespace Llama4Native.Tests.Interop;

/// <summary>Small CUDA sources the interop tests compile (no toolkit headers: NVRTC has none).</summary>
internal static class TestKernels
{
    /// <summary>y[i] = a*x[i] + y[i]; one thread per element.</summary>
    public const string Saxpy = """
        extern "C" __global__ void saxpy(float* y, const float* x, float a, int n)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = a * x[i] + y[i];
        }

        extern "C" __global__ void add_one(float* y, int n)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] += 1.0f;
        }

        // Uses dynamic shared memory: reverses each block's slice through it.
        extern "C" __global__ void reverse_block(float* y)
        {
            extern __shared__ float tile[];
            int t = threadIdx.x, base = blockIdx.x * blockDim.x;
            tile[t] = y[base + t];
            __syncthreads();
            y[base + t] = tile[blockDim.x - 1 - t];
        }
        """;

    /// <summary>A big, data-dependently indexed local array under a tight register cap: ptxas must spill.</summary>
    public const string Spill = """
        extern "C" __global__ void spill(float* out, int n, int k)
        {
            float loc[256];
            for (int i = 0; i < 256; i++) loc[i] = out[(i * k) % n] * i;
            float s = 0.0f;
            for (int i = 0; i < 256; i++) s += loc[(i * k) & 255] * loc[i];
            __shared__ float sh[64];
            sh[threadIdx.x & 63] = s;
            __syncthreads();
            out[threadIdx.x] = sh[(threadIdx.x + 1) & 63];
        }
        """;

    /// <summary>Line 3 lacks a semicolon.</summary>
    public const string SyntaxError = """
        extern "C" __global__ void broken(float* y)
        {
            float v = y[0]
            y[0] = v * 2.0f;
        }
        """;
}
