// kernels/common.cuh — the one header every Llama4Native kernel includes.
//
// Two compilers read it:
//  * NVRTC (CUDA 12.4, sm_80 / sm_90a, -default-device -std=c++17), which has NO headers built in
//    (no stdint.h, cuda_bf16.h, cuda_fp16.h, cuda_fp8.h, mma.h): hence the raw-bits bf16/fp8 types and
//    thin inline-PTX helpers below;
//  * g++ -DCUDA_EMU with kernels/emu/emu.h force-included (the emulated device): every inline-PTX helper
//    has a portable twin that follows the PTX ISA semantics bit for bit (rounding, saturation, fragment
//    layouts). The one documented difference: mma's fp32 accumulation order/rounding inside the
//    instruction is unspecified by the ISA; the twin accumulates c + sum_k a*b in k order in fp32.
//
// Kernel entry points are written out one per line, literally
//   extern "C" __global__ void __launch_bounds__(N) name(params) { ns::impl<...>(args); }
// and never produced by a macro: kernels/emu/gen_module.sh and the C# KernelSources scanner find kernels
// (and their __launch_bounds__) by this text.
#pragma once

// ---------------------------------------------------------------- fixed-width integers
#ifdef CUDA_EMU
#include <cstdint>
#else
// NVRTC has no <stdint.h>; these match the LP64 device ABI.
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#endif

#define L4_DEV __device__ __forceinline__

// ---------------------------------------------------------------- bf16 (raw bits)
// A raw-bits struct instead of __nv_bfloat16: that type lives in cuda_bf16.h, which NVRTC lacks.
struct __align__(2) bf16 { uint16_t bits; };

L4_DEV float bf16_to_f32(bf16 h) { return __uint_as_float((uint32_t)h.bits << 16); }  // exact widening

// Round-to-nearest-even f32 -> bf16 bits; every NaN becomes the canonical 0x7fff (as cvt.rn.bf16 does).
// Also the CUDA_EMU twin of the cvt instructions.
L4_DEV uint16_t l4_f32_to_bf16_bits_rne(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

L4_DEV bf16 f32_to_bf16(float f) {
    bf16 r;
#ifdef CUDA_EMU
    r.bits = l4_f32_to_bf16_bits_rne(f);
#else
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
#endif
    return r;
}

// Packs two floats as bf16x2 with `lo` in bits 0..15 (the element at the lower address).
L4_DEV uint32_t pack_bf16x2(float lo, float hi) {
#ifdef CUDA_EMU
    return (uint32_t)l4_f32_to_bf16_bits_rne(lo) | ((uint32_t)l4_f32_to_bf16_bits_rne(hi) << 16);
#else
    uint32_t r;
    // cvt.rn.bf16x2.f32 d, a, b puts a in the UPPER half: pass hi first.
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#endif
}

L4_DEV float2 unpack_bf16x2(uint32_t v) { return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u)); }

// ---------------------------------------------------------------- fp8 e4m3 (OCP e4m3fn)
// Bias 7, max normal 448 (0x7e), min normal 2^-6, subnormals m*2^-9, no infinities, NaN = 0x7f/0xff.
// Software paths: the CUDA_EMU twin and the sm_80 path (the cvt e4m3 instructions need sm_89+).

// f32 -> e4m3 as cvt.rn.satfinite: round to nearest even, |x| beyond 448 (incl. inf) -> +-448,
// NaN -> 0x7f. Integer-only so it is exact on both compilers.
L4_DEV uint8_t l4_f32_to_e4m3_sw(float f) {
    const uint32_t u = __float_as_uint(f);
    const uint32_t sign = (u >> 24) & 0x80u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;
    if (a >= 0x43e00000u) return (uint8_t)(sign | 0x7e);  // >= 448.0f: satfinite
    const int e = (int)(a >> 23) - 127;
    uint32_t mant, shift, base;
    if (e >= -6) {  // normal: keep 3 mantissa bits, the exponent field rides along for the carry
        mant = a & 0x7fffffu; shift = 20; base = (uint32_t)(e + 7) << 3;
    } else {        // subnormal (or zero): value / 2^-9, rounded to an integer 0..8 (8 = min normal)
        if (e < -11) return (uint8_t)sign;  // < 2^-11 (quarter of the smallest subnormal): rounds to 0
        mant = (a & 0x7fffffu) | 0x800000u; shift = (uint32_t)(14 - e); base = 0;
    }
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    q += (rem > half || (rem == half && (q & 1u))) ? 1u : 0u;
    return (uint8_t)(sign | (base + q));
}

