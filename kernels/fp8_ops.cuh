// fp8_ops.cuh — the pieces shared by the FP8 (FBGEMM row-wise, e4m3) kernels: quantize_fp8.cu, gemm_fp8.cu and
// moe_fp8.cu. One copy of each, so the three files cannot drift apart:
//  * fp8_quant_row: one row -> e4m3 codes + its f32 scale, the exact FBGEMM rule (block-wide amax, then x / s);
//  * fp8_load_tile: a byte tile of a K-contiguous fp8 matrix into shared memory (cp.async, zero-filled edges);
//  * Fp8Mma: the tensor-core main loop over K for a BM x BN tile against NB weight matrices (ldmatrix +
//    mma.m16n8k32.e4m3 on sm_89+; the exact bf16 pair on sm_80; FP8_MMA_VIA_BF16=1 forces the bf16 pair anywhere,
//    which is how the emulator tests the sm_80 path);
//  * fp8_gemv_accumulate: a warp streaming R weight rows with 16-byte loads against m <= 8 activation rows.
#pragma once
#include "mma_tile.cuh"

#ifndef FP8_MMA_VIA_BF16
#define FP8_MMA_VIA_BF16 0
#endif

namespace l4_fp8 {

using ::round_to;  // common.cuh's; gemm_fp8.cu and moe_fp8.cu name it l4_fp8::round_to

// ------------------------------------------------------------------------------------------ row quantization
// Quantizes one row of `cols` values v(c) (a functor: element c of the row, already in fp32) with THREADS threads of
// a 1-D block (all must call: block_max inside): s = max(min(max|v|, ub) / 448, 1/(448*512)), q = e4m3(v / s) with
// IEEE fp32 division, round to nearest even, saturating to +-448, NaN -> 0x7f. max|v| ignores NaN (fmaxf). VEC: the
// caller guarantees cols % 8 == 0 and a 16-byte aligned source, 4-byte aligned q (v8 / v4 give 8 / 4 values at once).
// Returns the scale; writes q[0, cols). ub = +inf for weights.
template <int THREADS, typename F, typename F8, typename F4>
L4_DEV float fp8_quant_row(int cols, bool vec, float ub, uint8_t* __restrict__ q, F v1, F8 v8, F4 v4) {
    const int tid = threadIdx.x;
    float amax = 0.f;
    if (vec) {
        for (int c = tid * 8; c < cols; c += THREADS * 8) {
            float v[8];
            v8(c, v);
#pragma unroll
            for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(v[e]));
        }
    } else {
        for (int c = tid; c < cols; c += THREADS) amax = fmaxf(amax, fabsf(v1(c)));
    }
    const float s = fp8_row_scale(block_max(amax), ub);
    if (vec) {  // 4 values at a time: the IEEE division's slow path is a call, and fewer live values keep it spill-free
        for (int c = tid * 8; c < cols; c += THREADS * 8) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float v[4];
                v4(c + 4 * h, v);
                vstore(q + c + 4 * h, (uint32_t)f32x2_to_e4m3x2(v[0] / s, v[1] / s) | ((uint32_t)f32x2_to_e4m3x2(v[2] / s, v[3] / s) << 16));
            }
        }
    } else {
        for (int c = tid; c < cols; c += THREADS) q[c] = f32_to_e4m3(v1(c) / s);
    }
    return s;
}

// ------------------------------------------------------------------------------------------ tiles
// Copies the TR x TCB-byte tile at (r0, c0) of the row-major byte matrix G [R, C] (leading dimension ld bytes) into
// shared S (leading dimension LD bytes), zero-filling outside the matrix. Whole 16-byte chunks whose global address is
// aligned go by cp.async; edge or unaligned chunks by byte loads (visible after the __syncthreads before their use).
template <int TR, int TCB, int LD, int NT>
L4_DEV void fp8_load_tile(uint8_t* S, const uint8_t* __restrict__ G, int R, int C, long long ld, int r0, int c0, int tid) {
    constexpr int CPR = TCB / 16;
#pragma unroll
    for (int ch = tid; ch < TR * CPR; ch += NT) {
        const int r = ch / CPR, c = (ch % CPR) * 16;
        const int gr = r0 + r, gc = c0 + c;
        uint8_t* s = S + r * LD + c;
        const uint8_t* g = G + (long long)gr * ld + gc;
        if (gr < R && gc + 16 <= C && aligned16(g)) {
            cp_async_16(s, g);
        } else {
            uint32_t w[4] = {0u, 0u, 0u, 0u};
            if (gr < R) {
#pragma unroll
                for (int e = 0; e < 16; ++e)
                    if (gc + e < C) w[e >> 2] |= (uint32_t)g[e] << (8 * (e & 3));
            }
            vstore(s, make_uint4(w[0], w[1], w[2], w[3]));
        }
    }
}

