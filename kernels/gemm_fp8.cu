// gemm_fp8.cu — FBGEMM's f8f8bf16_rowwise: y[m, n] = bf16((Σ_k xq[m,k]·wq[n,k]) · xs[m] · ws[n]), e4m3 operands,
// fp32 accumulation, the result rounded to bf16 (stored as bf16, or as the f32 holding that bf16 value — the fp32
// parity mode keeps f32 activations but an FP8 GEMM's output is bf16 in FBGEMM).
//
// Why it looks like this: both operands are K-contiguous bytes (xq [M, K] from quantize_fp8_rows, wq [N, K] the
// output-major FP8 weight), which is exactly what mma.m16n8k32.row.col.e4m3 wants: A and B tiles are staged with
// cp.async into K-contiguous shared rows (+16 bytes of padding: conflict-free ldmatrix) and read with plain b16
// ldmatrix, because the e4m3 fragment layout is the bf16 m16n8k16 layout byte for byte (common.cuh). The scales are
// applied once per output in the epilogue, (acc · xs[m]) · ws[n], then one rounding to bf16. sm_80 has no FP8 tensor
// cores: the same kernel converts each fragment exactly to bf16 and issues two bf16 mmas per k32 step (common.cuh's
// mma_m16n8k32_e4m3_via_bf16; FP8_MMA_VIA_BF16=1 selects it on any target, which is how the emulator tests it).
// Decode (M ≤ 8) is bound by streaming W once: `gemm_fp8_gemv_*` gives each warp GF8_ROWS output columns, each lane
// loads 16 bytes (16 weights) of every one of its rows per step — GF8_ROWS independent 16-byte loads in flight — and
// multiplies them with all M activation rows while in registers, so W is read exactly once whatever M is. With 2 warps
// per block a block owns 8 columns: 640 blocks for N = 5120, 128 for the smallest projection N = 1024.
//
// | kernel                 | parameters                                                                              | launch |
// |------------------------|-----------------------------------------------------------------------------------------|--------|
// | gemm_fp8_mma_{bf16,f32}  | (const uint8 xq [M, K], const float xs [M], const uint8 wq [N, K], const float ws [N], y [M, N], int M, int N, int K) | grid = (ceil(N/GF8_BN), ceil(M/GF8_BM)), block = 32·GF8_WM·GF8_WN, dynamic shared = GF8_STAGES·(GF8_BM + GF8_BN)·(GF8_BK + 16) (default 61440 B: opt-in above 48 KiB) |
// | gemm_fp8_gemv_{bf16,f32} | (same)                                                                               | grid = ceil(N / (GF8_GEMV_THREADS/32 · GF8_ROWS)), block = GF8_GEMV_THREADS, shared = 0; M ≤ 8 |
// y is bf16 or f32 (the f32 holds the bf16-rounded value). gridDim.y ≤ 65535 bounds M to 65535·GF8_BM.
// Compile-time: GF8_BM 128, GF8_BN 128, GF8_BK 64 (bytes = elements), GF8_WM 2, GF8_WN 4, GF8_STAGES 3 (8 warps, 64×32
// each); GF8_GEMV_THREADS 64, GF8_ROWS 4; FP8_MMA_VIA_BF16 0.

#include "fp8_ops.cuh"

#ifndef GF8_BM
#define GF8_BM 128
#endif
#ifndef GF8_BN
#define GF8_BN 128
#endif
#ifndef GF8_BK
#define GF8_BK 64
#endif
#ifndef GF8_WM
#define GF8_WM 2
#endif
#ifndef GF8_WN
#define GF8_WN 4
#endif
#ifndef GF8_STAGES
#define GF8_STAGES 3
#endif
#ifndef GF8_GEMV_THREADS
#define GF8_GEMV_THREADS 64
#endif
#ifndef GF8_ROWS
#define GF8_ROWS 4
#endif
#define GF8_MAX_M 8

