// moe_int4.cu — the grouped expert GEMMs of Llama 4's routed MoE (moe.cu's steps 3 and 4) for int4 expert weights
// (Meta int4_mixed, W4A16): wgu [E, 2I, D] (output-major: rows 0..I-1 gate, I..2I-1 up; scales [E, 2I, D/G]) and
// wd [E, D, I] (scales [E, D, I/G]), packed two per byte along the input dimension (int4.cuh).
//
// Why it looks like this: everything around these two steps — router, align, combine, the padded row order with one
// expert per bm-row tile, the score-scaled gathered A rows rounded to the activation dtype, SiLU·up in the gate_up
// epilogue, HF's bf16 rounding points, zero rows for padding — is moe.cu's and stays there (moe.cu's header
// explains it); the wrappers (Kernels/Moe.cs) send I4 weights here. Three ways to do the work:
//  * `*_mma{64,16}_bf16` (prefill): moe.cu's grouped tensor-core tile (64×64×32, 4 warps; or the 16×32 decode
//    tile) with gemm_int4.cu's B operand: the raw packed bytes are staged by cp.async and each B fragment is
//    dequantized in registers to bf16(q·s) (gemm_int4.cu's header says why the scale is folded into the weight).
//    The number in the name is the tile's BM, which must be the bm the rows were aligned with.
//  * `*_gemv{8,32}_bf16` (decode, T·k ≤ 32 routed rows): a tile of a few routed rows against one expert is a
//    GEMV, bound by the expert's weight stream, so it is done like gemm_int4.cu's GEMV: grid (column blocks, tiles),
//    each warp owns 2 (gate_up: 2 gate + 2 up weight rows) or 4 (down) output columns, and per step each lane
//    loads 16 bytes (32 int4) of each of its 4 weight rows — 4 loads in flight — dequantizes them in registers and
//    multiplies them by up to 4 rows of the tile at a time (more rows: another pass, the weights then come from L2). Padding rows cost nothing: gate_up knows the tile's
//    valid rows from sorted_slots (they are a prefix of the tile), writes zero h rows for the rest; down gets
//    sorted_slots too when the caller has it (else it computes every row of the tile: correct, slower).
//    The scale multiplies the fp32 partial sum of a 16-byte load (gemv32: G % 32 == 0) or of an 8-k word (gemv8).
//    `_m1` handles one row per pass (the wrapper's choice when T·k = 1, the usual decode step): fewer registers, more
//    warps in flight per SM.
//  * `*_simple_{f32,bf16}`: one thread per output, a sequential fp32 sum of a·(q·s): the fp32 exact-parity path.
//
// Parameters (R padded rows, as moe.cu; k = slots per token; G = group size):
// | kernel                                 | parameters                                                           | launch |
// |----------------------------------------|----------------------------------------------------------------------|--------|
// | moe_int4_gate_up_mma{64,16}_bf16       | (x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, int k, int D, int I, int E, int G) | grid = (ceil(I/BN), tiles), block = 32·WM·WN, dynamic shared = STAGES·(2·BM·(BK+8) + 2·BN·BK/2): mma64 21504 B, mma16 9216 B |
// | moe_int4_down_mma{64,16}_bf16          | (h, tile_expert, expert_offsets, wd, sd, out, int I, int D, int E, int G) | grid = (ceil(D/BN), tiles), same block, shared STAGES·(2·BM·(BK+8) + BN·BK/2): 18432 / 7168 B |
// | moe_int4_gate_up_gemv{8,32}[_m1]_bf16  | (x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, int k, int D, int I, int E, int bm, int G) | grid = (ceil(I/8), tiles), block = 128, shared = 0 |
// | moe_int4_down_gemv{8,32}[_m1]_bf16     | (h, sorted_slots or null, tile_expert, expert_offsets, wd, sd, out, int I, int D, int E, int bm, int G) | grid = (ceil(D/16), tiles), block = 128, shared = 0 |
// | moe_int4_gate_up_simple_{f32,bf16}     | (x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, int k, int D, int I, int E, int bm, int G) | grid = (ceil(I/16), ceil(R/16)), block = (16, 16) |
// | moe_int4_down_simple_{f32,bf16}        | (h, tile_expert, expert_offsets, wd, sd, out, int I, int D, int E, int bm, int G) | grid = (ceil(D/16), ceil(R/16)), block = (16, 16) |
// Tiles: mma64 = 64×64×32, 2×2 warps, 3 stages (moe.cu's default); mma16 = 16×32×32, 1×2 warps, 4 stages (moe.cu's decode).

