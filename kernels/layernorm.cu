// layernorm.cu — y = (x − mean) / sqrt(var + eps) · w + b over each row, in fp32 (torch's nn.LayerNorm).
//
// Why it looks like this: the vision encoder's LayerNorms (layernorm_pre/post and two per layer, over
// Dv = 1408) are memory bound like RMSNorm, so the kernel follows rmsnorm.cu: one block (or one warp, for
// short rows) per row, 16-byte vectors when the row and the parameters allow, and the row re-read from
// L1/L2 on each pass instead of being held in registers (any cols works). Three passes: the mean, then the
// variance from CENTRED values (sum (x − mean)² / cols, the biased variance torch uses) — the one-pass
// E[x²] − mean² form cancels catastrophically when |mean| ≫ std, which post-residual activations can be —
// then the normalised, scaled and shifted output. The extra pass costs one more L1/L2 read of a row of a
// few KiB. All arithmetic is fp32; a bf16 output is rounded once at the end (torch's CUDA LayerNorm on
// bf16 also computes in fp32 and rounds once). In place (y == x) is allowed, which is why x and y are not
// __restrict__: each element is read and written by the same thread.
//
// | kernel                       | parameters (all: int rows, int cols, float eps last)                                    | launch |
// |------------------------------|------------------------------------------------------------------------------------------|--------|
// | layernorm_f32_f32_f32        | const float* x [rows, cols], const float* w [cols], const float* b [cols], float* y [rows, cols] | block-per-row: grid = rows, block = LAYERNORM_THREADS, shared = 0 |
// | layernorm_f32_bf16_f32       | const float* x, const bf16* w, const bf16* b, float* y                                   | "      |
// | layernorm_bf16_bf16_bf16     | const bf16* x, const bf16* w, const bf16* b, bf16* y                                     | "      |
// | layernorm_warp_<same three>  | same parameters as the block-per-row kernel of the same suffix                           | warp-per-row: grid = ceil(rows / (LAYERNORM_THREADS/32)), block = LAYERNORM_THREADS, shared = 0 |
//
// Exact parameter order: (x, w, b, y, rows, cols, eps). Type suffix = x_(w and b)_y.
// Compile-time parameters: LAYERNORM_THREADS (default 256, a multiple of 32, ≤ 1024). The wrapper uses the
// warp variant when cols ≤ 1024.

#include "common.cuh"

#ifndef LAYERNORM_THREADS
#define LAYERNORM_THREADS 256
#endif

namespace l4_layernorm {

// WARP: one warp per row, else one block per row.
template <typename TX, typename TW, typename TY, bool WARP>
__device__ __forceinline__ void layernorm(const TX* x, const TW* __restrict__ w, const TW* __restrict__ b, TY* y,
                                          int rows, int cols, float eps) {
    const auto [row, lane, nthr] = l4_row_split<WARP, LAYERNORM_THREADS>();
    if (row >= rows) return;  // uniform per warp (warp variant) or per block (block variant)
    const TX* xr = x + row * cols;
    TY* yr = y + row * cols;
    const bool vec = (cols % 8 == 0) && aligned16(xr) && aligned16(yr) && aligned16(w) && aligned16(b);
    const float inv_cols = 1.0f / (float)cols;

    // pass 1: mean
    const float s = row_partial_sum(xr, cols, lane, nthr, vec, [](float v) { return v; });
    const float mean = (WARP ? warp_sum(s) : block_sum(s)) * inv_cols;

    // pass 2: biased variance of the centred values
    const float ss = row_partial_sum(xr, cols, lane, nthr, vec, [mean](float v) { const float dv = v - mean; return dv * dv; });
    const float inv = rsqrtf((WARP ? warp_sum(ss) : block_sum(ss)) * inv_cols + eps);

    // pass 3: normalise, scale, shift
    if (vec) {
        for (int c = lane * 8; c < cols; c += nthr * 8) {
            float v[8], g[8], h[8];
            load8(xr + c, v);
            load8(w + c, g);
            load8(b + c, h);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = (v[e] - mean) * inv * g[e] + h[e];
            store8(yr + c, v);
        }
    } else {
        for (int c = lane; c < cols; c += nthr)
            yr[c] = from_f32<TY>((to_f32(xr[c]) - mean) * inv * to_f32(w[c]) + to_f32(b[c]));
    }
}

}  // namespace l4_layernorm

extern "C" __global__ void __launch_bounds__(LAYERNORM_THREADS) layernorm_f32_f32_f32(const float* x, const float* __restrict__ w, const float* __restrict__ b, float* y, int rows, int cols, float eps) { l4_layernorm::layernorm<float, float, float, false>(x, w, b, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(LAYERNORM_THREADS) layernorm_f32_bf16_f32(const float* x, const bf16* __restrict__ w, const bf16* __restrict__ b, float* y, int rows, int cols, float eps) { l4_layernorm::layernorm<float, bf16, float, false>(x, w, b, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(LAYERNORM_THREADS) layernorm_bf16_bf16_bf16(const bf16* x, const bf16* __restrict__ w, const bf16* __restrict__ b, bf16* y, int rows, int cols, float eps) { l4_layernorm::layernorm<bf16, bf16, bf16, false>(x, w, b, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(LAYERNORM_THREADS) layernorm_warp_f32_f32_f32(const float* x, const float* __restrict__ w, const float* __restrict__ b, float* y, int rows, int cols, float eps) { l4_layernorm::layernorm<float, float, float, true>(x, w, b, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(LAYERNORM_THREADS) layernorm_warp_f32_bf16_f32(const float* x, const bf16* __restrict__ w, const bf16* __restrict__ b, float* y, int rows, int cols, float eps) { l4_layernorm::layernorm<float, bf16, float, true>(x, w, b, y, rows, cols, eps); }
extern "C" __global__ void __launch_bounds__(LAYERNORM_THREADS) layernorm_warp_bf16_bf16_bf16(const bf16* x, const bf16* __restrict__ w, const bf16* __restrict__ b, bf16* y, int rows, int cols, float eps) { l4_layernorm::layernorm<bf16, bf16, bf16, true>(x, w, b, y, rows, cols, eps); }
