// rmsnorm.cu — y = x * rsqrt(mean(x²) + eps) * w over each row, in fp32.
//
// Why it looks like this: RMSNorm is two passes over one row (sum of squares, then scale), both memory
// bound, and a row is at most a few tens of KiB, so the second pass re-reads x from L1/L2 rather than
// holding it in registers (which would cap cols). Two shapes of work share one templated body:
//   * block per row (`rmsnorm_*`): the hidden-state norms (cols = D = 5120); the partial sums meet in
//     block_sum;
//   * warp per row (`rmsnorm_warp_*`): many short rows, e.g. Llama 4's QK norm over head_dim = 128 with
//     rows = T·H; a block then carries RMSNORM_THREADS/32 rows and needs no __syncthreads.
// Both read 8 elements per thread per step (16-byte vectors) when cols % 8 == 0 and the row starts and w
// are 16-byte aligned, else a scalar loop — any cols >= 1 works (cols up to 2^31-1; large cols simply
// loop). All arithmetic is fp32 and a bf16 output is rounded once at the end (torch's Llama4TextRMSNorm
// rounds the normalised x to bf16 before multiplying by w in bf16: we differ from it by ≤ 1 bf16 ulp).
// The weightless form (`rmsnorm_noweight_*`, w absent) is the QK norm. In place (y == x) is allowed, which
// is why x and y are not __restrict__: each element is read and written by the same thread.
//
// | kernel                         | parameters (all: int rows, int cols, float eps last)          | launch                        |
// |--------------------------------|----------------------------------------------------------------|-------------------------------|
// | rmsnorm_f32_f32_f32            | const float* x [rows, cols], const float* w [cols], float* y [rows, cols] | block-per-row: grid = rows, block = RMSNORM_THREADS, shared = 0 |
// | rmsnorm_f32_bf16_f32           | const float* x, const bf16* w, float* y                         | "                             |
// | rmsnorm_bf16_bf16_bf16         | const bf16* x, const bf16* w, bf16* y                           | "                             |
// | rmsnorm_noweight_f32           | const float* x [rows, cols], float* y [rows, cols]              | "                             |
// | rmsnorm_noweight_bf16          | const bf16* x, bf16* y                                          | "                             |
// | rmsnorm_warp_<same five>       | same parameters as the block-per-row kernel of the same suffix  | warp-per-row: grid = ceil(rows / (RMSNORM_THREADS/32)), block = RMSNORM_THREADS, shared = 0 |
//
// Exact parameter order: (x, w, y, rows, cols, eps); noweight: (x, y, rows, cols, eps).
// Compile-time parameters: RMSNORM_THREADS (default 256, a multiple of 32, ≤ 1024). Rule of thumb:
// use the warp variant when cols ≤ 1024.

#include "common.cuh"

#ifndef RMSNORM_THREADS
#define RMSNORM_THREADS 256
#endif

namespace l4_rmsnorm {

// TW = void: no weight (QK norm). WARP: one warp per row, else one block per row.
template <typename TX, typename TW, typename TY, bool WARP>
__device__ __forceinline__ void rmsnorm(const TX* x, const TW* __restrict__ w, TY* y, int rows, int cols,
                                        float eps) {
    constexpr bool HAS_W = !l4_is_void<TW>::value;
    const auto [row, lane, nthr] = l4_row_split<WARP, RMSNORM_THREADS>();
    if (row >= rows) return;  // uniform per warp (warp variant) or per block (block variant)
    const TX* xr = x + row * cols;
    TY* yr = y + row * cols;
    bool vec = (cols % 8 == 0) && aligned16(xr) && aligned16(yr);
    if constexpr (HAS_W) vec = vec && aligned16(w);

    float ss = row_partial_sum(xr, cols, lane, nthr, vec, [](float v) { return v * v; });
    ss = WARP ? warp_sum(ss) : block_sum(ss);
    const float inv = rsqrtf(ss / (float)cols + eps);

    if (vec) {
        for (int c = lane * 8; c < cols; c += nthr * 8) {
            float v[8];
            load8(xr + c, v);
            if constexpr (HAS_W) {
                float g[8];
                load8(w + c, g);
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] = v[e] * inv * g[e];
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] = v[e] * inv;
            }
            store8(yr + c, v);
        }
    } else {
        for (int c = lane; c < cols; c += nthr) {
            float v = to_f32(xr[c]) * inv;
            if constexpr (HAS_W) v *= to_f32(w[c]);
            yr[c] = from_f32<TY>(v);
        }
    }
}

}  // namespace l4_rmsnorm

extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_f32_f32_f32(const float* x, const float* __restrict__ w, float* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<float, float, float, false>(x, w, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_f32_bf16_f32(const float* x, const bf16* __restrict__ w, float* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<float, bf16, float, false>(x, w, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_bf16_bf16_bf16(const bf16* x, const bf16* __restrict__ w, bf16* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<bf16, bf16, bf16, false>(x, w, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_noweight_f32(const float* x, float* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<float, void, float, false>(x, nullptr, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_noweight_bf16(const bf16* x, bf16* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<bf16, void, bf16, false>(x, nullptr, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_warp_f32_f32_f32(const float* x, const float* __restrict__ w, float* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<float, float, float, true>(x, w, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_warp_f32_bf16_f32(const float* x, const bf16* __restrict__ w, float* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<float, bf16, float, true>(x, w, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_warp_bf16_bf16_bf16(const bf16* x, const bf16* __restrict__ w, bf16* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<bf16, bf16, bf16, true>(x, w, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_warp_noweight_f32(const float* x, float* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<float, void, float, true>(x, nullptr, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm_warp_noweight_bf16(const bf16* x, bf16* y, int rows, int cols, float eps) { l4_rmsnorm::rmsnorm<bf16, void, bf16, true>(x, nullptr, y, rows, cols, eps); }
