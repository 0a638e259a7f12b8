// gemv.cu — y[m, N] = x[m, K] · Wᵀ for nn.Linear weights W [N, K] bf16, m = 1..8 (batched decode), fp32 sums.
//
// Why it looks like this: at decode every projection (q/kv/o, shared-expert gate_up/down, lm_head) reads
// each weight once and does 2·m flops per weight, so the op is bound by HBM bandwidth on W and nothing
// else matters as much as streaming W with wide, coalesced, independent loads. Each warp owns
// GEMV_ROWS_PER_WARP consecutive output columns n (rows of W); per step every lane loads 8 bf16 of each
// of its W rows as one 16-byte vector (a warp covers 256 contiguous K elements = 512 bytes per row), so
// the loads are fully coalesced and ROWS_PER_WARP of them are in flight per lane per step. Each W
// element is multiplied by all m ≤ 8 rows of x while in registers (acc[ROWS_PER_WARP][8] fp32), so W is
// read exactly once whatever m is. The lane-partial sums meet in warp_sum (shuffles); no shared memory
// and no __syncthreads are needed. x is NOT staged in shared memory: it is tiny (m·K ≤ 8·16384·4 bytes =
// 512 KiB worst case, 20 KiB for the usual m = 1, K = 5120 f32) and every block reads the same x, so
// it is L2-resident after the first touch and mostly L1-resident within an SM; reading it through the
// read-only path (const __restrict__) costs no HBM traffic, has no K limit (a shared-memory copy would
// exceed 48 KiB for f32 at m·K > 12288 and need slab loops + syncs), and keeps occupancy unbounded by
// shared memory. The fast path needs K % 8 == 0 and 16-byte aligned x and W (then every row start is
// aligned too); otherwise a scalar loop (lane-strided, still coalesced) handles any K ≥ 1. Any N ≥ 1:
// a warp's rows beyond N are skipped. y is written rounded once from the fp32 sum.
//
// | kernel            | parameters                                                                    | launch |
// |-------------------|-------------------------------------------------------------------------------|--------|
// | gemv_f32_f32      | const float* x [m, K], const bf16* w [N, K], float* y [m, N], int m, int n, int k | grid = ceil(N / (GEMV_THREADS/32 · GEMV_ROWS_PER_WARP)), block = GEMV_THREADS, shared = 0 |
// | gemv_bf16_bf16    | const bf16* x [m, K], const bf16* w [N, K], bf16* y [m, N], int m, int n, int k   | "      |
// | gemv_bf16_f32     | const bf16* x [m, K], const bf16* w [N, K], float* y [m, N], int m, int n, int k  | "      |
//
// Exact parameter order: (x, w, y, m, n, k); 1 ≤ m ≤ GEMV_MAX_M (= 8, checked by the wrapper; the kernel
// clamps nothing — rows m..7 are simply not computed). x, w, y must not overlap.
// Compile-time parameters: GEMV_THREADS (default 128, multiple of 32, ≤ 1024), GEMV_ROWS_PER_WARP
// (default 2: two independent 16-byte W loads in flight per lane; 4 warps·2 = 8 columns per block gives
// 128 blocks for the smallest decode projection N = 1024).

#include "common.cuh"

#ifndef GEMV_THREADS
#define GEMV_THREADS 128
#endif
#ifndef GEMV_ROWS_PER_WARP
#define GEMV_ROWS_PER_WARP 2
#endif
#define GEMV_MAX_M 8

namespace l4_gemv {

template <typename TX, typename TY>
__device__ __forceinline__ void gemv(const TX* __restrict__ x, const bf16* __restrict__ w, TY* __restrict__ y,
                                     int m, int n, int k) {
    constexpr int R = GEMV_ROWS_PER_WARP;
    const int lane = (int)(threadIdx.x & 31);
    const long long n0 = ((long long)blockIdx.x * (GEMV_THREADS / 32) + threadIdx.x / 32) * R;
    if (n0 >= n) return;  // uniform per warp

    float acc[R][GEMV_MAX_M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int i = 0; i < GEMV_MAX_M; ++i) acc[r][i] = 0.f;

    const bool vec = (k % 8 == 0) && aligned16(x) && aligned16(w);
    if (vec) {
        for (int c = lane * 8; c < k; c += 32 * 8) {
            float wv[R][8];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (n0 + r < n) load8(w + (n0 + r) * k + c, wv[r]);
                else {
#pragma unroll
                    for (int e = 0; e < 8; ++e) wv[r][e] = 0.f;
                }
            }
#pragma unroll
            for (int i = 0; i < GEMV_MAX_M; ++i) {
                if (i < m) {
                    float xv[8];
                    load8(x + (long long)i * k + c, xv);
#pragma unroll
                    for (int r = 0; r < R; ++r)
#pragma unroll
                        for (int e = 0; e < 8; ++e) acc[r][i] = fmaf(wv[r][e], xv[e], acc[r][i]);
                }
            }
        }
    } else {
        for (int c = lane; c < k; c += 32) {
            float wv[R];
#pragma unroll
            for (int r = 0; r < R; ++r) wv[r] = (n0 + r < n) ? to_f32(w[(n0 + r) * k + c]) : 0.f;
#pragma unroll
            for (int i = 0; i < GEMV_MAX_M; ++i) {
                if (i < m) {
                    const float xv = to_f32(x[(long long)i * k + c]);
#pragma unroll
                    for (int r = 0; r < R; ++r) acc[r][i] = fmaf(wv[r], xv, acc[r][i]);
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < GEMV_MAX_M; ++i) {
        if (i < m) {  // uniform per warp
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float s = warp_sum(acc[r][i]);
                if (lane == 0 && n0 + r < n) y[(long long)i * n + n0 + r] = from_f32<TY>(s);
            }
        }
    }
}

}  // namespace l4_gemv

extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_f32_f32(const float* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y, int m, int n, int k) { l4_gemv::gemv<float, float>(x, w, y, m, n, k); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_bf16_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y, int m, int n, int k) { l4_gemv::gemv<bf16, bf16>(x, w, y, m, n, k); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_bf16_f32(const bf16* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y, int m, int n, int k) { l4_gemv::gemv<bf16, float>(x, w, y, m, n, k); }
