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

#include "mma_tile.cuh"

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
        l4_load_tile<BM, BK, A_LD, NT>(As + stage * A_STAGE, A, M, K, K, m0, k0, tid);
        if constexpr (KN) l4_load_tile<BK, BN, B_LD, NT>(Bs + stage * B_STAGE, B, K, N, N, k0, n0, tid);
        else l4_load_tile<BN, BK, B_LD, NT>(Bs + stage * B_STAGE, B, N, K, K, n0, k0, tid);
    };

    float acc[MI][NI][4];
    l4_zero(acc);
    l4_pipeline_prologue<STAGES>(KT, load_stage);
    for (int kt = 0; kt < KT; ++kt) {
        l4_pipeline_step<STAGES>(kt, KT, load_stage);
        const bf16* as = As + (kt % STAGES) * A_STAGE;
        const bf16* bs = Bs + (kt % STAGES) * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4], bfr[NI][2];
            l4_load_afrag<MI, A_LD>(af, as, wm * WTM, kk, lane);
            l4_load_bfrag<KN, NI, B_LD>(bfr, bs, wn * WTN, kk, lane);
            l4_mma_tile(acc, af, bfr);
        }
    }
    cp_async_wait_all();

    l4_for_each_pair<MI, NI>(m0 + wm * WTM, n0 + wn * WTN, N, lane, [&](int i, int j, int h, int row, int col, bool both) {
        if (row < M) l4_store_pair(C, (long long)row * N + col, both, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
    });
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
