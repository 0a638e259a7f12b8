// add_rmsnorm.cu — the residual add and the next RMSNorm in one pass: x += y; h = x · rsqrt(mean(x²) + eps) · w.
//
// Why it looks like this: between two blocks of the decoder the graph used to run `add` (x = x + y, a
// grid-stride kernel) and then `rmsnorm` (h = norm(x)·w, one block per row): two launches and one extra
// read of x per layer boundary — 96 launches of Scout's 97 norms. Fusing them is exact: each thread adds
// its own elements, rounds the sum to x's dtype exactly as `add` does, stores it back into x and squares
// the ROUNDED value for the row's sum, so the norm sees the same numbers it would read after a separate
// add. The second pass re-reads x from L1/L2 — the same elements this thread wrote (same lane pattern),
// so no barrier beyond the reduction is needed. Rows, vectors and reductions are those of rmsnorm.cu: one
// block per row (hidden size D = 5120; a decode step is one row: one block of RMSNORM_THREADS threads
// moving 3 × 10 KiB, a few µs either way — a multi-CTA row would need a grid-wide reduction and buys
// nothing at this size) or one warp per row for short rows (cols ≤ 1024, the tiny test models).
// 16-byte vectors when cols % 8 == 0 and x, y, h, w are 16-byte aligned, else a scalar loop.
// x is updated in place (the residual stream); h must not alias x or y.
//
// | kernel                            | parameters                                                             | launch |
// |-----------------------------------|------------------------------------------------------------------------|--------|
// | add_rmsnorm_f32_f32_f32           | float* x [rows, cols], const float* y [rows, cols], const float* w [cols], float* h [rows, cols], int rows, int cols, float eps | block-per-row: grid = rows, block = RMSNORM_THREADS, shared = 0 |
// | add_rmsnorm_f32_bf16_f32          | float* x, const float* y, const bf16* w, float* h, …                     | "      |
// | add_rmsnorm_bf16_bf16_bf16        | bf16* x, const bf16* y, const bf16* w, bf16* h, …                        | "      |
// | add_rmsnorm_warp_<same three>     | same parameters                                                          | warp-per-row: grid = ceil(rows / (RMSNORM_THREADS/32)), block = RMSNORM_THREADS, shared = 0 |
//
// Exact parameter order: (x, y, w, h, rows, cols, eps). Compile-time parameters: RMSNORM_THREADS (default 256,
// a multiple of 32, ≤ 1024). Rule of thumb: the warp variant when cols ≤ 1024.

#include "common.cuh"

#ifndef RMSNORM_THREADS
#define RMSNORM_THREADS 256
#endif

namespace l4_add_rmsnorm {

template <typename TX, typename TW, bool WARP>
__device__ __forceinline__ void add_rmsnorm(TX* x, const TX* __restrict__ y, const TW* __restrict__ w, TX* __restrict__ h,
                                            int rows, int cols, float eps) {
    const auto [row, lane, nthr] = l4_row_split<WARP, RMSNORM_THREADS>();
    if (row >= rows) return;  // uniform per warp (warp variant) or per block (block variant)
    TX* xr = x + row * cols;
    const TX* yr = y + row * cols;
    TX* hr = h + row * cols;
    const bool vec = (cols % 8 == 0) && aligned16(xr) && aligned16(yr) && aligned16(hr) && aligned16(w);

    // Pass 1: x = round(x + y), sum of the rounded squares.
    float ss = 0.f;
    if (vec) {
        for (int c = lane * 8; c < cols; c += nthr * 8) {
            float a[8], b[8];
            load8(xr + c, a);
            load8(yr + c, b);
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                a[e] = to_f32(from_f32<TX>(a[e] + b[e]));
                ss += a[e] * a[e];
            }
            store8(xr + c, a);
        }
    } else {
        for (int c = lane; c < cols; c += nthr) {
            const TX s = from_f32<TX>(to_f32(xr[c]) + to_f32(yr[c]));
            xr[c] = s;
            const float v = to_f32(s);
            ss += v * v;
        }
    }
    ss = WARP ? warp_sum(ss) : block_sum(ss);
    const float inv = rsqrtf(ss / (float)cols + eps);

    // Pass 2: h = x · inv · w, re-reading this thread's own elements of x.
    if (vec) {
        for (int c = lane * 8; c < cols; c += nthr * 8) {
            float v[8], g[8];
            load8(xr + c, v);
            load8(w + c, g);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = v[e] * inv * g[e];
            store8(hr + c, v);
        }
    } else {
        for (int c = lane; c < cols; c += nthr) hr[c] = from_f32<TX>(to_f32(xr[c]) * inv * to_f32(w[c]));
    }
}

}  // namespace l4_add_rmsnorm

extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) add_rmsnorm_f32_f32_f32(float* x, const float* __restrict__ y, const float* __restrict__ w, float* __restrict__ h, int rows, int cols, float eps) { l4_add_rmsnorm::add_rmsnorm<float, float, false>(x, y, w, h, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) add_rmsnorm_f32_bf16_f32(float* x, const float* __restrict__ y, const bf16* __restrict__ w, float* __restrict__ h, int rows, int cols, float eps) { l4_add_rmsnorm::add_rmsnorm<float, bf16, false>(x, y, w, h, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) add_rmsnorm_bf16_bf16_bf16(bf16* x, const bf16* __restrict__ y, const bf16* __restrict__ w, bf16* __restrict__ h, int rows, int cols, float eps) { l4_add_rmsnorm::add_rmsnorm<bf16, bf16, false>(x, y, w, h, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) add_rmsnorm_warp_f32_f32_f32(float* x, const float* __restrict__ y, const float* __restrict__ w, float* __restrict__ h, int rows, int cols, float eps) { l4_add_rmsnorm::add_rmsnorm<float, float, true>(x, y, w, h, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) add_rmsnorm_warp_f32_bf16_f32(float* x, const float* __restrict__ y, const bf16* __restrict__ w, float* __restrict__ h, int rows, int cols, float eps) { l4_add_rmsnorm::add_rmsnorm<float, bf16, true>(x, y, w, h, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) add_rmsnorm_warp_bf16_bf16_bf16(bf16* x, const bf16* __restrict__ y, const bf16* __restrict__ w, bf16* __restrict__ h, int rows, int cols, float eps) { l4_add_rmsnorm::add_rmsnorm<bf16, bf16, true>(x, y, w, h, rows, cols, eps); }