// The bf16 path (sm_80, or forced): fragments are widened to bf16 once per k32 step, right after ldmatrix, and every
// k32 mma is two bf16 m16n8k16 (bytes 0-1, then 2-3 of each register: mma_m16n8k32_e4m3_via_bf16's order).
#if FP8_MMA_VIA_BF16 || (!defined(CUDA_EMU) && !L4_HW_FP8)
#define L4_FP8_BF16_PATH 1
#else
#define L4_FP8_BF16_PATH 0
#endif

// The main loop of a BM x BN output tile: acc[b] = A[m0.., :] · B_b[n0.., :]ᵀ for b < NB, A [M, K] and B_b [N, K]
// e4m3 with K contiguous (lda / ldb bytes between rows), fp32 accumulators in the mma C layout. STAGES-deep cp.async
// pipeline; shared memory: SMEM bytes, dynamic. Each warp owns a WTM x WTN sub-tile (MI x NI mma tiles).
template <int BM, int BN, int BK, int WM, int WN, int STAGES, int NB>
struct Fp8Mma {
    static constexpr int NT = 32 * WM * WN, WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
    static constexpr int LD = BK + 16;  // +16 bytes: the 8 rows of an ldmatrix land in 8 different bank quads
    static constexpr int A_STAGE = BM * LD, B_STAGE = BN * LD;
    static constexpr int SMEM = STAGES * (A_STAGE + NB * B_STAGE);
    static_assert(BM % (16 * WM) == 0 && BN % (16 * WN) == 0, "tile: BM a multiple of 16*WM, BN of 16*WN");
    static_assert(BK % 32 == 0 && STAGES >= 2 && NB >= 1 && NB <= 2, "tile: BK a multiple of 32, >= 2 stages");

    L4_DEV static void run(uint8_t* smem, const uint8_t* __restrict__ A, int M, long long lda, const uint8_t* __restrict__ B0,
                           const uint8_t* __restrict__ B1, int N, long long ldb, int K, int m0, int n0, float (&acc)[NB][MI][NI][4]) {
        uint8_t* As = smem;                      // [STAGES][BM][LD]
        uint8_t* Bs = smem + STAGES * A_STAGE;   // [STAGES][NB][BN][LD]
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int wm = warp / WN, wn = warp % WN;
        const int KT = (K + BK - 1) / BK;
        l4_zero(acc);

        auto load_stage = [&](int stage, int kt) {
            const int k0 = kt * BK;
            fp8_load_tile<BM, BK, LD, NT>(As + stage * A_STAGE, A, M, K, lda, m0, k0, tid);
            uint8_t* bs = Bs + stage * NB * B_STAGE;
            fp8_load_tile<BN, BK, LD, NT>(bs, B0, N, K, ldb, n0, k0, tid);
            if (NB == 2) fp8_load_tile<BN, BK, LD, NT>(bs + B_STAGE, B1, N, K, ldb, n0, k0, tid);
        };

        l4_pipeline_prologue<STAGES>(KT, load_stage);
        for (int kt = 0; kt < KT; ++kt) {
            l4_pipeline_step<STAGES>(kt, KT, load_stage);
            const uint8_t* as = As + (kt % STAGES) * A_STAGE;
            const uint8_t* bs = Bs + (kt % STAGES) * NB * B_STAGE;
#pragma unroll
            for (int kk = 0; kk < BK; kk += 32) {
                uint32_t af[MI][4];
#pragma unroll
                for (int i = 0; i < MI; ++i)
                    ldmatrix_x4(af[i], as + (wm * WTM + i * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LD + kk + 16 * (lane >> 4));
#if L4_FP8_BF16_PATH
                uint32_t ah[MI][2][4];
#pragma unroll
                for (int i = 0; i < MI; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int q = 0; q < 4; ++q) ah[i][h][q] = l4_e4m3x2_to_bf16x2(af[i][q], h);
#endif
#pragma unroll
                for (int b = 0; b < NB; ++b) {
                    uint32_t bfr[NI][2];
#pragma unroll
                    for (int j = 0; j < NI; j += 2) {  // [n][k] in shared: two n-blocks of 8 per ldmatrix_x4
                        uint32_t r[4];
                        ldmatrix_x4(r, bs + b * B_STAGE + (wn * WTN + j * 8 + (lane & 7) + 8 * (lane >> 4)) * LD + kk + 16 * ((lane >> 3) & 1));
                        bfr[j][0] = r[0]; bfr[j][1] = r[1];
                        bfr[j + 1][0] = r[2]; bfr[j + 1][1] = r[3];
                    }
#if L4_FP8_BF16_PATH
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
#pragma unroll
                        for (int j = 0; j < NI; ++j) {
                            const uint32_t bh[2] = {l4_e4m3x2_to_bf16x2(bfr[j][0], h), l4_e4m3x2_to_bf16x2(bfr[j][1], h)};
#pragma unroll
                            for (int i = 0; i < MI; ++i) mma_m16n8k16_bf16_f32(acc[b][i][j], ah[i][h], bh, acc[b][i][j]);
                        }
                    }
#else
#pragma unroll
                    for (int i = 0; i < MI; ++i)
#pragma unroll
                        for (int j = 0; j < NI; ++j) mma_m16n8k32_e4m3_f32(acc[b][i][j], af[i], bfr[j], acc[b][i][j]);
#endif
                }
            }
        }
        cp_async_wait_all();
    }
};

