// moe_tile.cuh — pieces shared by the grouped tensor-core expert GEMMs of the routed MoE (moe.cu with bf16 weights,
// moe_int4.cu with int4 weights): the gathered, score-scaled A tile of gate_up and the epilogue that writes
// h = silu(gate)·up (or the down output) with HF's bf16 rounding points. moe.cu's header explains the design.
#pragma once
#include "mma_tile.cuh"

// A tile of BM padded rows starting at m0 (all NT threads call; ends with __syncthreads): s_tok[r] = the token of
// row r's slot (slot / k; -1 for a padding row), s_scale[r] = its router score (0 for padding).
template <int BM, int NT>
L4_DEV void moe_tile_tokens(int* s_tok, float* s_scale, const int* __restrict__ sorted_slots, const float* __restrict__ score,
                            int m0, int k, int tid) {
    for (int r = tid; r < BM; r += NT) {
        const int slot = sorted_slots[m0 + r];
        s_tok[r] = slot >= 0 ? slot / k : -1;
        s_scale[r] = slot >= 0 ? score[slot] : 0.f;
    }
    __syncthreads();
}

// The gate_up A tile [BM][LD] for k0..k0+BK: rows are tokens s_tok[r] (-1: a padding row, zeros) of x [*, K], each
// scaled by s_scale[r] in fp32 and rounded to bf16 — HF's `hidden_states * router_scores` in bf16, bit for bit.
// Staged through registers (not cp.async): the scaling happens on the way.
template <int BM, int BK, int LD, int NT>
L4_DEV void moe_gather_scaled_tile(bf16* S, const bf16* __restrict__ x, const int* s_tok, const float* s_scale, int K, int k0,
                                   int tid) {
    constexpr int CPR = BK / 8;
#pragma unroll
    for (int ch = tid; ch < BM * CPR; ch += NT) {
        const int r = ch / CPR, c = (ch % CPR) * 8, gc = k0 + c, tok = s_tok[r];
        float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (tok >= 0) {
            const bf16* g = x + (long long)tok * K + gc;
            if (gc + 8 <= K && aligned16(g)) load8(g, v);
            else {
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    if (gc + e < K) v[e] = bf16_to_f32(g[e]);
            }
            const float sc = s_scale[r];
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] *= sc;
        }
        store8(S + r * LD + c, v);
    }
}

// Stores a warp's accumulators (rows from row0, columns from col0, of C [*, N]; rows are padded rows < total, a
// multiple of BM, so only columns are checked). GATED (NB = 2: acc[0] gate, acc[1] up): HF in bf16 rounds gate, up,
// silu(gate) and the product; !GATED (NB = 1): the down output as is (rounded by the store).
template <bool GATED, int NB, int MI, int NI>
L4_DEV void moe_store_tile(bf16* __restrict__ C, const float (&acc)[NB][MI][NI][4], int row0, int col0, int N, int lane) {
    l4_for_each_pair<MI, NI>(row0, col0, N, lane, [&](int i, int j, int hh, int row, int col, bool both) {
        float v0 = acc[0][i][j][2 * hh], v1 = acc[0][i][j][2 * hh + 1];
        if constexpr (GATED) {
            const float u0 = round_to<bf16>(acc[NB - 1][i][j][2 * hh]), u1 = round_to<bf16>(acc[NB - 1][i][j][2 * hh + 1]);
            v0 = round_to<bf16>(silu(round_to<bf16>(v0))) * u0;
            v1 = round_to<bf16>(silu(round_to<bf16>(v1))) * u1;
        }
        l4_store_pair(C, (long long)row * N + col, both, v0, v1);
    });
}