L4_DEV float l4_e4m3_to_f32_sw(uint8_t b) {
    const uint32_t sign = (uint32_t)(b & 0x80u) << 24, e = (b >> 3) & 0xfu, m = b & 7u;
    if ((b & 0x7fu) == 0x7fu) return __uint_as_float(sign | 0x7fc00000u);
    if (e == 0) return __uint_as_float(sign | __float_as_uint((float)m * 0.001953125f));  // m * 2^-9, exact
    return __uint_as_float(sign | ((e + 120u) << 23) | (m << 20));
}

#if !defined(CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define L4_HW_FP8 1
#else
#define L4_HW_FP8 0
#endif

// Two floats -> e4m3x2 with `lo` in bits 0..7.
L4_DEV uint16_t f32x2_to_e4m3x2(float lo, float hi) {
#if L4_HW_FP8
    uint16_t r;
    // Like the bf16x2 cvt, the first source goes to the upper byte.
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return (uint16_t)(l4_f32_to_e4m3_sw(lo) | ((uint32_t)l4_f32_to_e4m3_sw(hi) << 8));
#endif
}

// e4m3x2 (lo in bits 0..7) -> two floats. Exact: every e4m3 value is an f16 and an f32.
L4_DEV float2 e4m3x2_to_f32x2(uint16_t v) {
#if L4_HW_FP8
    uint32_t h2;
    float lo, hi;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(v));
    asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
        : "=f"(lo), "=f"(hi) : "r"(h2));
    return make_float2(lo, hi);
#else
    return make_float2(l4_e4m3_to_f32_sw((uint8_t)(v & 0xffu)), l4_e4m3_to_f32_sw((uint8_t)(v >> 8)));
#endif
}

L4_DEV uint8_t f32_to_e4m3(float f) { return (uint8_t)(f32x2_to_e4m3x2(f, 0.0f) & 0xffu); }
L4_DEV float e4m3_to_f32(uint8_t b) { return e4m3x2_to_f32x2((uint16_t)b).x; }

// ---------------------------------------------------------------- element types, vector accesses
// The shared vocabulary of the elementwise kernels: fp32 is the compute type, float and bf16 the storage
// types (to_f32 / from_f32<T>), and 8 elements move as one 16-byte vector (load8 / store8).

L4_DEV float to_f32(float v) { return v; }
L4_DEV float to_f32(bf16 v) { return bf16_to_f32(v); }
template <typename T> L4_DEV T from_f32(float v);
template <> L4_DEV float from_f32<float>(float v) { return v; }
template <> L4_DEV bf16 from_f32<bf16>(float v) { return f32_to_bf16(v); }

template <typename T> struct l4_is_void { static constexpr bool value = false; };
template <> struct l4_is_void<void> { static constexpr bool value = true; };

L4_DEV bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// Every vector access (8/16-byte float2/uint2/float4/uint4, also a 4-byte pair store) goes through
// vload/vstore: on the GPU it is the plain access (ld/st.v2/.v4), which faults when the address is not a
// multiple of sizeof(V); on the emulator (x86 does not care) the address is checked first and a violation
// fails the launch with "kernel K: block (x,y,z): thread N (x,y,z): misaligned 16-byte load at 0x...".
template <typename V> L4_DEV V vload(const void* p) {
#ifdef CUDA_EMU
    l4emu_check_aligned(p, alignof(V), "load");
#endif
    return *static_cast<const V*>(p);
}
template <typename V> L4_DEV void vstore(void* p, const V& v) {
#ifdef CUDA_EMU
    l4emu_check_aligned(p, alignof(V), "store");
#endif
    *static_cast<V*>(p) = v;
}

