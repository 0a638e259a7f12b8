// quantize_fp8.cu — FBGEMM row-wise FP8 (e4m3fn) quantization: dynamic per-row activations, bf16/f32 weights at load
// time (`--quantize fp8`), and the relayout of a pre-quantized checkpoint's input-major routed experts.
//
// Why it looks like this: every FP8 GEMM input is quantized per row with its own scale (FBGEMM's
// quantize_fp8_per_row): s = max(min(max|x|, ub) / 448, 1/(448·512)), q = e4m3(x / s), round to nearest even,
// saturating at ±448 (NaN stays NaN; max|x| ignores NaN). A row's scale needs the whole row, so a block owns a row
// and makes two passes over it (the second hits L1/L2): block_max of |x|, then x / s with IEEE fp32 division — the
// codes are bit-exact to the reference, on the GPU and the emulator. Weights stored output-major [.., N, K] are the
// same rows with ub = +inf (no bound), so `quantize_fp8_rows_*` serves both. HF's bf16 routed experts are
// input-major [E, K, N] (a weight row n is a column there): `quantize_fp8_colscale_*` reduces max|w| down each
// column (a 32-column block, 8 row groups, coalesced 32-element rows), then `quantize_fp8_transpose_*` quantizes
// 32×32 tiles through shared memory and writes them transposed, [E, N, K], coalesced both ways. An FP8 checkpoint's
// experts are already e4m3 but input-major [E, K, N] with one scale per output channel (contiguous [E, N], untouched):
// `quantize_fp8_relayout` transposes the bytes the same way. All run once at load time except the rows kernel,
// which is the per-token activation quantizer of the dense FP8 linear (GemmFp8.Linear).
//
// | kernel                            | parameters                                                         | launch |
// |-----------------------------------|--------------------------------------------------------------------|--------|
// | quantize_fp8_rows_{f32,bf16}      | (x [rows, K], uint8 q [rows, K], float s [rows], int rows, int K, float ub) | grid = min(rows, 2^31−1) (grid-stride), block = QF8_THREADS, shared = 0 |
// | quantize_fp8_colscale_{f32,bf16}  | (w [E, K, N], float s [E, N], int K, int N)                         | grid = (ceil(N/32), 1, E), block = (32, 8), shared = 1 KiB static |
// | quantize_fp8_transpose_{f32,bf16} | (w [E, K, N], const float s [E, N], uint8 q [E, N, K], int K, int N) | grid = (ceil(N/32), ceil(K/32), E), block = (32, 8), shared = 4.1 KiB static |
// | quantize_fp8_relayout             | (const uint8 src [E, K, N], uint8 dst [E, N, K], int K, int N)      | grid = (ceil(N/32), ceil(K/32), E), block = (32, 8), shared = 1.1 KiB static |
// Exact parameter order as listed; E ≤ 65535, ceil(K/32) ≤ 65535. Compile-time: QF8_THREADS (default 128).

#include "fp8_ops.cuh"

#ifndef QF8_THREADS
#define QF8_THREADS 128
#endif

