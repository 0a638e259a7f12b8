// embedding.cu — token embedding lookup: out[t, :] = table[ids[t], :].
//
// Why it looks like this: a gather of whole rows, so one block copies one token's row with 16-byte
// vectors (8 elements per thread per step) when D % 8 == 0 and table and out are 16-byte aligned, else
// element by element; any D ≥ 1 works. The row offset is computed in 64 bits (V·D exceeds 2^31 for
// Llama 4: 202048 × 5120). A bad id must not fault or read out of bounds, and the host must learn about
// it without a synchronisation per launch: the row is written as zeros and *error_flag is set to 1
// (error_flag may be NULL). The host clears the flag, launches, and checks it whenever it next syncs,
// then finds the offending id in its own copy of ids to report "token id X out of range [0, V)".
//
// | kernel                   | parameters                                                                                         | launch |
// |--------------------------|----------------------------------------------------------------------------------------------------|--------|
// | embedding_bf16_f32       | const int* ids [T], const bf16* table [V, D], float* out [T, D], int T, int V, int D, int* error_flag | grid = T, block = EMBEDDING_THREADS, shared = 0 |
// | embedding_bf16_bf16      | const int* ids [T], const bf16* table [V, D], bf16* out [T, D], int T, int V, int D, int* error_flag  | "      |
// | embedding_f32_f32        | const int* ids [T], const float* table [V, D], float* out [T, D], int T, int V, int D, int* error_flag | "      |
//
// Names are embedding_<table dtype>_<out dtype>. Compile-time parameters: EMBEDDING_THREADS (default 128).

#include "common.cuh"

#ifndef EMBEDDING_THREADS
#define EMBEDDING_THREADS 128
#endif

namespace l4_embedding {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return bf16_to_f32(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float v) { return f32_to_bf16(v); }

// 8 consecutive elements <-> 8 floats; p must be 16-byte aligned.
__device__ __forceinline__ void load8(const float* p, float v[8]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const bf16* p, float v[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const float2 a = unpack_bf16x2(u.x), b = unpack_bf16x2(u.y), c = unpack_bf16x2(u.z), d = unpack_bf16x2(u.w);
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y; v[4] = c.x; v[5] = c.y; v[6] = d.x; v[7] = d.y;
}
__device__ __forceinline__ void store8(float* p, const float v[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(bf16* p, const float v[8]) {
    uint4 u;
    u.x = pack_bf16x2(v[0], v[1]); u.y = pack_bf16x2(v[2], v[3]);
    u.z = pack_bf16x2(v[4], v[5]); u.w = pack_bf16x2(v[6], v[7]);
    *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

template <typename TT, typename TO>
__device__ __forceinline__ void embedding(const int* __restrict__ ids, const TT* __restrict__ table,
                                          TO* __restrict__ out, int T, int V, int D, int* __restrict__ error_flag) {
    const int t = blockIdx.x;
    if (t >= T) return;
    const int id = ids[t];
    TO* o = out + (long long)t * D;
    if (id < 0 || id >= V) {
        for (int c = threadIdx.x; c < D; c += EMBEDDING_THREADS) o[c] = from_f32<TO>(0.f);
        if (threadIdx.x == 0 && error_flag != nullptr) *error_flag = 1;
        return;
    }
    const TT* r = table + (long long)id * D;
    if (D % 8 == 0 && aligned16(table) && aligned16(out)) {
        for (int c = threadIdx.x * 8; c < D; c += EMBEDDING_THREADS * 8) {
            float v[8];
            load8(r + c, v);
            store8(o + c, v);
        }
    } else {
        for (int c = threadIdx.x; c < D; c += EMBEDDING_THREADS) o[c] = from_f32<TO>(to_f32(r[c]));
    }
}

}  // namespace l4_embedding

extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS)
embedding_bf16_f32(const int* __restrict__ ids, const bf16* __restrict__ table, float* __restrict__ out, int T, int V, int D,
     int* __restrict__ error_flag) {
    l4_embedding::embedding<bf16, float>(ids, table, out, T, V, D, error_flag);
}
extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS)
embedding_bf16_bf16(const int* __restrict__ ids, const bf16* __restrict__ table, bf16* __restrict__ out, int T, int V, int D,
     int* __restrict__ error_flag) {
    l4_embedding::embedding<bf16, bf16>(ids, table, out, T, V, D, error_flag);
}
extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS)
embedding_f32_f32(const int* __restrict__ ids, const float* __restrict__ table, float* __restrict__ out, int T, int V, int D,
     int* __restrict__ error_flag) {
    l4_embedding::embedding<float, float>(ids, table, out, T, V, D, error_flag);
}
