// int4.cuh — the packed-int4 weight format (Meta int4_mixed) as the int4 kernels read it: quantize_int4.cu,
// gemm_int4.cu and moe_int4.cu. One copy of the nibble order, the dequantization and the tensor-core B tile.
//
// Format (Tensor.cs, DType.I4): a weight is output-major [rows, K]; element (n, k) is the signed 4-bit q in
// [-8, 7] in byte n·K/2 + k/2, the even k in the LOW nibble; its f32 scale is scales[n·(K/G) + k/G]; the
// weight it stands for is q·s, computed in fp32 (exact: |q| ≤ 8 needs 4 bits of mantissa).
#pragma once
#include "common.cuh"

// IEEE round-to-nearest division. NVRTC's '/' is already IEEE by default (-prec-div=true), but the quantization
// rule is defined by torch's fp32 division, so spell it out; the emulator's g++ '/' on SSE is IEEE too.
L4_DEV float l4_div_rn(float a, float b) {
#ifdef CUDA_EMU
    return a / b;
#else
    return __fdiv_rn(a, b);
#endif
}

// Nibble j (0..7) of a 32-bit word holding 8 consecutive k (little-endian bytes, low nibble first), sign-extended.
L4_DEV int i4_nibble(uint32_t w, int j) { return (int)(w << (28 - 4 * j)) >> 28; }
// The 8 q values of a word as floats (exact).
L4_DEV void i4_unpack8(uint32_t w, float q[8]) {
#pragma unroll
    for (int j = 0; j < 8; ++j) q[j] = (float)i4_nibble(w, j);
}
// Low / high nibble of one byte (k even / k odd), sign-extended.
L4_DEV int i4_lo(uint32_t b) { return (int)(b << 28) >> 28; }
L4_DEV int i4_hi(uint32_t b) { return (int)(b << 24) >> 28; }

// ---------------------------------------------------------------- tensor-core B operand from int4
// The mma kernels stage the RAW packed bytes (4× fewer than bf16) through shared memory with cp.async, as
// [TR rows][BK/2 bytes] per stage, and dequantize straight into the m16n8k16 B fragment in registers:
// b[0] = W[n = g][k = 2t, 2t+1], b[1] = W[g][2t+8, 2t+9] (common.cuh's fragment table, B "col" = W [n][k]) is
// exactly byte t and byte t+4 of row g of a 16-k slab — two byte loads per fragment, no ldmatrix. Rows of 16 bytes
// (BK = 32) put rows g = 0..7 in distinct banks: conflict-free.

// Copies rows [r0, r0+TR) × elements [k0, k0+BK) of the packed matrix W (R rows, K elements, row stride K/2 bytes)
// into S [TR][BK/2], zero outside the matrix (q = 0: no contribution whatever the scale). 16-byte chunks that are
// inside and aligned go by cp.async, the rest byte by byte.
template <int TR, int BK, int NT>
L4_DEV void i4_load_tile(uint8_t* S, const uint8_t* __restrict__ W, int R, int K, int r0, int k0, int tid) {
    constexpr int RB = BK / 2, CPR = RB / 16;
    static_assert(BK % 32 == 0, "the int4 B tile needs BK to be a multiple of 32 (16-byte chunks)");
    const long long ldb = K / 2;
#pragma unroll
    for (int ch = tid; ch < TR * CPR; ch += NT) {
        const int r = ch / CPR, c = (ch % CPR) * 16;  // c: byte within the tile row
        const int gr = r0 + r, gb = k0 / 2 + c;       // gb: byte within the matrix row
        uint8_t* s = S + r * RB + c;
        const uint8_t* g = W + (long long)gr * ldb + gb;
        if (gr < R && 2 * (gb + 16) <= K && aligned16(g)) {
            cp_async_16(s, g);
        } else {
            uint32_t w[4] = {0u, 0u, 0u, 0u};
            if (gr < R) {
#pragma unroll
                for (int e = 0; e < 16; ++e)
                    if (2 * (gb + e) < K) w[e >> 2] |= (uint32_t)g[e] << (8 * (e & 3));
            }
            vstore(s, make_uint4(w[0], w[1], w[2], w[3]));
        }
    }
}

// The B fragment of rows n (this lane's g) for the 16-k slab starting at byte kb of the staged row `row`:
// q·s rounded to bf16 (s0 for k = 2t, 2t+1; s1 for k = 2t+8, 2t+9).
L4_DEV void i4_bfrag(const uint8_t* row, int kb, int t, float s0, float s1, uint32_t b[2]) {
    const uint32_t lo = row[kb + t], hi = row[kb + t + 4];
    b[0] = pack_bf16x2((float)i4_lo(lo) * s0, (float)i4_hi(lo) * s0);
    b[1] = pack_bf16x2((float)i4_lo(hi) * s1, (float)i4_hi(hi) * s1);
}

// ---------------------------------------------------------------- GEMV step (decode)
// One 16-byte step of a warp's int4 GEMV (gemm_int4.cu, moe_int4.cu): wv[r] holds 32 consecutive k of weight row r
// starting at k0 (8 per word, i4_unpack8's order); x(i, c, v) loads 8 activation values of row i from k = c into v
// (as the GEMV should see them: scaled, rounded); only rows i < m count. The products of a scale group are summed in
// fp32 (`part`) and multiplied by scale(r, c) once: per 8-k word (PER 8) or per 16-byte load (PER 32: G % 32 == 0).
template <int R, int MAXM, int PER, typename LoadX, typename Scale>
L4_DEV void i4_gemv_step(const uint4 (&wv)[R], int k0, int m, const LoadX& x, const Scale& scale, float (&acc)[R][MAXM]) {
    static_assert(PER == 8 || PER == 32, "the scale granularity is a word (8 k) or a 16-byte load (32 k)");
    float part[R][MAXM];
    l4_zero(part);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        float q[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r) i4_unpack8(j == 0 ? wv[r].x : j == 1 ? wv[r].y : j == 2 ? wv[r].z : wv[r].w, q[r]);
#pragma unroll
        for (int i = 0; i < MAXM; ++i) {
            if (i < m) {
                float xv[8];
                x(i, k0 + 8 * j, xv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float p = 0.f;
#pragma unroll
                    for (int e = 0; e < 8; ++e) p = fmaf(xv[e], q[r][e], p);
                    part[r][i] += p;
                }
            }
        }
        if (PER == 8 || j == 3) {  // the partial sums of one scale group are complete: scale them once
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float s = scale(r, k0 + 8 * j);
#pragma unroll
                for (int i = 0; i < MAXM; ++i) { acc[r][i] = fmaf(part[r][i], s, acc[r][i]); part[r][i] = 0.f; }
            }
        }
    }
}
