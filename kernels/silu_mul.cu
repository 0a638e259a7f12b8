// silu_mul.cu — the SwiGLU gate: out = silu(gate) * up, in fp32.
//
// Why it looks like this: it is an elementwise, memory-bound op, so each thread handles 8 elements per
// step (16-byte vectors when the layout allows) in a grid-stride loop, and any grid size is correct.
// Two forms: the fused one reads a gate/up row produced by one GEMM against the concatenated weight
// (Llama 4's experts store gate_up_proj fused, gate first: gu [T, 2I], gate = gu[:, :I], up = gu[:, I:]),
// which saves a launch and a round trip of the intermediate; the two-input form serves separate gate and
// up projections (dense MLP, shared expert). The fused vector path needs I % 8 == 0 and 16-byte aligned
// gu and out; otherwise (and for the n % 8 tail of the two-input form) a scalar path runs — any size ≥ 1.
// silu(x) = x / (1 + exp(-x)) in fp32 (fast exp and division, ~2 ulp); a bf16 output is rounded once (torch in bf16 rounds silu(g) to bf16
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

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return bf16_to_f32(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float v) { return f32_to_bf16(v); }

// 8 consecutive elements <-> 8 floats; p must be 16-byte aligned.
__device__ __forceinline__ void load8(const float* p, float v[8]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const bf16* p, float v[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const float2 a = unpack_bf16x2(u.x), b = unpack_bf16x2(u.y), c = unpack_bf16x2(u.z), d = unpack_bf16x2(u.w);
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y; v[4] = c.x; v[5] = c.y; v[6] = d.x; v[7] = d.y;
}
__device__ __forceinline__ void store8(float* p, const float v[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(bf16* p, const float v[8]) {
    uint4 u;
    u.x = pack_bf16x2(v[0], v[1]); u.y = pack_bf16x2(v[2], v[3]);
    u.z = pack_bf16x2(v[4], v[5]); u.w = pack_bf16x2(v[6], v[7]);
    *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// silu in fp32 without IEEE division: the precise '/' calls a slow-path subroutine that made ptxas spill;
// __fdividef is within 2 ulp and gives x / inf = -0 for very negative x, the right limit.
__device__ __forceinline__ float silu_fast(float x) { return __fdividef(x, 1.f + __expf(-x)); }

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
            for (int k = tid; k < I / 8; k += stride) {
                float a[8], b[8];
                load8(g + k * 8, a);
                load8(u + k * 8, b);
#pragma unroll
                for (int e = 0; e < 8; ++e) a[e] = silu_fast(a[e]) * b[e];
                store8(o + k * 8, a);
            }
        } else {
            for (int i = tid; i < I; i += stride) o[i] = from_f32<T>(silu_fast(to_f32(g[i])) * to_f32(u[i]));
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
        for (long long k = tid; k < n / 8; k += stride) {
            float a[8], b[8];
            load8(g + k * 8, a);
            load8(u + k * 8, b);
#pragma unroll
            for (int e = 0; e < 8; ++e) a[e] = silu_fast(a[e]) * b[e];
            store8(out + k * 8, a);
        }
        done = n / 8 * 8;
    }
    for (long long e = done + tid; e < n; e += stride) out[e] = from_f32<T>(silu_fast(to_f32(g[e])) * to_f32(u[e]));
}

}  // namespace l4_silu_mul

extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS)
silu_mul_fused_f32(const float* __restrict__ gu, float* __restrict__ out, int T, int I) {
    l4_silu_mul::silu_mul_fused(gu, out, T, I);
}
extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS)
silu_mul_fused_bf16(const bf16* __restrict__ gu, bf16* __restrict__ out, int T, int I) {
    l4_silu_mul::silu_mul_fused(gu, out, T, I);
}
extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS)
silu_mul_f32(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ out, long long n) {
    l4_silu_mul::silu_mul(g, u, out, n);
}
extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS)
silu_mul_bf16(const bf16* __restrict__ g, const bf16* __restrict__ u, bf16* __restrict__ out, long long n) {
    l4_silu_mul::silu_mul(g, u, out, n);
}