// 8 consecutive elements <-> 8 floats; p must be 16-byte aligned.
L4_DEV void load8(const float* p, float v[8]) {
    const float4 a = vload<float4>(p), b = vload<float4>(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
L4_DEV void load8(const bf16* p, float v[8]) {
    const uint4 u = vload<uint4>(p);
    const float2 a = unpack_bf16x2(u.x), b = unpack_bf16x2(u.y), c = unpack_bf16x2(u.z), d = unpack_bf16x2(u.w);
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y; v[4] = c.x; v[5] = c.y; v[6] = d.x; v[7] = d.y;
}
L4_DEV void store8(float* p, const float v[8]) {
    vstore(p, make_float4(v[0], v[1], v[2], v[3]));
    vstore(p + 4, make_float4(v[4], v[5], v[6], v[7]));
}
L4_DEV void store8(bf16* p, const float v[8]) {
    vstore(p, make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]),
                         pack_bf16x2(v[6], v[7])));
}

// ---------------------------------------------------------------- warp / block reductions
// Fixed xor-butterfly order, so GPU and emulator add in the same order (bit-identical results).
L4_DEV float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
L4_DEV float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions for 1-D blocks, blockDim.x a multiple of 32 (<= 1024); every thread gets the
// result. Contains __syncthreads, so all threads of the block must call it.
template <bool MAX> L4_DEV float l4_block_reduce(float v) {
    __shared__ float l4_red[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();  // a previous call may still be reading l4_red
    if (lane == 0) l4_red[warp] = v;
    __syncthreads();
    const float ident = MAX ? __uint_as_float(0xff800000u) : 0.0f;  // -inf / 0
    v = lane < nwarps ? l4_red[lane] : ident;
    return MAX ? warp_max(v) : warp_sum(v);
}
L4_DEV float block_sum(float v) { return l4_block_reduce<false>(v); }
L4_DEV float block_max(float v) { return l4_block_reduce<true>(v); }

// Row-wise kernels (rmsnorm, softmax) give one row to a block (WARP = false) or to each warp of a 1-D
// block of THREADS threads (WARP = true): the row this thread works on, its index among the row's
// threads, and how many threads share the row. Use: const auto [row, lane, nthr] = l4_row_split<WARP, N>();
template <bool WARP, int THREADS> struct l4_row_part { long long row; int lane, nthr; };
template <bool WARP, int THREADS> L4_DEV l4_row_part<WARP, THREADS> l4_row_split() {
    if (WARP) return {(long long)blockIdx.x * (THREADS / 32) + threadIdx.x / 32, (int)(threadIdx.x & 31), 32};
    return {(long long)blockIdx.x, (int)threadIdx.x, THREADS};
}

// This thread's share of sum(f(x[c])) over a row of `cols` (not yet reduced across the row's threads):
// 16-byte loads of 8 elements when `vec` (cols % 8 == 0 and aligned), else strided scalars. The summation
// order is fixed per thread, so every row kernel that uses it is bit-reproducible.
template <typename T, typename F>
L4_DEV float row_partial_sum(const T* xr, int cols, int lane, int nthr, bool vec, F f) {
    float s = 0.f;
    if (vec) {
        for (int c = lane * 8; c < cols; c += nthr * 8) {
            float v[8];
            load8(xr + c, v);
#pragma unroll
            for (int e = 0; e < 8; ++e) s += f(v[e]);
        }
    } else {
        for (int c = lane; c < cols; c += nthr) s += f(to_f32(xr[c]));
    }
    return s;
}

// ---------------------------------------------------------------- small math
// exp via ex2.approx: relative error ~2^-21 (a few ulp), far below bf16 resolution, ~4x cheaper than expf.
L4_DEV float fast_exp(float x) { return __expf(x); }
// silu(x) = x / (1 + exp(-x)) with __fdividef (x * rcp.approx): the IEEE '/' calls a slow-path subroutine
// that made ptxas spill in silu_mul. Accuracy: within ~3 ulp of the exact value (2 from __expf, 2 from
// __fdividef, not additive in practice) — far below bf16 resolution. Limits: x -> -inf gives x / inf = -0;
// for x in about (-88.7, -87.3), 1 + exp(-x) lies in (2^126, 2^128) where __fdividef returns 0 instead of
// ~x·2^-126 (absolute error < 1e-36). The emulator's __fdividef is the exact a / b.
L4_DEV float silu(float x) { return __fdividef(x, 1.0f + __expf(-x)); }
// The value a TA tensor would hold: identity for f32, round-to-bf16 for bf16 (torch's rounding points in bf16 mode).
template <typename TA> L4_DEV float round_to(float v) { return to_f32(from_f32<TA>(v)); }
// Zeroes an accumulator array of any shape (acc[R][M], acc[MI][NI][4], acc[NB][MI][NI][4], ...), fully unrolled.
L4_DEV void l4_zero(float& a) { a = 0.f; }
template <typename T, int N> L4_DEV void l4_zero(T (&a)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) l4_zero(a[i]);
}

