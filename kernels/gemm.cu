// gemm.cu — C[M, N] = A[M, K] · B with A bf16 row-major, fp32 accumulation, C fp32 or bf16.
//
// Why it looks like this: the projections and experts are GEMMs, and the one thing a GEMM must do is keep
// the tensor cores fed. `gemm_mma_*` is the classic Ampere-style pipeline that runs on sm_80 and sm_90a
// alike: a block computes a GEMM_BM×GEMM_BN tile of C; its GEMM_WM×GEMM_WN warps each own a
// (BM/WM)×(BN/WN) sub-tile held as fp32 accumulators in registers; the K loop streams GEMM_BK-wide slabs
// of A and B through a GEMM_STAGES-deep ring of shared-memory buffers filled by cp.async (16-byte copies
// that bypass registers), so the loads of slab k+STAGES-1 overlap the math on slab k; fragments come out
// of shared memory with ldmatrix (x4 for A; for B x4 non-transposed when B is [N, K], x4.trans when B is
// [K, N]) into mma.sync.m16n8k16 bf16→f32. Every shared row is padded by 8 bf16 (16 bytes), which puts
// the 8 rows an ldmatrix reads into 8 distinct 16-byte bank groups: conflict-free, and simpler to check
// than an XOR swizzle. Edges: a 16-byte chunk is copied by cp.async only when it lies entirely inside
// the matrix and its global address is 16-byte aligned; otherwise (the M/N/K edges, or K — for `kn`
// also N — not a multiple of 8, or an unaligned base) that chunk is gathered element by element with
// zero fill, so every shape ≥ 1 is correct and aligned shapes pay nothing. The epilogue bounds-checks
// every element and stores pairs when it can. `gemm_simple_*` is one thread per output with plain loads
// and a sequential fp32 sum over k: the correctness anchor, and the fallback for tiny or odd shapes and
// for fp32 operands. The B layout is a template parameter: `nk` = B stored [N, K] (nn.Linear weights,
// C = A·Bᵀ), `kn` = B stored [K, N] (Llama 4's fused expert weights, C = A·B).
//
// Kernels: gemm_<variant>_<layout>_<A dtype>_<B dtype>_<C dtype>, all with the same parameters
//     (const TA* A [M, K], const TB* B [N, K] (nk) or [K, N] (kn), TC* C [M, N], int M, int N, int K)
// | kernel                          | launch                                                                 |
// |---------------------------------|------------------------------------------------------------------------|
// | gemm_mma_nk_bf16_bf16_f32       | grid = (ceil(N/GEMM_BN), ceil(M/GEMM_BM)), block = 32·GEMM_WM·GEMM_WN   |
// | gemm_mma_nk_bf16_bf16_bf16      |   dynamic shared (nk) = GEMM_STAGES·2·(GEMM_BM + GEMM_BN)·(GEMM_BK + 8) |
// | gemm_mma_kn_bf16_bf16_f32       |   dynamic shared (kn) = GEMM_STAGES·2·(GEMM_BM·(GEMM_BK + 8)            |
// | gemm_mma_kn_bf16_bf16_bf16      |                                        + GEMM_BK·(GEMM_BN + 8))          |
// |                                 |   defaults: nk 61440 B, kn 56832 B — above 48 KiB the caller must raise  |
// |                                 |   CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES before launching       |
// | gemm_simple_{nk,kn}_bf16_bf16_f32, _bf16_bf16_bf16, _f32_f32_f32, _f32_bf16_f32 (8 kernels)              |
// |                                 | grid = (ceil(N/GEMM_SIMPLE_TILE), ceil(M/GEMM_SIMPLE_TILE)),            |
// |                                 | block = (GEMM_SIMPLE_TILE, GEMM_SIMPLE_TILE), dynamic shared = 0        |
// gridDim.y limits M to 65535·GEMM_BM (mma) or 65535·GEMM_SIMPLE_TILE (simple).
//
// Compile-time parameters (defaults tuned for an H100; all part of the JIT cache key):
//   GEMM_BM 128, GEMM_BN 128, GEMM_BK 32 — block tile; BM % (16·WM) == 0, BN % (16·WN) == 0, BK % 16 == 0
//   GEMM_WM 2, GEMM_WN 4 — warps along M and N (8 warps, warp tile 64×32)
//   GEMM_STAGES 3 — depth of the cp.async ring (≥ 2)
//   GEMM_SIMPLE_TILE 16 — block edge of the simple kernel (GEMM_SIMPLE_TILE² ≤ 1024)

#include "common.cuh"

#ifndef GEMM_BM
#define GEMM_BM 128
#endif
#ifndef GEMM_BN
#define GEMM_BN 128
#endif
#ifndef GEMM_BK
#define GEMM_BK 32
#endif
#ifndef GEMM_WM
#define GEMM_WM 2
#endif
#ifndef GEMM_WN
#define GEMM_WN 4
#endif
#ifndef GEMM_STAGES
#define GEMM_STAGES 3
#endif
#ifndef GEMM_SIMPLE_TILE
#define GEMM_SIMPLE_TILE 16
#endif