// ------------------------------------------------------------------------------------------ GEMV (decode)
// One warp: acc[r][i] += this lane's share of Σ_k W_r[k] · X_i[k] for the R weight rows w[r] (nullptr: a row past
// the matrix, contributes nothing) and the m ≤ MAXM activation rows X_i = x + i·ldx, all e4m3 with K bytes. VEC (K % 16
// == 0 and every row 16-byte aligned): each lane loads 16 bytes of every weight row per step, R loads in flight, a
// warp covers 512 contiguous bytes of each row; x (tiny, L1/L2-resident) the same way. Otherwise lane-strided bytes.
// Weights are widened with integer ops at full rate, to w·2^-120 (the code's 7 magnitude bits placed under the f32
// exponent: exact, subnormal codes become f32 denormals), because the cvt instructions run at a quarter of the FMA rate
// and would bound the GEMV below HBM speed on Hopper; x (amortized over R rows) goes through the exact e4m3x2 cvt.
// Products w·2^-120·x ≥ 2^-138 are exact, sums fp32 (scaled by a power of two: the same roundings while normal);
// the caller multiplies the warp_sum by 2^120 (gemv_unscale()), exactly. Weight NaN codes (0x7f/0xff, which the
// quantizer never makes from finite weights) read as ±480; NaN activations stay NaN.
// 2^120: undoes e4m3x4_to_f32_scaled's 2^-120.
L4_DEV float gemv_unscale() { return __uint_as_float(0x7b800000u); }

// Byte j of w (e4m3) -> f[j] = value·2^-120, exactly, with two shifts and a LOP per element.
L4_DEV void e4m3x4_to_f32_scaled(uint32_t w, float f[4]) {
    f[0] = __uint_as_float(((w << 20) & 0x07f00000u) | ((w << 24) & 0x80000000u));
    f[1] = __uint_as_float(((w << 12) & 0x07f00000u) | ((w << 16) & 0x80000000u));
    f[2] = __uint_as_float(((w << 4) & 0x07f00000u) | ((w << 8) & 0x80000000u));
    f[3] = __uint_as_float(((w >> 4) & 0x07f00000u) | (w & 0x80000000u));
}

template <int R, int MAXM>
L4_DEV void fp8_gemv_accumulate(const uint8_t* const (&w)[R], const uint8_t* __restrict__ x, long long ldx, int m, int K, bool vec,
                                float (&acc)[R][MAXM]) {
    const int lane = threadIdx.x & 31;
    if (vec) {
        for (int c = lane * 16; c < K; c += 32 * 16) {
            uint4 wv[R];
#pragma unroll
            for (int r = 0; r < R; ++r) wv[r] = w[r] ? vload<uint4>(w[r] + c) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                float wf[R][4];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    e4m3x4_to_f32_scaled(q == 0 ? wv[r].x : q == 1 ? wv[r].y : q == 2 ? wv[r].z : wv[r].w, wf[r]);
                }
#pragma unroll
                for (int i = 0; i < MAXM; ++i) {
                    if (i < m) {
                        const uint32_t xw = vload<uint32_t>(x + i * ldx + c + 4 * q);  // L1-resident; 4 bytes keep registers low
                        const float2 lo = e4m3x2_to_f32x2((uint16_t)(xw & 0xffffu)), hi = e4m3x2_to_f32x2((uint16_t)(xw >> 16));
#pragma unroll
                        for (int r = 0; r < R; ++r) {
                            acc[r][i] = fmaf(wf[r][0], lo.x, acc[r][i]);
                            acc[r][i] = fmaf(wf[r][1], lo.y, acc[r][i]);
                            acc[r][i] = fmaf(wf[r][2], hi.x, acc[r][i]);
                            acc[r][i] = fmaf(wf[r][3], hi.y, acc[r][i]);
                        }
                    }
                }
            }
        }
    } else {
        for (int c = lane; c < K; c += 32) {
            float wf[R];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float f4[4];
                e4m3x4_to_f32_scaled(w[r] ? (uint32_t)w[r][c] : 0u, f4);
                wf[r] = f4[0];
            }
#pragma unroll
            for (int i = 0; i < MAXM; ++i) {
                if (i < m) {
                    const float xf = e4m3_to_f32(x[i * ldx + c]);
#pragma unroll
                    for (int r = 0; r < R; ++r) acc[r][i] = fmaf(wf[r], xf, acc[r][i]);
                }
            }
        }
    }
}

}  // namespace l4_fp8
