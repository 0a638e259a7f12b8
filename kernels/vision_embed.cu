// vision_embed.cu — the vision encoder's input sequence per tile: the N patch embeddings, then the class
// embedding appended LAST (HF: torch.cat([patches, class_embedding], dim=1)), plus the learned positional
// embedding over all N + 1 rows: y[t, j] = patches[t, j] + pos[j] for j < N, y[t, N] = cls + pos[N].
//
// Why it looks like this: the concatenation and the add are one pass with one read and one write per
// element (no separate copy to make room for the class row). One block per output row; its threads walk
// the row in 16-byte vectors of 8 when Dv % 8 == 0 and every pointer is 16-byte aligned, else element by
// element. The add is fp32 and a bf16 output is rounded once — the same single rounding torch's bf16 add
// does, so the result is bit-exact in both dtypes. y must not overlap patches (its rows are shifted).
//
// | kernel                                                       | parameters                                                                                   | launch |
// |--------------------------------------------------------------|-----------------------------------------------------------------------------------------------|--------|
// | vision_embed_f32_f32_f32, _f32_bf16_f32, _bf16_bf16_bf16 (patches_(cls,pos)_y) | const TX* patches [tiles, N, Dv], const TW* cls [Dv], const TW* pos [N+1, Dv], TY* y [tiles, N+1, Dv], int tiles, int N, int Dv | grid = tiles·(N+1), block = VISION_EMBED_THREADS, shared = 0 |
//
// Compile-time parameters: VISION_EMBED_THREADS (default 128, a multiple of 32).

#include "common.cuh"

#ifndef VISION_EMBED_THREADS
#define VISION_EMBED_THREADS 128
#endif

namespace l4_vision_embed {

template <typename TX, typename TW, typename TY>
__device__ __forceinline__ void vision_embed(const TX* __restrict__ patches, const TW* __restrict__ cls, const TW* __restrict__ pos,
                                             TY* __restrict__ y, int tiles, int N, int Dv) {
    const long long row = blockIdx.x;  // t·(N+1) + j
    if (row >= (long long)tiles * (N + 1)) return;
    const int t = (int)(row / (N + 1)), j = (int)(row % (N + 1));
    const TX* src = j < N ? patches + ((long long)t * N + j) * Dv : nullptr;
    const TW* pr = pos + (long long)j * Dv;
    TY* yr = y + row * Dv;
    const bool vec = (Dv % 8 == 0) && aligned16(patches) && aligned16(cls) && aligned16(pos) && aligned16(y);
    if (vec) {
        for (int c = threadIdx.x * 8; c < Dv; c += VISION_EMBED_THREADS * 8) {
            float v[8], p[8];
            if (src) load8(src + c, v); else load8(cls + c, v);
            load8(pr + c, p);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] += p[e];
            store8(yr + c, v);
        }
    } else {
        for (int c = threadIdx.x; c < Dv; c += VISION_EMBED_THREADS)
            yr[c] = from_f32<TY>((src ? to_f32(src[c]) : to_f32(cls[c])) + to_f32(pr[c]));
    }
}

}  // namespace l4_vision_embed

extern "C" __global__ void __launch_bounds__(VISION_EMBED_THREADS) vision_embed_f32_f32_f32(const float* __restrict__ patches, const float* __restrict__ cls, const float* __restrict__ pos, float* __restrict__ y, int tiles, int N, int Dv) { l4_vision_embed::vision_embed<float, float, float>(patches, cls, pos, y, tiles, N, Dv); }
extern "C" __global__ void __launch_bounds__(VISION_EMBED_THREADS) vision_embed_f32_bf16_f32(const float* __restrict__ patches, const bf16* __restrict__ cls, const bf16* __restrict__ pos, float* __restrict__ y, int tiles, int N, int Dv) { l4_vision_embed::vision_embed<float, bf16, float>(patches, cls, pos, y, tiles, N, Dv); }
extern "C" __global__ void __launch_bounds__(VISION_EMBED_THREADS) vision_embed_bf16_bf16_bf16(const bf16* __restrict__ patches, const bf16* __restrict__ cls, const bf16* __restrict__ pos, bf16* __restrict__ y, int tiles, int N, int Dv) { l4_vision_embed::vision_embed<bf16, bf16, bf16>(patches, cls, pos, y, tiles, N, Dv); }
