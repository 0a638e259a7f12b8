// gemm_int4.cu — y[M, N] = x[M, K] · dequant(W)ᵀ for int4 weights (Meta int4_mixed, W4A16): W [N, K] packed two
// per byte (even k low), f32 scales [N, K/G], dequant(W)[n][k] = q·s. fp32 accumulation everywhere.
//
// Why it looks like this: int4 exists to cut the bytes a decode step streams (Scout's experts and shared expert are
// int4 under int4_mixed), so the decode path must turn the 4× smaller weight into a 4× shorter weight stream, and the
// prefill path must keep the tensor cores fed like gemm.cu. Three kernels:
//  * `gemv{8,32}` (M ≤ 8, decode): gemv.cu's design on packed data. A warp owns GI4_ROWS_PER_WARP (4) output rows
//    n; per step each lane loads 16 bytes (= 32 int4) of EACH of its rows — 4 independent 16-byte loads in flight per
//    lane, a warp covering 1024 k of a row per step, fully coalesced — dequantizes in registers (sign-extending
//    shifts, exact int → float) and multiplies every weight by all m ≤ 8 rows of x (x read through L1/L2, as in
//    gemv.cu). The scale is applied to the fp32 partial sum Σ x·q of a whole 16-byte load (gemv32: G % 32 == 0, the
//    real models' G = 128: 32 k of one load are in one group) or of each 8-k word (gemv8: any G multiple of 8), so
//    the result is Σ_groups s·(Σ x·q) — the same value as Σ x·(q·s) up to fp32 rounding. 4 warps × 4 rows = 16
//    rows per block: 512 blocks for N = 8192, 320 for N = 5120 on 132 SMs. `_m1` is the same code for m = 1 (the usual
//    decode step): its per-row accumulators shrink from 8 to 1, which takes the kernel from ~165 registers to far fewer
//    and so puts more warps — more loads in flight — on each SM. K % 32 != 0 or unaligned pointers take a
//    lane-per-byte scalar loop (any even K).
//  * `mma` (bf16 x, M > 8, prefill): gemm.cu's cp.async → ldmatrix → mma.sync m16n8k16 pipeline (128×128×32 tile,
//    8 warps of 64×32, 3 stages), except that the B stage holds the RAW packed bytes (16 per row per 32-k slab, 4×
//    less shared memory and copy traffic than bf16) and each B fragment is dequantized from them in registers
//    (int4.cuh: two byte loads per fragment). The scale is folded into the weight: the fragment holds bf16(q·s).
//    Why not scale the fp32 partial sums per group instead: that needs group-aligned k steps (G ≥ 16, a second
//    accumulator set per warp tile — twice the registers of the 64×32 tile) and does not work at G = 8 (the
//    tiny-maverick fixture), while bf16(q·s) works for any G with gemm.cu's register budget and is what FBGEMM's
//    groupwise bf16·int4 kernels do (dequantize to bf16 before the MMA). Cost: each weight carries ≤ 2^-9
//    relative rounding, the size of the bf16 activation's own rounding (the reference models it exactly).
//  * `simple` (any dtypes, any M; the f32 path): one thread per output, a sequential fp32 sum of x·(q·s) — the
//    fp32 parity mode, where speed does not matter and the golden is computed with w' = q·s in fp32.
//
// | kernel                                          | parameters | launch |
// |-------------------------------------------------|------------|--------|
// | gemm_int4_gemv{8,32}[_m1]_{f32_f32,bf16_bf16,bf16_f32} | (const TX* x [m, K], const uint8_t* w [N, K/2], const float* scales [N, K/G], TY* y [m, N], int m, int n, int k, int g) | grid = ceil(N / (GI4_THREADS/32 · GI4_ROWS_PER_WARP)), block = GI4_THREADS, shared = 0; 1 ≤ m ≤ 8 (_m1: m = 1); gemv32 needs G % 32 == 0 |
// | gemm_int4_mma_bf16_{bf16,f32}                   | (const bf16* x, w, scales, TY* y, int M, int N, int K, int G) | grid = (ceil(N/GI4_BN), ceil(M/GI4_BM)), block = 32·GI4_WM·GI4_WN, dynamic shared = GI4_STAGES·(2·GI4_BM·(GI4_BK+8) + GI4_BN·GI4_BK/2) (default 36864 B) |
// | gemm_int4_simple_{f32_f32,bf16_bf16,bf16_f32}   | (x, w, scales, y, int M, int N, int K, int G) | grid = (ceil(N/16), ceil(M/16)), block = (16, 16), shared = 0 |
// K even and a multiple of G, G even (checked by the wrapper; G ≥ 8 multiple of 8 for gemv). gridDim.y ≤ 65535.
// Compile-time: GI4_THREADS 128, GI4_ROWS_PER_WARP 4; GI4_BM 128, GI4_BN 128, GI4_BK 32, GI4_WM 2, GI4_WN 4, GI4_STAGES 3.

