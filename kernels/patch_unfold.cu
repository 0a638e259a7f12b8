// patch_unfold.cu — the vision encoder's patch extraction: pixel tiles [tiles, C, H, W] → one row per
// P×P patch, cols [tiles·Gh·Gw, C·P·P] with Gh = H / P, Gw = W / P (floor, like nn.Unfold with stride P and
// no padding: trailing pixels that do not fill a patch are dropped). Patches are row-major within a tile
// (row = (t·Gh + py)·Gw + px) and the features of a row are ordered (channel, ky, kx): exactly
// nn.Unfold(kernel P, stride P) followed by permute(0, 2, 1), which is what HF's Llama4UnfoldConvolution
// feeds its bias-free linear. The linear itself is the GEMM that follows.
//
// Why it looks like this: a pure gather with a dtype conversion (the processor's pixels are bf16; the
// activation may be f32), ~6 MB for 17 tiles, so the only goal is coalesced traffic. One block per output
// row: its threads walk the row's C·P·P features in order, so the writes are fully coalesced and the reads
// are runs of P consecutive pixels (one patch row) — 28 bytes at P = 14 in bf16, the best a P-wide window
// allows without staging in shared memory (not worth it for a one-off ~µs pass). Rows are on blockIdx.x
// (2^31 − 1), so any number of tiles works; the per-element index maths is 32-bit within a row and 64-bit
// for the row and tile offsets.
//
// | kernel                                                         | parameters                                                                   | launch |
// |----------------------------------------------------------------|-------------------------------------------------------------------------------|--------|
// | patch_unfold_f32_f32, _bf16_bf16, _bf16_f32, _f32_bf16 (pixels_cols) | const TP* pixels [tiles, C, H, W], TC* cols [tiles·Gh·Gw, C·P·P], int tiles, int C, int H, int W, int P | grid = tiles·(H/P)·(W/P), block = PATCH_UNFOLD_THREADS, shared = 0 |
//
// Compile-time parameters: PATCH_UNFOLD_THREADS (default 128, a multiple of 32).

#include "common.cuh"

#ifndef PATCH_UNFOLD_THREADS
#define PATCH_UNFOLD_THREADS 128
#endif

namespace l4_patch_unfold {

template <typename TP, typename TC>
__device__ __forceinline__ void patch_unfold(const TP* __restrict__ pixels, TC* __restrict__ cols, int tiles, int C, int H,
                                             int W, int P) {
    const int gh = H / P, gw = W / P, np = gh * gw;
    const long long row = blockIdx.x;
    if (row >= (long long)tiles * np) return;
    const int t = (int)(row / np), p = (int)(row % np), py = p / gw, px = p % gw;
    const int pp = P * P, K = C * pp;
    // top-left pixel of this patch in channel 0 of tile t
    const TP* src = pixels + ((long long)t * C * H + (long long)py * P) * W + (long long)px * P;
    TC* dst = cols + row * K;
    for (int f = threadIdx.x; f < K; f += PATCH_UNFOLD_THREADS) {
        const int c = f / pp, r = f - c * pp, ky = r / P, kx = r - ky * P;
        dst[f] = from_f32<TC>(to_f32(src[((long long)c * H + ky) * W + kx]));
    }
}

}  // namespace l4_patch_unfold

extern "C" __global__ void __launch_bounds__(PATCH_UNFOLD_THREADS) patch_unfold_f32_f32(const float* __restrict__ pixels, float* __restrict__ cols, int tiles, int C, int H, int W, int P) { l4_patch_unfold::patch_unfold<float, float>(pixels, cols, tiles, C, H, W, P); }
extern "C" __global__ void __launch_bounds__(PATCH_UNFOLD_THREADS) patch_unfold_bf16_bf16(const bf16* __restrict__ pixels, bf16* __restrict__ cols, int tiles, int C, int H, int W, int P) { l4_patch_unfold::patch_unfold<bf16, bf16>(pixels, cols, tiles, C, H, W, P); }
extern "C" __global__ void __launch_bounds__(PATCH_UNFOLD_THREADS) patch_unfold_bf16_f32(const bf16* __restrict__ pixels, float* __restrict__ cols, int tiles, int C, int H, int W, int P) { l4_patch_unfold::patch_unfold<bf16, float>(pixels, cols, tiles, C, H, W, P); }
extern "C" __global__ void __launch_bounds__(PATCH_UNFOLD_THREADS) patch_unfold_f32_bf16(const float* __restrict__ pixels, bf16* __restrict__ cols, int tiles, int C, int H, int W, int P) { l4_patch_unfold::patch_unfold<float, bf16>(pixels, cols, tiles, C, H, W, P); }
