// mma_tile.cuh — pieces shared by the tensor-core GEMMs (gemm.cu, moe.cu): staging a bf16 tile into shared
// memory and storing accumulator pairs. One copy, so a fix to an edge case lands in every GEMM at once.
#pragma once
#include "common.cuh"

// Copies the TR×TC tile at (r0, c0) of the row-major bf16 matrix G [R, C] with leading dimension ld into shared S
// (leading dimension LD), zero-filling outside the matrix. Whole 16-byte chunks whose global address is aligned
// go by cp.async; edge or unaligned chunks by element loads (visible after the __syncthreads that precedes their
// use). NT threads of the block share the work; tid is this thread's index among them.
template <int TR, int TC, int LD, int NT>
L4_DEV void l4_load_tile(bf16* S, const bf16* __restrict__ G, int R, int C, long long ld, int r0, int c0, int tid) {
    constexpr int CPR = TC / 8;  // 16-byte chunks per tile row
#pragma unroll
    for (int ch = tid; ch < TR * CPR; ch += NT) {
        const int r = ch / CPR, c = (ch % CPR) * 8;
        const int gr = r0 + r, gc = c0 + c;
        bf16* s = S + r * LD + c;
        const bf16* g = G + (long long)gr * ld + gc;
        if (gr < R && gc + 8 <= C && aligned16(g)) {
            cp_async_16(s, g);
        } else {
            uint32_t w[4] = {0u, 0u, 0u, 0u};
            if (gr < R) {
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    if (gc + e < C) w[e >> 1] |= (uint32_t)g[e].bits << (16 * (e & 1));
            }
            vstore(s, make_uint4(w[0], w[1], w[2], w[3]));
        }
    }
}

// Stores C[off] and C[off+1] (bounds checked by the caller), as one pair store when the ADDRESS is aligned for it
// (not the index: C itself may be offset).
L4_DEV void l4_store_pair(float* C, long long off, bool both, float v0, float v1) {
    if (both && ((unsigned long long)(C + off) & 7ull) == 0) vstore(C + off, make_float2(v0, v1));
    else { C[off] = v0; if (both) C[off + 1] = v1; }
}
L4_DEV void l4_store_pair(bf16* C, long long off, bool both, float v0, float v1) {
    if (both && ((unsigned long long)(C + off) & 3ull) == 0) vstore(C + off, pack_bf16x2(v0, v1));
    else { C[off] = f32_to_bf16(v0); if (both) C[off + 1] = f32_to_bf16(v1); }
}
