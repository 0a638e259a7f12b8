// silu_mul.cu — the SwiGLU gate: out = silu(gate) * up, in fp32.
//
// Why it looks like this: it is an elementwise, memory-bound op, so each thread handles 8 elements per
// step (16-byte vectors when the layout allows) in a grid-stride loop, and any grid size is correct.
// Two forms: the fused one reads a gate/up row produced by one GEMM against the concatenated weight
// (Llama 4's experts store gate_up_proj fused, gate first: gu [T, 2I], gate = gu[:, :I], up = gu[:, I:]),
// which saves a launch and a round trip of the intermediate; the two-input form serves separate gate and
// up projections (dense MLP, shared expert). The fused vector path needs I % 8 == 0 and 16-byte aligned
// gu and out; otherwise (and for the n % 8 tail of the two-input form) a scalar path runs — any size ≥ 1.
// silu(x) = x / (1 + exp(-x)) in fp32 (common.cuh `silu`: __expf and __fdividef, ~3 ulp); a bf16 output is rounded once (torch in bf16 rounds silu(g) to bf16
// before the product: we differ from it by ≤ 1 bf16 ulp).
//
// | kernel                 | parameters                                                                  | launch |
// |------------------------|-----------------------------------------------------------------------------|--------|
// | silu_mul_fused_f32     | const float* gu [T, 2I], float* out [T, I], int T, int I                      | grid = (ceil(I / (8·SILU_MUL_THREADS)), min(T, 65535)) (either may be capped: grid-stride), block = SILU_MUL_THREADS, shared = 0 |
// | silu_mul_fused_bf16    | const bf16* gu [T, 2I], bf16* out [T, I], int T, int I                        | "      |
// | silu_mul_f32           | const float* g [n], const float* u [n], float* out [n], long long n          | grid = ceil(n / (8·SILU_MUL_THREADS)) (may be capped), block = SILU_MUL_THREADS, shared = 0 |
// | silu_mul_bf16          | const bf16* g [n], const bf16* u [n], bf16* out [n], long long n             | "      |
//
// Compile-time parameters: SILU_MUL_THREADS (default 256). out must not overlap the inputs.

#include "common.cuh"

#ifndef SILU_MUL_THREADS
#define SILU_MUL_THREADS 256
#endif

namespace l4_silu_mul {

// out[0..7] = silu(g[0..7]) * u[0..7]: all three 16-byte aligned.
template <typename T> __device__ __forceinline__ void silu_mul8(const T* g, const T* u, T* out) {
    float a[8], b[8];
    load8(g, a);
    load8(u, b);
#pragma unroll
    for (int e = 0; e < 8; ++e) a[e] = silu(a[e]) * b[e];
    store8(out, a);
}
template <typename T> __device__ __forceinline__ T silu_mul1(T g, T u) { return from_f32<T>(silu(to_f32(g)) * to_f32(u)); }

// Rows are walked by blockIdx.y (grid-stride over T), the row's I elements by blockIdx.x: no 64-bit
// division anywhere.
template <typename T>
__device__ __forceinline__ void silu_mul_fused(const T* __restrict__ gu, T* __restrict__ out, int T_, int I) {
    const int tid = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    const int stride = (int)(gridDim.x * blockDim.x);
    const bool vec = I % 8 == 0 && aligned16(gu) && aligned16(out);
    for (long long t = blockIdx.y; t < T_; t += gridDim.y) {
        const T* g = gu + t * 2 * I;
        const T* u = g + I;
        T* o = out + t * I;
        if (vec) {  // I % 8 == 0 keeps every row start 16-byte aligned
            for (int k = tid; k < I / 8; k += stride) silu_mul8(g + k * 8, u + k * 8, o + k * 8);
        } else {
            for (int i = tid; i < I; i += stride) o[i] = silu_mul1(g[i], u[i]);
        }
    }
}

template <typename T>
__device__ __forceinline__ void silu_mul(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ out,
                                         long long n) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (aligned16(g) && aligned16(u) && aligned16(out)) {
        for (long long k = tid; k < n / 8; k += stride) silu_mul8(g + k * 8, u + k * 8, out + k * 8);
        done = n / 8 * 8;
    }
    for (long long e = done + tid; e < n; e += stride) out[e] = silu_mul1(g[e], u[e]);
}

}  // namespace l4_silu_mul

extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS) silu_mul_fused_f32(const float* __restrict__ gu, float* __restrict__ out, int T, int I) { l4_silu_mul::silu_mul_fused(gu, out, T, I); }
extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS) silu_mul_fused_bf16(const bf16* __restrict__ gu, bf16* __restrict__ out, int T, int I) { l4_silu_mul::silu_mul_fused(gu, out, T, I); }
extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS) silu_mul_f32(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ out, long long n) { l4_silu_mul::silu_mul(g, u, out, n); }
extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS) silu_mul_bf16(const bf16* __restrict__ g, const bf16* __restrict__ u, bf16* __restrict__ out, long long n) { l4_silu_mul::silu_mul(g, u, out, n); }
