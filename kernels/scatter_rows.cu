// scatter_rows.cu — early fusion: dst[index[i], :] = src[i, :] for i < n, with a dtype conversion on the way
// (the projected image features, f32 or bf16, replace the <|patch|> token embeddings in the activation
// dtype). Rows of dst that index does not name are left untouched.
//
// Why it looks like this: a row copy driven by a device-side index (the host computes it once from the
// prompt's <|patch|> positions and uploads it; the launch itself reads nothing back, so it can sit in a
// captured graph). One block per source row, its threads walking the row in 16-byte vectors of 8 when
// D % 8 == 0 and src, dst are 16-byte aligned, else element by element; reads and writes are both
// contiguous within a row. An index outside [0, T) skips its row (a bad index must not write out of
// bounds; the wrapper cannot check device data). If two entries name the same dst row, which one lands is
// unspecified. dst must not overlap src.
//
// | kernel                                              | parameters                                                                                  | launch |
// |-----------------------------------------------------|----------------------------------------------------------------------------------------------|--------|
// | scatter_rows_f32_f32, _bf16_bf16, _f32_bf16, _bf16_f32 (src_dst) | const TS* src [n, D], const int* index [n], TD* dst [T, D], int n, int D, int T | grid = n, block = SCATTER_ROWS_THREADS, shared = 0 |
//
// Compile-time parameters: SCATTER_ROWS_THREADS (default 128, a multiple of 32).

#include "common.cuh"

#ifndef SCATTER_ROWS_THREADS
#define SCATTER_ROWS_THREADS 128
#endif

namespace l4_scatter_rows {

template <typename TS, typename TD>
__device__ __forceinline__ void scatter_rows(const TS* __restrict__ src, const int* __restrict__ index, TD* __restrict__ dst,
                                             int n, int D, int T) {
    const int i = blockIdx.x;
    if (i >= n) return;
    const int r = index[i];
    if (r < 0 || r >= T) return;  // uniform per block
    const TS* s = src + (long long)i * D;
    TD* d = dst + (long long)r * D;
    if (D % 8 == 0 && aligned16(src) && aligned16(dst)) {
        for (int c = threadIdx.x * 8; c < D; c += SCATTER_ROWS_THREADS * 8) {
            float v[8];
            load8(s + c, v);
            store8(d + c, v);
        }
    } else {
        for (int c = threadIdx.x; c < D; c += SCATTER_ROWS_THREADS) d[c] = from_f32<TD>(to_f32(s[c]));
    }
}

}  // namespace l4_scatter_rows

extern "C" __global__ void __launch_bounds__(SCATTER_ROWS_THREADS) scatter_rows_f32_f32(const float* __restrict__ src, const int* __restrict__ index, float* __restrict__ dst, int n, int D, int T) { l4_scatter_rows::scatter_rows<float, float>(src, index, dst, n, D, T); }
extern "C" __global__ void __launch_bounds__(SCATTER_ROWS_THREADS) scatter_rows_bf16_bf16(const bf16* __restrict__ src, const int* __restrict__ index, bf16* __restrict__ dst, int n, int D, int T) { l4_scatter_rows::scatter_rows<bf16, bf16>(src, index, dst, n, D, T); }
extern "C" __global__ void __launch_bounds__(SCATTER_ROWS_THREADS) scatter_rows_f32_bf16(const float* __restrict__ src, const int* __restrict__ index, bf16* __restrict__ dst, int n, int D, int T) { l4_scatter_rows::scatter_rows<float, bf16>(src, index, dst, n, D, T); }
extern "C" __global__ void __launch_bounds__(SCATTER_ROWS_THREADS) scatter_rows_bf16_f32(const bf16* __restrict__ src, const int* __restrict__ index, float* __restrict__ dst, int n, int D, int T) { l4_scatter_rows::scatter_rows<bf16, float>(src, index, dst, n, D, T); }
