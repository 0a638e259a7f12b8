// kernels/emu/emu.h — the "emulated device": lets a CUDA .cu file compile with g++ and run on the CPU.
//
// Force-included by g++ before any .cu (`-include kernels/emu/emu.h -DCUDA_EMU`). It maps CUDA keywords
// and built-ins onto plain C++ plus calls into libl4emu.so (kernels/emu/runtime.cpp), which runs every
// CUDA thread as a fiber; all fibers of a block share one OS thread (so `__shared__` = `thread_local`).
// Part 1 (types + runtime ABI) is shared with runtime.cpp; part 2 (keywords, built-ins) is for kernels.
#pragma once
#ifndef CUDA_EMU
#define CUDA_EMU 1
#endif

// Standard headers first: the keyword macros below (e.g. __noinline__) must not leak into them.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <math.h>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- part 1: types and runtime ABI
#define __align__(n) __attribute__((aligned(n)))

// CUDA vector types with CUDA's alignment (8/16 bytes), so vectorised loads/stores keep their layout.
#define L4EMU_VEC2(T, N, A) struct __align__(A) N { T x, y; }; \
    static inline N make_##N(T x, T y) { N r; r.x = x; r.y = y; return r; }
#define L4EMU_VEC3(T, N) struct N { T x, y, z; }; \
    static inline N make_##N(T x, T y, T z) { N r; r.x = x; r.y = y; r.z = z; return r; }
#define L4EMU_VEC4(T, N, A) struct __align__(A) N { T x, y, z, w; }; \
    static inline N make_##N(T x, T y, T z, T w) { N r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }
L4EMU_VEC2(float, float2, 8)           L4EMU_VEC3(float, float3)              L4EMU_VEC4(float, float4, 16)
L4EMU_VEC2(int, int2, 8)               L4EMU_VEC3(int, int3)                  L4EMU_VEC4(int, int4, 16)
L4EMU_VEC2(unsigned int, uint2, 8)     L4EMU_VEC3(unsigned int, uint3)        L4EMU_VEC4(unsigned int, uint4, 16)
L4EMU_VEC2(unsigned short, ushort2, 4) L4EMU_VEC4(unsigned char, uchar4, 4)   L4EMU_VEC4(signed char, char4, 4)
L4EMU_VEC2(short, short2, 4)           L4EMU_VEC2(double, double2, 16)
#undef L4EMU_VEC2
#undef L4EMU_VEC3
#undef L4EMU_VEC4

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// What a running CUDA thread can see. The header sits near the top of each fiber's stack region, whose
// size is a power of two (1 << l4emu_stack_shift) and which is aligned to it: a thread finds its own
// header from %rsp with a few ALU ops, no TLS lookup (TLS across dlopen'ed .so files costs a call).
struct l4emu_block_info { uint3 blockIdx; dim3 blockDim; dim3 gridDim; void* dyn_smem; };
struct l4emu_thread_hdr { uint3 threadIdx; unsigned lin; const l4emu_block_info* blk; void* fiber; };
#define L4EMU_HDR_BYTES 64

// A kernel as a module exports it: l4emu_get_function returns a pointer to one of these.
// max_threads: the first __launch_bounds__ argument (0: none); a bigger block fails to launch, as on the GPU.
struct l4emu_kernel { const char* name; void (*entry)(void** args); unsigned max_threads; };

// Checker flags (l4emu_launch_ex; L4EMU_CHECK=race,memory,sync,init|all). A checked launch needs the module
// built with -fsanitize=thread (EmuCompiler's checked variant): see "checker" in runtime.cpp.
#define L4EMU_CHK_RACE 1u
#define L4EMU_CHK_MEMORY 2u
#define L4EMU_CHK_SYNC 4u
#define L4EMU_CHK_INIT 8u
#define L4EMU_CHK_ANALYZE 16u
#define L4EMU_CHK_ALL 31u

