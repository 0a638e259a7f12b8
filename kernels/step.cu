// step.cu — the decode step's bookkeeping on the device, so a captured step (a CUDA graph) needs no upload.
//
// Why it looks like this: a captured graph replays fixed launches with fixed arguments, so everything that
// changes from one token to the next must live in device memory and be advanced by a kernel. step_decode
// derives the new token's position from the attention descriptors the previous piece left (q_pos0 + its
// length: whether the host uploaded them for a prefill piece or the previous step wrote them), writes the
// token id the sampler chose into the graph's ids input, the position into its pos input, and both
// descriptor sets (RoPE layers: keys from the chunk's start; NoPE layers: from 0). kv_append stores a piece's
// keys and values at the slot its descriptor implies (kv_len − piece length), replacing two host-addressed
// copies per layer. One thread does the step (a handful of ints); kv_append streams rows, 16 bytes at a time
// when aligned. Descriptor layout (int32, as kernels/attention.cu reads it): q_start {0, T} | kv_len | q_pos0 |
// kv_pos0 | pad | kv_off (int64).
//
// | kernel             | parameters                                                                   | launch |
// |--------------------|------------------------------------------------------------------------------|--------|
// | step_decode        | const int* sampled [1], int* ids [1], int* pos [1], int* rope_desc [8], int* nope_desc [8], int chunk | grid = 1, block = 32, shared = 0 |
// | kv_append_f32      | const float* k_new [T, E], const float* v_new [T, E], float* k_cache [S, E], float* v_cache [S, E], const int* desc [8], long long row_elems (E), int max_rows (bound on T) | grid = (ceil(E / (8·STEP_THREADS)), max_rows), block = STEP_THREADS, shared = 0 |
// | kv_append_bf16     | the same with bf16                                                           | "      |
// | kv_append_f32_f8,  | (const T* k_new [T, Hkv·d], const T* v_new, uint8_t* k_cache [S, Hkv·d] e4m3, uint8_t* v_cache, float* k_scale [S, Hkv], float* v_scale, const int* desc [8], int heads (Hkv), int head_dim (d), int max_rows) | grid = (ceil(Hkv / (STEP_THREADS/32)), max_rows), block = STEP_THREADS |
// |   kv_append_bf16_f8 | the FP8 KV cache: each (token, kv head) row quantized to e4m3 with its own f32 scale (one warp per row) | "  |
//
// Compile-time parameters: STEP_THREADS (default 128).

#include "common.cuh"

#ifndef STEP_THREADS
#define STEP_THREADS 128
#endif

extern "C" __global__ void __launch_bounds__(32) step_decode(const int* sampled, int* ids, int* pos, int* rope_desc, int* nope_desc, int chunk) {
    if (threadIdx.x != 0) return;
    const int p = nope_desc[3] + (nope_desc[1] - nope_desc[0]);   // the previous piece's first position + its length
    const int base = chunk > 0 ? p / chunk * chunk : 0;
    ids[0] = sampled[0];
    pos[0] = p;
    nope_desc[0] = 0; nope_desc[1] = 1; nope_desc[2] = p + 1; nope_desc[3] = p; nope_desc[4] = 0;
    rope_desc[0] = 0; rope_desc[1] = 1; rope_desc[2] = p + 1 - base; rope_desc[3] = p; rope_desc[4] = base;
}

