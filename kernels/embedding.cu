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

extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS) embedding_bf16_f32(const int* __restrict__ ids, const bf16* __restrict__ table, float* __restrict__ out, int T, int V, int D, int* __restrict__ error_flag) { l4_embedding::embedding<bf16, float>(ids, table, out, T, V, D, error_flag); }
extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS) embedding_bf16_bf16(const int* __restrict__ ids, const bf16* __restrict__ table, bf16* __restrict__ out, int T, int V, int D, int* __restrict__ error_flag) { l4_embedding::embedding<bf16, bf16>(ids, table, out, T, V, D, error_flag); }
extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS) embedding_f32_f32(const int* __restrict__ ids, const float* __restrict__ table, float* __restrict__ out, int T, int V, int D, int* __restrict__ error_flag) { l4_embedding::embedding<float, float>(ids, table, out, T, V, D, error_flag); }