#include "moe_tile.cuh"
#include "int4.cuh"

namespace l4_moe4 {

constexpr int SIMPLE = 16, GV_THREADS = 128, GV_MAX_M = 4;  // GEMV: rows of a tile per pass (decode tiles hold few rows; 4 keeps it under 255 registers)

// ------------------------------------------------------------------------------------------ grouped GEMM (mma)
template <int BM_, int BN_, int WM_, int WN_, int STAGES_>
struct Tile {
    static constexpr int BM = BM_, BN = BN_, BK = 32, WM = WM_, WN = WN_, STAGES = STAGES_;
    static constexpr int NT = 32 * WM * WN, WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
    static constexpr int A_LD = BK + 8, A_STAGE = BM * A_LD, B_RB = BK / 2, B_STAGE = BN * B_RB;
    static_assert(BM % (16 * WM) == 0 && BN % (8 * WN) == 0, "tile");
};
using Tile64 = Tile<64, 64, 2, 2, 3>;
using Tile16 = Tile<16, 32, 1, 2, 4>;

// GATED: A = x [T, K] gathered by slot and scaled (rounded to bf16), W = wgu [E, 2N, K] packed, C = h [R, N] = silu(gate)·up.
// !GATED: A = h [R, K] in padded row order, W = wd [E, N, K], C = out [R, N].
template <class C, bool GATED>
L4_DEV void grouped_mma(const bf16* __restrict__ A, const float* __restrict__ score, const int* __restrict__ sorted_slots,
                        const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ W,
                        const float* __restrict__ S, bf16* __restrict__ Cout, int k, int K, int N, int E, int G) {
    constexpr int BM = C::BM, BN = C::BN, BK = C::BK, WN = C::WN, STAGES = C::STAGES, NT = C::NT;
    constexpr int WTM = C::WTM, WTN = C::WTN, MI = C::MI, NI = C::NI, A_LD = C::A_LD, A_STAGE = C::A_STAGE;
    constexpr int B_RB = C::B_RB, B_STAGE = C::B_STAGE, NB = GATED ? 2 : 1;
    L4_DYNAMIC_SHARED(bf16, smem);
    __shared__ int s_tok[GATED ? BM : 1];
    __shared__ float s_scale[GATED ? BM : 1];
    bf16* As = smem;                                                    // [STAGES][BM][A_LD]
    uint8_t* Bs = reinterpret_cast<uint8_t*>(smem + STAGES * A_STAGE);  // [STAGES][NB][BN][BK/2]

    const int total = expert_offsets[E];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    if (m0 >= total) return;
    const int e = tile_expert[blockIdx.y];
    const int rowsW = GATED ? 2 * N : N, groups = K / G;
    const uint8_t* We = W + (long long)e * rowsW * (K / 2);
    const float* Se = S + (long long)e * rowsW * groups;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int wm = warp / WN, wn = warp % WN;
    const int KT = (K + BK - 1) / BK;

    if constexpr (GATED) moe_tile_tokens<BM, NT>(s_tok, s_scale, sorted_slots, score, m0, k, tid);

    auto load_stage = [&](int stage, int kt) {
        const int k0 = kt * BK;
        bf16* as = As + stage * A_STAGE;
        uint8_t* bs = Bs + stage * NB * B_STAGE;
        if constexpr (GATED) {  // x rows gathered by token, times the score, rounded to bf16 (HF's hidden * score)
            moe_gather_scaled_tile<BM, BK, A_LD, NT>(as, A, s_tok, s_scale, K, k0, tid);
            i4_load_tile<BN, BK, NT>(bs, We, N, K, n0, k0, tid);
            i4_load_tile<BN, BK, NT>(bs + B_STAGE, We + (long long)N * (K / 2), N, K, n0, k0, tid);
        } else {
            l4_load_tile<BM, BK, A_LD, NT>(as, A, total, K, K, m0, k0, tid);
            i4_load_tile<BN, BK, NT>(bs, We, N, K, n0, k0, tid);
        }
    };

    float acc[NB][MI][NI][4];
    l4_zero(acc);
    l4_pipeline_prologue<STAGES>(KT, load_stage);
    for (int kt = 0; kt < KT; ++kt) {
        const int kq = kt * BK + 2 * t;  // this lane's scales for the slab (gemm_int4.cu's order), loaded before the wait
        float sc[NB][NI][BK / 8];
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int j = 0; j < NI; ++j) {
                const int n = n0 + wn * WTN + j * 8 + g;
#pragma unroll
                for (int q = 0; q < BK / 8; ++q)
                    sc[b][j][q] = n < N && kq + 8 * q < K ? Se[(long long)(b * N + n) * groups + (kq + 8 * q) / G] : 0.f;
            }
        l4_pipeline_step<STAGES>(kt, KT, load_stage);
        const bf16* as = As + (kt % STAGES) * A_STAGE;
        const uint8_t* bs = Bs + (kt % STAGES) * NB * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4];
            l4_load_afrag<MI, A_LD>(af, as, wm * WTM, kk, lane);
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                uint32_t bfr[NI][2];
#pragma unroll
                for (int j = 0; j < NI; ++j)
                    i4_bfrag(bs + b * B_STAGE + (wn * WTN + j * 8 + g) * B_RB, kk / 2, t, sc[b][j][kk / 8], sc[b][j][kk / 8 + 1], bfr[j]);
                l4_mma_tile(acc[b], af, bfr);
            }
        }
    }
    cp_async_wait_all();
    moe_store_tile<GATED>(Cout, acc, m0 + wm * WTM, n0 + wn * WTN, N, lane);
}