extern "C" {
extern unsigned l4emu_stack_shift;
void l4emu_rt_vec(const void* p, unsigned size);  // analysis: a vector access of `size` bytes at p follows
void l4emu_rt_quiet(int on);  // checker: accesses between on=1 and on=0 are not the kernel's (argument unpacking)  // log2 of the fiber stack region size, fixed at load time
// op: 0 plain, 1 count, 2 and, 3 or. Returns the popcount of `pred` over the block (count semantics).
// file, line: the barrier's source location (where `__syncthreads()` is written): the sync check compares
// barriers by line, so a barrier g++ duplicated (jump threading, unrolling) is still one barrier.
int l4emu_rt_syncthreads_at(int op, int pred, const char* file, int line);
// Warp collective: every participating lane deposits `mine`; the last lane to arrive calls
// compute(lanes, mask) once with lanes[i] = lane i's deposit (null if lane i does not take part),
// which writes every lane's result into its deposit. Then all lanes continue.
void l4emu_rt_warp_sync(unsigned mask, const char* what, void* mine, void (*compute)(void* const* lanes, unsigned mask));
// The same with the collective's source location (shuffles, votes, __syncwarp pass theirs): mask errors name the line.
void l4emu_rt_warp_sync_at(unsigned mask, const char* what, void* mine, void (*compute)(void* const* lanes, unsigned mask),
                           const char* file, int line);
unsigned l4emu_rt_activemask(void);
void l4emu_rt_trap(const char* why);
// A vector access at p that is not a multiple of `align`: fails the launch (never returns).
void l4emu_rt_misaligned(const void* p, unsigned align, const char* what);
// cp.async: copy min(src_bytes,16) bytes, zero-fill the rest of 16. Immediate mode copies now; deferred
// mode (the default; L4EMU_CP_ASYNC=immediate turns it off) snapshots the source now and writes the
// destination only when a cp_async_wait completes the copy's group. wait: n < 0 is wait_all.
void l4emu_rt_cp_async(void* dst, const void* src, int src_bytes);
void l4emu_rt_cp_async_commit(void);
void l4emu_rt_cp_async_wait(int n);
}

// Header of the region holding address p. Aligned regions would put every header (and the hot top of
// every stack, just below it) in the same cache sets; shifting each down by (region index % 64) * 64
// bytes spreads them over 4 KiB.
static inline l4emu_thread_hdr* l4emu_hdr_at(uintptr_t p) {
    const unsigned sh = l4emu_stack_shift;
    const uintptr_t idx = p >> sh;
    return reinterpret_cast<l4emu_thread_hdr*>(((idx + 1) << sh) - L4EMU_HDR_BYTES - ((idx & 63) << 6));
}
static inline const l4emu_thread_hdr* l4emu_self() {
    uintptr_t sp;
    __asm__("mov %%rsp, %0" : "=r"(sp));  // not volatile: the value is only ever used as "which region"
    return l4emu_hdr_at(sp);
}

#ifndef L4EMU_RUNTIME
// ---------------------------------------------------------------- part 2: CUDA keywords and built-ins
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__            // to nothing: libstdc++ spells __attribute__((__noinline__)) itself
#define __launch_bounds__(...)
// __restrict__ is left to g++, which gives it the same no-alias meaning as nvcc/NVRTC.
// One block runs entirely on one OS thread, so a thread_local is exactly "one copy per block".
// Not `static thread_local`: `extern __shared__` must stay a declaration.
#define __shared__ thread_local

#define threadIdx (l4emu_self()->threadIdx)
#define blockIdx (l4emu_self()->blk->blockIdx)
#define blockDim (l4emu_self()->blk->blockDim)
#define gridDim (l4emu_self()->blk->gridDim)
constexpr int warpSize = 32;

// ---- block barriers
// Each barrier carries its source location (default arguments are evaluated where `__syncthreads()` is
// written): the checker's sync check compares barriers by file and line, and by the inline chain of the call
// site only when two code addresses share a line (see "sync" in runtime.cpp). Always inlined so the call's
// return address is inside the kernel (the inline chain of a report).
#define L4EMU_HERE const char* l4emu_file = __builtin_FILE(), int l4emu_line = __builtin_LINE()
__attribute__((always_inline)) static inline void __syncthreads(L4EMU_HERE) { l4emu_rt_syncthreads_at(0, 0, l4emu_file, l4emu_line); }
__attribute__((always_inline)) static inline int __syncthreads_count(int p, L4EMU_HERE) { return l4emu_rt_syncthreads_at(1, p, l4emu_file, l4emu_line); }
__attribute__((always_inline)) static inline int __syncthreads_and(int p, L4EMU_HERE) { return l4emu_rt_syncthreads_at(2, p, l4emu_file, l4emu_line); }
__attribute__((always_inline)) static inline int __syncthreads_or(int p, L4EMU_HERE) { return l4emu_rt_syncthreads_at(3, p, l4emu_file, l4emu_line); }
#undef L4EMU_HERE

// ---- warp collectives
// Each carries its source location (default arguments, evaluated where the collective is written): a mask
// error names the line.
#define L4EMU_HERE const char* l4emu_file = __builtin_FILE(), int l4emu_line = __builtin_LINE()
#define L4EMU_AT l4emu_file, l4emu_line
static inline void __syncwarp(unsigned mask = 0xffffffffu, L4EMU_HERE) {
    l4emu_rt_warp_sync_at(mask, "__syncwarp", nullptr, [](void* const*, unsigned) {}, L4EMU_AT);
}
static inline unsigned __activemask() { return l4emu_rt_activemask(); }

