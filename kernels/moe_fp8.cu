// moe_fp8.cu — the grouped expert GEMMs of Llama 4's routed MoE with FP8 (FBGEMM row-wise e4m3) expert weights,
// Meta's `fp8_mixed`: routing, grouping and the combine are moe.cu's (moe_router/topk/align/combine), unchanged.
//
// Why it looks like this: FBGEMM quantizes every GEMM input per row on the fly, so each expert GEMM is preceded by a
// row quantizer over the padded rows that moe_align produced (sorted slots, expert_offsets, one expert per tile):
//   a = x[token] · score  (in the activation dtype TA, rounded exactly as moe.cu's gather: HF's `hidden * score`)
//   aq, as = quantize_fp8_per_row(a, ub)                                 — moe_fp8_quant_gather_*
//   gate, up = bf16((aq · Wgu[e]ᵀ) · as · ws)   (f8f8bf16_rowwise)       — moe_fp8_gate_up_{mma,gemv}_*
//   h = silu(gate) · up  (fp32 in f32 mode; in bf16 mode silu(gate) and the product rounded, as moe.cu)
//   hq, hs = quantize_fp8_per_row(h, ub)                                 — moe_fp8_quant_h_*
//   out = bf16((hq · Wd[e]ᵀ) · hs · wsd)        (stored in TA)           — moe_fp8_down_{mma,gemv}_*
// The quantizers give a block to a row (block_max, then x / s: fp8_ops.cuh's fp8_quant_row, bit-exact); padded rows
// (slot −1) are written as zero codes with the minimum scale, so they stay zero through both GEMMs. The weights are
// output-major e4m3 (Wgu [E, 2I, D]: rows 0..I−1 gate, I..2I−1 up; Wd [E, D, I]) with f32 scales per output row,
// K-contiguous like the quantized activations, so the prefill tiles are gemm_fp8.cu's tensor-core main loop
// (fp8_ops.cuh Fp8Mma, mma.m16n8k32.e4m3; the exact bf16 pair on sm_80) against the tile's expert: gate_up owns
// MF8_BN columns of BOTH gate and up and writes h directly. Decode (few rows, moe.cu's T·k ≤ 32) is bound by
// streaming each chosen expert's weights once: the `_gemv_` kernels give a warp MF8_GEMV_COLS output columns (gate
// and up rows for gate_up: 2·COLS weight rows) and stream them with 16-byte loads against the tile's valid rows
// (≤ 8 at a time in registers; only rows with a slot are computed, the padding is written as zeros), as gemm_fp8.cu's GEMV.
//
// Buffers (R = padded rows, moe.cu's MaxRows; total = expert_offsets[E]): x [T, D] TA, topk_score [T, k] f32,
// sorted_slots [R] i32, tile_expert [tiles] i32, expert_offsets [E + 1] i32, aq [R, lda] u8 (lda ≥ D), as [R] f32,
// wgu [E, 2I, D] u8 + wgu_s [E, 2I] f32, h [R, I] TA, hq [R, ldq] u8 (ldq ≥ I), hs [R] f32, wd [E, D, I] u8 +
// wd_s [E, D] f32, out [R, D] TA.
// | kernel                          | parameters                                                                  | launch |
// |---------------------------------|-----------------------------------------------------------------------------|--------|
// | moe_fp8_quant_gather_{f32,bf16} | (x, topk_score, sorted_slots, expert_offsets, aq, as, int k, int D, int lda, int E, float ub) | grid = min(R, 65535·16) (grid-stride over rows < total), block = MF8_QTHREADS, shared = 0 |
// | moe_fp8_quant_h_{f32,bf16}      | (h, sorted_slots, expert_offsets, hq, hs, int I, int ldq, int E, float ub)    | " |
// | moe_fp8_gate_up_mma_{f32,bf16}  | (aq, as, tile_expert, expert_offsets, wgu, wgu_s, h, int lda, int D, int I, int E) | grid = (ceil(I/MF8_BN), tiles), block = 32·MF8_WM·MF8_WN, dynamic shared = MF8_STAGES·(MF8_BM + 2·MF8_BN)·(MF8_BK + 16) (default 46080 B) |
// | moe_fp8_down_mma_{f32,bf16}     | (hq, hs, tile_expert, expert_offsets, wd, wd_s, out, int ldq, int I, int D, int E) | grid = (ceil(D/MF8_BN), tiles), same block, dynamic shared = MF8_STAGES·(MF8_BM + MF8_BN)·(MF8_BK + 16) (30720 B) |
// | moe_fp8_gate_up_gemv_{f32,bf16} | (aq, as, sorted_slots, tile_expert, expert_offsets, wgu, wgu_s, h, int lda, int D, int I, int E, int bm) | grid = (ceil(I / (MF8_GEMV_THREADS/32 · MF8_GEMV_COLS/2)), tiles), block = MF8_GEMV_THREADS, shared = 0 |
// | moe_fp8_down_gemv_{f32,bf16}    | (hq, hs, sorted_slots, tile_expert, expert_offsets, wd, wd_s, out, int ldq, int I, int D, int E, int bm) | grid = (ceil(D / (MF8_GEMV_THREADS/32 · MF8_GEMV_COLS)), tiles), block = MF8_GEMV_THREADS, shared = 0 |
// The mma kernels need the grouping done with bm = MF8_BM; the gemv ones take any bm ≥ 1 (tiles of bm rows).
// Compile-time: MF8_BM 64, MF8_BN 64, MF8_BK 64, MF8_WM 2, MF8_WN 2, MF8_STAGES 3 (4 warps, 32×32 each);
// MF8_QTHREADS 128; MF8_GEMV_THREADS 64, MF8_GEMV_COLS 4; FP8_MMA_VIA_BF16 0.