// ------------------------------------------------------------------------------------------ decode GEMV
// GATED: A = x gathered by slot (rows of the tile with slot < 0 are padding), W = wgu [E, 2N, K]; C = h [R, N].
// !GATED: A = h [R, K]; rows with sorted_slots < 0 are padding when sorted_slots is given; W = wd [E, N, K]; C = out.
template <typename TA, bool GATED, int PER, int MAXM>
L4_DEV void grouped_gemv(const TA* __restrict__ A, const float* __restrict__ score, const int* __restrict__ sorted_slots,
                         const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ W,
                         const float* __restrict__ S, TA* __restrict__ Cout, int k, int K, int N, int E, int bm, int G) {
    constexpr int RW = 4;                  // weight rows per warp: gate+up of 2 columns, or 4 down columns
    constexpr int COLS = GATED ? 2 : 4;    // output columns per warp
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int total = expert_offsets[E], m0 = blockIdx.y * bm;
    if (m0 >= total) return;
    const int n0 = (blockIdx.x * (GV_THREADS / 32) + warp) * COLS;
    if (n0 >= N) return;  // uniform per warp
    const int e = tile_expert[blockIdx.y];
    const int rowsW = GATED ? 2 * N : N, groups = K / G;
    const long long kb = K / 2;
    // weight row of slot r: gate n0 + r/2 (r even) / up N + n0 + r/2 (r odd) when GATED; n0 + r otherwise
    long long wrow[RW];
    bool ok[RW];
#pragma unroll
    for (int r = 0; r < RW; ++r) {
        const int col = n0 + (GATED ? r / 2 : r);
        ok[r] = col < N;
        wrow[r] = (long long)e * rowsW + (GATED && (r & 1) ? N : 0) + col;
    }
    int valid = bm;  // the tile's real rows are a prefix: count them
    if (sorted_slots != nullptr) {
        valid = 0;
        while (valid < bm && sorted_slots[m0 + valid] >= 0) ++valid;
    }
    const bool vec = K % 32 == 0 && aligned16(W) && aligned16(A);

    for (int c0 = 0; c0 < valid; c0 += MAXM) {
        const int m = min(MAXM, valid - c0);
        long long arow[MAXM];  // the A row of each of the chunk's rows
        float asc[MAXM];       // the router score (GATED) applied to it
#pragma unroll
        for (int i = 0; i < MAXM; ++i) {
            const int r = m0 + c0 + min(i, m - 1);
            if constexpr (GATED) { const int slot = sorted_slots[r]; arow[i] = slot / k; asc[i] = score[slot]; }
            else { arow[i] = r; asc[i] = 1.f; }
        }
        float acc[RW][MAXM];
        l4_zero(acc);

        if (vec) {
            for (int c = lane; c < K / 32; c += 32) {
                uint4 wv[RW];
#pragma unroll
                for (int r = 0; r < RW; ++r) wv[r] = ok[r] ? vload<uint4>(W + wrow[r] * kb + c * 16) : make_uint4(0u, 0u, 0u, 0u);
                i4_gemv_step<RW, MAXM, PER>(
                    wv, c * 32, m,
                    [&](int i, int kx, float xv[8]) {
                        load8(A + arow[i] * K + kx, xv);
                        if constexpr (GATED) {
#pragma unroll
                            for (int q = 0; q < 8; ++q) xv[q] = round_to<TA>(xv[q] * asc[i]);
                        }
                    },
                    [&](int r, int kx) { return ok[r] ? S[wrow[r] * groups + kx / G] : 0.f; }, acc);
            }
        } else {  // any even K, any alignment: a lane per byte
            for (int b = lane; b < kb; b += 32) {
                const int k0 = 2 * b;
                float x0[MAXM], x1[MAXM];
#pragma unroll
                for (int i = 0; i < MAXM; ++i) {
                    x0[i] = i < m ? round_to<TA>(to_f32(A[arow[i] * K + k0]) * asc[i]) : 0.f;
                    x1[i] = i < m ? round_to<TA>(to_f32(A[arow[i] * K + k0 + 1]) * asc[i]) : 0.f;
                }
#pragma unroll
                for (int r = 0; r < RW; ++r) {
                    if (!ok[r]) continue;
                    const uint32_t v = W[wrow[r] * kb + b];
                    const float s = S[wrow[r] * groups + k0 / G], q0 = (float)i4_lo(v), q1 = (float)i4_hi(v);
#pragma unroll
                    for (int i = 0; i < MAXM; ++i) acc[r][i] = fmaf(x0[i] * q0 + x1[i] * q1, s, acc[r][i]);
                }
            }
        }

#pragma unroll
        for (int i = 0; i < MAXM; ++i) {
            if (i < m) {  // uniform per warp
                float v[RW];
#pragma unroll
                for (int r = 0; r < RW; ++r) v[r] = warp_sum(acc[r][i]);
                if (lane == 0) {
                    TA* o = Cout + (long long)(m0 + c0 + i) * N + n0;
#pragma unroll
                    for (int c = 0; c < COLS; ++c) {
                        if (n0 + c >= N) continue;
                        float y = v[c];
                        if constexpr (GATED)  // HF's rounding points, as moe.cu
                            y = round_to<TA>(silu(round_to<TA>(v[2 * c]))) * round_to<TA>(v[2 * c + 1]);
                        o[c] = from_f32<TA>(y);
                    }
                }
            }
        }
    }
    // padding rows: zeros (they carry zero rows through both GEMMs, as moe.cu's kernels)
    for (int r = valid + lane / COLS; r < bm; r += 32 / COLS) {
        const int c = lane % COLS;
        if (n0 + c < N) Cout[(long long)(m0 + r) * N + n0 + c] = from_f32<TA>(0.f);
    }
}

