// add.cu — y = a + b elementwise: the residual connections (h = x + attn(x); out = h + ffn(h)).
//
// Why it looks like this: a pure memory-bound stream, so each thread adds 8 elements per step with 16-byte
// vectors when all three pointers are 16-byte aligned (else element by element), in a grid-stride loop so
// any grid size is correct. y may alias a or b — the residual stream is updated in place — which is why
// none of the pointers is __restrict__: each element is read and written by the same thread. fp32 math; a
// bf16 output is rounded once.
//
// | kernel    | parameters                                                          | launch |
// |-----------|---------------------------------------------------------------------|--------|
// | add_f32   | const float* a [n], const float* b [n], float* y [n], long long n     | grid = ceil(n / (8·ADD_THREADS)) (may be capped: grid-stride), block = ADD_THREADS, shared = 0 |
// | add_bf16  | const bf16* a [n], const bf16* b [n], bf16* y [n], long long n        | "      |
//
// Compile-time parameters: ADD_THREADS (default 256).

#include "common.cuh"

#ifndef ADD_THREADS
#define ADD_THREADS 256
#endif

namespace l4_add {

template <typename T> __device__ __forceinline__ void add(const T* a, const T* b, T* y, long long n) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (aligned16(a) && aligned16(b) && aligned16(y)) {
        for (long long k = tid; k < n / 8; k += stride) {
            float va[8], vb[8];
            load8(a + k * 8, va);
            load8(b + k * 8, vb);
#pragma unroll
            for (int e = 0; e < 8; ++e) va[e] += vb[e];
            store8(y + k * 8, va);
        }
        done = n / 8 * 8;
    }
    for (long long e = done + tid; e < n; e += stride) y[e] = from_f32<T>(to_f32(a[e]) + to_f32(b[e]));
}

}  // namespace l4_add

extern "C" __global__ void __launch_bounds__(ADD_THREADS) add_f32(const float* a, const float* b, float* y, long long n) { l4_add::add(a, b, y, n); }
extern "C" __global__ void __launch_bounds__(ADD_THREADS) add_bf16(const bf16* a, const bf16* b, bf16* y, long long n) { l4_add::add(a, b, y, n); }
