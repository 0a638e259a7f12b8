// attention.cu — scaled-dot-product attention for the Llama 4 text decoder: O = softmax(Q·Kᵀ·d^-0.5 + mask)·V,
// GQA, causal (NoPE layers) or chunked (RoPE layers) masks by ABSOLUTE positions, B ≥ 1 sequences per launch.
//
// Why it looks like this: attention must never materialise the [Tq, S] score matrix, so every kernel here is
// flash-style — keys are streamed in tiles and each query row keeps a running max m, a running sum l and an
// unnormalised accumulator in fp32; a new tile with max m' rescales the old state by 2^(m - m') once (scores
// live in the log2 domain: s = q·k · d^-0.5 · log2 e, so exp2 is one ex2 instruction). Two shapes of work:
//   * `attn_fwd_*` (prefill, and decode with short histories): a block owns ATTN_BQ query rows of one
//     (sequence, head); 4 threads per row each hold d/4 interleaved dims of q and of the accumulator, a score
//     is 4 partial dots + 2 xor-shuffles; K and V tiles (ATTN_BK keys) are staged in shared memory as f32.
//     The key range is clipped to what the tile's rows can see (causal upper bound; for chunked layers the
//     start of the first row's chunk), so prefill of a chunked layer costs O(T·C), not O(T²).
//   * `attn_fwd_mma_bf16` (bf16 prefill on tensor cores): the same algorithm as FlashAttention-2 — 4 warps ×
//     16 query rows, Q·Kᵀ and P·V both on mma.sync.m16n8k16 with fp32 accumulators, P re-packed to bf16 from
//     the score registers without a trip through shared memory (so P·V sees P rounded to bf16, as FA2 does);
//     fragments come from shared memory via ldmatrix (.trans for V), rows padded by 16 bytes. K/V tiles are
//     copied by 16-byte cp.async (gathered where a row is not 16-byte aligned), single-buffered but
//     overlapped: V(j) loads during Q·K(j) and the softmax, K(j+1) during P·V(j). The tile itself is
//     attention_mma.cuh's mma_tiles, shared with paged_attention.cu's paged_attn_mma_bf16 (keys through a block table).
//   * `attn_decode_split_*` + `attn_decode_combine_*` (decode: 1..few query rows, long histories): one block
//     per (key split, kv head × tile of ATTN_DEC_Q (query row, head) combos, sequence) so a single sequence
//     still fills the GPU and the G = H/Hkv query heads of a kv head share every K/V tile it reads (Scout:
//     5 heads, one pass over the cache instead of five). K and V tiles of ATTN_DEC_BK keys are copied raw with
//     16-byte cp.async into two shared stages, tile j+1 in flight while tile j is computed (element copies only
//     for unaligned views); K is widened to f32 once, threads map to KEYS for the scores and to DIMS for P·V
//     (V raw from the stage). The core is attention_common.cuh's decode_tiles, shared with paged_attention.cu. The host picks the split count from the bounds so the grid reaches about
//     two waves of 132 SMs at any history length (Attention.DefaultKeysPerSplit), and Auto uses this kernel for
//     every decode-sized call — no length threshold. Each block writes a partial (m, l, unnormalised
//     O) in fp32; the combine kernel merges the splits of each (row, head). The grid is sized from the host's
//     UPPER BOUNDS (max query rows, max kv length); blocks beyond a sequence's actual range exit at once
//     (empty splits write m = -inf, l = 0, which the combine skips), so nothing data-dependent goes to the host
//     and the launch is CUDA-graph capturable.
// FP8 KV cache (the *_f8 entry points): K and V hold e4m3 codes with one f32 scale per (token, kv head) row of d
// codes, written by step.cu's kv_append_*_f8 (FBGEMM's row rule); the loads here multiply code × scale, so the
// attention maths is unchanged and K/V traffic halves vs bf16. A row's scale index is its element offset / d.
// A query row that sees no key at all (only possible with inconsistent positions) yields zeros, not NaN.
// Positions are absolute and must be ≥ 0: key slot j of sequence b sits at kv_pos0[b] + j, query row r at
// q_pos0[b] + r; visible iff kpos ≤ qpos and (chunk == 0 or kpos / chunk == qpos / chunk). So one kernel
// serves prefill (keys = this call's keys, kv_pos0 = q_pos0), a prompt continued in pieces and decode against
// a cache (for chunked layers the cache holds only the current chunk: kv_pos0 = the chunk's start).
//
// Varlen batch (FlashAttention-style, all on the device; int32 unless noted):
//   q_start [B+1]  query rows of sequence b are q_start[b] .. q_start[b+1]-1 of the packed Q/O (cu_seqlens_q);
//                  the decode kernels require q_start[B] == total_q (every row belongs to a sequence)
//   kv_len  [B]    valid key slots of sequence b
//   q_pos0  [B]    absolute position of sequence b's first query row
//   kv_pos0 [B]    absolute position of sequence b's key slot 0
//   kv_off  [B]    int64: element offset of sequence b's key slot 0, kv head 0, in K and in V
// Layouts: Q, O [total_q, H, d] packed; key slot j, kv head g, dim i of sequence b lives at
//   K[kv_off[b] + j·kv_row_stride + g·kv_head_stride + i] (V the same). Recommended cache layout: per sequence
//   [Hkv, S_cap, d] (kv_row_stride = d, kv_head_stride = S_cap·d: one head's keys are contiguous, so a tile is
//   one contiguous run); a freshly projected [T, Hkv, d] works too (kv_row_stride = Hkv·d, kv_head_stride = d).
//   GQA: query head h reads kv head h / (H / Hkv) (H % Hkv == 0).
//
// | kernel                                   | parameters / launch                                                 |
// |------------------------------------------|---------------------------------------------------------------------|
// | attn_fwd_f32, attn_fwd_bf16              | (const T* Q [total_q,H,d], const T* K, const T* V, T* O [total_q,H,d], |
// |                                          |  const int* q_start, const int* kv_len, const int* q_pos0,          |
// |                                          |  const int* kv_pos0, const long long* kv_off, int H, int Hkv,       |
// |                                          |  int kv_row_stride, int kv_head_stride, int chunk, float scale)     |
// |                                          | grid = (ceil(max_q / ATTN_BQ), H, B), block = 4·ATTN_BQ, shared = 0 (static) |
// | attn_fwd_mma_bf16                        | same parameters as attn_fwd_bf16 (Q and O 16-byte aligned)          |
// |                                          | grid = (ceil(max_q / 64), H, B), block = 128, shared = 0 (static:   |
// |                                          |  2·MBK·(d + 8)·2 bytes, MBK = 64 for d ≤ 128 else 32)               |
// | attn_decode_split_f32, _bf16             | (Q, K, V, float* o_part [nsplit,total_q,H,d], float* ml_part [nsplit,total_q,H,2], |
// |                                          |  q_start, kv_len, q_pos0, kv_pos0, kv_off, H, Hkv, kv_row_stride,   |
// |                                          |  kv_head_stride, chunk, scale, int keys_per_split, int total_q)     |
// |                                          | grid = (nsplit = ceil(max_kv / keys_per_split), Hkv·ceil(max_q·(H/Hkv) / ATTN_DEC_Q), B), |
// |                                          | block = ATTN_DEC_THREADS, dynamic shared = Attention.DecodeSharedBytes |
// |                                          |  (2 stages × K, V × ATTN_DEC_BK × d of the KV dtype: 32 KiB bf16 at d = 128) |
// | attn_decode_combine_f32, _bf16           | (const float* o_part, const float* ml_part, T* O [total_q,H,d], int H, int nsplit, int total_q) |
// |                                          | grid = (total_q, H), block = ATTN_COMBINE_THREADS, shared = 0        |
// | attn_fwd_{f32,bf16}_f8,                  | the same plus (const float* k_scale, const float* v_scale) at the end; K, V are |
// | attn_decode_split_{f32,bf16}_f8          |  e4m3 codes (the FP8 KV cache), one f32 scale per (token, kv head) row of d codes at |
// |                                          |  index (element offset) / d — kv_off, strides must be multiples of d |
// T = float or bf16 (Q, K, V, O all the same dtype; or K, V e4m3 with scales); scores, softmax and accumulation are fp32 throughout.
// scale is d^-0.5 for Llama 4 (a parameter so a caller can fold other factors in).
//
// Compile-time parameters (part of the JIT cache key):
//   ATTN_HEAD_DIM 128 — d; a multiple of 8 (attn_fwd_mma_bf16: of 16; fwd pads to 16 internally, e.g. the
//       vision encoder's 88). Compile-time because the per-thread q/accumulator arrays must
//       live in registers (a run-time d would force local memory or a fixed worst-case size); the op table
//       builds 16, 64 and 128.
//   ATTN_BQ 32 (query rows per fwd block; block = 4·ATTN_BQ), ATTN_BK (keys per fwd tile; 32, 16 for d > 128)
//   ATTN_DEC_Q 8 ((query row, head) combos per decode block), ATTN_DEC_BK (keys per decode tile; 32, 16 for d > 128;
//       two cp.async stages of raw K and V tiles, dynamic, plus an f32 K tile 32·129·4 ≈ 16.5 KB static at d = 128),
//   ATTN_DEC_THREADS 128, ATTN_COMBINE_THREADS 128 (multiples of 32).