// ---------------------------------------------------------------- dynamic shared memory
// One declared name for the whole program (CUDA requires all `extern __shared__` arrays to alias).
#ifdef CUDA_EMU
#define L4_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(l4emu_self()->blk->dyn_smem)
#else
#define L4_DYNAMIC_SHARED(T, name) \
    extern __shared__ __align__(16) unsigned char l4_dyn_smem[]; \
    T* name = reinterpret_cast<T*>(l4_dyn_smem)
#endif

// ---------------------------------------------------------------- tensor cores and async copies
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" and ldmatrix), with
// g = lane >> 2 and t = lane & 3; the lower-indexed element of each pair sits in bits 0..15:
//   A (16x16, row-major): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   B (16x8, "col"):      b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C/D (16x8 f32):       c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
//   ldmatrix .x1/.x2/.x4: lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of matrix i;
//     r[i] = M_i[g][2t..2t+1], or with .trans r[i] = {M_i[2t][g], M_i[2t+1][g]}.
#ifdef CUDA_EMU
namespace l4_emu {
struct MmaLane { uint32_t a[4], b[2]; float c[4], d[4]; };
L4_DEV float bf16_lo_hi(uint32_t v, int k) { return __uint_as_float(k ? (v & 0xffff0000u) : (v << 16)); }
L4_DEV void mma_m16n8k16(void* const* lanes, unsigned) {
    auto L = [&](int l) { return static_cast<MmaLane*>(lanes[l]); };
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            float acc = L(lane)->c[i];
            for (int k = 0; k < 16; ++k) {
                const float a = bf16_lo_hi(L((row & 7) * 4 + (k & 7) / 2)->a[(row >> 3) + 2 * (k >> 3)], k & 1);
                const float b = bf16_lo_hi(L(col * 4 + (k & 7) / 2)->b[k >> 3], k & 1);
                acc += a * b;  // bf16*bf16 is exact in fp32; only the adds round
            }
            L(lane)->d[i] = acc;
        }
    }
}
struct LdmLane { const uint16_t* row; uint32_t r[4]; };
template <int NUM, bool TRANS> L4_DEV void ldmatrix(void* const* lanes, unsigned) {
    auto row = [&](int m, int r) { return static_cast<LdmLane*>(lanes[8 * m + r])->row; };
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int m = 0; m < NUM; ++m) {
            const uint32_t lo = TRANS ? row(m, 2 * t)[g] : row(m, g)[2 * t];
            const uint32_t hi = TRANS ? row(m, 2 * t + 1)[g] : row(m, g)[2 * t + 1];
            static_cast<LdmLane*>(lanes[lane])->r[m] = lo | (hi << 16);
        }
    }
}
template <int NUM, bool TRANS> L4_DEV void ldmatrix_lane(uint32_t* r, const void* p, const char* what) {
    l4emu_check_aligned(p, 16, "ldmatrix row");  // each lane's row address: 16 bytes, 16-byte aligned
    LdmLane d;
    d.row = static_cast<const uint16_t*>(p);
    l4emu_rt_warp_sync(0xffffffffu, what, &d, &ldmatrix<NUM, TRANS>);
    for (int m = 0; m < NUM; ++m) r[m] = d.r[m];
}
}  // namespace l4_emu
#endif

// D = A*B + C for one warp: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (d may alias c).
L4_DEV void mma_m16n8k16_bf16_f32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#ifdef CUDA_EMU
    l4_emu::MmaLane m;
    for (int i = 0; i < 4; ++i) { m.a[i] = a[i]; m.c[i] = c[i]; }
    m.b[0] = b[0]; m.b[1] = b[1];
    l4emu_rt_warp_sync(0xffffffffu, "mma.sync.m16n8k16", &m, &l4_emu::mma_m16n8k16);
    for (int i = 0; i < 4; ++i) d[i] = m.d[i];
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