namespace l4emu_detail {
struct Vote { int pred; unsigned out; };
template <int OP> inline unsigned vote(unsigned mask, int pred, const char* what, const char* file, int line) {
    Vote d{pred != 0, 0};
    l4emu_rt_warp_sync_at(mask, what, &d, [](void* const* lanes, unsigned m) {
        unsigned ballot = 0;
        for (int l = 0; l < 32; ++l)
            if (lanes[l] && static_cast<Vote*>(lanes[l])->pred) ballot |= 1u << l;
        const unsigned r = OP == 0 ? ballot : OP == 1 ? unsigned(ballot == m) : unsigned(ballot != 0);
        for (int l = 0; l < 32; ++l)
            if (lanes[l]) static_cast<Vote*>(lanes[l])->out = r;
    }, file, line);
    return d.out;
}

// Shuffles follow the PTX ISA shfl.sync pseudo-code exactly (segmask/maxLane/minLane), with the
// `c` operand CUDA's intrinsics pass: ((32-width)<<8) | 0x1f, and (32-width)<<8 for .up.
enum { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_BFLY };
template <class T> struct Shfl { T v; int b; int width; T out; };
template <int MODE, class T> inline T shfl(unsigned mask, T v, int b, int width, const char* what, const char* file, int line) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffles move 32- or 64-bit values");
    Shfl<T> d{v, b, width, v};
    l4emu_rt_warp_sync_at(mask, what, &d, [](void* const* lanes, unsigned) {
        for (int lane = 0; lane < 32; ++lane) {
            auto* me = static_cast<Shfl<T>*>(lanes[lane]);
            if (!me) continue;
            const int c = ((32 - me->width) << 8) | (MODE == SHFL_UP ? 0 : 0x1f);
            const int bval = me->b & 31, cval = c & 31, segmask = (c >> 8) & 31;
            const int maxLane = (lane & segmask) | (cval & ~segmask), minLane = lane & segmask;
            int j; bool pval;
            switch (MODE) {
                case SHFL_UP: j = lane - bval; pval = j >= maxLane; break;
                case SHFL_DOWN: j = lane + bval; pval = j <= maxLane; break;
                case SHFL_BFLY: j = lane ^ bval; pval = j <= maxLane; break;
                default: j = minLane | (bval & ~segmask); pval = j <= maxLane; break;
            }
            if (!pval) j = lane;
            // A source lane outside the mask is undefined on the GPU; we return the caller's own value.
            me->out = lanes[j] ? static_cast<Shfl<T>*>(lanes[j])->v : me->v;
        }
    }, file, line);
    return d.out;
}
template <class F> inline F bits_as(const void* p) { F r; std::memcpy(&r, p, sizeof r); return r; }
}  // namespace l4emu_detail

static inline unsigned __ballot_sync(unsigned mask, int pred, L4EMU_HERE) { return l4emu_detail::vote<0>(mask, pred, "__ballot_sync", L4EMU_AT); }
static inline int __all_sync(unsigned mask, int pred, L4EMU_HERE) { return (int)l4emu_detail::vote<1>(mask, pred, "__all_sync", L4EMU_AT); }
static inline int __any_sync(unsigned mask, int pred, L4EMU_HERE) { return (int)l4emu_detail::vote<2>(mask, pred, "__any_sync", L4EMU_AT); }
template <class T> inline T __shfl_sync(unsigned m, T v, int src, int w = warpSize, L4EMU_HERE) {
    return l4emu_detail::shfl<l4emu_detail::SHFL_IDX>(m, v, src, w, "__shfl_sync", L4EMU_AT);
}
template <class T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = warpSize, L4EMU_HERE) {
    return l4emu_detail::shfl<l4emu_detail::SHFL_UP>(m, v, (int)d, w, "__shfl_up_sync", L4EMU_AT);
}
template <class T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = warpSize, L4EMU_HERE) {
    return l4emu_detail::shfl<l4emu_detail::SHFL_DOWN>(m, v, (int)d, w, "__shfl_down_sync", L4EMU_AT);
}
template <class T> inline T __shfl_xor_sync(unsigned m, T v, int lm, int w = warpSize, L4EMU_HERE) {
    return l4emu_detail::shfl<l4emu_detail::SHFL_BFLY>(m, v, lm, w, "__shfl_xor_sync", L4EMU_AT);
}
#undef L4EMU_HERE
#undef L4EMU_AT