#include "attention_common.cuh"
#include "attention_mma.cuh"

#ifndef ATTN_BQ
#define ATTN_BQ 32
#endif
#ifndef ATTN_BK
#define ATTN_BK (ATTN_HEAD_DIM <= 128 ? 32 : 16)
#endif

// attention_common.cuh opened l4_attn's anonymous namespace (internal linkage: two emulator modules built with
// different ATTN_HEAD_DIM must not share a template instance's __shared__ arrays); this file adds to it.
namespace l4_attn {
namespace {

constexpr int BQ = ATTN_BQ, BK = ATTN_BK, NT = 4 * ATTN_BQ;
// The fwd kernel's per-thread dims come in groups of 16 (4 threads × 4 dims): a head dim that is not a multiple
// of 16 (the vision encoder's 88) is padded to DP with zero dims — zero q and K entries add nothing to a score,
// and the padded accumulator dims are never stored. For D % 16 == 0, DP == D and every guard folds away.
constexpr int DP = (D + 15) / 16 * 16;
L4_DEV bool dim_ok(int i) { return D % 16 == 0 || i < D; }
static_assert(NT <= 1024 && NT % 32 == 0, "ATTN_BQ must be a multiple of 8, at most 256");

// Key slots [*lo, *hi) that query positions qa..qb (qa ≤ qb) of a sequence can see at all.
L4_DEV void key_range(int qa, int qb, int kp0, int nkv, int chunk, int* lo, int* hi) {
    *hi = min(nkv, qb - kp0 + 1);
    *lo = chunk > 0 ? max(0, (qa / chunk) * chunk - kp0) : 0;
}

// K/V element loads. f32/bf16: the value. e4m3 (the FP8 KV cache): the code times its (token, kv head) scale; the
// caller passes the scale array already offset by base / D (base = the head's element offset, a multiple of D), so
// element o of the head's run (o = j·row_stride + i, row_stride a multiple of D) has scale sc[o / D].
L4_DEV float kv_at(const float* p, const float*, long long o) { return p[o]; }
L4_DEV float kv_at(const bf16* p, const float*, long long o) { return bf16_to_f32(p[o]); }
L4_DEV float kv_at(const uint8_t* p, const float* sc, long long o) { return e4m3_to_f32(p[o]) * sc[o / D]; }
L4_DEV const float* kv_scales(const float* sc, long long base) { return sc ? sc + base / D : sc; }

// ------------------------------------------------------------------------------------------ fwd (CUDA cores)
template <class T, class KT>
L4_DEV void fwd(const T* Q, const KT* K, const KT* V, T* O, const int* q_start, const int* kv_len, const int* q_pos0,
                const int* kv_pos0, const long long* kv_off, int H, int Hkv, int kv_row_stride, int kv_head_stride,
                int chunk, float scale, const float* k_scale, const float* v_scale) {
    __shared__ float Ks[BK][DP];
    __shared__ float Vs[BK][DP];
    const int b = blockIdx.z, h = blockIdx.y;
    const int qs = q_start[b], nq = q_start[b + 1] - qs, r0 = blockIdx.x * BQ;
    if (r0 >= nq) return;  // uniform per block
    const int nkv = kv_len[b], qp0 = q_pos0[b], kp0 = kv_pos0[b];
    const int kh = h / (H / Hkv);
    const long long base = kv_off[b] + (long long)kh * kv_head_stride;
    const KT* Kh = K + base;
    const KT* Vh = V + base;
    const float* Ksc = kv_scales(k_scale, base);
    const float* Vsc = kv_scales(v_scale, base);
    const int tid = threadIdx.x, row = tid >> 2, part = tid & 3;
    const int r = min(r0 + row, nq - 1);  // rows past the end mirror the last row (shuffles need all lanes)
    const bool live = r0 + row < nq;
    const int qpos = qp0 + r;
    const float sl2 = scale * LOG2E;

    // Thread `part` owns dims 16i + 4·part + c (i < D/16, c < 4): the 4 threads of a row read 64 contiguous
    // bytes of a shared K/V row (no bank conflicts), and every row group of the warp reads the same row (broadcast).
    float q[DP / 4], acc[DP / 4];
    const T* qrow = Q + ((long long)(qs + r) * H + h) * D;
#pragma unroll
    for (int i = 0; i < DP / 16; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int dim = 16 * i + 4 * part + c;
            q[4 * i + c] = dim_ok(dim) ? to_f32(*(qrow + dim)) : 0.f;
            acc[4 * i + c] = 0.f;
        }

    int lo, hi;
    key_range(qp0 + r0, qp0 + min(r0 + BQ, nq) - 1, kp0, nkv, chunk, &lo, &hi);
    float m = neg_inf(), l = 0.f;
    for (int j0 = lo; j0 < hi; j0 += BK) {
        const int n = min(BK, hi - j0);
        __syncthreads();  // the previous tile is consumed
        for (int idx = tid; idx < BK * DP; idx += NT) {
            const int j = idx / DP, i = idx % DP;
            float kv = 0.f, vv = 0.f;
            if (j < n && dim_ok(i)) {
                const long long o = (long long)(j0 + j) * kv_row_stride + i;
                kv = kv_at(Kh, Ksc, o);
                vv = kv_at(Vh, Vsc, o);
            }
            Ks[j][i] = kv;
            Vs[j][i] = vv;
        }
        __syncthreads();
        float s[BK];
        float mt = m;
#pragma unroll
        for (int j = 0; j < BK; ++j) {
            float d = 0.f;
#pragma unroll
            for (int i = 0; i < DP / 16; ++i)
#pragma unroll
                for (int c = 0; c < 4; ++c) d += q[4 * i + c] * Ks[j][16 * i + 4 * part + c];
            d += __shfl_xor_sync(0xffffffffu, d, 1);
            d += __shfl_xor_sync(0xffffffffu, d, 2);
            s[j] = (j < n && visible(qpos, kp0 + j0 + j, chunk)) ? d * sl2 : neg_inf();
            mt = fmaxf(mt, s[j]);
        }
        if (mt == neg_inf()) continue;  // nothing visible to this row so far
        const float alpha = exp2f(m - mt);  // 0 when m = -inf
        l *= alpha;
#pragma unroll
        for (int k = 0; k < DP / 4; ++k) acc[k] *= alpha;
#pragma unroll
        for (int j = 0; j < BK; ++j) {
            const float p = exp2f(s[j] - mt);  // 0 for masked keys
            l += p;
#pragma unroll
            for (int i = 0; i < DP / 16; ++i)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[4 * i + c] += p * Vs[j][16 * i + 4 * part + c];
        }
        m = mt;
    }
    if (!live) return;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* orow = O + ((long long)(qs + r) * H + h) * D;
#pragma unroll
    for (int i = 0; i < DP / 16; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c)
            if (dim_ok(16 * i + 4 * part + c)) *(orow + 16 * i + 4 * part + c) = from_f32<T>(acc[4 * i + c] * inv);
}

// ------------------------------------------------------------------------------------------ split-KV decode
// The core (cp.async double-buffered K/V tiles, scores, online softmax, P·V) is attention_common.cuh's decode_tiles;
// here: the block's combos and split, Q from the packed [total_q, H, d], K/V rows of a strided run, partials out.
template <class T, class KT>
L4_DEV void decode_split(const T* Q, const KT* K, const KT* V, float* o_part, float* ml_part, const int* q_start,
                         const int* kv_len, const int* q_pos0, const int* kv_pos0, const long long* kv_off, int H,
                         int Hkv, int kv_row_stride, int kv_head_stride, int chunk, float scale, int keys_per_split,
                         int total_q, const float* k_scale, const float* v_scale) {
    // A block's DQ "rows" are (query row, head) combos of ONE kv head: combo c = r·G + gi is query row r of
    // head kh·G + gi. So the G query heads sharing a kv head read each K/V tile once (decode is memory-bound).
    const int split = blockIdx.x, kh = blockIdx.y % Hkv, qt = blockIdx.y / Hkv, b = blockIdx.z;
    const int G = H / Hkv;
    const int qs = q_start[b], nq = q_start[b + 1] - qs, c0 = qt * DQ;
    if (c0 >= nq * G) return;  // no such combo tile in this sequence
    const int nr = min(DQ, nq * G - c0);
    const int nkv = kv_len[b], qp0 = q_pos0[b], kp0 = kv_pos0[b];
    const int tid = threadIdx.x;
    int lo, hi;
    key_range(qp0 + c0 / G, qp0 + (c0 + nr - 1) / G, kp0, nkv, chunk, &lo, &hi);
    const long long s0 = (long long)split * keys_per_split;
    lo = (int)max((long long)lo, s0);
    hi = (int)min((long long)hi, s0 + keys_per_split);
    // (split, row, head) of combo rr, in (row, head) units of the partial arrays
    auto prh = [&](int rr) {
        const int c = c0 + rr;
        return ((long long)split * total_q + qs + c / G) * H + kh * G + c % G;
    };
    if (lo >= hi) {  // empty split: a neutral partial, skipped by the combine
        if (tid < nr) {
            ml_part[prh(tid) * 2] = neg_inf();
            ml_part[prh(tid) * 2 + 1] = 0.f;
        }
        return;
    }
    const long long base = kv_off[b] + (long long)kh * kv_head_stride;
    decode_tiles(K + base, V + base, kv_scales(k_scale, base), kv_scales(v_scale, base), lo, hi, kp0, qp0, c0, G, nr, chunk,
        scale * LOG2E,
        [&](int rr, int i) { const int c = c0 + rr; return to_f32(Q[((long long)(qs + c / G) * H + kh * G + c % G) * D + i]); },
        [&](int j) { return (long long)j * kv_row_stride; },
        [&](int rr, int i, float o, float) { o_part[prh(rr) * D + i] = o; },
        [&](int rr, float m, float l) { ml_part[prh(rr) * 2] = m; ml_part[prh(rr) * 2 + 1] = l; });
}

// ------------------------------------------------------------------------------------------ fwd (tensor cores)
// The tile is attention_mma.cuh's mma_tiles (shared with paged_attention.cu): here the block's rows, kv head and key
// window of a strided K/V run.
L4_DEV void fwd_mma(const bf16* Q, const bf16* K, const bf16* V, bf16* O, const int* q_start, const int* kv_len,
                    const int* q_pos0, const int* kv_pos0, const long long* kv_off, int H, int Hkv, int kv_row_stride,
                    int kv_head_stride, int chunk, float scale) {
    const int b = blockIdx.z, h = blockIdx.y;
    const int qs = q_start[b], nq = q_start[b + 1] - qs, r0 = blockIdx.x * MBQ;
    if (r0 >= nq) return;
    const int nkv = kv_len[b], qp0 = q_pos0[b], kp0 = kv_pos0[b];
    const long long base = kv_off[b] + (long long)(h / (H / Hkv)) * kv_head_stride;
    int lo, hi;
    key_range(qp0 + r0, qp0 + min(r0 + MBQ, nq) - 1, kp0, nkv, chunk, &lo, &hi);
    mma_tiles(Q, K + base, V + base, O, [&](int j) { return (long long)j * kv_row_stride; }, qs, nq, r0, h, H, qp0, kp0, lo,
              hi, chunk, scale);
}

}  // namespace
}  // namespace l4_attn