#include "fp8_ops.cuh"

#ifndef MF8_BM
#define MF8_BM 64
#endif
#ifndef MF8_BN
#define MF8_BN 64
#endif
#ifndef MF8_BK
#define MF8_BK 64
#endif
#ifndef MF8_WM
#define MF8_WM 2
#endif
#ifndef MF8_WN
#define MF8_WN 2
#endif
#ifndef MF8_STAGES
#define MF8_STAGES 3
#endif
#ifndef MF8_QTHREADS
#define MF8_QTHREADS 128
#endif
#ifndef MF8_GEMV_THREADS
#define MF8_GEMV_THREADS 64
#endif
#ifndef MF8_GEMV_COLS
#define MF8_GEMV_COLS 4
#endif
#define MF8_MAX_M 8
// The gate_up tile's occupancy floor: on the bf16 path (sm_80) ptxas, left to itself, held the f32 kernel to 128
// registers and spilled; with a floor of 1 block it takes what it needs (≤ 255). On sm_89+ 3 blocks (≤ 170 registers)
// leaves it near where it lands unbounded (150–170).
#if !defined(CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
#define MF8_GU_MIN_BLOCKS 1
#else
#define MF8_GU_MIN_BLOCKS 3
#endif

namespace l4_mf8 {

using l4_fp8::round_to;
using GateUpTile = l4_fp8::Fp8Mma<MF8_BM, MF8_BN, MF8_BK, MF8_WM, MF8_WN, MF8_STAGES, 2>;
using DownTile = l4_fp8::Fp8Mma<MF8_BM, MF8_BN, MF8_BK, MF8_WM, MF8_WN, MF8_STAGES, 1>;
template <bool GATED> struct MmaTile { using T = GateUpTile; };
template <> struct MmaTile<false> { using T = DownTile; };
static_assert(MF8_GEMV_COLS % 2 == 0, "MF8_GEMV_COLS must be even (gate_up splits it into gate and up)");

// The minimum scale, which a zero row gets: max(0 / 448, 1/(448·512)).
L4_DEV float min_scale() { return fp8_row_scale(0.f, 0.f); }

// ------------------------------------------------------------------------------------------ row quantizers
// GATHER: row r is round_to<TA>(x[slot / k] · score[slot]); otherwise row r of h. Padded rows: zeros, min scale.
template <typename TA, bool GATHER>
L4_DEV void quant(const TA* __restrict__ src, const float* __restrict__ score, const int* __restrict__ sorted_slots,
                  const int* __restrict__ expert_offsets, uint8_t* __restrict__ q, float* __restrict__ s, int k, int cols,
                  int ldq, int E, float ub) {
    const int total = expert_offsets[E];
    for (long long r = blockIdx.x; r < total; r += gridDim.x) {
        const int slot = sorted_slots[r];
        uint8_t* qr = q + r * ldq;
        if (slot < 0) {
            for (int c = threadIdx.x; c < cols; c += MF8_QTHREADS) qr[c] = 0;
            if (threadIdx.x == 0) s[r] = min_scale();
            continue;  // uniform per block
        }
        const TA* xr = GATHER ? src + (long long)(slot / k) * cols : src + r * cols;
        const float sc = GATHER ? score[slot] : 1.f;
        const bool vec = cols % 8 == 0 && aligned16(xr) && ((unsigned long long)qr & 3ull) == 0;
        auto one = [&](int c) { return GATHER ? round_to<TA>(to_f32(xr[c]) * sc) : to_f32(xr[c]); };
        auto eight = [&](int c, float v[8]) {
            load8(xr + c, v);
            if (GATHER) {
#pragma unroll
                for (int e = 0; e < 8; ++e) v[e] = round_to<TA>(v[e] * sc);
            }
        };
        auto four = [&](int c, float v[4]) {
            load4(xr + c, v);
            if (GATHER) {
#pragma unroll
                for (int e = 0; e < 4; ++e) v[e] = round_to<TA>(v[e] * sc);
            }
        };
        const float rs = l4_fp8::fp8_quant_row<MF8_QTHREADS>(cols, vec, ub, qr, one, eight, four);
        if (threadIdx.x == 0) s[r] = rs;
        __syncthreads();  // block_max's scratch is reused by the next row
    }
}

// The stored h: silu(gate)·up with moe.cu's rounding points (identity for f32).
template <typename TA> L4_DEV float gated(float g, float u) { return round_to<TA>(silu(g)) * u; }

// ------------------------------------------------------------------------------------------ grouped GEMMs (mma)
// GATED: A = aq (scales as), W = wgu [E, 2N, K] (scales [E, 2N]), C = h [R, N] = gated(gate, up), Tile = GateUpTile.
// !GATED: A = hq (scales hs), W = wd [E, N, K] (scales [E, N]), C = out [R, N], Tile = DownTile.
template <typename TA, bool GATED>
L4_DEV void grouped_mma(const uint8_t* __restrict__ A, const float* __restrict__ as, const int* __restrict__ tile_expert,
                        const int* __restrict__ expert_offsets, const uint8_t* __restrict__ W, const float* __restrict__ wsc,
                        TA* __restrict__ C, int lda, int K, int N, int E) {
    using Tile = typename MmaTile<GATED>::T;
    L4_DYNAMIC_SHARED(uint8_t, smem);
    const int total = expert_offsets[E];
    const int m0 = blockIdx.y * MF8_BM, n0 = blockIdx.x * MF8_BN;
    if (m0 >= total) return;  // beyond the padded rows: the grid is sized for the worst case
    const long long e = tile_expert[blockIdx.y];
    const long long wrows = GATED ? 2LL * N : (long long)N;
    const uint8_t* We = W + e * wrows * K;
    const float* ws = wsc + e * wrows;
    float acc[GATED ? 2 : 1][Tile::MI][Tile::NI][4];
    Tile::run(smem, A, total, lda, We, GATED ? We + (long long)N * K : nullptr, N, K, K, m0, n0, acc);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp / MF8_WN, wn = warp % MF8_WN;
#pragma unroll
    for (int i = 0; i < Tile::MI; ++i) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int row = m0 + wm * Tile::WTM + i * 16 + (lane >> 2) + hh * 8;  // < total (a multiple of BM)
            const float sa = as[row];
#pragma unroll
            for (int j = 0; j < Tile::NI; ++j) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int col = n0 + wn * Tile::WTN + j * 8 + (lane & 3) * 2 + c;
                    if (col >= N) continue;
                    if constexpr (GATED) {
                        const float g = round_to<bf16>(acc[0][i][j][2 * hh + c] * sa * ws[col]);
                        const float u = round_to<bf16>(acc[1][i][j][2 * hh + c] * sa * ws[N + col]);
                        C[(long long)row * N + col] = from_f32<TA>(gated<TA>(g, u));
                    } else {
                        C[(long long)row * N + col] = from_f32<TA>(round_to<bf16>(acc[0][i][j][2 * hh + c] * sa * ws[col]));
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ grouped GEMV (decode)
// The rows of tile blockIdx.y that have a slot (a prefix: padding sits at the end of each expert's group).
L4_DEV int valid_rows(const int* __restrict__ sorted_slots, int m0, int bm) {
    int v = 0;
    for (int r = 0; r < bm; ++r) v += sorted_slots[m0 + r] >= 0 ? 1 : 0;
    return v;
}

// GATED: W = wgu [E, 2I, D]; the warp's COLS/2 columns j of gate (rows j) and up (rows I + j); C = h [R, I].
// !GATED: W = wd [E, D, I]; the warp's COLS columns; C = out [R, D].
template <typename TA, bool GATED>
L4_DEV void grouped_gemv(const uint8_t* __restrict__ A, const float* __restrict__ as, const int* __restrict__ sorted_slots,
                         const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ W,
                         const float* __restrict__ wsc, TA* __restrict__ C, int lda, int K, int N, int E, int bm) {
    constexpr int R = MF8_GEMV_COLS, NC = GATED ? R / 2 : R;  // weight rows and output columns per warp
    const int lane = threadIdx.x & 31;
    const int total = expert_offsets[E];
    const int m0 = blockIdx.y * bm;
    const long long j0 = ((long long)blockIdx.x * (MF8_GEMV_THREADS / 32) + threadIdx.x / 32) * NC;
    if (m0 >= total || j0 >= N) return;  // uniform per warp
    const long long e = tile_expert[blockIdx.y];
    const long long wrows = GATED ? 2LL * N : (long long)N;
    const uint8_t* We = W + e * wrows * K;
    const float* ws = wsc + e * wrows;
    const uint8_t* w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const long long j = j0 + (GATED ? r % NC : r);
        const long long wr = GATED && r >= NC ? N + j : j;
        w[r] = j < N ? We + wr * K : nullptr;
    }
    const int v = valid_rows(sorted_slots, m0, bm);
    const bool vec = K % 16 == 0 && lda % 16 == 0 && aligned16(A) && aligned16(W);
    for (int c0 = 0; c0 < v; c0 += MF8_MAX_M) {
        const int m = min(MF8_MAX_M, v - c0);
        float acc[R][MF8_MAX_M];
        l4_zero(acc);
        l4_fp8::fp8_gemv_accumulate<R, MF8_MAX_M>(w, A + (long long)(m0 + c0) * lda, lda, m, K, vec, acc);
#pragma unroll
        for (int i = 0; i < MF8_MAX_M; ++i) {
            if (i < m) {  // uniform per warp
                const long long row = m0 + c0 + i;
                const float sa = as[row];
                float sums[R];
#pragma unroll
                for (int r = 0; r < R; ++r) sums[r] = warp_sum(acc[r][i]) * l4_fp8::gemv_unscale();
                if (lane == 0) {
#pragma unroll
                    for (int q = 0; q < NC; ++q) {
                        const long long j = j0 + q;
                        if (j >= N) continue;
                        if (GATED) {
                            const float g = round_to<bf16>(sums[q] * sa * ws[j]);
                            const float u = round_to<bf16>(sums[NC + q] * sa * ws[N + j]);
                            C[row * N + j] = from_f32<TA>(gated<TA>(g, u));
                        } else {
                            C[row * N + j] = from_f32<TA>(round_to<bf16>(sums[q] * sa * ws[j]));
                        }
                    }
                }
            }
        }
    }
    for (int i = v + lane; i < bm; i += 32)  // the padding rows: zeros, as the mma path gives them
#pragma unroll
        for (int q = 0; q < NC; ++q)
            if (j0 + q < N) C[(long long)(m0 + i) * N + j0 + q] = from_f32<TA>(0.f);
}

}  // namespace l4_mf8

extern "C" __global__ void __launch_bounds__(MF8_QTHREADS) moe_fp8_quant_gather_f32(const float* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ expert_offsets, uint8_t* __restrict__ aq, float* __restrict__ as, int k, int D, int lda, int E, float ub) { l4_mf8::quant<float, true>(x, topk_score, sorted_slots, expert_offsets, aq, as, k, D, lda, E, ub); }
extern "C" __global__ void __launch_bounds__(MF8_QTHREADS) moe_fp8_quant_gather_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ expert_offsets, uint8_t* __restrict__ aq, float* __restrict__ as, int k, int D, int lda, int E, float ub) { l4_mf8::quant<bf16, true>(x, topk_score, sorted_slots, expert_offsets, aq, as, k, D, lda, E, ub); }
extern "C" __global__ void __launch_bounds__(MF8_QTHREADS) moe_fp8_quant_h_f32(const float* __restrict__ h, const int* __restrict__ sorted_slots, const int* __restrict__ expert_offsets, uint8_t* __restrict__ hq, float* __restrict__ hs, int I, int ldq, int E, float ub) { l4_mf8::quant<float, false>(h, nullptr, sorted_slots, expert_offsets, hq, hs, 1, I, ldq, E, ub); }
extern "C" __global__ void __launch_bounds__(MF8_QTHREADS) moe_fp8_quant_h_bf16(const bf16* __restrict__ h, const int* __restrict__ sorted_slots, const int* __restrict__ expert_offsets, uint8_t* __restrict__ hq, float* __restrict__ hs, int I, int ldq, int E, float ub) { l4_mf8::quant<bf16, false>(h, nullptr, sorted_slots, expert_offsets, hq, hs, 1, I, ldq, E, ub); }
extern "C" __global__ void __launch_bounds__(l4_mf8::GateUpTile::NT, MF8_GU_MIN_BLOCKS) moe_fp8_gate_up_mma_f32(const uint8_t* __restrict__ aq, const float* __restrict__ as, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ wgu_s, float* __restrict__ h, int lda, int D, int I, int E) { l4_mf8::grouped_mma<float, true>(aq, as, tile_expert, expert_offsets, wgu, wgu_s, h, lda, D, I, E); }
extern "C" __global__ void __launch_bounds__(l4_mf8::GateUpTile::NT, MF8_GU_MIN_BLOCKS) moe_fp8_gate_up_mma_bf16(const uint8_t* __restrict__ aq, const float* __restrict__ as, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ wgu_s, bf16* __restrict__ h, int lda, int D, int I, int E) { l4_mf8::grouped_mma<bf16, true>(aq, as, tile_expert, expert_offsets, wgu, wgu_s, h, lda, D, I, E); }
extern "C" __global__ void __launch_bounds__(l4_mf8::DownTile::NT) moe_fp8_down_mma_f32(const uint8_t* __restrict__ hq, const float* __restrict__ hs, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ wd_s, float* __restrict__ out, int ldq, int I, int D, int E) { l4_mf8::grouped_mma<float, false>(hq, hs, tile_expert, expert_offsets, wd, wd_s, out, ldq, I, D, E); }
extern "C" __global__ void __launch_bounds__(l4_mf8::DownTile::NT) moe_fp8_down_mma_bf16(const uint8_t* __restrict__ hq, const float* __restrict__ hs, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ wd_s, bf16* __restrict__ out, int ldq, int I, int D, int E) { l4_mf8::grouped_mma<bf16, false>(hq, hs, tile_expert, expert_offsets, wd, wd_s, out, ldq, I, D, E); }
extern "C" __global__ void __launch_bounds__(MF8_GEMV_THREADS) moe_fp8_gate_up_gemv_f32(const uint8_t* __restrict__ aq, const float* __restrict__ as, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ wgu_s, float* __restrict__ h, int lda, int D, int I, int E, int bm) { l4_mf8::grouped_gemv<float, true>(aq, as, sorted_slots, tile_expert, expert_offsets, wgu, wgu_s, h, lda, D, I, E, bm); }
extern "C" __global__ void __launch_bounds__(MF8_GEMV_THREADS) moe_fp8_gate_up_gemv_bf16(const uint8_t* __restrict__ aq, const float* __restrict__ as, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wgu, const float* __restrict__ wgu_s, bf16* __restrict__ h, int lda, int D, int I, int E, int bm) { l4_mf8::grouped_gemv<bf16, true>(aq, as, sorted_slots, tile_expert, expert_offsets, wgu, wgu_s, h, lda, D, I, E, bm); }
extern "C" __global__ void __launch_bounds__(MF8_GEMV_THREADS) moe_fp8_down_gemv_f32(const uint8_t* __restrict__ hq, const float* __restrict__ hs, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ wd_s, float* __restrict__ out, int ldq, int I, int D, int E, int bm) { l4_mf8::grouped_gemv<float, false>(hq, hs, sorted_slots, tile_expert, expert_offsets, wd, wd_s, out, ldq, I, D, E, bm); }
extern "C" __global__ void __launch_bounds__(MF8_GEMV_THREADS) moe_fp8_down_gemv_bf16(const uint8_t* __restrict__ hq, const float* __restrict__ hs, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const uint8_t* __restrict__ wd, const float* __restrict__ wd_s, bf16* __restrict__ out, int ldq, int I, int D, int E, int bm) { l4_mf8::grouped_gemv<bf16, false>(hq, hs, sorted_slots, tile_expert, expert_offsets, wd, wd_s, out, ldq, I, D, E, bm); }