namespace l4_gf8 {

using Tile = l4_fp8::Fp8Mma<GF8_BM, GF8_BN, GF8_BK, GF8_WM, GF8_WN, GF8_STAGES, 1>;

// bf16-rounded output, stored in TY.
template <typename TY> L4_DEV void put(TY* p, float v) { *p = from_f32<TY>(l4_fp8::round_to<bf16>(v)); }

template <typename TY>
L4_DEV void mma(const uint8_t* __restrict__ xq, const float* __restrict__ xs, const uint8_t* __restrict__ wq,
                const float* __restrict__ ws, TY* __restrict__ y, int M, int N, int K) {
    L4_DYNAMIC_SHARED(uint8_t, smem);
    const int m0 = blockIdx.y * GF8_BM, n0 = blockIdx.x * GF8_BN;
    float acc[1][Tile::MI][Tile::NI][4];
    Tile::run(smem, xq, M, K, wq, nullptr, N, K, K, m0, n0, acc);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp / GF8_WN, wn = warp % GF8_WN;
#pragma unroll
    for (int i = 0; i < Tile::MI; ++i) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int row = m0 + wm * Tile::WTM + i * 16 + (lane >> 2) + hh * 8;
            if (row >= M) continue;
            const float sx = xs[row];
#pragma unroll
            for (int j = 0; j < Tile::NI; ++j) {
                const int col = n0 + wn * Tile::WTN + j * 8 + (lane & 3) * 2;
                TY* yr = y + (long long)row * N;
                if (col < N) put(yr + col, acc[0][i][j][2 * hh] * sx * ws[col]);
                if (col + 1 < N) put(yr + col + 1, acc[0][i][j][2 * hh + 1] * sx * ws[col + 1]);
            }
        }
    }
}

template <typename TY>
L4_DEV void gemv(const uint8_t* __restrict__ xq, const float* __restrict__ xs, const uint8_t* __restrict__ wq,
                 const float* __restrict__ ws, TY* __restrict__ y, int M, int N, int K) {
    constexpr int R = GF8_ROWS;
    const int lane = threadIdx.x & 31;
    const long long n0 = ((long long)blockIdx.x * (GF8_GEMV_THREADS / 32) + threadIdx.x / 32) * R;
    if (n0 >= N) return;  // uniform per warp
    const uint8_t* w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) w[r] = n0 + r < N ? wq + (n0 + r) * K : nullptr;
    float acc[R][GF8_MAX_M];
    l4_zero(acc);
    const bool vec = K % 16 == 0 && aligned16(xq) && aligned16(wq);
    l4_fp8::fp8_gemv_accumulate<R, GF8_MAX_M>(w, xq, K, M, K, vec, acc);
#pragma unroll
    for (int i = 0; i < GF8_MAX_M; ++i) {
        if (i < M) {  // uniform per warp
            const float sx = xs[i];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float s = warp_sum(acc[r][i]) * l4_fp8::gemv_unscale();
                if (lane == 0 && n0 + r < N) put(y + (long long)i * N + n0 + r, s * sx * ws[n0 + r]);
            }
        }
    }
}

}  // namespace l4_gf8

extern "C" __global__ void __launch_bounds__(l4_gf8::Tile::NT) gemm_fp8_mma_bf16(const uint8_t* __restrict__ xq, const float* __restrict__ xs, const uint8_t* __restrict__ wq, const float* __restrict__ ws, bf16* __restrict__ y, int M, int N, int K) { l4_gf8::mma<bf16>(xq, xs, wq, ws, y, M, N, K); }
extern "C" __global__ void __launch_bounds__(l4_gf8::Tile::NT) gemm_fp8_mma_f32(const uint8_t* __restrict__ xq, const float* __restrict__ xs, const uint8_t* __restrict__ wq, const float* __restrict__ ws, float* __restrict__ y, int M, int N, int K) { l4_gf8::mma<float>(xq, xs, wq, ws, y, M, N, K); }
extern "C" __global__ void __launch_bounds__(GF8_GEMV_THREADS) gemm_fp8_gemv_bf16(const uint8_t* __restrict__ xq, const float* __restrict__ xs, const uint8_t* __restrict__ wq, const float* __restrict__ ws, bf16* __restrict__ y, int M, int N, int K) { l4_gf8::gemv<bf16>(xq, xs, wq, ws, y, M, N, K); }
extern "C" __global__ void __launch_bounds__(GF8_GEMV_THREADS) gemm_fp8_gemv_f32(const uint8_t* __restrict__ xq, const float* __restrict__ xs, const uint8_t* __restrict__ wq, const float* __restrict__ ws, float* __restrict__ y, int M, int N, int K) { l4_gf8::gemv<float>(xq, xs, wq, ws, y, M, N, K); }
