// quantize_int4.cu — Meta's int4_mixed weight quantization on the device, bit-exact to the fp32 torch rule
// (SPEC-llama4.md § Quantization): per output row, groups of G consecutive input elements,
//   s = max(max|w_group|, 1e-6) / 8,   q = clamp(round_half_even(w / s), -8, 7),
// packed two per byte along K with the even k in the low nibble (int4.cuh), scales f32 [.., N, K/G].
//
// Why it looks like this: it runs once per weight at load time (Scout: ~100 B expert parameters), so it only has
// to stream the bf16 weight once and be exact; one thread owns one (row, group): it reads the group's G values
// twice (max, then quantize — the second pass hits L1), writes G/2 bytes and one scale, and needs no
// communication. The thread → (row, group) order makes the reads coalesced for either source layout: for
// input-major weights (HF routed experts [E, K, N]) consecutive threads take consecutive n of the same group, so
// a warp reads 32 consecutive elements of each k row; for output-major ones (nn.Linear [N, K]) consecutive threads
// take consecutive groups of one row. w / s is IEEE division (__fdiv_rn), rint is round-half-even (cvt.rni), and
// s = m / 8 is exact, so the result is the torch rule bit for bit on the GPU and on the emulator. NaN weights are
// not supported (fmaxf drops a NaN from the group maximum; the checkpoint loader rejects non-finite weights).
//
// | kernel                  | parameters                                                                 | launch |
// |-------------------------|----------------------------------------------------------------------------|--------|
// | quantize_int4_{f32,bf16} | (const T* w [B, N, K] or [B, K, N], uint8_t* q [B, N, K/2], float* scales [B, N, K/G], long long batch, int N, int K, int G, int input_major) | grid = min(ceil(B·N·K/G / QI4_THREADS), 2^20) (grid-stride), block = QI4_THREADS, shared = 0 |
// K even and a multiple of G, G even (checked by the wrapper). Compile-time: QI4_THREADS (256).

#include "int4.cuh"

#ifndef QI4_THREADS
#define QI4_THREADS 256
#endif

namespace l4_qi4 {

template <typename T>
L4_DEV void quantize(const T* __restrict__ w, uint8_t* __restrict__ q, float* __restrict__ scales, long long batch, int N,
                     int K, int G, int input_major) {
    const int groups = K / G;
    const long long total = batch * N * groups;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (long long)gridDim.x * blockDim.x) {
        long long b, n, g;
        if (input_major) { n = idx % N; const long long rest = idx / N; g = rest % groups; b = rest / groups; }
        else { g = idx % groups; const long long rest = idx / groups; n = rest % N; b = rest / N; }
        const long long row = b * N + n;
        // element (b, n, k = g·G + j) at src[j·stride]
        const T* src = input_major ? w + b * K * (long long)N + g * G * (long long)N + n : w + row * K + g * G;
        const long long stride = input_major ? N : 1;
        float amax = 0.f;
        for (int j = 0; j < G; ++j) amax = fmaxf(amax, fabsf(to_f32(src[j * stride])));
        const float s = fmaxf(amax, 1e-6f) / 8.f;  // exact: a power-of-two divide
        uint8_t* dst = q + row * (K / 2) + g * (G / 2);
        for (int j = 0; j < G; j += 2) {
            const float a = fminf(fmaxf(rintf(l4_div_rn(to_f32(src[j * stride]), s)), -8.f), 7.f);
            const float c = fminf(fmaxf(rintf(l4_div_rn(to_f32(src[(j + 1) * stride]), s)), -8.f), 7.f);
            dst[j / 2] = (uint8_t)(((int)a & 0xf) | (((int)c & 0xf) << 4));
        }
        scales[row * groups + g] = s;
    }
}

}  // namespace l4_qi4

extern "C" __global__ void __launch_bounds__(QI4_THREADS) quantize_int4_f32(const float* __restrict__ w, uint8_t* __restrict__ q, float* __restrict__ scales, long long batch, int N, int K, int G, int input_major) { l4_qi4::quantize<float>(w, q, scales, batch, N, K, G, input_major); }
extern "C" __global__ void __launch_bounds__(QI4_THREADS) quantize_int4_bf16(const bf16* __restrict__ w, uint8_t* __restrict__ q, float* __restrict__ scales, long long batch, int N, int K, int G, int input_major) { l4_qi4::quantize<bf16>(w, q, scales, batch, N, K, G, input_major); }
