// mma_tile.cuh — pieces shared by the tensor-core GEMMs (gemm.cu, gemm_int4.cu, moe.cu, moe_int4.cu): staging a bf16
// tile into shared memory, the cp.async pipeline, A/B fragments, the mma over a warp tile, the accumulator epilogue.
// One copy, so a fix to an edge case lands in every GEMM at once.
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

// ---------------------------------------------------------------- fragments
// The MI m16×k16 A fragments of a warp whose rows start at row0 of the staged [rows][LD] bf16 tile, k16 step kk:
// ldmatrix.x4 matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
template <int MI, int LD>
L4_DEV void l4_load_afrag(uint32_t (&af)[MI][4], const bf16* as, int row0, int kk, int lane) {
#pragma unroll
    for (int i = 0; i < MI; ++i) ldmatrix_x4(af[i], as + (row0 + i * 16 + (lane & 15)) * LD + kk + (lane >> 4) * 8);
}

// The NI k16×n8 B fragments of a warp whose columns start at col0, two n8 blocks per ldmatrix.x4. KN: B staged
// [k][n] (leading dimension LD), read transposed: matrices (k0-7,n0-7) (k8-15,n0-7) (k0-7,n8-15) (k8-15,n8-15).
// !KN: staged [n][k]: matrices (n0-7,k0-7) (n0-7,k8-15) (n8-15,k0-7) (n8-15,k8-15).
template <bool KN, int NI, int LD>
L4_DEV void l4_load_bfrag(uint32_t (&bfr)[NI][2], const bf16* bs, int col0, int kk, int lane) {
#pragma unroll
    for (int j = 0; j < NI; j += 2) {
        uint32_t r[4];
        if constexpr (KN) ldmatrix_x4_trans(r, bs + (kk + (lane & 15)) * LD + col0 + j * 8 + (lane >> 4) * 8);
        else ldmatrix_x4(r, bs + (col0 + j * 8 + (lane >> 4) * 8 + (lane & 7)) * LD + kk + ((lane >> 3) & 1) * 8);
        bfr[j][0] = r[0]; bfr[j][1] = r[1];
        bfr[j + 1][0] = r[2]; bfr[j + 1][1] = r[3];
    }
}

// acc[i][j] += A_i · B_j for every fragment pair of the warp tile (mma.m16n8k16, bf16 in, fp32 accumulate).
template <int MI, int NI>
L4_DEV void l4_mma_tile(float (&acc)[MI][NI][4], const uint32_t (&af)[MI][4], const uint32_t (&bfr)[NI][2]) {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma_m16n8k16_bf16_f32(acc[i][j], af[i], bfr[j], acc[i][j]);
}

// ---------------------------------------------------------------- the cp.async main loop
// Every tiled GEMM here runs the same STAGES-deep pipeline over KT k-slabs; load(stage, kt) issues slab kt's copies
// into buffer `stage`. The prologue issues slabs 0..STAGES-2, one commit group each (empty past KT).
template <int STAGES, typename Load>
L4_DEV void l4_pipeline_prologue(int KT, const Load& load) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load(s, s);
        cp_async_commit();
    }
}
// Step kt (before its compute): slab kt has landed for this thread, then (__syncthreads) for everyone, and everyone is
// done with slab kt-1's buffer, into which slab kt+STAGES-1 is issued. Always commits (possibly an empty group) so the
// group count stays in step. Slab kt is then in buffer kt % STAGES; the loop ends with cp_async_wait_all().
template <int STAGES, typename Load>
L4_DEV void l4_pipeline_step(int kt, int KT, const Load& load) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int nx = kt + STAGES - 1;
    if (nx < KT) load(nx % STAGES, nx);
    cp_async_commit();
}

// ---------------------------------------------------------------- epilogue
// Visits this lane's accumulator pairs of a warp tile with MI × NI fragments whose first output is (row0, col0) in an
// output with N columns: f(i, j, h, row, col, both) for acc[i][j][2h], acc[i][j][2h+1] at (row, col), (row, col+1)
// (m16n8 C layout: c0,c1 at (lane/4, 2·(lane%4) + {0,1}); c2,c3 eight rows below). Pairs with col ≥ N are skipped;
// both = col+1 < N. Rows are the caller's to check.
template <int MI, int NI, typename F>
L4_DEV void l4_for_each_pair(int row0, int col0, int N, int lane, const F& f) {
#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            const int col = col0 + j * 8 + (lane & 3) * 2;
            if (col >= N) continue;
            const bool both = col + 1 < N;
#pragma unroll
            for (int h = 0; h < 2; ++h) f(i, j, h, row0 + i * 16 + (lane >> 2) + h * 8, col, both);
        }
    }
}