// ------------------------------------------------------------------------------------------ simple (fp32 parity)
template <typename TA>
L4_DEV void gate_up_simple(const TA* __restrict__ x, const float* __restrict__ score, const int* __restrict__ sorted_slots,
                           const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu,
                           const float* __restrict__ sgu, TA* __restrict__ h, int k, int D, int I, int E, int bm, int G) {
    const int j = blockIdx.x * SIMPLE + threadIdx.x, r = blockIdx.y * SIMPLE + threadIdx.y;
    if (r >= expert_offsets[E] || j >= I) return;
    const int slot = sorted_slots[r];
    TA* o = h + (long long)r * I + j;
    if (slot < 0) { *o = from_f32<TA>(0.f); return; }
    const int e = tile_expert[r / bm], groups = D / G;
    const TA* xr = x + (long long)(slot / k) * D;
    const float sc = score[slot];
    const long long gr = (long long)e * 2 * I + j, ur = gr + I;
    const uint8_t* wg = wgu + gr * (D / 2);
    const uint8_t* wu = wgu + ur * (D / 2);
    float gs = 0.f, us = 0.f;
    for (int d = 0; d < D; d += 2) {
        const float a0 = round_to<TA>(to_f32(xr[d]) * sc), a1 = round_to<TA>(to_f32(xr[d + 1]) * sc);
        const float sg = sgu[gr * groups + d / G], su = sgu[ur * groups + d / G];
        const uint32_t bg = wg[d / 2], bu = wu[d / 2];
        gs += a0 * ((float)i4_lo(bg) * sg); gs += a1 * ((float)i4_hi(bg) * sg);
        us += a0 * ((float)i4_lo(bu) * su); us += a1 * ((float)i4_hi(bu) * su);
    }
    *o = from_f32<TA>(round_to<TA>(silu(round_to<TA>(gs))) * round_to<TA>(us));
}