namespace l4_qf8 {

template <typename T>
L4_DEV void rows(const T* __restrict__ x, uint8_t* __restrict__ q, float* __restrict__ s, int nrows, int K, float ub) {
    for (long long r = blockIdx.x; r < nrows; r += gridDim.x) {
        const T* xr = x + r * K;
        uint8_t* qr = q + r * K;
        const bool vec = K % 8 == 0 && aligned16(xr) && ((unsigned long long)qr & 3ull) == 0;
        const float sc = l4_fp8::fp8_quant_row<QF8_THREADS>(
            K, vec, ub, qr, [&](int c) { return to_f32(xr[c]); }, [&](int c, float v[8]) { load8(xr + c, v); },
            [&](int c, float v[4]) { load4(xr + c, v); });
        if (threadIdx.x == 0) s[r] = sc;
        __syncthreads();  // block_max's shared scratch is reused by the next row
    }
}

template <typename T>
L4_DEV void colscale(const T* __restrict__ w, float* __restrict__ s, int K, int N) {
    __shared__ float red[8][32];
    const int tx = threadIdx.x, ty = threadIdx.y, n = blockIdx.x * 32 + tx;
    const long long e = blockIdx.z;
    float amax = 0.f;
    const int kend = n < N ? K : 0;  // one path to the barrier for every thread (no branch around it)
    for (int k = ty; k < kend; k += 8) amax = fmaxf(amax, fabsf(to_f32(w[(e * K + k) * N + n])));
    red[ty][tx] = amax;
    __syncthreads();
    if (ty == 0 && n < N) {
        for (int j = 1; j < 8; ++j) amax = fmaxf(amax, red[j][tx]);
        s[e * N + n] = fp8_row_scale(amax, __uint_as_float(0x7f800000u));
    }
}

template <typename T>
L4_DEV void transpose_quant(const T* __restrict__ w, const float* __restrict__ s, uint8_t* __restrict__ q, int K, int N) {
    __shared__ float tile[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y, n0 = blockIdx.x * 32, k0 = blockIdx.y * 32;
    const long long e = blockIdx.z;
    for (int r = ty; r < 32; r += 8) {  // rows k, coalesced along n
        const int k = k0 + r, n = n0 + tx;
        tile[r][tx] = (k < K && n < N) ? to_f32(w[(e * K + k) * N + n]) : 0.f;
    }
    __syncthreads();
    for (int r = ty; r < 32; r += 8) {  // rows n of the output, coalesced along k
        const int n = n0 + r, k = k0 + tx;
        if (n < N && k < K) q[(e * N + n) * K + k] = f32_to_e4m3(tile[tx][r] / s[e * N + n]);
    }
}

L4_DEV void relayout(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int K, int N) {
    __shared__ uint8_t tile[32][36];
    const int tx = threadIdx.x, ty = threadIdx.y, n0 = blockIdx.x * 32, k0 = blockIdx.y * 32;
    const long long e = blockIdx.z;
    for (int r = ty; r < 32; r += 8) {
        const int k = k0 + r, n = n0 + tx;
        if (k < K && n < N) tile[r][tx] = src[(e * K + k) * N + n];
    }
    __syncthreads();
    for (int r = ty; r < 32; r += 8) {
        const int n = n0 + r, k = k0 + tx;
        if (n < N && k < K) dst[(e * N + n) * K + k] = tile[tx][r];
    }
}

}  // namespace l4_qf8

extern "C" __global__ void __launch_bounds__(QF8_THREADS) quantize_fp8_rows_f32(const float* __restrict__ x, uint8_t* __restrict__ q, float* __restrict__ s, int rows, int K, float ub) { l4_qf8::rows<float>(x, q, s, rows, K, ub); }
extern "C" __global__ void __launch_bounds__(QF8_THREADS) quantize_fp8_rows_bf16(const bf16* __restrict__ x, uint8_t* __restrict__ q, float* __restrict__ s, int rows, int K, float ub) { l4_qf8::rows<bf16>(x, q, s, rows, K, ub); }
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_colscale_f32(const float* __restrict__ w, float* __restrict__ s, int K, int N) { l4_qf8::colscale<float>(w, s, K, N); }
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_colscale_bf16(const bf16* __restrict__ w, float* __restrict__ s, int K, int N) { l4_qf8::colscale<bf16>(w, s, K, N); }
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_transpose_f32(const float* __restrict__ w, const float* __restrict__ s, uint8_t* __restrict__ q, int K, int N) { l4_qf8::transpose_quant<float>(w, s, q, K, N); }
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_transpose_bf16(const bf16* __restrict__ w, const float* __restrict__ s, uint8_t* __restrict__ q, int K, int N) { l4_qf8::transpose_quant<bf16>(w, s, q, K, N); }
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_relayout(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int K, int N) { l4_qf8::relayout(src, dst, K, N); }