#define L4_ATTN_FWD_PARAMS(T) \
    const T *Q, const T *K, const T *V, T *O, const int *q_start, const int *kv_len, const int *q_pos0, \
        const int *kv_pos0, const long long *kv_off, int H, int Hkv, int kv_row_stride, int kv_head_stride, int chunk, \
        float scale
#define L4_ATTN_FWD_ARGS Q, K, V, O, q_start, kv_len, q_pos0, kv_pos0, kv_off, H, Hkv, kv_row_stride, kv_head_stride, chunk, scale

extern "C" __global__ void __launch_bounds__(4 * ATTN_BQ) attn_fwd_f32(L4_ATTN_FWD_PARAMS(float)) {
    l4_attn::fwd<float, float>(L4_ATTN_FWD_ARGS, nullptr, nullptr);
}
extern "C" __global__ void __launch_bounds__(4 * ATTN_BQ) attn_fwd_bf16(L4_ATTN_FWD_PARAMS(bf16)) {
    l4_attn::fwd<bf16, bf16>(L4_ATTN_FWD_ARGS, nullptr, nullptr);
}
// FP8 KV cache: K, V are e4m3 codes, k_scale / v_scale one f32 per (token, kv head) row of d codes.
#define L4_ATTN_FWD_F8_PARAMS(T) \
    const T *Q, const uint8_t *K, const uint8_t *V, T *O, const int *q_start, const int *kv_len, const int *q_pos0, \
        const int *kv_pos0, const long long *kv_off, int H, int Hkv, int kv_row_stride, int kv_head_stride, int chunk, \
        float scale, const float *k_scale, const float *v_scale