#include "mma_tile.cuh"
#include "int4.cuh"

#ifndef GI4_THREADS
#define GI4_THREADS 128
#endif
#ifndef GI4_ROWS_PER_WARP
#define GI4_ROWS_PER_WARP 4
#endif
#ifndef GI4_BM
#define GI4_BM 128
#endif
#ifndef GI4_BN
#define GI4_BN 128
#endif
#ifndef GI4_BK
#define GI4_BK 32
#endif
#ifndef GI4_WM
#define GI4_WM 2
#endif
#ifndef GI4_WN
#define GI4_WN 4
#endif
#ifndef GI4_STAGES
#define GI4_STAGES 3
#endif
#define GI4_MAX_M 8
#define GI4_SIMPLE 16

namespace l4_gi4 {

// ------------------------------------------------------------------------------------------ decode GEMV
template <typename TX, typename TY, int PER, int MAXM>
L4_DEV void gemv(const TX* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, TY* __restrict__ y,
                 int m, int n, int k, int G) {
    constexpr int R = GI4_ROWS_PER_WARP;
    const int lane = (int)(threadIdx.x & 31);
    const long long n0 = ((long long)blockIdx.x * (GI4_THREADS / 32) + threadIdx.x / 32) * R;
    if (n0 >= n) return;  // uniform per warp
    const int groups = k / G;
    const long long kb = k / 2;  // bytes per row

    float acc[R][MAXM];
    l4_zero(acc);

    if (k % 32 == 0 && aligned16(w) && aligned16(x)) {
        for (int c = lane; c < k / 32; c += 32) {
            uint4 wv[R];
#pragma unroll
            for (int r = 0; r < R; ++r)
                wv[r] = n0 + r < n ? vload<uint4>(w + (n0 + r) * kb + c * 16) : make_uint4(0u, 0u, 0u, 0u);
            i4_gemv_step<R, MAXM, PER>(
                wv, c * 32, m, [&](int i, int kx, float v[8]) { load8(x + (long long)i * k + kx, v); },
                [&](int r, int kx) { return n0 + r < n ? scales[(n0 + r) * groups + kx / G] : 0.f; }, acc);
        }
    } else {  // any even K, any alignment: a lane per byte (2 k of one group)
        for (int b = lane; b < kb; b += 32) {
            const int k0 = 2 * b;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (n0 + r >= n) continue;
                const uint32_t v = w[(n0 + r) * kb + b];
                const float s = scales[(n0 + r) * groups + k0 / G];
                const float q0 = (float)i4_lo(v), q1 = (float)i4_hi(v);
#pragma unroll
                for (int i = 0; i < MAXM; ++i)
                    if (i < m) acc[r][i] = fmaf(to_f32(x[(long long)i * k + k0]) * q0 + to_f32(x[(long long)i * k + k0 + 1]) * q1, s, acc[r][i]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < MAXM; ++i) {
        if (i < m) {  // uniform per warp
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float s = warp_sum(acc[r][i]);
                if (lane == 0 && n0 + r < n) y[(long long)i * n + n0 + r] = from_f32<TY>(s);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ prefill GEMM (mma)
constexpr int BM = GI4_BM, BN = GI4_BN, BK = GI4_BK, WM = GI4_WM, WN = GI4_WN, STAGES = GI4_STAGES;
constexpr int NT = 32 * WM * WN, WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
constexpr int A_LD = BK + 8, A_STAGE = BM * A_LD, B_RB = BK / 2, B_STAGE = BN * B_RB;
static_assert(BM % (16 * WM) == 0 && BN % (8 * WN) == 0 && BK % 32 == 0 && STAGES >= 2 && NT <= 1024, "int4 GEMM tile");

template <typename TC>
L4_DEV void gemm_mma(const bf16* __restrict__ A, const uint8_t* __restrict__ W, const float* __restrict__ S, TC* __restrict__ C,
                     int M, int N, int K, int G) {
    L4_DYNAMIC_SHARED(bf16, smem);
    bf16* As = smem;                                                  // [STAGES][BM][A_LD]
    uint8_t* Bs = reinterpret_cast<uint8_t*>(smem + STAGES * A_STAGE);  // [STAGES][BN][BK/2] packed
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KT = (K + BK - 1) / BK, groups = K / G;

    auto load_stage = [&](int stage, int kt) {
        l4_load_tile<BM, BK, A_LD, NT>(As + stage * A_STAGE, A, M, K, K, m0, kt * BK, tid);
        i4_load_tile<BN, BK, NT>(Bs + stage * B_STAGE, W, N, K, n0, kt * BK, tid);
    };

    float acc[MI][NI][4];
    l4_zero(acc);
    l4_pipeline_prologue<STAGES>(KT, load_stage);
    for (int kt = 0; kt < KT; ++kt) {
        // This lane's scales for the slab: k = k0 + 2t + 8q (q = 0..3) of each of its NI columns (0 outside W),
        // loaded before the wait so they are in flight with it.
        const int kq = kt * BK + 2 * t;
        float sc[NI][BK / 8];
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            const int n = n0 + wn * WTN + j * 8 + g;
#pragma unroll
            for (int q = 0; q < BK / 8; ++q) sc[j][q] = n < N && kq + 8 * q < K ? S[(long long)n * groups + (kq + 8 * q) / G] : 0.f;
        }
        l4_pipeline_step<STAGES>(kt, KT, load_stage);
        const bf16* as = As + (kt % STAGES) * A_STAGE;
        const uint8_t* bs = Bs + (kt % STAGES) * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4], bfr[NI][2];
            l4_load_afrag<MI, A_LD>(af, as, wm * WTM, kk, lane);
#pragma unroll
            for (int j = 0; j < NI; ++j)
                i4_bfrag(bs + (wn * WTN + j * 8 + g) * B_RB, kk / 2, t, sc[j][kk / 8], sc[j][kk / 8 + 1], bfr[j]);
            l4_mma_tile(acc, af, bfr);
        }
    }
    cp_async_wait_all();

    l4_for_each_pair<MI, NI>(m0 + wm * WTM, n0 + wn * WTN, N, lane, [&](int i, int j, int h, int row, int col, bool both) {
        if (row < M) l4_store_pair(C, (long long)row * N + col, both, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
    });
}

// ------------------------------------------------------------------------------------------ simple (fp32 parity)
template <typename TX, typename TY>
L4_DEV void gemm_simple(const TX* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, TY* __restrict__ y,
                        int M, int N, int K, int G) {
    const int n = blockIdx.x * GI4_SIMPLE + threadIdx.x, m = blockIdx.y * GI4_SIMPLE + threadIdx.y;
    if (m >= M || n >= N) return;
    const TX* xr = x + (long long)m * K;
    const uint8_t* wr = w + (long long)n * (K / 2);
    const float* sr = scales + (long long)n * (K / G);
    float s = 0.f;
    for (int k = 0; k < K; k += 2) {
        const uint32_t v = wr[k / 2];
        const float sc = sr[k / G];
        s += to_f32(xr[k]) * ((float)i4_lo(v) * sc);
        s += to_f32(xr[k + 1]) * ((float)i4_hi(v) * sc);
    }
    y[(long long)m * N + n] = from_f32<TY>(s);
}

}  // namespace l4_gi4

extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv8_f32_f32(const float* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<float, float, 8, GI4_MAX_M>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv8_bf16_bf16(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, bf16* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, bf16, 8, GI4_MAX_M>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv8_bf16_f32(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, float, 8, GI4_MAX_M>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv32_f32_f32(const float* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<float, float, 32, GI4_MAX_M>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv32_bf16_bf16(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, bf16* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, bf16, 32, GI4_MAX_M>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv32_bf16_f32(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, float, 32, GI4_MAX_M>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(l4_gi4::NT) gemm_int4_mma_bf16_bf16(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, bf16* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemm_mma<bf16>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(l4_gi4::NT) gemm_int4_mma_bf16_f32(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemm_mma<float>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_SIMPLE * GI4_SIMPLE) gemm_int4_simple_f32_f32(const float* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemm_simple<float, float>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_SIMPLE * GI4_SIMPLE) gemm_int4_simple_bf16_bf16(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, bf16* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemm_simple<bf16, bf16>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_SIMPLE * GI4_SIMPLE) gemm_int4_simple_bf16_f32(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemm_simple<bf16, float>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv8_m1_f32_f32(const float* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<float, float, 8, 1>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv8_m1_bf16_bf16(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, bf16* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, bf16, 8, 1>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv8_m1_bf16_f32(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, float, 8, 1>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv32_m1_f32_f32(const float* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<float, float, 32, 1>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv32_m1_bf16_bf16(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, bf16* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, bf16, 32, 1>(x, w, scales, y, m, n, k, g); }
extern "C" __global__ void __launch_bounds__(GI4_THREADS) gemm_int4_gemv32_m1_bf16_f32(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scales, float* __restrict__ y, int m, int n, int k, int g) { l4_gi4::gemv<bf16, float, 32, 1>(x, w, scales, y, m, n, k, g); }
