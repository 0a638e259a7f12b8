// fill.cu — random weights generated on the device, for synthetic full-size benchmarks (no checkpoint on disk).
//
// Why it looks like this: a full-size model is 100–800 GB; writing it to disk and uploading it is what the GPU
// machine (64 GB of disk) cannot do. Each element is a pure function of (seed, index): a splitmix64 hash of the
// index gives two 32-bit uniforms, Box–Muller turns them into one normal draw, scaled to mean + std·z. So any
// grid (grid-stride loop) writes the same values, and the C# reference reproduces them. Throughput is what
// matters (hundreds of GB at HBM speed); the values only need the right scale for the activations to stay finite.
//
// | kernel            | parameters                                                                 | launch |
// |-------------------|----------------------------------------------------------------------------|--------|
// | fill_normal_f32   | float* out [n], long long n, unsigned long long seed, float mean, float std | grid = min(ceil(n / FILL_THREADS), 2^20) (grid-stride), block = FILL_THREADS, shared = 0 |
// | fill_normal_bf16  | bf16* out [n], ...                                                         | "      |
//
// Compile-time parameters: FILL_THREADS (default 256).

#include "common.cuh"

#ifndef FILL_THREADS
#define FILL_THREADS 256
#endif

namespace l4_fill {

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

__device__ __forceinline__ float normal(unsigned long long seed, long long i) {
    const unsigned long long h = splitmix64(seed ^ ((unsigned long long)i * 0xD1B54A32D192ED03ull));
    const float u1 = ((float)(unsigned)(h >> 40) + 1.0f) * (1.0f / 16777216.0f);   // (0, 1]
    const float u2 = (float)(unsigned)(h & 0xFFFFFFu) * (1.0f / 16777216.0f);       // [0, 1)
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

template <typename T> __device__ __forceinline__ void fill(T* out, long long n, unsigned long long seed, float mean, float std) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = from_f32<T>(mean + std * normal(seed, i));
}

}  // namespace l4_fill

extern "C" __global__ void __launch_bounds__(FILL_THREADS) fill_normal_f32(float* out, long long n, unsigned long long seed, float mean, float std) {
    l4_fill::fill(out, n, seed, mean, std);
}
extern "C" __global__ void __launch_bounds__(FILL_THREADS) fill_normal_bf16(bf16* out, long long n, unsigned long long seed, float mean, float std) {
    l4_fill::fill(out, n, seed, mean, std);
}
