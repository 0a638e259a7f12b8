// vision_rope.cu — the vision encoder's 2-D rotary embedding, in place on q or k laid out
// [tiles·(N+1), heads, d], N = G² patches per tile (row-major: patch t sits at column t % G, row t / G) and
// the class token last (index N of each tile).
//
// The maths, as HF's Llama4VisionRotaryEmbedding + vision_apply_rotary_emb compute it (verified there):
// x is viewed as d/2 complex numbers (re, im) = (x[2j], x[2j+1]) (view_as_complex of interleaved pairs) and
// multiplied by e^{i·angle_j}. With freq_dim = d/2 and q = d/4, the frequencies are
// f_k = 1 / θ^(fp32(2k) / freq_dim), k < q (= θ^(−4k/d)). HF builds [f(col+1) repeated twice per k,
// f(row+1) repeated twice per k] (d values) and keeps every second one ([..., ::2]), so pair j < q turns by
// (col+1)·f_j and pair j ≥ q by (row+1)·f_{j−q}. The class token's position id is −2, which HF masks to a
// zero angle: it is not rotated (the kernel leaves its row untouched — identical, as (a,b)·(1+0i) = (a,b)).
// This needs freq_dim even, i.e. d % 4 == 0 (the wrapper checks it).
//
// Why it looks like this: an elementwise pass, one read and one write per element. One thread owns one
// (token, pair j) and rotates that pair in every head, so the angle and its sincos are computed once per
// token and pair, not once per head. Consecutive threads take consecutive pairs, so each head row is read
// and written contiguously (a pair is one 8-byte f32 / 4-byte bf16 access when x is aligned to a pair).
// The angle is bit-for-bit HF's: the exponent fp32(2k)/freq_dim in fp32, θ^e in double rounded to fp32
// (torch's fp32 pow is correctly rounded for these arguments in practice; fp32 powf could be an ulp off),
// 1/p in fp32, then (pos+1)·f in fp32; then the accurate sincosf (angles ≤ G, far from its slow path) and
// the complex product in fp32, rounded once to bf16 if x is bf16 (HF: .float() … .type_as(x)). Computing
// it in the kernel (rather than a host table) keeps the wrapper's signature free of a buffer and the
// launch graph-capturable with nothing to allocate or cache; the one double pow per thread is noise.
//
// | kernel                               | parameters                                                                                       | launch |
// |--------------------------------------|---------------------------------------------------------------------------------------------------|--------|
// | vision_rope_f32, vision_rope_bf16    | T* x [rows, heads, d] (in place), long long rows (= tiles·(N+1)), int heads, int d, int tokens_per_tile (= G²+1), int grid_side (G), float theta | grid = ceil(rows·d/2 / VISION_ROPE_THREADS) (may be capped: grid-stride), block = VISION_ROPE_THREADS, shared = 0 |
//
// Compile-time parameters: VISION_ROPE_THREADS (default 256).

#include "common.cuh"

#ifndef VISION_ROPE_THREADS
#define VISION_ROPE_THREADS 256
#endif

namespace l4_vision_rope {

L4_DEV float2 load_pair(const float* p) { return vload<float2>(p); }
L4_DEV float2 load_pair(const bf16* p) { return unpack_bf16x2(vload<uint32_t>(p)); }
L4_DEV void store_pair(float* p, float a, float b) { vstore(p, make_float2(a, b)); }
L4_DEV void store_pair(bf16* p, float a, float b) { vstore(p, pack_bf16x2(a, b)); }

template <typename T>
__device__ __forceinline__ void vision_rope(T* x, long long rows, int heads, int d, int tokens_per_tile, int grid_side,
                                            float theta) {
    const int pairs = d / 2, q = d / 4, patches = grid_side * grid_side;
    const bool vec = ((unsigned long long)x % (2 * sizeof(T))) == 0;  // d is even: then every pair is aligned
    const long long total = rows * pairs, stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long row = e / pairs;
        const int j = (int)(e - row * pairs);
        const int t = (int)(row % tokens_per_tile);
        if (t >= patches) continue;  // the class token: angle 0
        const int k = j < q ? j : j - q;
        const int p = j < q ? t % grid_side : t / grid_side;
        const float ex = (float)(2 * k) / (float)pairs;
        const float f = 1.0f / (float)pow((double)theta, (double)ex);
        float sn, cs;
        sincosf((float)(p + 1) * f, &sn, &cs);
        T* xp = x + row * heads * d + 2 * j;
        for (int h = 0; h < heads; ++h, xp += d) {
            float a, b;
            if (vec) {
                const float2 v = load_pair(xp);
                a = v.x; b = v.y;
            } else {
                a = to_f32(xp[0]); b = to_f32(xp[1]);
            }
            const float r0 = a * cs - b * sn, r1 = a * sn + b * cs;
            if (vec) {
                store_pair(xp, r0, r1);
            } else {
                xp[0] = from_f32<T>(r0);
                xp[1] = from_f32<T>(r1);
            }
        }
    }
}

}  // namespace l4_vision_rope

extern "C" __global__ void __launch_bounds__(VISION_ROPE_THREADS) vision_rope_f32(float* x, long long rows, int heads, int d, int tokens_per_tile, int grid_side, float theta) { l4_vision_rope::vision_rope<float>(x, rows, heads, d, tokens_per_tile, grid_side, theta); }
extern "C" __global__ void __launch_bounds__(VISION_ROPE_THREADS) vision_rope_bf16(bf16* x, long long rows, int heads, int d, int tokens_per_tile, int grid_side, float theta) { l4_vision_rope::vision_rope<bf16>(x, rows, heads, d, tokens_per_tile, grid_side, theta); }