namespace l4_gemm {

constexpr int BM = GEMM_BM, BN = GEMM_BN, BK = GEMM_BK, WM = GEMM_WM, WN = GEMM_WN, STAGES = GEMM_STAGES;
constexpr int NT = 32 * WM * WN;     // threads per block
constexpr int WTM = BM / WM;         // warp tile rows
constexpr int WTN = BN / WN;         // warp tile cols
constexpr int MI = WTM / 16;         // m16 fragments per warp
constexpr int NI = WTN / 8;          // n8 fragments per warp (even: B is loaded two n8 at a time)
constexpr int PAD = 8;               // bf16 of padding per shared row (16 bytes)
static_assert(BM % (16 * WM) == 0, "GEMM_BM must be a multiple of 16*GEMM_WM");
static_assert(BN % (16 * WN) == 0, "GEMM_BN must be a multiple of 16*GEMM_WN");
static_assert(BK % 16 == 0, "GEMM_BK must be a multiple of 16");
static_assert(STAGES >= 2, "GEMM_STAGES must be at least 2");
static_assert(NT <= 1024, "GEMM_WM*GEMM_WN must be at most 32");

// Shared layout per stage: A as [BM][BK+PAD]; B as [BN][BK+PAD] (nk) or [BK][BN+PAD] (kn).
constexpr int A_LD = BK + PAD;
constexpr int A_STAGE = BM * A_LD;
template <bool KN> struct BSmem {
    static constexpr int LD = KN ? BN + PAD : BK + PAD;
    static constexpr int STAGE = KN ? BK * (BN + PAD) : BN * (BK + PAD);
};

// Stores C[r, c] and C[r, c+1] (r < M checked by the caller), as one pair store when the address is aligned
// for it (the address, not the index: C itself may be offset).
__device__ __forceinline__ void store_pair(float* C, long long off, bool both, float v0, float v1) {
    if (both && ((unsigned long long)(C + off) & 7ull) == 0) vstore(C + off, make_float2(v0, v1));
    else { C[off] = v0; if (both) C[off + 1] = v1; }
}
__device__ __forceinline__ void store_pair(bf16* C, long long off, bool both, float v0, float v1) {
    if (both && ((unsigned long long)(C + off) & 3ull) == 0) vstore(C + off, pack_bf16x2(v0, v1));
    else { C[off] = f32_to_bf16(v0); if (both) C[off + 1] = f32_to_bf16(v1); }
}

// Copies the TR×TC tile at (r0, c0) of the row-major matrix G [R, C] into shared S (leading dimension LD),
// zero-filling outside the matrix. Whole 16-byte chunks go by cp.async; edge or unaligned chunks by
// plain element loads (made visible by the __syncthreads that precedes their use).
template <int TR, int TC, int LD>
__device__ __forceinline__ void load_tile(bf16* S, const bf16* __restrict__ G, int R, int C, int r0, int c0,
                                          int tid) {
    constexpr int CPR = TC / 8;  // 16-byte chunks per tile row
#pragma unroll
    for (int ch = tid; ch < TR * CPR; ch += NT) {
        const int r = ch / CPR, c = (ch % CPR) * 8;
        const int gr = r0 + r, gc = c0 + c;
        bf16* s = S + r * LD + c;
        const bf16* g = G + (long long)gr * C + gc;
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

template <bool KN, typename TC>
__device__ __forceinline__ void gemm_mma(const bf16* __restrict__ A, const bf16* __restrict__ B, TC* __restrict__ C,
                                         int M, int N, int K) {
    L4_DYNAMIC_SHARED(bf16, smem);
    bf16* As = smem;                          // [STAGES][BM][A_LD]
    bf16* Bs = smem + STAGES * A_STAGE;       // [STAGES][BSmem::STAGE]
    constexpr int B_LD = BSmem<KN>::LD, B_STAGE = BSmem<KN>::STAGE;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KT = (K + BK - 1) / BK;

    auto load_stage = [&](int stage, int kt) {
        const int k0 = kt * BK;
        load_tile<BM, BK, A_LD>(As + stage * A_STAGE, A, M, K, m0, k0, tid);
        if constexpr (KN) load_tile<BK, BN, B_LD>(Bs + stage * B_STAGE, B, K, N, k0, n0, tid);
        else load_tile<BN, BK, B_LD>(Bs + stage * B_STAGE, B, N, K, n0, k0, tid);
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<STAGES - 2>();  // slab kt has landed (this thread's copies) ...
        __syncthreads();              // ... and everyone's; everyone is also done with slab kt-1's buffer
        {
            const int nx = kt + STAGES - 1;
            if (nx < KT) load_stage(nx % STAGES, nx);
            cp_async_commit();  // always commit (possibly empty) so the group count stays in step
        }
        const bf16* as = As + (kt % STAGES) * A_STAGE;
        const bf16* bs = Bs + (kt % STAGES) * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4], bfr[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i)  // x4: (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15)
                ldmatrix_x4(af[i], as + (wm * WTM + i * 16 + (lane & 15)) * A_LD + kk + (lane >> 4) * 8);
#pragma unroll
            for (int j = 0; j < NI; j += 2) {
                uint32_t r[4];
                if constexpr (KN) {  // stored [k][n]: trans; matrices (k0-7,n0-7) (k8-15,n0-7) (k0-7,n8-15) (k8-15,n8-15)
                    ldmatrix_x4_trans(r, bs + (kk + (lane & 15)) * B_LD + wn * WTN + j * 8 + (lane >> 4) * 8);
                } else {             // stored [n][k]: matrices (n0-7,k0-7) (n0-7,k8-15) (n8-15,k0-7) (n8-15,k8-15)
                    ldmatrix_x4(r, bs + (wn * WTN + j * 8 + (lane >> 4) * 8 + (lane & 7)) * B_LD + kk +
                                       ((lane >> 3) & 1) * 8);
                }
                bfr[j][0] = r[0]; bfr[j][1] = r[1];
                bfr[j + 1][0] = r[2]; bfr[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma_m16n8k16_bf16_f32(acc[i][j], af[i], bfr[j], acc[i][j]);
        }
    }
    cp_async_wait_all();

    // Accumulator layout (m16n8): c0,c1 at (lane/4, 2·(lane%4) + {0,1}); c2,c3 eight rows below.
#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            const int col = n0 + wn * WTN + j * 8 + (lane & 3) * 2;
            if (col >= N) continue;
            const bool both = col + 1 < N;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm * WTM + i * 16 + (lane >> 2) + h * 8;
                if (row < M) store_pair(C, (long long)row * N + col, both, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
            }
        }
    }
}

template <bool KN, typename TA, typename TB, typename TC>
__device__ __forceinline__ void gemm_simple(const TA* __restrict__ A, const TB* __restrict__ B, TC* __restrict__ C,
                                            int M, int N, int K) {
    const int n = blockIdx.x * GEMM_SIMPLE_TILE + threadIdx.x;
    const int m = blockIdx.y * GEMM_SIMPLE_TILE + threadIdx.y;
    if (m >= M || n >= N) return;
    const TA* a = A + (long long)m * K;
    float s = 0.f;
    if constexpr (KN) {
        const TB* b = B + n;
        for (int k = 0; k < K; ++k) s += to_f32(a[k]) * to_f32(b[(long long)k * N]);
    } else {
        const TB* b = B + (long long)n * K;
        for (int k = 0; k < K; ++k) s += to_f32(a[k]) * to_f32(b[k]);
    }
    C[(long long)m * N + n] = from_f32<TC>(s);
}

}  // namespace l4_gemm

