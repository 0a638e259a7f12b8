// softmax.cu — row-wise softmax over x [rows, cols] in fp32: y = exp(x - max) / sum(exp(x - max)).
//
// Why it looks like this: three passes over one row — max, then exp and sum (the exponentials are
// written to y as they are made), then a scale by 1/sum — so nothing but two scalars lives across
// passes and any cols works without a cap. Each thread revisits exactly the elements it wrote in the
// previous pass, so in-place operation (y == x) is safe and x, y are deliberately not __restrict__.
// Subtracting the row max makes exp never overflow; -inf entries (masked scores) give exactly 0. A row
// whose entries are all -inf has no defined softmax: it yields all zeros (not NaN), which is what a
// fully masked attention row should contribute. A NaN makes its row NaN (fmaxf skips NaN, so a row of
// NaN and -inf only is all zeros). Accesses are scalar but coalesced
// (consecutive threads read consecutive elements). Two shapes of work share the templated body:
// block per row (`softmax_f32`, long rows such as attention over a long context) and warp per row
// (`softmax_warp_f32`, many short rows: no __syncthreads at all).
//
// | kernel            | parameters                                                | launch                                            |
// |-------------------|-----------------------------------------------------------|---------------------------------------------------|
// | softmax_f32       | const float* x [rows, cols], float* y [rows, cols], int rows, int cols | grid = rows, block = SOFTMAX_THREADS, shared = 0 |
// | softmax_warp_f32  | same                                                      | grid = ceil(rows / (SOFTMAX_THREADS/32)), block = SOFTMAX_THREADS, shared = 0 |
//
// Compile-time parameters: SOFTMAX_THREADS (default 256, a multiple of 32, ≤ 1024). Rule of thumb: the
// warp variant for cols ≤ 1024.

#include "common.cuh"

#ifndef SOFTMAX_THREADS
#define SOFTMAX_THREADS 256
#endif

namespace l4_softmax {

template <bool WARP>
__device__ __forceinline__ void softmax(const float* x, float* y, int rows, int cols) {
    const auto [row, lane, nthr] = l4_row_split<WARP, SOFTMAX_THREADS>();
    if (row >= rows) return;  // uniform per warp (warp variant) or per block (block variant)
    const float* xr = x + row * cols;
    float* yr = y + row * cols;

    float m = -__int_as_float(0x7f800000);
    for (int c = lane; c < cols; c += nthr) m = fmaxf(m, xr[c]);
    m = WARP ? warp_max(m) : block_max(m);

    if (m == -__int_as_float(0x7f800000)) {  // every entry is -inf: defined here as all zeros
        for (int c = lane; c < cols; c += nthr) yr[c] = 0.f;
        return;
    }
    float s = 0.f;
    for (int c = lane; c < cols; c += nthr) {
        const float e = expf(xr[c] - m);
        yr[c] = e;
        s += e;
    }
    s = WARP ? warp_sum(s) : block_sum(s);
    const float inv = 1.f / s;  // s >= 1: the max element contributes exp(0)
    for (int c = lane; c < cols; c += nthr) yr[c] *= inv;
}

}  // namespace l4_softmax

extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS) softmax_f32(const float* x, float* y, int rows, int cols) { l4_softmax::softmax<false>(x, y, rows, cols); }
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS) softmax_warp_f32(const float* x, float* y, int rows, int cols) { l4_softmax::softmax<true>(x, y, rows, cols); }
