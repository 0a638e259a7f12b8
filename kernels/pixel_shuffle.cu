// pixel_shuffle.cu — HF's pixel_shuffle(x, r) (Llama4VisionPixelShuffleMLP) as one gather: per tile,
// x [N, C] with N = G² → y [Wr·Wr, C2], Wr = G·r, C1 = C/r, C2 = C/r² (r = 0.5: [G²/4, 4C]).
//
// HF's sequence is view [G, G, C] → view [G, Wr, C1] → permute(1, 0) → view [Wr, Wr, C2] → permute(1, 0)
// → view [Wr², C2]. Undoing it for output element (o, c4) with h4 = o / Wr, w2 = o % Wr:
//   f = h4·C2 + c4;  hh = f / C1, c2 = f % C1      (the second view and the second permute)
//   g = w2·C1 + c2;  ww = g / C,  c  = g % C       (the first view and the first permute)
//   y[o, c4] = x[hh·G + ww, c]
// (valid because G·C = Wr·C1 and G·C1 = Wr·C2, which the wrapper checks exactly as HF's views would).
//
// Why it looks like this: a pure permutation, one read and one write per element. Threads own consecutive
// output elements, so the writes are fully coalesced; reads come in runs of min(C, C1, C2) consecutive
// elements (C = 1408 at Llama 4's shapes), coalesced too. 8 elements per thread as 16-byte vectors when C,
// C1 and C2 are multiples of 8 and x, y are 16-byte aligned (an aligned run of 8 outputs then maps to 8
// consecutive inputs), else one element per thread; a grid-stride loop makes any grid size correct. x may
// hold tokens_in ≥ N rows per tile, of which the first N are used: the encoder's output with the class
// token still in the last row (HF drops it with hidden_state[:, :-1, :] first) is read in place.
//
// | kernel                                 | parameters                                                                                   | launch |
// |----------------------------------------|-----------------------------------------------------------------------------------------------|--------|
// | pixel_shuffle_f32, pixel_shuffle_bf16   | const T* x [tiles, tokens_in, C], T* y [tiles, Wr·Wr, C2], int tiles, int tokens_in, int G, int Wr, int C, int C1, int C2 | grid = ceil(tiles·Wr²·C2 / (8·PIXEL_SHUFFLE_THREADS)) (may be capped: grid-stride), block = PIXEL_SHUFFLE_THREADS, shared = 0 |
//
// Compile-time parameters: PIXEL_SHUFFLE_THREADS (default 256).

#include "common.cuh"

#ifndef PIXEL_SHUFFLE_THREADS
#define PIXEL_SHUFFLE_THREADS 256
#endif

namespace l4_pixel_shuffle {

template <typename T>
__device__ __forceinline__ void pixel_shuffle(const T* __restrict__ x, T* __restrict__ y, int tiles, int tokens_in, int G,
                                              int Wr, int C, int C1, int C2) {
    const int per_tile = Wr * Wr * C2;  // = G²·C
    const long long total = (long long)tiles * per_tile, stride = (long long)gridDim.x * blockDim.x;
    const bool vec = C % 8 == 0 && C1 % 8 == 0 && C2 % 8 == 0 && aligned16(x) && aligned16(y);
    const int step = vec ? 8 : 1;
    for (long long e = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * step; e < total; e += stride * step) {
        const int t = (int)(e / per_tile), r = (int)(e - (long long)t * per_tile);
        const int o = r / C2, c4 = r - o * C2, h4 = o / Wr, w2 = o - h4 * Wr;
        const int f = h4 * C2 + c4, hh = f / C1, c2 = f - hh * C1;
        const int g = w2 * C1 + c2, ww = g / C, c = g - ww * C;
        const T* src = x + ((long long)t * tokens_in + hh * G + ww) * C + c;
        if (vec) {
            // 8 elements = sizeof(T)/2 16-byte words, copied bit for bit
#pragma unroll
            for (int k = 0; k < (int)sizeof(T) / 2; ++k)
                vstore(reinterpret_cast<uint4*>(y + e) + k, vload<uint4>(reinterpret_cast<const uint4*>(src) + k));
        } else {
            y[e] = *src;
        }
    }
}

}  // namespace l4_pixel_shuffle

extern "C" __global__ void __launch_bounds__(PIXEL_SHUFFLE_THREADS) pixel_shuffle_f32(const float* __restrict__ x, float* __restrict__ y, int tiles, int tokens_in, int G, int Wr, int C, int C1, int C2) { l4_pixel_shuffle::pixel_shuffle<float>(x, y, tiles, tokens_in, G, Wr, C, C1, C2); }
extern "C" __global__ void __launch_bounds__(PIXEL_SHUFFLE_THREADS) pixel_shuffle_bf16(const bf16* __restrict__ x, bf16* __restrict__ y, int tiles, int tokens_in, int G, int Wr, int C, int C1, int C2) { l4_pixel_shuffle::pixel_shuffle<bf16>(x, y, tiles, tokens_in, G, Wr, C, C1, C2); }
