// attention_common.cuh — what attention.cu (contiguous K/V) and paged_attention.cu (paged K/V) share: the masks, the
// K/V element loads (plain / FP8 code × row scale) and the split-KV flash-decode core with its combine.
//
// Why one core: the two decode kernels differ only in WHERE key slot j of a kv head lives (a strided run for
// attention.cu, a page found through the block table for paged_attention.cu), where Q comes from and where the result
// goes. `decode_tiles` takes those three as functors and owns everything else — the cp.async double-buffered K/V
// staging, the scores, the online-softmax update and P·V — so a fix or a speed-up lands in both paths at once (the
// paged kernel is the main decode path; see kvlong).
//
// Staging (issue #11: "16-byte loads, cp.async double buffering"): a tile of DBK keys × d raw K and V elements (bf16,
// f32 or e4m3 codes, exactly as stored) is copied with 16-byte `cp.async.cg` into one of TWO stages of dynamic shared
// memory; tile t+1 is issued right after the barrier that opens tile t, so its loads are in flight while tile t is
// computed (one commit group per tile, `wait_group 0` at the top of the next). K is then widened once into an f32 tile
// padded by one float (threads = keys read it conflict-free for the scores); V is read raw by P·V (threads = dims:
// consecutive elements, no conflicts). FP8 scales (one f32 per (token, kv head) row) are prefetched into registers
// with the tile and parked in shared memory after P·V; values are code × scale before any product, as in every other
// FP8 KV load (so paged and contiguous attention round identically). A row whose bytes are not a multiple of 16, or a K/V address that is not 16-byte
// aligned (a shifted view), is copied synchronously element by element — same stage, same arithmetic.
//
// Shared memory of decode_tiles: static Qs[DQ][D] + Ks[DBK][D+1] + P[DQ][DBK] f32 (+ small), and DYNAMIC
// 2 stages × (K, V) × DBK × D × sizeof(KT) (d = 128, DBK = 32: 32 KB bf16, 16 KB e4m3,
// 64 KB f32); the host passes that number at launch (Attention.DecodeSharedBytes) — above 48 KB the CUDA device opts in.

#pragma once
#include "common.cuh"

#ifndef ATTN_HEAD_DIM
#define ATTN_HEAD_DIM 128
#endif
#ifndef ATTN_DEC_Q
#define ATTN_DEC_Q 8
#endif
#ifndef ATTN_DEC_BK
#define ATTN_DEC_BK (ATTN_HEAD_DIM <= 128 ? 32 : 16)
#endif
#ifndef ATTN_DEC_THREADS
#define ATTN_DEC_THREADS 128
#endif
#ifndef ATTN_COMBINE_THREADS
#define ATTN_COMBINE_THREADS 128
#endif