extern "C" __global__ void __launch_bounds__(l4_gemm::NT) gemm_mma_nk_bf16_bf16_f32(const bf16* __restrict__ A, const bf16* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_mma<false, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(l4_gemm::NT) gemm_mma_nk_bf16_bf16_bf16(const bf16* __restrict__ A, const bf16* __restrict__ B, bf16* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_mma<false, bf16>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(l4_gemm::NT) gemm_mma_kn_bf16_bf16_f32(const bf16* __restrict__ A, const bf16* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_mma<true, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(l4_gemm::NT) gemm_mma_kn_bf16_bf16_bf16(const bf16* __restrict__ A, const bf16* __restrict__ B, bf16* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_mma<true, bf16>(A, B, C, M, N, K); }

extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_nk_bf16_bf16_f32(const bf16* __restrict__ A, const bf16* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<false, bf16, bf16, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_nk_bf16_bf16_bf16(const bf16* __restrict__ A, const bf16* __restrict__ B, bf16* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<false, bf16, bf16, bf16>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_nk_f32_f32_f32(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<false, float, float, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_nk_f32_bf16_f32(const float* __restrict__ A, const bf16* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<false, float, bf16, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_kn_bf16_bf16_f32(const bf16* __restrict__ A, const bf16* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<true, bf16, bf16, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_kn_bf16_bf16_bf16(const bf16* __restrict__ A, const bf16* __restrict__ B, bf16* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<true, bf16, bf16, bf16>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_kn_f32_f32_f32(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<true, float, float, float>(A, B, C, M, N, K); }
extern "C" __global__ void __launch_bounds__(GEMM_SIMPLE_TILE * GEMM_SIMPLE_TILE) gemm_simple_kn_f32_bf16_f32(const float* __restrict__ A, const bf16* __restrict__ B, float* __restrict__ C, int M, int N, int K) { l4_gemm::gemm_simple<true, float, bf16, float>(A, B, C, M, N, K); }
