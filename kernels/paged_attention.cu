// paged_attention.cu — attention over a PAGED KV cache for a batch of sequences in one launch: every sequence's
// keys and values live in fixed-size pages of a shared pool, found through its row of a block table; a batch mixes
// decode rows (1 query row) and prefill pieces (many rows) of different sequences at different positions.
//
// Why it looks like this: serving runs B sequences per forward, each at its own length, and their KV must come and
// go without copies or fragmentation. So the cache is a pool of pages of P tokens (P a power of two; the runtime
// uses 64: a whole number of this kernel's 32-key tiles and of the tensor-core prefill's 64-key tiles, and at most
// 63 idle slots per sequence — 3 MB of Scout's NoPE KV in bf16 — against a 10M-token pool), and a sequence is a
// row of page numbers. Pool layout, per layer: [pages, Hkv, P, d] — one kv head's P keys of a page are one
// contiguous run of P·d elements (a tile of keys reads contiguous memory), and a slot's element offset is
// ((page·Hkv + g)·P + slot)·d, computed in 64 bits (10M tokens × 8 heads × 128 dims > 2^31 elements).
// FP8 pools hold e4m3 codes with one f32 scale per (token, kv head) row at index offset / d (the rule of
// kernels/step.cu's kv_append_*_f8 and of attention.cu's *_f8 loads: FBGEMM's row scale, code × scale on load).
// Key slot j of a sequence is its ABSOLUTE position j (no kv_pos0): page j / P, slot j % P. NoPE (global) layers keep
// every page of the history. Chunked RoPE layers only ever see their chunk, so their block-table row is a RING of
// `ring` pages (page index (j / P) mod ring): a sequence owns `ring` pages for those layers whatever its length, and
// moving to the next chunk costs nothing (no copy, no allocation); ring ≥ ceil((C + max piece) / P) + 1 keeps every
// key a piece can see alive while the piece writes (the host sizes it). ring = 0: a plain table (NoPE layers).
//
// The attention kernel is the split-KV flash decode of attention.cu generalised to query pieces: a block owns one
// key split × one kv head × a tile of ATTN_DEC_Q (query row, head) combos of one sequence, so the G = H/Hkv heads of
// a kv head share every K/V tile it reads, decode rows of many sequences and the rows of a prefill piece run in the
// same grid, and a long history is spread over splits. The key range of a tile is clipped to what its rows can see
// (causal bound; the chunk start for RoPE layers), so a piece of a chunked layer costs O(T·C). Online softmax in the
// log2 domain, fp32 throughout. With ONE split (the host's choice when the grid is already full, e.g. prefill) the
// block writes O itself — no workspace, no combine launch; otherwise each split writes a partial (m, l, O·l) and
// paged_attn_combine merges the splits of each (row, head) (a NaN split stays NaN, empty splits are skipped).
// The grid comes from host UPPER BOUNDS (max rows per sequence, max visible keys); blocks past a sequence's range exit.
// Positions are int32 and must stay below 2^31 − 1 (q_pos0 + rows ≤ 2^31 − 1); page numbers are int32, element offsets 64-bit.
//
// Device descriptors (int32): q_start [B+1] (cu_seqlens of the packed Q/O/k_new: rows q_start[b] .. q_start[b+1]-1
// are sequence b's), q_pos0 [B] (position of b's first row; its history is positions 0 .. q_pos0[b] + rows − 1 once
// the piece is appended), seq_slot [B] (b's row in the block table), block_table [slots, bt_stride] (page numbers;
// entries never visited may hold anything).
//
// | kernel                               | parameters / launch                                                          |
// |--------------------------------------|------------------------------------------------------------------------------|
// | paged_kv_append_f32, _bf16           | (const T* k_new [total_q, Hkv, d], const T* v_new, T* k_pool [pages,Hkv,P,d], T* v_pool, |
// |                                      |  q_start, q_pos0, seq_slot, block_table, int bt_stride, int ring, int page_shift, |
// |                                      |  int Hkv, int head_dim, int max_q)                                            |
// |                                      | grid = (ceil(Hkv / 4), max_q, B), block = 128 (a warp per (row, kv head)), shared = 0 |
// | paged_kv_append_f32_f8, _bf16_f8     | the same with uint8_t* pools (e4m3) and (float* k_scale, float* v_scale) [pages,Hkv,P] |
// |                                      |  after v_pool; each (row, kv head) quantized with its own scale (FBGEMM row rule) |
// | paged_attn_f32, _bf16                | (const T* Q [total_q,H,d], const T* K_pool, const T* V_pool, T* O [total_q,H,d], |
// |                                      |  float* o_part [nsplit,total_q,H,d], float* ml_part [nsplit,total_q,H,2],     |
// |                                      |  q_start, q_pos0, seq_slot, block_table, int bt_stride, int ring, int page_shift, |
// |                                      |  int H, int Hkv, int chunk, float scale, int keys_per_split, int total_q)     |
// |                                      | grid = (nsplit, Hkv·ceil(max_q·G / ATTN_DEC_Q), B), block = ATTN_DEC_THREADS, |
// |                                      |  shared = 0 (static); nsplit = 1 writes O directly (o_part/ml_part unused)    |
// | paged_attn_f32_f8, _bf16_f8          | the same with e4m3 pools plus (const float* k_scale, const float* v_scale)   |
// | paged_attn_combine_f32, _bf16        | (const float* o_part, const float* ml_part, T* O, int H, int nsplit, int total_q) |
// |                                      | grid = (total_q, H), block = ATTN_COMBINE_THREADS                             |
// Visibility: key j is seen by query position p iff j ≤ p and (chunk == 0 or j / chunk == p / chunk).
//
// Compile-time parameters: ATTN_HEAD_DIM (d, multiple of 8; default 128), ATTN_DEC_Q 8, ATTN_DEC_BK (keys per tile:
// 32, 16 for d > 128), ATTN_DEC_THREADS 128, ATTN_COMBINE_THREADS 128 — as in attention.cu.

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