// The anonymous namespace gives the bodies (and their function-local __shared__ arrays, which are thread_locals on the
// emulator) internal linkage: two emulator modules built with different ATTN_HEAD_DIM must not share one array.
namespace l4_attn {
namespace {

constexpr int D = ATTN_HEAD_DIM, DQ = ATTN_DEC_Q, DBK = ATTN_DEC_BK, DNT = ATTN_DEC_THREADS;
constexpr int DPT = (D + DNT - 1) / DNT;  // dims per thread in the decode P·V step
constexpr float LOG2E = 1.4426950408889634f;
static_assert(D % 8 == 0 && D > 0, "ATTN_HEAD_DIM must be a positive multiple of 8");
static_assert(DNT % 32 == 0 && DNT <= 1024, "ATTN_DEC_THREADS must be a multiple of 32");
static_assert(DBK <= DNT && DBK <= 32, "ATTN_DEC_BK must be at most 32 and at most ATTN_DEC_THREADS");
static_assert(ATTN_COMBINE_THREADS % 32 == 0, "ATTN_COMBINE_THREADS must be a multiple of 32");

L4_DEV float neg_inf() { return -__int_as_float(0x7f800000); }

// Key position kpos is seen by query position qpos iff causal and (unchunked or in the same chunk).
L4_DEV bool visible(int qpos, int kpos, int chunk) {
    return kpos <= qpos && (chunk == 0 || kpos / chunk == qpos / chunk);
}

// K/V element value: f32/bf16 as is, e4m3 the code's value (the caller applies the row scale).
L4_DEV float kv_f(float v) { return v; }
L4_DEV float kv_f(bf16 v) { return bf16_to_f32(v); }
L4_DEV float kv_f(uint8_t v) { return e4m3_to_f32(v); }

// FP8 KV cache row rule (FBGEMM), shared by the appends (step.cu's kv_append_*_f8, paged_attention.cu's
// paged_kv_append_*_f8): one warp quantizes a (token, kv head) row of head_dim values, s = max(max|row| / 448,
// 1/(448·512)), codes = e4m3(x / s) (IEEE division, round to nearest even, saturating); lane 0 stores s.
template <class T>
L4_DEV void kv_quant_row(const T* src, uint8_t* dst, float* sdst, int head_dim, int lane) {
    float amax = 0.f;
    for (int i = lane; i < head_dim; i += 32) amax = fmaxf(amax, fabsf(to_f32(src[i])));
    const float s = fp8_row_scale(warp_max(amax), __int_as_float(0x7f800000));
    for (int i = lane; i < head_dim; i += 32) dst[i] = f32_to_e4m3(to_f32(src[i]) / s);
    if (lane == 0) *sdst = s;
}

// ------------------------------------------------------------------------------------------ split-KV decode core
// One block: DQ (query row, head) combos of one kv head (combo rr is query position qpos0 + (c0 + rr) / G), key slots
// [lo, hi) of one split (key slot j sits at position kpos0 + j). Functors:
//   q_at(rr, i)        → float: dim i of combo rr's query (rr < nr)
//   row_off(j)         → long long: element offset of key slot j's row in K and V (its FP8 scale index is row_off / D;
//                        k_scale / v_scale already offset so)
//   store(rr, i, o, l) → the unnormalised output o of dim i and the row's sum l (every rr < nr, i < D)
//   store_ml(rr, m, l) → the row's max (log2 domain) and sum (threads rr < nr)
// Requires lo < hi; the whole block calls it (barriers inside).
template <class KT, class QAt, class RowOff, class Store, class StoreML>
L4_DEV void decode_tiles(const KT* K, const KT* V, const float* k_scale, const float* v_scale, int lo, int hi, int kpos0,
                         int qpos0, int c0, int G, int nr, int chunk, float sl2, QAt q_at, RowOff row_off, Store store,
                         StoreML store_ml) {
    constexpr bool F8 = sizeof(KT) == 1;
    constexpr int RB = D * (int)sizeof(KT);  // bytes of one raw row
    constexpr bool CHUNKED = RB % 16 == 0;   // rows of whole 16-byte chunks (e4m3 needs d % 16 == 0)
    constexpr int NCH = CHUNKED ? RB / 16 : 1;
    __shared__ float Qs[DQ][D];
    __shared__ float Ks[DBK][D + 1];  // +1: threads = keys read a column without bank conflicts
    __shared__ float P[DQ][DBK];
    __shared__ float Ms[DQ], Ls[DQ], As[DQ];
    __shared__ float Ksc[2][DBK], Vsc[2][DBK];  // FP8 row scales of the two stages
    L4_DYNAMIC_SHARED(unsigned char, stage);   // [2 stages][K, V][DBK][RB]
    auto st_k = [&](int s) { return reinterpret_cast<KT*>(stage + (size_t)(2 * s) * DBK * RB); };
    auto st_v = [&](int s) { return reinterpret_cast<KT*>(stage + (size_t)(2 * s + 1) * DBK * RB); };
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int span = hi - lo, ntiles = (span + DBK - 1) / DBK;

    // Issues tile t (key slots lo + t·DBK ..) into stage s: 16-byte cp.async per chunk of K and of V (synchronous
    // element copies where a row or address is not 16-byte aligned). Keys past the end are not copied: K widening
    // writes zeros for them and P·V never reads them.
    auto issue = [&](int t, int s) {
        const int j0 = lo + t * DBK, n = min(DBK, span - t * DBK);
        KT* kd = st_k(s);
        KT* vd = st_v(s);
        for (int idx = tid; idx < n * NCH; idx += DNT) {
            const int j = idx / NCH, c = idx % NCH;
            const long long o = row_off(j0 + j);
            if (CHUNKED && aligned16(K + o) && aligned16(V + o)) {
                cp_async_16(reinterpret_cast<unsigned char*>(kd + j * D) + 16 * c, reinterpret_cast<const unsigned char*>(K + o) + 16 * c);
                cp_async_16(reinterpret_cast<unsigned char*>(vd + j * D) + 16 * c, reinterpret_cast<const unsigned char*>(V + o) + 16 * c);
            } else {
                constexpr int E = CHUNKED ? 16 / (int)sizeof(KT) : D;  // elements of this chunk
#pragma unroll 1
                for (int e = 0; e < E; ++e) {
                    kd[j * D + c * E + e] = K[o + c * E + e];
                    vd[j * D + c * E + e] = V[o + c * E + e];
                }
            }
        }
        cp_async_commit();
    };
    // FP8: this thread's scale pair of tile t (thread j < DBK owns key j), read into registers at issue time
    auto scales = [&](int t, float& ks, float& vs) {
        const int j = lo + t * DBK + tid;
        ks = vs = 0.f;
        if (F8 && tid < DBK && t * DBK + tid < span) {
            const long long r = row_off(j) / D;
            ks = k_scale[r];
            vs = v_scale[r];
        }
    };

    issue(0, 0);
    float ksn = 0.f, vsn = 0.f;
    if (F8) {
        scales(0, ksn, vsn);
        if (tid < DBK) { Ksc[0][tid] = ksn; Vsc[0][tid] = vsn; }
    }
    for (int idx = tid; idx < DQ * D; idx += DNT) {
        const int rr = idx / D, i = idx % D;
        Qs[rr][i] = rr < nr ? q_at(rr, i) : 0.f;
    }
    if (tid < DQ) { Ms[tid] = neg_inf(); Ls[tid] = 0.f; }
    float acc[DQ][DPT];
#pragma unroll
    for (int rr = 0; rr < DQ; ++rr)
#pragma unroll
        for (int k = 0; k < DPT; ++k) acc[rr][k] = 0.f;

    for (int t = 0; t < ntiles; ++t) {
        const int s = t & 1, j0 = lo + t * DBK, n = min(DBK, span - t * DBK);
        cp_async_wait<0>();  // this thread's copies of tile t landed
        __syncthreads();     // everyone's did; tile t-1 is consumed (stage s^1, Ks, P, As free); Qs/Ms ready (t = 0)
        if (t + 1 < ntiles) {
            issue(t + 1, s ^ 1);  // in flight while tile t is computed
            if (F8) scales(t + 1, ksn, vsn);
        }
        // K widened to f32 once (× its row scale for e4m3); zeros past the last key
        const KT* kt = st_k(s);
        for (int idx = tid; idx < DBK * D; idx += DNT) {
            const int j = idx / D, i = idx % D;
            Ks[j][i] = j < n ? (F8 ? kv_f(kt[j * D + i]) * Ksc[s][j] : kv_f(kt[j * D + i])) : 0.f;
        }
        __syncthreads();
        // scores: thread = key (consecutive threads, consecutive keys)
        for (int idx = tid; idx < nr * DBK; idx += DNT) {
            const int rr = idx / DBK, j = idx % DBK;
            float d = 0.f;
#pragma unroll 16
            for (int i = 0; i < D; ++i) d += Qs[rr][i] * Ks[j][i];
            P[rr][j] = (j < n && visible(qpos0 + (c0 + rr) / G, kpos0 + j0 + j, chunk)) ? d * sl2 : neg_inf();
        }
        __syncthreads();
        // online softmax: a warp per combo
        for (int rr = warp; rr < nr; rr += DNT / 32) {
            float mx = neg_inf();
            for (int j = lane; j < DBK; j += 32) mx = fmaxf(mx, P[rr][j]);
            const float mold = Ms[rr], mt = fmaxf(mold, warp_max(mx));
            float sum = 0.f;
            for (int j = lane; j < DBK; j += 32) {
                const float p = mt == neg_inf() ? 0.f : exp2f(P[rr][j] - mt);
                P[rr][j] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            const float alpha = mt == neg_inf() ? 1.f : exp2f(mold - mt);
            __syncwarp();
            if (lane == 0) { Ms[rr] = mt; Ls[rr] = Ls[rr] * alpha + sum; As[rr] = alpha; }
        }
        __syncthreads();
        // P·V: thread = dim, V raw from the stage
        const KT* vt = st_v(s);
#pragma unroll
        for (int rr = 0; rr < DQ; ++rr)
            if (rr < nr)
#pragma unroll
                for (int k = 0; k < DPT; ++k) acc[rr][k] *= As[rr];
#pragma unroll
        for (int k = 0; k < DPT; ++k) {
            const int i = tid + k * DNT;
            if (i < D) {
                for (int j = 0; j < n; ++j) {
                    // e4m3: code × row scale first, then p·v — the same roundings as the fwd kernel's loads
                    const float v = F8 ? kv_f(vt[j * D + i]) * Vsc[s][j] : kv_f(vt[j * D + i]);
#pragma unroll
                    for (int rr = 0; rr < DQ; ++rr)
                        if (rr < nr) acc[rr][k] += P[rr][j] * v;
                }
            }
        }
        // park the prefetched scales of tile t+1 (stage s^1 was last read in tile t-1, before this tile's barrier)
        if (F8 && t + 1 < ntiles && tid < DBK) { Ksc[s ^ 1][tid] = ksn; Vsc[s ^ 1][tid] = vsn; }
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < DQ; ++rr) {
        if (rr >= nr) break;
        const float l = Ls[rr];
#pragma unroll
        for (int k = 0; k < DPT; ++k) {
            const int i = tid + k * DNT;
            if (i < D) store(rr, i, acc[rr][k], l);
        }
    }
    if (tid < nr) store_ml(tid, Ms[tid], Ls[tid]);
}

// Merges the nsplit partials (m, l, unnormalised O) of (row blockIdx.x, head blockIdx.y); empty splits (l = 0) are
// skipped, a NaN split stays NaN. o_part [nsplit, total_q, H, D], ml_part [nsplit, total_q, H, 2].
template <class T>
L4_DEV void decode_combine(const float* o_part, const float* ml_part, T* O, int H, int nsplit, int total_q) {
    const long long rh = (long long)blockIdx.x * H + blockIdx.y;
    const long long stride = (long long)total_q * H;  // between splits, in (row, head) units
    float M = neg_inf();
    for (int s = 0; s < nsplit; ++s) {
        const float* ml = ml_part + (s * stride + rh) * 2;
        if (!(ml[1] <= 0.f)) M = fmaxf(M, ml[0]);
    }
    float L = 0.f;
    for (int s = 0; s < nsplit; ++s) {
        const float* ml = ml_part + (s * stride + rh) * 2;
        if (!(ml[1] <= 0.f)) L += ml[1] * exp2f(ml[0] - M);
    }
    const float inv = !(L <= 0.f) ? 1.f / L : 0.f;  // NaN stays NaN: a non-finite split must not vanish
    for (int i = threadIdx.x; i < D; i += ATTN_COMBINE_THREADS) {
        float o = 0.f;
        for (int s = 0; s < nsplit; ++s) {
            const float* ml = ml_part + (s * stride + rh) * 2;
            if (!(ml[1] <= 0.f)) o += o_part[(s * stride + rh) * D + i] * exp2f(ml[0] - M);
        }
        O[rh * D + i] = from_f32<T>(o * inv);
    }
}

}  // namespace
}  // namespace l4_attn

// Parameters of the combine entry points (attention.cu: attn_decode_combine_*, paged_attention.cu: paged_attn_combine_*;
// each written out as `extern "C" __global__` so that the emulator's gen_module.sh finds it):
// grid = (total_q, H), block = ATTN_COMBINE_THREADS.
#define L4_ATTN_COMBINE_PARAMS(T) const float *o_part, const float *ml_part, T *O, int H, int nsplit, int total_q
#define L4_ATTN_COMBINE_ARGS o_part, ml_part, O, H, nsplit, total_q