// ---- atomics: blocks run concurrently on several OS threads, so these are real atomics
// (relaxed, like CUDA's; __threadfence gives the ordering).
namespace l4emu_detail {
template <class T, class F> inline T atomic_update(T* p, F f) {
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    U* q = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(q, __ATOMIC_RELAXED);
    for (;;) {
        const T cur = bits_as<T>(&old);
        const T nv = f(cur);
        U nu; std::memcpy(&nu, &nv, sizeof nu);
        if (__atomic_compare_exchange_n(q, &old, nu, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return cur;
    }
}
}  // namespace l4emu_detail
#define L4EMU_ATOMIC_INT(T) \
    static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); } \
    static inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); } \
    static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); } \
    static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); } \
    static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); } \
    static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); } \
    static inline T atomicMax(T* p, T v) { return l4emu_detail::atomic_update(p, [v](T c) { return c < v ? v : c; }); } \
    static inline T atomicMin(T* p, T v) { return l4emu_detail::atomic_update(p, [v](T c) { return c > v ? v : c; }); } \
    static inline T atomicCAS(T* p, T cmp, T v) { \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); return cmp; }
L4EMU_ATOMIC_INT(int)
L4EMU_ATOMIC_INT(unsigned int)
L4EMU_ATOMIC_INT(unsigned long long)
L4EMU_ATOMIC_INT(long long)
#undef L4EMU_ATOMIC_INT
static inline float atomicAdd(float* p, float v) { return l4emu_detail::atomic_update(p, [v](float c) { return c + v; }); }
static inline double atomicAdd(double* p, double v) { return l4emu_detail::atomic_update(p, [v](double c) { return c + v; }); }
static inline float atomicExch(float* p, float v) { return l4emu_detail::atomic_update(p, [v](float) { return v; }); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- math. Fast-math intrinsics mirror how the GPU composes them (__expf = ex2.approx(x*log2e),
// __logf = lg2.approx(x)*ln2) but use exact exp2f/log2f for the approx step: results can differ from
// the GPU by the ~2 ulp of ex2.approx/lg2.approx. Correctly rounded operations are bit-exact.
// glibc already declares __expf & co. as its own internal functions: reach ours through macros.
static inline float l4emu_expf(float x) { return exp2f(x * 1.44269504088896340736f); }
static inline float l4emu_logf(float x) { return log2f(x) * 0.693147180559945309417f; }
static inline float l4emu_exp10f(float x) { return exp2f(x * 3.32192809488736234787f); }
static inline float l4emu_powf(float a, float b) { return powf(a, b); }
#define __expf l4emu_expf
#define __logf l4emu_logf
#define __exp10f l4emu_exp10f
#define __sinf sinf
#define __cosf cosf
#define __powf l4emu_powf
static inline float __fdividef(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return (float)(1.0 / std::sqrt((double)x)); }
static inline float __frsqrt_rn(float x) { return (float)(1.0 / std::sqrt((double)x)); }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
static inline unsigned __float_as_uint(float f) { return l4emu_detail::bits_as<unsigned>(&f); }
static inline int __float_as_int(float f) { return l4emu_detail::bits_as<int>(&f); }
static inline float __uint_as_float(unsigned u) { return l4emu_detail::bits_as<float>(&u); }
static inline float __int_as_float(int i) { return l4emu_detail::bits_as<float>(&i); }
static inline long long __double_as_longlong(double d) { return l4emu_detail::bits_as<long long>(&d); }
static inline double __longlong_as_double(long long i) { return l4emu_detail::bits_as<double>(&i); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1); x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4); return __builtin_bswap32(x);
}
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline size_t __cvta_generic_to_shared(const void* p) { return (size_t)p; }
static inline void __trap() { l4emu_rt_trap("__trap() called"); }
// The GPU faults on an 8/16-byte vector access whose address is not a multiple of its size; x86 does not.
// vload/vstore (common.cuh) call this first, so the emulator fails such a launch with a message.
// Always inlined: the runtime's return address is then the vector access itself (a checked report's line).
__attribute__((always_inline)) static inline void l4emu_check_aligned(const void* p, unsigned align, const char* what) {
    if (__builtin_expect((reinterpret_cast<uintptr_t>(p) & (align - 1)) != 0, 0)) l4emu_rt_misaligned(p, align, what);
#ifdef __SANITIZE_THREAD__
    l4emu_rt_vec(p, align);  // instrumented (checked) modules only: the analysis counts the access once
#endif
}
// CUDA's device min/max overloads (same-type, plus the mixed int/unsigned ones nvcc accepts).
#define L4EMU_MINMAX(R, A, B) \
    static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
    static inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
L4EMU_MINMAX(int, int, int) L4EMU_MINMAX(unsigned, unsigned, unsigned) L4EMU_MINMAX(unsigned, int, unsigned)
L4EMU_MINMAX(unsigned, unsigned, int) L4EMU_MINMAX(long long, long long, long long)
L4EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
#undef L4EMU_MINMAX
#endif  // L4EMU_RUNTIME
