// convert.cu — element-type conversion between fp32 and bf16.
//
// Why it looks like this: a conversion is pure memory traffic, so the only thing that matters is moving
// full 16-byte transactions. Each thread converts 8 elements per step (one uint4 of bf16, two float4 of
// fp32) with a grid-stride loop, so any grid size is correct and the caller can cap the grid to a few
// waves. The vector path needs both pointers 16-byte aligned; the elements past the last full group of 8
// (and every element, when a pointer is not aligned) take a scalar path, so every n >= 1 works.
// f32 -> bf16 rounds to nearest even like torch's `.to(torch.bfloat16)`; every NaN becomes 0x7fff (cvt.rn.bf16).
//
// | kernel                  | parameters                                               | launch                                   |
// |-------------------------|----------------------------------------------------------|------------------------------------------|
// | convert_bf16_to_f32     | const bf16* x [n], float* y [n], long long n             | grid = ceil(n / (8*CONVERT_THREADS)), may |
// | convert_f32_to_bf16     | const float* x [n], bf16* y [n], long long n             |   be capped (grid-stride); block =        |
// |                         |                                                          |   CONVERT_THREADS; dynamic shared = 0     |
//
// Compile-time parameters: CONVERT_THREADS (default 256) — the block size the caller must launch with.
// x and y must not overlap (different element sizes).

#include "common.cuh"

#ifndef CONVERT_THREADS
#define CONVERT_THREADS 256
#endif

namespace l4_convert {

template <typename Tin, typename Tout>
__device__ __forceinline__ void convert(const Tin* __restrict__ x, Tout* __restrict__ y, long long n) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (aligned16(x) && aligned16(y)) {
        const long long groups = n / 8;
        for (long long g = tid; g < groups; g += stride) {
            float v[8];
            load8(x + g * 8, v);
            store8(y + g * 8, v);
        }
        done = groups * 8;
    }
    for (long long i = done + tid; i < n; i += stride) y[i] = from_f32<Tout>(to_f32(x[i]));
}

}  // namespace l4_convert

extern "C" __global__ void __launch_bounds__(CONVERT_THREADS) convert_bf16_to_f32(const bf16* __restrict__ x, float* __restrict__ y, long long n) { l4_convert::convert(x, y, n); }

extern "C" __global__ void __launch_bounds__(CONVERT_THREADS) convert_f32_to_bf16(const float* __restrict__ x, bf16* __restrict__ y, long long n) { l4_convert::convert(x, y, n); }
