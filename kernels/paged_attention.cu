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
// The attention kernel is the split-KV flash decode of attention.cu generalised to query pieces (the same core:
// attention_common.cuh's decode_tiles, cp.async double-buffered K/V tiles gathered through the block table): a block owns one
// key split × one kv head × a tile of ATTN_DEC_Q (query row, head) combos of one sequence, so the G = H/Hkv heads of
// a kv head share every K/V tile it reads, decode rows of many sequences and the rows of a prefill piece run in the
// same grid, and a long history is spread over splits. The key range of a tile is clipped to what its rows can see
// (causal bound; the chunk start for RoPE layers), so a piece of a chunked layer costs O(T·C). Online softmax in the
// log2 domain, fp32 throughout. With ONE split (the host's choice when the grid is already full, e.g. prefill) the
// block writes O itself — no workspace, no combine launch; otherwise each split writes a partial (m, l, O·l) and
// paged_attn_combine merges the splits of each (row, head) (a NaN split stays NaN, empty splits are skipped).
// bf16 prefill pieces take paged_attn_mma_bf16 instead (the host's choice when a call's MaxQ ≥ 64): attention.cu's
// tensor-core FlashAttention-2 tile (attention_mma.cuh, shared) reading key rows through the block table, a block per
// 64 query rows × head × sequence; the same descriptors, masks and ring, O written directly.
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
// |                                      | grid = (ceil(max_q·Hkv / 4) (capped; warps stride), 1, B), block = 128 (a warp per |
// |                                      |  (row, kv head) pair: any number of rows), shared = 0                        |
// | paged_kv_append_f32_f8, _bf16_f8     | the same with uint8_t* pools (e4m3) and (float* k_scale, float* v_scale) [pages,Hkv,P] |
// |                                      |  after v_pool; each (row, kv head) quantized with its own scale (FBGEMM row rule) |
// | paged_attn_f32, _bf16                | (const T* Q [total_q,H,d], const T* K_pool, const T* V_pool, T* O [total_q,H,d], |
// |                                      |  float* o_part [nsplit,total_q,H,d], float* ml_part [nsplit,total_q,H,2],     |
// |                                      |  q_start, q_pos0, seq_slot, block_table, int bt_stride, int ring, int page_shift, |
// |                                      |  int H, int Hkv, int chunk, float scale, int keys_per_split, int total_q)     |
// |                                      | grid = (nsplit, Hkv·ceil(max_q·G / ATTN_DEC_Q), B), block = ATTN_DEC_THREADS, |
// |                                      |  dynamic shared = Attention.DecodeSharedBytes (attention_common.cuh: two     |
// |                                      |  cp.async stages of K/V tiles); nsplit = 1 writes O directly (no partials)   |
// | paged_attn_f32_f8, _bf16_f8          | the same with e4m3 pools plus (const float* k_scale, const float* v_scale)   |
// | paged_attn_mma_bf16                  | (const bf16* Q, const bf16* K_pool, const bf16* V_pool, bf16* O, q_start, q_pos0, |
// |                                      |  seq_slot, block_table, int bt_stride, int ring, int page_shift, int H, int Hkv, |
// |                                      |  int chunk, float scale) — bf16 prefill on tensor cores (d % 16 == 0; Q, O 16-byte |
// |                                      |  aligned); grid = (ceil(max_q / 64), H, B), block = 128, shared = 0 (static, |
// |                                      |  as attn_fwd_mma_bf16). FP8 pools stay on paged_attn_*_f8 (CUDA cores)       |
// | paged_attn_combine_f32, _bf16        | (const float* o_part, const float* ml_part, T* O, int H, int nsplit, int total_q) |
// |                                      | grid = (total_q, H), block = ATTN_COMBINE_THREADS                             |
// Visibility: key j is seen by query position p iff j ≤ p and (chunk == 0 or j / chunk == p / chunk).
//
// Compile-time parameters: ATTN_HEAD_DIM (d, multiple of 8; default 128), ATTN_DEC_Q 8, ATTN_DEC_BK (keys per tile:
// 32, 16 for d > 128), ATTN_DEC_THREADS 128, ATTN_COMBINE_THREADS 128 — as in attention.cu.