#ifndef CUDA_EMU
L4_DEV uint32_t l4_smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
#endif

// ldmatrix.sync.aligned.m8n8.{x4,x2}[.trans].shared.b16. "memory" clobber: it reads shared memory that
// ordinary stores wrote, which the compiler must not sink below it.
#ifdef CUDA_EMU
#define L4_LDMATRIX(fn, NUM, TRANS, SUFFIX) \
    L4_DEV void fn(uint32_t r[NUM], const void* smem_ptr) { \
        l4_emu::ldmatrix_lane<NUM, TRANS>(r, smem_ptr, "ldmatrix.m8n8.x" #NUM SUFFIX); }
#else
#define L4_LDMATRIX_ASM_4 "{%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
#define L4_LDMATRIX_ASM_2 "{%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1])
#define L4_LDMATRIX(fn, NUM, TRANS, SUFFIX) \
    L4_DEV void fn(uint32_t r[NUM], const void* smem_ptr) { \
        asm volatile("ldmatrix.sync.aligned.m8n8.x" #NUM SUFFIX ".shared.b16 " L4_LDMATRIX_ASM_##NUM \
                     : "r"(l4_smem_addr(smem_ptr)) : "memory"); }
#endif
L4_LDMATRIX(ldmatrix_x4, 4, false, "")
L4_LDMATRIX(ldmatrix_x2, 2, false, "")
L4_LDMATRIX(ldmatrix_x4_trans, 4, true, ".trans")
L4_LDMATRIX(ldmatrix_x2_trans, 2, true, ".trans")
#undef L4_LDMATRIX

// cp.async.cg (16 bytes, bypasses L1); both addresses 16-byte aligned. On the emulator the copies go through
// the runtime: by default (L4EMU_CP_ASYNC=deferred) the bytes land in shared memory only when a
// cp_async_wait completes their group, so a kernel that reads the destination too early sees stale data
// there as on the GPU; L4EMU_CP_ASYNC=immediate copies at issue time.
L4_DEV void cp_async_16(void* smem, const void* gmem) {
#ifdef CUDA_EMU
    l4emu_rt_cp_async(smem, gmem, 16);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(l4_smem_addr(smem)), "l"(gmem) : "memory");
#endif
}
// Copies src_bytes (0..16) and zero-fills the rest of the 16 bytes: loads at tile edges stay in bounds.
L4_DEV void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes) {
#ifdef CUDA_EMU
    l4emu_rt_cp_async(smem, gmem, src_bytes);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(l4_smem_addr(smem)), "l"(gmem), "r"(src_bytes)
                 : "memory");
