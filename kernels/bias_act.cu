// bias_act.cu — y = act(x + bias) elementwise over [rows, n], act ∈ {identity, exact-erf GELU}: the bias of
// the vision encoder's linears (q/k/v/o, fc1, fc2 — the GEMM has no epilogue) and the GELU after fc1 and in
// the pixel-shuffle adapter (which has no bias: the bias pointer is absent).
//
// Why it looks like this: a memory-bound pass, one read and one write per element. Each thread handles 8
// consecutive elements as 16-byte vectors when n % 8 == 0 and x, y (and bias) are 16-byte aligned — then all
// 8 share one row and the bias vector is 8 consecutive entries — else one element at a time; both in a
// grid-stride loop so any grid size is correct and the wrapper can cap the grid. The activation is a
// run-time argument (uniform across the grid, so the branch costs nothing next to the memory traffic),
// which keeps the entry points to one per dtype combination. GELU is torch's nn.GELU() default:
// 0.5·v·(1 + erf(v/√2)) with the accurate erff (not the tanh approximation), all in fp32; a bf16 output is
// rounded once. x f32 with a bf16 y lets a GEMM with an f32 output feed it (bias added to the unrounded
// product, as torch's addmm does). In place (y == x, same dtype) is allowed: x and y are not __restrict__,
// each element is read and written by the same thread.
//
// | kernel                                   | parameters                                                                   | launch |
// |------------------------------------------|-------------------------------------------------------------------------------|--------|
// | bias_act_f32_f32_f32, bias_act_f32_bf16_f32, bias_act_bf16_bf16_bf16, bias_act_f32_bf16_bf16 (x_bias_y) | const TX* x [rows, n], const TB* bias [n], TY* y [rows, n], long long rows, int n, int act | grid = ceil(rows·n / (8·BIAS_ACT_THREADS)) (may be capped: grid-stride), block = BIAS_ACT_THREADS, shared = 0 |
// | bias_act_nobias_f32_f32, bias_act_nobias_bf16_bf16, bias_act_nobias_f32_bf16 (x_y) | const TX* x [rows, n], TY* y [rows, n], long long rows, int n, int act | " |
//
// act: 0 = identity, 1 = GELU (erf). Compile-time parameters: BIAS_ACT_THREADS (default 256).

#include "common.cuh"

#ifndef BIAS_ACT_THREADS
#define BIAS_ACT_THREADS 256
#endif

namespace l4_bias_act {

L4_DEV float act_fn(float v, int act) { return act == 1 ? 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f)) : v; }

// TB = void: no bias.
template <typename TX, typename TB, typename TY>
__device__ __forceinline__ void bias_act(const TX* x, const TB* __restrict__ bias, TY* y, long long rows, int n, int act) {
    constexpr bool HAS_B = !l4_is_void<TB>::value;
    const long long total = rows * n, stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    bool vec = (n % 8 == 0) && aligned16(x) && aligned16(y);
    if constexpr (HAS_B) vec = vec && aligned16(bias);
    if (vec) {
        for (long long e = i * 8; e < total; e += stride * 8) {
            float v[8];
            load8(x + e, v);
            if constexpr (HAS_B) {
                float b[8];
                load8(bias + (int)(e % n), b);
#pragma unroll
                for (int k = 0; k < 8; ++k) v[k] += b[k];
            }
#pragma unroll
            for (int k = 0; k < 8; ++k) v[k] = act_fn(v[k], act);
            store8(y + e, v);
        }
    } else {
        for (long long e = i; e < total; e += stride) {
            float v = to_f32(x[e]);
            if constexpr (HAS_B) v += to_f32(bias[(int)(e % n)]);
            y[e] = from_f32<TY>(act_fn(v, act));
        }
    }
}

}  // namespace l4_bias_act

extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_f32_f32_f32(const float* x, const float* __restrict__ bias, float* y, long long rows, int n, int act) { l4_bias_act::bias_act<float, float, float>(x, bias, y, rows, n, act); }
extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_f32_bf16_f32(const float* x, const bf16* __restrict__ bias, float* y, long long rows, int n, int act) { l4_bias_act::bias_act<float, bf16, float>(x, bias, y, rows, n, act); }
extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_bf16_bf16_bf16(const bf16* x, const bf16* __restrict__ bias, bf16* y, long long rows, int n, int act) { l4_bias_act::bias_act<bf16, bf16, bf16>(x, bias, y, rows, n, act); }
extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_f32_bf16_bf16(const float* x, const bf16* __restrict__ bias, bf16* y, long long rows, int n, int act) { l4_bias_act::bias_act<float, bf16, bf16>(x, bias, y, rows, n, act); }
extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_nobias_f32_f32(const float* x, float* y, long long rows, int n, int act) { l4_bias_act::bias_act<float, void, float>(x, nullptr, y, rows, n, act); }
extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_nobias_bf16_bf16(const bf16* x, bf16* y, long long rows, int n, int act) { l4_bias_act::bias_act<bf16, void, bf16>(x, nullptr, y, rows, n, act); }
extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) bias_act_nobias_f32_bf16(const float* x, bf16* y, long long rows, int n, int act) { l4_bias_act::bias_act<float, void, bf16>(x, nullptr, y, rows, n, act); }