#include "attention_common.cuh"
#include "attention_mma.cuh"

namespace l4_paged {
namespace {
using namespace l4_attn;  // D, DQ, DBK, DNT, neg_inf, visible, decode_tiles, decode_combine (attention_common.cuh)

// Row index (in units of d elements; = the FP8 scale index) of position `pos`, kv head g, in the pool.
L4_DEV long long page_row(const int* bt_row, int ring, int shift, int Hkv, int g, int pos) {
    int lp = pos >> shift;
    if (ring > 0) lp %= ring;
    const long long phys = bt_row[lp];
    return ((phys * Hkv + g) << shift) + (pos & ((1 << shift) - 1));
}

// ------------------------------------------------------------------------------------------ append
// Warps stride over the (row, kv head) pairs of sequence blockIdx.z — pair w = row·Hkv + g — with the rows on the
// x dimension of the grid (any number of rows: no 65,535 limit), 64-bit pair and element offsets.
template <class T, class F>
L4_DEV void for_each_row(const int* q_start, int Hkv, int max_q, F f) {
    const int b = blockIdx.z, lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    const int qs = q_start[b], nq = min(q_start[b + 1] - qs, max_q);
    const long long pairs = (long long)nq * Hkv;
    for (long long w = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); w < pairs; w += (long long)gridDim.x * wpb)
        f(b, qs, (int)(w / Hkv), (int)(w % Hkv), lane);  // whole warps take the same pair
}

template <class T>
L4_DEV void append(const T* k_new, const T* v_new, T* k_pool, T* v_pool, const int* q_start, const int* q_pos0,
                   const int* seq_slot, const int* block_table, int bt_stride, int ring, int shift, int Hkv, int head_dim, int max_q) {
    for_each_row<T>(q_start, Hkv, max_q, [&](int b, int qs, int r, int g, int lane) {
        const long long dst = page_row(block_table + (long long)seq_slot[b] * bt_stride, ring, shift, Hkv, g, q_pos0[b] + r) * head_dim;
        const long long src = ((long long)(qs + r) * Hkv + g) * head_dim;
        for (int i = lane; i < head_dim; i += 32) { k_pool[dst + i] = k_new[src + i]; v_pool[dst + i] = v_new[src + i]; }
    });
}

template <class T>
L4_DEV void append_f8(const T* k_new, const T* v_new, uint8_t* k_pool, uint8_t* v_pool, float* k_scale, float* v_scale,
                      const int* q_start, const int* q_pos0, const int* seq_slot, const int* block_table, int bt_stride,
                      int ring, int shift, int Hkv, int head_dim, int max_q) {
    for_each_row<T>(q_start, Hkv, max_q, [&](int b, int qs, int r, int g, int lane) {
        const long long row = page_row(block_table + (long long)seq_slot[b] * bt_stride, ring, shift, Hkv, g, q_pos0[b] + r);
        const long long src = ((long long)(qs + r) * Hkv + g) * head_dim;
        kv_quant_row(k_new + src, k_pool + row * head_dim, k_scale + row, head_dim, lane);
        kv_quant_row(v_new + src, v_pool + row * head_dim, v_scale + row, head_dim, lane);
    });
}

// ------------------------------------------------------------------------------------------ attention
// The core (cp.async double-buffered K/V tiles, scores, online softmax, P·V) is attention_common.cuh's decode_tiles;
// here: the block's combos and split window, K/V rows through the block table, O (one split) or partials out.
template <class T, class KT>
L4_DEV void attend(const T* Q, const KT* K, const KT* V, T* O, float* o_part, float* ml_part, const int* q_start,
                   const int* q_pos0, const int* seq_slot, const int* block_table, int bt_stride, int ring, int shift,
                   int H, int Hkv, int chunk, float scale, int keys_per_split, int total_q,
                   const float* k_scale, const float* v_scale) {
    // combo c = r·G + gi is query row r of head kh·G + gi: the G heads of kv head kh share every K/V tile
    const int split = blockIdx.x, kh = blockIdx.y % Hkv, qt = blockIdx.y / Hkv, b = blockIdx.z;
    const int G = H / Hkv;
    const int qs = q_start[b], nq = q_start[b + 1] - qs, c0 = qt * DQ;
    if (c0 >= nq * G) return;  // no such combo tile in this sequence
    const int nr = min(DQ, nq * G - c0);
    const int qp0 = q_pos0[b], nkv = qp0 + nq;
    const int* bt_row = block_table + (long long)seq_slot[b] * bt_stride;
    const int tid = threadIdx.x;
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
    decode_tiles(K, V, k_scale, v_scale, lo, hi, 0, qp0, c0, G, nr, chunk, scale * LOG2E,
        [&](int rr, int i) { return to_f32(Q[rh(rr) * D + i]); },
        [&](int j) { return page_row(bt_row, ring, shift, Hkv, kh, j) * D; },
        [&](int rr, int i, float o, float l) {
            if (direct) O[rh(rr) * D + i] = from_f32<T>(o * (!(l <= 0.f) ? 1.f / l : 0.f));  // NaN stays NaN
            else o_part[(part + rh(rr)) * D + i] = o;
        },
        [&](int rr, float m, float l) {
            if (direct) return;
            ml_part[(part + rh(rr)) * 2] = m;
            ml_part[(part + rh(rr)) * 2 + 1] = l;
        });
}

// ------------------------------------------------------------------------------------------ attention (tensor cores)
// bf16 prefill pieces: attention_mma.cuh's mma_tiles (attn_fwd_mma_bf16's FlashAttention-2 tile) with key slot j's row
// found through the block table — a 64-key tile is one page when P = 64 and the window starts on a page (d > 128:
// MBK = 32, two tiles a page); any P works since the lookup is per key row. Key slot j is position j (kp0 = 0); the
// window is what the block's 64 rows can see: [chunk start of the first row (chunked) or 0, last row's position].
L4_DEV void attend_mma(const bf16* Q, const bf16* K, const bf16* V, bf16* O, const int* q_start, const int* q_pos0,
                       const int* seq_slot, const int* block_table, int bt_stride, int ring, int shift, int H, int Hkv,
                       int chunk, float scale) {
    const int b = blockIdx.z, h = blockIdx.y;
    const int qs = q_start[b], nq = q_start[b + 1] - qs, r0 = blockIdx.x * MBQ;
    if (r0 >= nq) return;  // uniform per block
    const int qp0 = q_pos0[b], kh = h / (H / Hkv);
    const int* bt_row = block_table + (long long)seq_slot[b] * bt_stride;
    const int qa = qp0 + r0, hi = qp0 + min(r0 + MBQ, nq);  // hi = last row's position + 1 ≤ 2^31 − 1
    const int lo = chunk > 0 ? (qa / chunk) * chunk : 0;
    mma_tiles(Q, K, V, O, [&](int j) { return page_row(bt_row, ring, shift, Hkv, kh, j) * D; }, qs, nq, r0, h, H, qp0, 0, lo,
              hi, chunk, scale);
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
paged_attn_combine_f32(L4_ATTN_COMBINE_PARAMS(float)) { l4_attn::decode_combine<float>(L4_ATTN_COMBINE_ARGS); }
extern "C" __global__ void __launch_bounds__(ATTN_COMBINE_THREADS)
paged_attn_combine_bf16(L4_ATTN_COMBINE_PARAMS(bf16)) { l4_attn::decode_combine<bf16>(L4_ATTN_COMBINE_ARGS); }
extern "C" __global__ void __launch_bounds__(128) paged_attn_mma_bf16(const bf16* Q, const bf16* K, const bf16* V, bf16* O,
                                                                      L4_PAGED_DESC, int H, int Hkv, int chunk, float scale) {
    // The tensor-core tiles need d % 16 == 0; the wrapper never launches this kernel otherwise.
    if constexpr (l4_attn::D % 16 == 0) l4_paged::attend_mma(Q, K, V, O, L4_PAGED_DESC_ARGS, H, Hkv, chunk, scale); else __trap();
}