namespace l4_paged {
namespace {

constexpr int D = ATTN_HEAD_DIM, DQ = ATTN_DEC_Q, DBK = ATTN_DEC_BK, DNT = ATTN_DEC_THREADS;
constexpr int DPT = (D + DNT - 1) / DNT;
constexpr float LOG2E = 1.4426950408889634f;
static_assert(D % 8 == 0 && D > 0, "ATTN_HEAD_DIM must be a positive multiple of 8");
static_assert(DNT % 32 == 0 && DNT <= 1024, "ATTN_DEC_THREADS must be a multiple of 32");
static_assert(ATTN_COMBINE_THREADS % 32 == 0, "ATTN_COMBINE_THREADS must be a multiple of 32");

L4_DEV float neg_inf() { return -__int_as_float(0x7f800000); }
L4_DEV bool visible(int qpos, int kpos, int chunk) { return kpos <= qpos && (chunk == 0 || kpos / chunk == qpos / chunk); }

// Row index (in units of d elements; = the FP8 scale index) of position `pos`, kv head g, in the pool.
L4_DEV long long page_row(const int* bt_row, int ring, int shift, int Hkv, int g, int pos) {
    int lp = pos >> shift;
    if (ring > 0) lp %= ring;
    const long long phys = bt_row[lp];
    return ((phys * Hkv + g) << shift) + (pos & ((1 << shift) - 1));
}

// 8 consecutive elements at element offset o (o % 8 == 0) as floats; sc = the pool's scales (e4m3 only).
L4_DEV void kv_load8(const float* p, const float*, long long o, float v[8]) {
    if (aligned16(p + o)) { load8(p + o, v); return; }
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = p[o + e];
}
L4_DEV void kv_load8(const bf16* p, const float*, long long o, float v[8]) {
    if (aligned16(p + o)) { load8(p + o, v); return; }
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = bf16_to_f32(p[o + e]);
}
L4_DEV void kv_load8(const uint8_t* p, const float* sc, long long o, float v[8]) {
    const float s = sc[o / D];
    if (((unsigned long long)(p + o) & 7ull) == 0) {
        const uint2 u = vload<uint2>(p + o);
#pragma unroll
        for (int h = 0; h < 4; ++h) {
            const float2 f = e4m3x2_to_f32x2((uint16_t)((h < 2 ? u.x : u.y) >> (16 * (h & 1))));
            v[2 * h] = f.x * s; v[2 * h + 1] = f.y * s;
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = e4m3_to_f32(p[o + e]) * s;
}

// ------------------------------------------------------------------------------------------ append
// Warp w of the block stores kv head blockIdx.x·4 + w of row blockIdx.y of sequence blockIdx.z.
template <class T>
L4_DEV void append(const T* k_new, const T* v_new, T* k_pool, T* v_pool, const int* q_start, const int* q_pos0,
                   const int* seq_slot, const int* block_table, int bt_stride, int ring, int shift, int Hkv, int head_dim, int max_q) {
    const int b = blockIdx.z, r = blockIdx.y, g = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int qs = q_start[b], nq = q_start[b + 1] - qs;
    if (r >= nq || r >= max_q || g >= Hkv) return;  // whole warps leave together
    const long long dst = page_row(block_table + (long long)seq_slot[b] * bt_stride, ring, shift, Hkv, g, q_pos0[b] + r) * head_dim;
    const long long src = ((long long)(qs + r) * Hkv + g) * head_dim;
    for (int i = lane; i < head_dim; i += 32) { k_pool[dst + i] = k_new[src + i]; v_pool[dst + i] = v_new[src + i]; }
}

// FP8: s = max(min(max|row|, inf) / 448, 1/(448·512)), codes = e4m3(x / s) — the FBGEMM row rule of step.cu.
template <class T>
L4_DEV void quant_row(const T* src, uint8_t* dst, float* sdst, int head_dim, int lane) {
    float amax = 0.f;
    for (int i = lane; i < head_dim; i += 32) amax = fmaxf(amax, fabsf(to_f32(src[i])));
    const float s = fp8_row_scale(warp_max(amax), __int_as_float(0x7f800000));
    for (int i = lane; i < head_dim; i += 32) dst[i] = f32_to_e4m3(to_f32(src[i]) / s);
    if (lane == 0) *sdst = s;
}

template <class T>
L4_DEV void append_f8(const T* k_new, const T* v_new, uint8_t* k_pool, uint8_t* v_pool, float* k_scale, float* v_scale,
                      const int* q_start, const int* q_pos0, const int* seq_slot, const int* block_table, int bt_stride,
                      int ring, int shift, int Hkv, int head_dim, int max_q) {
    const int b = blockIdx.z, r = blockIdx.y, g = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int qs = q_start[b], nq = q_start[b + 1] - qs;
    if (r >= nq || r >= max_q || g >= Hkv) return;
    const long long row = page_row(block_table + (long long)seq_slot[b] * bt_stride, ring, shift, Hkv, g, q_pos0[b] + r);
    const long long src = ((long long)(qs + r) * Hkv + g) * head_dim;
    quant_row(k_new + src, k_pool + row * head_dim, k_scale + row, head_dim, lane);
    quant_row(v_new + src, v_pool + row * head_dim, v_scale + row, head_dim, lane);
}

// ------------------------------------------------------------------------------------------ attention
template <class T, class KT>
L4_DEV void attend(const T* Q, const KT* K, const KT* V, T* O, float* o_part, float* ml_part, const int* q_start,
                   const int* q_pos0, const int* seq_slot, const int* block_table, int bt_stride, int ring, int shift,
                   int H, int Hkv, int chunk, float scale, int keys_per_split, int total_q,
                   const float* k_scale, const float* v_scale) {
    __shared__ float Qs[DQ][D];
    __shared__ float Ks[DBK][D + 1];  // +1: threads = keys read a column without bank conflicts
    __shared__ __align__(16) float Vs[DBK][D];
    __shared__ float P[DQ][DBK];
    __shared__ float Ms[DQ], Ls[DQ], As[DQ];
    // combo c = r·G + gi is query row r of head kh·G + gi: the G heads of kv head kh share every K/V tile
    const int split = blockIdx.x, kh = blockIdx.y % Hkv, qt = blockIdx.y / Hkv, b = blockIdx.z;
    const int G = H / Hkv;
    const int qs = q_start[b], nq = q_start[b + 1] - qs, c0 = qt * DQ;
    if (c0 >= nq * G) return;  // no such combo tile in this sequence
    const int nr = min(DQ, nq * G - c0);
    const int qp0 = q_pos0[b], nkv = qp0 + nq;
    const int* bt_row = block_table + (long long)seq_slot[b] * bt_stride;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool direct = gridDim.x == 1;
    const int qa = qp0 + c0 / G, qb = qp0 + (c0 + nr - 1) / G;
    // visible keys [lo, hi) of the tile's rows; split s takes keys lo + s·kps .. (splits count from the window's start,
    // so a chunked layer deep into a long sequence needs ceil((C + rows) / kps) splits, not ceil(position / kps))
    int hi = min(nkv, qb + 1), lo = chunk > 0 ? (qa / chunk) * chunk : 0;
    const long long s0 = lo + (long long)split * keys_per_split;
    lo = (int)min(s0, (long long)hi);
    hi = (int)min((long long)hi, s0 + keys_per_split);
    auto rh = [&](int rr) {  // (row, head) of combo rr
        const int c = c0 + rr;
        return (long long)(qs + c / G) * H + kh * G + c % G;
    };
    const long long part = (long long)split * total_q * H;  // this split's first (row, head) in the partial arrays
    if (lo >= hi) {  // nothing visible in this split: zeros (direct) or a neutral partial, skipped by the combine
        if (direct) {
            for (int idx = tid; idx < nr * D; idx += DNT) O[rh(idx / D) * D + idx % D] = from_f32<T>(0.f);
        } else if (tid < nr) {
            ml_part[(part + rh(tid)) * 2] = neg_inf();
            ml_part[(part + rh(tid)) * 2 + 1] = 0.f;
        }
        return;
    }
    const float sl2 = scale * LOG2E;
    for (int idx = tid; idx < DQ * D; idx += DNT) {
        const int rr = idx / D, i = idx % D;
        Qs[rr][i] = rr < nr ? to_f32(Q[rh(rr) * D + i]) : 0.f;
    }
    if (tid < DQ) { Ms[tid] = neg_inf(); Ls[tid] = 0.f; }
    float acc[DQ][DPT];
#pragma unroll
    for (int rr = 0; rr < DQ; ++rr)
#pragma unroll
        for (int k = 0; k < DPT; ++k) acc[rr][k] = 0.f;

    for (int t0 = 0, span = hi - lo, n = 0; t0 < span; t0 += n) {  // tile offsets, not j0 += DBK: no overflow at 2^31
        const int j0 = lo + t0;
        n = min(DBK, span - t0);
        __syncthreads();  // Qs/Ms ready (first tile); the previous tile's Ks, P, As are consumed
        // K and V tiles through the block table: 8 elements per thread and load, converted to f32 once
        for (int idx = tid; idx < DBK * (D / 8); idx += DNT) {
            const int j = idx / (D / 8), c = idx % (D / 8);
            float kv[8], vv[8];
            if (j < n) {
                const long long o = page_row(bt_row, ring, shift, Hkv, kh, j0 + j) * D + 8 * c;
                kv_load8(K, k_scale, o, kv);
                kv_load8(V, v_scale, o, vv);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) kv[e] = vv[e] = 0.f;
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) Ks[j][8 * c + e] = kv[e];
            store8(&Vs[j][8 * c], vv);
        }
        __syncthreads();
        // scores: thread = key
        for (int idx = tid; idx < nr * DBK; idx += DNT) {
            const int rr = idx / DBK, j = idx % DBK;
            float d = 0.f;
#pragma unroll 16
            for (int i = 0; i < D; ++i) d += Qs[rr][i] * Ks[j][i];
            P[rr][j] = (j < n && visible(qp0 + (c0 + rr) / G, j0 + j, chunk)) ? d * sl2 : neg_inf();
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
        // P·V: thread = dim
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
                    const float v = Vs[j][i];
#pragma unroll
                    for (int rr = 0; rr < DQ; ++rr)
                        if (rr < nr) acc[rr][k] += P[rr][j] * v;
                }
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < DQ; ++rr) {
        if (rr >= nr) break;
        const float l = Ls[rr], inv = !(l <= 0.f) ? 1.f / l : 0.f;  // NaN stays NaN
#pragma unroll
        for (int k = 0; k < DPT; ++k) {
            const int i = tid + k * DNT;
            if (i >= D) continue;
            if (direct) O[rh(rr) * D + i] = from_f32<T>(acc[rr][k] * inv);
            else o_part[(part + rh(rr)) * D + i] = acc[rr][k];
        }
    }
    if (!direct && tid < nr) {
        ml_part[(part + rh(tid)) * 2] = Ms[tid];
        ml_part[(part + rh(tid)) * 2 + 1] = Ls[tid];
    }
}

template <class T>
L4_DEV void combine(const float* o_part, const float* ml_part, T* O, int H, int nsplit, int total_q) {
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
    const float inv = !(L <= 0.f) ? 1.f / L : 0.f;
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
}  // namespace l4_paged

#define L4_PAGED_DESC const int *q_start, const int *q_pos0, const int *seq_slot, const int *block_table, int bt_stride, int ring, int page_shift
#define L4_PAGED_DESC_ARGS q_start, q_pos0, seq_slot, block_table, bt_stride, ring, page_shift

extern "C" __global__ void __launch_bounds__(128) paged_kv_append_f32(const float* k_new, const float* v_new, float* k_pool, float* v_pool,
                                                                     L4_PAGED_DESC, int Hkv, int head_dim, int max_q) {
    l4_paged::append(k_new, v_new, k_pool, v_pool, L4_PAGED_DESC_ARGS, Hkv, head_dim, max_q);
}
extern "C" __global__ void __launch_bounds__(128) paged_kv_append_bf16(const bf16* k_new, const bf16* v_new, bf16* k_pool, bf16* v_pool,
                                                                      L4_PAGED_DESC, int Hkv, int head_dim, int max_q) {
    l4_paged::append(k_new, v_new, k_pool, v_pool, L4_PAGED_DESC_ARGS, Hkv, head_dim, max_q);
}
extern "C" __global__ void __launch_bounds__(128) paged_kv_append_f32_f8(const float* k_new, const float* v_new, uint8_t* k_pool, uint8_t* v_pool,
                                                                        float* k_scale, float* v_scale, L4_PAGED_DESC, int Hkv, int head_dim, int max_q) {
    l4_paged::append_f8(k_new, v_new, k_pool, v_pool, k_scale, v_scale, L4_PAGED_DESC_ARGS, Hkv, head_dim, max_q);
}
extern "C" __global__ void __launch_bounds__(128) paged_kv_append_bf16_f8(const bf16* k_new, const bf16* v_new, uint8_t* k_pool, uint8_t* v_pool,
                                                                         float* k_scale, float* v_scale, L4_PAGED_DESC, int Hkv, int head_dim, int max_q) {
    l4_paged::append_f8(k_new, v_new, k_pool, v_pool, k_scale, v_scale, L4_PAGED_DESC_ARGS, Hkv, head_dim, max_q);
}

#define L4_PAGED_ATTN_PARAMS(T, KT) \
    const T *Q, const KT *K, const KT *V, T *O, float *o_part, float *ml_part, L4_PAGED_DESC, int H, int Hkv, int chunk, \
        float scale, int keys_per_split, int total_q
#define L4_PAGED_ATTN_ARGS \
    Q, K, V, O, o_part, ml_part, L4_PAGED_DESC_ARGS, H, Hkv, chunk, scale, keys_per_split, total_q

extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS) paged_attn_f32(L4_PAGED_ATTN_PARAMS(float, float)) {
    l4_paged::attend<float, float>(L4_PAGED_ATTN_ARGS, nullptr, nullptr);
}
extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS) paged_attn_bf16(L4_PAGED_ATTN_PARAMS(bf16, bf16)) {
    l4_paged::attend<bf16, bf16>(L4_PAGED_ATTN_ARGS, nullptr, nullptr);
}
extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS, 1) paged_attn_f32_f8(L4_PAGED_ATTN_PARAMS(float, uint8_t),
                                                                                  const float* k_scale, const float* v_scale) {
    l4_paged::attend<float, uint8_t>(L4_PAGED_ATTN_ARGS, k_scale, v_scale);
}
extern "C" __global__ void __launch_bounds__(ATTN_DEC_THREADS, 1) paged_attn_bf16_f8(L4_PAGED_ATTN_PARAMS(bf16, uint8_t),
                                                                                   const float* k_scale, const float* v_scale) {
    l4_paged::attend<bf16, uint8_t>(L4_PAGED_ATTN_ARGS, k_scale, v_scale);
}
extern "C" __global__ void __launch_bounds__(ATTN_COMBINE_THREADS)
paged_attn_combine_f32(const float* o_part, const float* ml_part, float* O, int H, int nsplit, int total_q) {
    l4_paged::combine<float>(o_part, ml_part, O, H, nsplit, total_q);
}
extern "C" __global__ void __launch_bounds__(ATTN_COMBINE_THREADS)
paged_attn_combine_bf16(const float* o_part, const float* ml_part, bf16* O, int H, int nsplit, int total_q) {
    l4_paged::combine<bf16>(o_part, ml_part, O, H, nsplit, total_q);
}