namespace l4_step {

template <typename T>
__device__ __forceinline__ void kv_append(const T* k_new, const T* v_new, T* k_cache, T* v_cache, const int* desc, long long row_elems, int max_rows) {
    const int t = desc[1] - desc[0];
    const int r = blockIdx.y;
    if (r >= t || r >= max_rows) return;
    const long long slot = (long long)desc[2] - t + r;
    const T* ks = k_new + (long long)r * row_elems;
    const T* vs = v_new + (long long)r * row_elems;
    T* kd = k_cache + slot * row_elems;
    T* vd = v_cache + slot * row_elems;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x, stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (aligned16(ks) && aligned16(vs) && aligned16(kd) && aligned16(vd)) {
        constexpr int V = 16 / sizeof(T);
        for (long long i = tid; i < row_elems / V; i += stride) {
            reinterpret_cast<int4*>(kd)[i] = reinterpret_cast<const int4*>(ks)[i];
            reinterpret_cast<int4*>(vd)[i] = reinterpret_cast<const int4*>(vs)[i];
        }
        done = row_elems / V * V;
    }
    for (long long i = done + tid; i < row_elems; i += stride) { kd[i] = ks[i]; vd[i] = vs[i]; }
}

// FP8 KV cache: one warp per (token, kv head) row of head_dim values: s = max(max|row| / 448, 1/(448·512)),
// codes = e4m3(x / s) (IEEE division, round to nearest even, saturating) — the FBGEMM row rule, reused from common.cuh.
template <typename T>
__device__ __forceinline__ void quant_row(const T* src, uint8_t* dst, float* sdst, int head_dim, int lane) {
    float amax = 0.f;
    for (int i = lane; i < head_dim; i += 32) amax = fmaxf(amax, fabsf(to_f32(src[i])));
    const float s = fp8_row_scale(warp_max(amax), __int_as_float(0x7f800000));
    for (int i = lane; i < head_dim; i += 32) dst[i] = f32_to_e4m3(to_f32(src[i]) / s);
    if (lane == 0) *sdst = s;
}

template <typename T>
__device__ __forceinline__ void kv_append_f8(const T* k_new, const T* v_new, uint8_t* k_cache, uint8_t* v_cache, float* k_scale,
                                             float* v_scale, const int* desc, int heads, int head_dim, int max_rows) {
    const int t = desc[1] - desc[0];
    const int r = blockIdx.y;
    const int g = blockIdx.x * (STEP_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= t || r >= max_rows || g >= heads) return;  // whole warps leave together
    const long long slot = (long long)desc[2] - t + r;
    const long long src = ((long long)r * heads + g) * head_dim, row = slot * heads + g, dst = row * head_dim;
    quant_row(k_new + src, k_cache + dst, k_scale + row, head_dim, lane);
    quant_row(v_new + src, v_cache + dst, v_scale + row, head_dim, lane);
}

}  // namespace l4_step

extern "C" __global__ void __launch_bounds__(STEP_THREADS) kv_append_f32(const float* k_new, const float* v_new, float* k_cache, float* v_cache,
                                                                        const int* desc, long long row_elems, int max_rows) {
    l4_step::kv_append(k_new, v_new, k_cache, v_cache, desc, row_elems, max_rows);
}
extern "C" __global__ void __launch_bounds__(STEP_THREADS) kv_append_bf16(const bf16* k_new, const bf16* v_new, bf16* k_cache, bf16* v_cache,
                                                                         const int* desc, long long row_elems, int max_rows) {
    l4_step::kv_append(k_new, v_new, k_cache, v_cache, desc, row_elems, max_rows);
}

// FP8 KV cache entry points (explicit names: the emulator's module scanner reads them from the source)
#define L4_KV_APPEND_F8_PARAMS(T) \
    const T *k_new, const T *v_new, uint8_t *k_cache, uint8_t *v_cache, float *k_scale, float *v_scale, const int *desc, int heads, \
        int head_dim, int max_rows
extern "C" __global__ void __launch_bounds__(STEP_THREADS) kv_append_f32_f8(L4_KV_APPEND_F8_PARAMS(float)) {
    l4_step::kv_append_f8(k_new, v_new, k_cache, v_cache, k_scale, v_scale, desc, heads, head_dim, max_rows);
}
extern "C" __global__ void __launch_bounds__(STEP_THREADS) kv_append_bf16_f8(L4_KV_APPEND_F8_PARAMS(bf16)) {
    l4_step::kv_append_f8(k_new, v_new, k_cache, v_cache, k_scale, v_scale, desc, heads, head_dim, max_rows);
}
