// step.cu — the decode step's bookkeeping on the device, so a captured step (a CUDA graph) needs no upload.
//
// Why it looks like this: a captured graph replays fixed launches with fixed arguments, so everything that
// changes from one token to the next must live in device memory and be advanced by a kernel. step_decode
// derives the new token's position from the attention descriptors the previous piece left (q_pos0 + its
// length: whether the host uploaded them for a prefill piece or the previous step wrote them), writes the
// token id the sampler chose into the graph's ids input, the position into its pos input, and both
// descriptor sets (RoPE layers: keys from the chunk's start; NoPE layers: from 0). kv_append stores a piece's
// keys and values at the slot its descriptor implies (kv_len − piece length), replacing two host-addressed
// copies per layer. One thread does the step (a handful of ints); kv_append streams the piece (its rows are
// contiguous in k_new and in the cache), 16 bytes at a time when aligned, any number of rows. Descriptor layout (int32, as kernels/attention.cu reads it): q_start {0, T} | kv_len | q_pos0 |
// kv_pos0 | pad | kv_off (int64).
//
// | kernel             | parameters                                                                   | launch |
// |--------------------|------------------------------------------------------------------------------|--------|
// | step_decode        | const int* sampled [1], int* ids [1], int* pos [1], int* rope_desc [8], int* nope_desc [8], int chunk | grid = 1, block = 32, shared = 0 |
// | kv_append_f32      | const float* k_new [T, E], const float* v_new [T, E], float* k_cache [S, E], float* v_cache [S, E], const int* desc [8], long long row_elems (E), int max_rows (bound on T) | grid = (ceil(max_rows·E / (V·STEP_THREADS)) capped, threads stride; V = 16 bytes of T), block = STEP_THREADS, shared = 0 |
// | kv_append_bf16     | the same with bf16                                                           | "      |
// | kv_append_f32_f8,  | (const T* k_new [T, Hkv·d], const T* v_new, uint8_t* k_cache [S, Hkv·d] e4m3, uint8_t* v_cache, float* k_scale [S, Hkv], float* v_scale, const int* desc [8], int heads (Hkv), int head_dim (d), int max_rows) | grid = (ceil(max_rows·Hkv / (STEP_THREADS/32)) capped, warps stride), block = STEP_THREADS |
// |   kv_append_bf16_f8 | the FP8 KV cache: each (token, kv head) row quantized to e4m3 with its own f32 scale (one warp per row) | "  |
//
// Compile-time parameters: STEP_THREADS (default 128).

// attention_common.cuh: kv_quant_row (the FP8 KV row rule); it includes common.cuh
#include "attention_common.cuh"

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

// Threads stride over the piece's (row, 16-byte vector) pairs flattened into one 64-bit index on the grid's x
// dimension: any number of rows (no 65,535 grid.y limit), 64-bit offsets throughout. Element copies when a base
// pointer is not 16-byte aligned or E is not a multiple of the vector.
template <typename T>
__device__ __forceinline__ void kv_append(const T* k_new, const T* v_new, T* k_cache, T* v_cache, const int* desc, long long row_elems, int max_rows) {
    const int t = min(desc[1] - desc[0], max_rows);
    if (t <= 0) return;
    const long long slot0 = (long long)desc[2] - (desc[1] - desc[0]);  // the piece's first cache row
    T* kd = k_cache + slot0 * row_elems;
    T* vd = v_cache + slot0 * row_elems;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x, stride = (long long)gridDim.x * blockDim.x;
    constexpr int V = 16 / sizeof(T);
    if (row_elems % V == 0 && aligned16(k_new) && aligned16(v_new) && aligned16(kd) && aligned16(vd)) {
        const long long n = (long long)t * (row_elems / V);  // the piece's rows are contiguous in both
        for (long long i = tid; i < n; i += stride) {
            vstore(reinterpret_cast<int4*>(kd) + i, vload<int4>(reinterpret_cast<const int4*>(k_new) + i));
            vstore(reinterpret_cast<int4*>(vd) + i, vload<int4>(reinterpret_cast<const int4*>(v_new) + i));
        }
        return;
    }
    const long long n = (long long)t * row_elems;
    for (long long i = tid; i < n; i += stride) { kd[i] = k_new[i]; vd[i] = v_new[i]; }
}

// FP8 KV cache: one warp per (token, kv head) row (attention_common.cuh's kv_quant_row: the FBGEMM row rule); warps
// stride over the piece's (row, head) pairs on the grid's x dimension (any number of rows).
template <typename T>
__device__ __forceinline__ void kv_append_f8(const T* k_new, const T* v_new, uint8_t* k_cache, uint8_t* v_cache, float* k_scale,
                                             float* v_scale, const int* desc, int heads, int head_dim, int max_rows) {
    const int t = min(desc[1] - desc[0], max_rows), lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    const long long slot0 = (long long)desc[2] - (desc[1] - desc[0]);
    const long long pairs = (long long)max(t, 0) * heads;
    for (long long w = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); w < pairs; w += (long long)gridDim.x * wpb) {
        const long long r = w / heads, g = w % heads;  // whole warps take the same pair
        const long long src = (r * heads + g) * head_dim, row = (slot0 + r) * heads + g, dst = row * head_dim;
        l4_attn::kv_quant_row(k_new + src, k_cache + dst, k_scale + row, head_dim, lane);
        l4_attn::kv_quant_row(v_new + src, v_cache + dst, v_scale + row, head_dim, lane);
    }
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
