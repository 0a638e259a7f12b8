// rope.cu — Llama 4's position handling on q and k, in place: rotary embedding on interleaved pairs (RoPE
// layers, optionally followed by the weightless QK norm) and attention temperature tuning (NoPE layers).
//
// Why it looks like this: both are cheap elementwise passes over [T, heads, d] that sit between the q/k
// projections and attention, so the only goals are one read and one write per element and exact agreement
// with the reference. One warp owns one (token, head) row: lane j rotates pairs j, j+32, …, and for the QK
// norm the row's sum of squares is a warp reduction of the rotated values, applied in a second pass over
// the lane's own (L1-resident) elements. The stack frame is sincosf's slow path (Payne–Hanek reduction for
// huge angles), which runs only for angles past ~1e5. Angles follow the reference
// exactly: angle = (float)pos · inv_freq[j] in fp32 (one rounding, as torch's fp32 matmul of a rank-1
// product), then accurate sincosf (not __sinf: positions reach millions, where the fast path's range
// reduction is wrong), then the complex product in fp32. inv_freq [d/2] comes from the host (llama3
// scaling is computed once from config.json there). Positions are a device array of ABSOLUTE positions,
// one per row of x, so prefill, decode and packed batches of sequences all use the same launch.
// Temperature tuning: q *= 1 + attn_scale · log1p(floor((pos + 1) / floor_scale)), all in fp32 with IEEE
// division and log1pf, as the reference computes it.
//
// | kernel              | parameters                                                                            | launch |
// |---------------------|---------------------------------------------------------------------------------------|--------|
// | rope_f32, rope_bf16 | T* x [T, heads, d] (in place), const int* pos [T], const float* inv_freq [d/2],        | grid = ceil(T·heads / (ROPE_THREADS/32)), block = ROPE_THREADS, shared = 0 |
// |                     | int T, int heads, int d, int qk_norm (0/1), float eps                                  |        |
// | rope_qk_f32, _bf16  | T* x [T·hq + T·hk rows of d] (in place: q [T, hq, d] then k [T, hk, d], the q and k blocks | grid = ceil(T·(hq+hk) / (ROPE_THREADS/32)), block = ROPE_THREADS, shared = 0 |
// |                     | of a fused q|k|v projection), pos, inv_freq, int T, int hq, int hk, int d, int qk_norm, float eps | — one launch for q and k at any T |
// | temperature_f32, _bf16 | T* x [T, heads, d] (in place), const int* pos [T], int T, int heads, int d,         | grid = ceil(T·heads·d / ROPE_THREADS) (may be capped: grid-stride), block = ROPE_THREADS, shared = 0 |
// |                     | float attn_scale, float floor_scale                                                    |        |
// d must be even. Compile-time parameters: ROPE_THREADS (default 256, a multiple of 32).

#include "common.cuh"

#ifndef ROPE_THREADS
#define ROPE_THREADS 256
#endif

namespace l4_rope {

// x holds T·heads rows of d, then (heads_b > 0: rope_qk) T·heads_b more: row r < T·heads is token r / heads,
// row T·heads + r' is token r' / heads_b — the q block then the k block of a fused q|k|v projection.
template <typename T>
__device__ __forceinline__ void rope(T* x, const int* __restrict__ pos, const float* __restrict__ inv_freq, int T_, int heads,
                                     int heads_b, int d, int qk_norm, float eps) {
    const long long row = (long long)blockIdx.x * (ROPE_THREADS / 32) + threadIdx.x / 32;
    const int lane = (int)(threadIdx.x & 31);
    const long long rows_a = (long long)T_ * heads;
    if (row >= rows_a + (long long)T_ * heads_b) return;  // uniform per warp
    const float p = (float)pos[row < rows_a ? row / heads : (row - rows_a) / heads_b];
    T* xr = x + row * d;
    const int pairs = d / 2;
    float ss = 0.f;
    // Rotate and store; the QK norm then rescales the lane's own (L1-resident) elements in a second pass, so
    // no per-lane arrays stay live across sincosf's slow path (0 spills on sm_80). With bf16 storage the
    // rotated values are rounded before the norm — as the reference model does (rotary, then qk_norm, each
    // ending in .type_as(x)).
    for (int j = lane; j < pairs; j += 32) {
        float sn, cs;
        sincosf(p * inv_freq[j], &sn, &cs);
        const float a = to_f32(xr[2 * j]), b = to_f32(xr[2 * j + 1]);
        const float r0 = a * cs - b * sn, r1 = a * sn + b * cs;
        ss += r0 * r0 + r1 * r1;
        xr[2 * j] = from_f32<T>(r0);
        xr[2 * j + 1] = from_f32<T>(r1);
    }
    if (!qk_norm) return;
    const float scale = rsqrtf(warp_sum(ss) / (float)d + eps);
    for (int j = lane; j < pairs; j += 32) {
        xr[2 * j] = from_f32<T>(to_f32(xr[2 * j]) * scale);
        xr[2 * j + 1] = from_f32<T>(to_f32(xr[2 * j + 1]) * scale);
    }
}

template <typename T>
__device__ __forceinline__ void temperature(T* x, const int* __restrict__ pos, int T_, int heads, int d, float attn_scale,
                                            float floor_scale) {
    const long long n = (long long)T_ * heads * d, per_token = (long long)heads * d;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
        const float p = (float)pos[e / per_token];
        const float s = 1.f + attn_scale * log1pf(floorf((p + 1.f) / floor_scale));
        x[e] = from_f32<T>(to_f32(x[e]) * s);
    }
}

}  // namespace l4_rope

extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_f32(float* x, const int* __restrict__ pos, const float* __restrict__ inv_freq, int T, int heads, int d, int qk_norm, float eps) { l4_rope::rope(x, pos, inv_freq, T, heads, 0, d, qk_norm, eps); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_bf16(bf16* x, const int* __restrict__ pos, const float* __restrict__ inv_freq, int T, int heads, int d, int qk_norm, float eps) { l4_rope::rope(x, pos, inv_freq, T, heads, 0, d, qk_norm, eps); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_qk_f32(float* x, const int* __restrict__ pos, const float* __restrict__ inv_freq, int T, int hq, int hk, int d, int qk_norm, float eps) { l4_rope::rope(x, pos, inv_freq, T, hq, hk, d, qk_norm, eps); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope_qk_bf16(bf16* x, const int* __restrict__ pos, const float* __restrict__ inv_freq, int T, int hq, int hk, int d, int qk_norm, float eps) { l4_rope::rope(x, pos, inv_freq, T, hq, hk, d, qk_norm, eps); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) temperature_f32(float* x, const int* __restrict__ pos, int T, int heads, int d, float attn_scale, float floor_scale) { l4_rope::temperature(x, pos, T, heads, d, attn_scale, floor_scale); }
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) temperature_bf16(bf16* x, const int* __restrict__ pos, int T, int heads, int d, float attn_scale, float floor_scale) { l4_rope::temperature(x, pos, T, heads, d, attn_scale, floor_scale); }