extern "C" __global__ void __launch_bounds__(4 * ATTN_BQ) attn_fwd_f32_f8(L4_ATTN_FWD_F8_PARAMS(float)) {
    l4_attn::fwd<float, uint8_t>(L4_ATTN_FWD_ARGS, k_scale, v_scale);
}
extern "C" __global__ void __launch_bounds__(4 * ATTN_BQ) attn_fwd_bf16_f8(L4_ATTN_FWD_F8_PARAMS(bf16)) {
    l4_attn::fwd<bf16, uint8_t>(L4_ATTN_FWD_ARGS, k_scale, v_scale);
}
extern "C" __global__ void __launch_bounds__(128) attn_fwd_mma_bf16(L4_ATTN_FWD_PARAMS(bf16)) {
    // The tensor-core tiles need d % 16 == 0; the wrapper never launches this kernel otherwise.
    if constexpr (l4_attn::D % 16 == 0) l4_attn::fwd_mma(L4_ATTN_FWD_ARGS); else __trap();
}

#define L4_ATTN_SPLIT_PARAMS(T) \
    const T *Q, const T *K, const T *V, float *o_part, float *ml_part, const int *q_start, const int *kv_len, \
        const int *q_pos0, const int *kv_pos0, const long long *kv_off, int H, int Hkv, int kv_row_stride, \
        int kv_head_stride, int chunk, float scale, int keys_per_split, int total_q