template <typename TA>
L4_DEV void down_simple(const TA* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets,
                        const uint8_t* __restrict__ wd, const float* __restrict__ sd, TA* __restrict__ out, int I, int D, int E, int bm, int G) {
    const int j = blockIdx.x * SIMPLE + threadIdx.x, r = blockIdx.y * SIMPLE + threadIdx.y;
    if (r >= expert_offsets[E] || j >= D) return;
    const int e = tile_expert[r / bm], groups = I / G;
    const TA* hr = h + (long long)r * I;
    const long long wr = (long long)e * D + j;
    const uint8_t* w = wd + wr * (I / 2);
    float s = 0.f;
    for (int i = 0; i < I; i += 2) {
        const float sc = sd[wr * groups + i / G];
        const uint32_t b = w[i / 2];
        s += to_f32(hr[i]) * ((float)i4_lo(b) * sc);
        s += to_f32(hr[i + 1]) * ((float)i4_hi(b) * sc);
    }
    out[(long long)r * D + j] = from_f32<TA>(s);
}

}  // namespace l4_moe4

extern "C" __global__ void __launch_bounds__(l4_moe4::Tile64::NT) moe_int4_gate_up_mma64_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int G) { l4_moe4::grouped_mma<l4_moe4::Tile64, true>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::Tile16::NT) moe_int4_gate_up_mma16_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int G) { l4_moe4::grouped_mma<l4_moe4::Tile16, true>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::Tile64::NT) moe_int4_down_mma64_bf16(const bf16* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int G) { l4_moe4::grouped_mma<l4_moe4::Tile64, false>(h, nullptr, nullptr, tile_expert, expert_offsets, wd, sd, out, 1, I, D, E, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::Tile16::NT) moe_int4_down_mma16_bf16(const bf16* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int G) { l4_moe4::grouped_mma<l4_moe4::Tile16, false>(h, nullptr, nullptr, tile_expert, expert_offsets, wd, sd, out, 1, I, D, E, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_gate_up_gemv8_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, true, 8, l4_moe4::GV_MAX_M>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_gate_up_gemv32_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, true, 32, l4_moe4::GV_MAX_M>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_down_gemv8_bf16(const bf16* __restrict__ h, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, false, 8, l4_moe4::GV_MAX_M>(h, nullptr, sorted_slots, tile_expert, expert_offsets, wd, sd, out, 1, I, D, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_down_gemv32_bf16(const bf16* __restrict__ h, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, false, 32, l4_moe4::GV_MAX_M>(h, nullptr, sorted_slots, tile_expert, expert_offsets, wd, sd, out, 1, I, D, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::SIMPLE * l4_moe4::SIMPLE) moe_int4_gate_up_simple_f32(const float* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, float* __restrict__ h, int k, int D, int I, int E, int bm, int G) { l4_moe4::gate_up_simple<float>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::SIMPLE * l4_moe4::SIMPLE) moe_int4_gate_up_simple_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int bm, int G) { l4_moe4::gate_up_simple<bf16>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::SIMPLE * l4_moe4::SIMPLE) moe_int4_down_simple_f32(const float* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, float* __restrict__ out, int I, int D, int E, int bm, int G) { l4_moe4::down_simple<float>(h, tile_expert, expert_offsets, wd, sd, out, I, D, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::SIMPLE * l4_moe4::SIMPLE) moe_int4_down_simple_bf16(const bf16* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int bm, int G) { l4_moe4::down_simple<bf16>(h, tile_expert, expert_offsets, wd, sd, out, I, D, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_gate_up_gemv8_m1_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, true, 8, 1>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_gate_up_gemv32_m1_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ sgu, bf16* __restrict__ h, int k, int D, int I, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, true, 32, 1>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, sgu, h, k, D, I, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_down_gemv8_m1_bf16(const bf16* __restrict__ h, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, false, 8, 1>(h, nullptr, sorted_slots, tile_expert, expert_offsets, wd, sd, out, 1, I, D, E, bm, G); }
extern "C" __global__ void __launch_bounds__(l4_moe4::GV_THREADS) moe_int4_down_gemv32_m1_bf16(const bf16* __restrict__ h, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ sd, bf16* __restrict__ out, int I, int D, int E, int bm, int G) { l4_moe4::grouped_gemv<bf16, false, 32, 1>(h, nullptr, sorted_slots, tile_expert, expert_offsets, wd, sd, out, 1, I, D, E, bm, G); }