#endif
}
L4_DEV void cp_async_commit() {
#ifdef CUDA_EMU
    l4emu_rt_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Waits until at most N committed groups are still in flight (copies not yet committed are not waited for).
template <int N> L4_DEV void cp_async_wait() {
#ifdef CUDA_EMU
    l4emu_rt_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
// Commits the open group and waits for every copy.
L4_DEV void cp_async_wait_all() {
#ifdef CUDA_EMU
    l4emu_rt_cp_async_wait(-1);
#else
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// ---------------------------------------------------------------- fp8 (e4m3) tensor cores
// mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 (sm_89+). Fragments (PTX ISA, "Matrix Fragments for
// mma.m16n8k32", 8-bit types), g = lane >> 2, t = lane & 3, byte j of a register = element j (lowest byte first):
//   A (16x32, row-major): a[0] = A[g][4t..4t+3], a[1] = A[g+8][4t..], a[2] = A[g][4t+16..], a[3] = A[g+8][4t+16..]
//   B (32x8, "col"):      b[0] = B[4t..4t+3][g], b[1] = B[4t+16..4t+19][g]
//   C/D (16x8 f32):       as m16n8k16.
// Byte for byte these are the bf16 m16n8k16 layouts with every 16-bit pair read as four bytes, so the same
// ldmatrix (b16, non-transposed) calls load them from K-contiguous shared tiles: A [m][k] and B [n][k].
// Where there are no fp8 tensor cores (sm_80) mma_m16n8k32_e4m3_f32 is mma_m16n8k32_e4m3_via_bf16: every e4m3
// converted exactly to bf16, bytes 0-1 of each register through one bf16 m16n8k16 and bytes 2-3 through a second
// (the pairing of A's and B's k indices is the same in both halves, so this is the same sum in another order).

// Bytes 2h, 2h+1 of v (e4m3) -> bf16x2, exactly (every e4m3 value, NaN included, is a bf16 value).
L4_DEV uint32_t l4_e4m3x2_to_bf16x2(uint32_t v, int h) {
    const float2 f = e4m3x2_to_f32x2((uint16_t)(v >> (16 * h)));
    return pack_bf16x2(f.x, f.y);
}

L4_DEV void mma_m16n8k32_e4m3_via_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    float t[4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        uint32_t ah[4], bh[2];
#pragma unroll
        for (int i = 0; i < 4; ++i) ah[i] = l4_e4m3x2_to_bf16x2(a[i], h);
        bh[0] = l4_e4m3x2_to_bf16x2(b[0], h);
        bh[1] = l4_e4m3x2_to_bf16x2(b[1], h);
        mma_m16n8k16_bf16_f32(t, ah, bh, h == 0 ? c : t);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = t[i];
}

#ifdef CUDA_EMU
namespace l4_emu {
// The twin of the fp8 mma: for each output, c + sum over k = 0..31 of a*b in k order, in fp32 (e4m3 products are
// exact in fp32; only the adds round).
L4_DEV void mma_m16n8k32_e4m3(void* const* lanes, unsigned) {
    auto L = [&](int l) { return static_cast<MmaLane*>(lanes[l]); };
    auto byte = [](uint32_t v, int k) { return l4_e4m3_to_f32_sw((uint8_t)(v >> (8 * (k & 3)))); };
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            float acc = L(lane)->c[i];
            for (int k = 0; k < 32; ++k) {
                const float a = byte(L((row & 7) * 4 + (k & 15) / 4)->a[(row >> 3) + 2 * (k >> 4)], k);
                const float b = byte(L(col * 4 + (k & 15) / 4)->b[k >> 4], k);
                acc += a * b;
            }
            L(lane)->d[i] = acc;
        }
    }
}
}  // namespace l4_emu
#endif

// D = A*B + C for one warp, A 16x32 and B 32x8 e4m3, f32 accumulators (d may alias c). The hardware instruction on
// sm_89+, the bf16 pair on older GPUs, the twin on the emulator.
L4_DEV void mma_m16n8k32_e4m3_f32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if defined(CUDA_EMU)
    l4_emu::MmaLane m;
    for (int i = 0; i < 4; ++i) { m.a[i] = a[i]; m.c[i] = c[i]; }
    m.b[0] = b[0]; m.b[1] = b[1];
    l4emu_rt_warp_sync(0xffffffffu, "mma.sync.m16n8k32.e4m3", &m, &l4_emu::mma_m16n8k32_e4m3);
    for (int i = 0; i < 4; ++i) d[i] = m.d[i];
#elif L4_HW_FP8
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    mma_m16n8k32_e4m3_via_bf16(d, a, b, c);
#endif
}

// 4 consecutive elements -> 4 floats; p must be 16-byte (float) / 8-byte (bf16) aligned.
L4_DEV void load4(const float* p, float v[4]) { const float4 a = vload<float4>(p); v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; }
L4_DEV void load4(const bf16* p, float v[4]) {
    const uint2 u = vload<uint2>(p);
    const float2 a = unpack_bf16x2(u.x), b = unpack_bf16x2(u.y);
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}

// 16 e4m3 (one 16-byte load, lowest byte first) -> 16 floats, exactly.
L4_DEV void e4m3x16_to_f32(const uint4& u, float v[16]) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const float2 lo = e4m3x2_to_f32x2((uint16_t)(w[q] & 0xffffu)), hi = e4m3x2_to_f32x2((uint16_t)(w[q] >> 16));
        v[4 * q] = lo.x; v[4 * q + 1] = lo.y; v[4 * q + 2] = hi.x; v[4 * q + 3] = hi.y;
    }
}

// FBGEMM's row scale: max(min(amax, ub) / 448, 1/(448*512)) (ub = +inf for weights), fp32 IEEE division.
L4_DEV float fp8_row_scale(float amax, float ub) { return fmaxf(fminf(amax, ub) / 448.0f, 1.0f / (448.0f * 512.0f)); }