#define L4_ATTN_SPLIT_ARGS \
    Q, K, V, o_part, ml_part, q_start, kv_len, q_pos0, kv_pos0, kv_off, H, Hkv, kv_row_stride, kv_head_stride, chunk, \
        scale, keys_per_split, total_q

extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS) attn_decode_split_f32(L4_ATTN_SPLIT_PARAMS(float)) {
    l4_attn::decode_split<float, float>(L4_ATTN_SPLIT_ARGS, nullptr, nullptr);
}
extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS) attn_decode_split_bf16(L4_ATTN_SPLIT_PARAMS(bf16)) {
    l4_attn::decode_split<bf16, bf16>(L4_ATTN_SPLIT_ARGS, nullptr, nullptr);
}
#define L4_ATTN_SPLIT_F8_PARAMS(T) \
    const T *Q, const uint8_t *K, const uint8_t *V, float *o_part, float *ml_part, const int *q_start, const int *kv_len, \
        const int *q_pos0, const int *kv_pos0, const long long *kv_off, int H, int Hkv, int kv_row_stride, \
        int kv_head_stride, int chunk, float scale, int keys_per_split, int total_q, const float *k_scale, const float *v_scale
extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS, 1) attn_decode_split_f32_f8(L4_ATTN_SPLIT_F8_PARAMS(float)) {
    l4_attn::decode_split<float, uint8_t>(L4_ATTN_SPLIT_ARGS, k_scale, v_scale);
}
extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS, 1) attn_decode_split_bf16_f8(L4_ATTN_SPLIT_F8_PARAMS(bf16)) {
    l4_attn::decode_split<bf16, uint8_t>(L4_ATTN_SPLIT_ARGS, k_scale, v_scale);
}

extern "C" __global__ void __launch_bounds__(ATTN_COMBINE_THREADS)
attn_decode_combine_f32(L4_ATTN_COMBINE_PARAMS(float)) { l4_attn::decode_combine<float>(L4_ATTN_COMBINE_ARGS); }
extern "C" __global__ void __launch_bounds__(ATTN_COMBINE_THREADS)
attn_decode_combine_bf16(L4_ATTN_COMBINE_PARAMS(bf16)) { l4_attn::decode_combine<bf16>(L4_ATTN_COMBINE_ARGS); }
