// moe.cu — Llama 4's routed mixture-of-experts FFN on the device, six launches with no host round trip
// (four in a decode step, where `moe_route_*` does router, top-k and grouping in one block).
//
// Why it looks like this: a decode step is captured in a CUDA graph, so nothing data-dependent (which
// experts a token chose, how many tokens each expert got) may reach the host. The layer is therefore
// six launches whose grids come from worst-case bounds and whose blocks read the real sizes from device
// memory and exit early. (1) The router: `moe_router_logits_*` gives every (token, expert) dot product its
// own warp (lanes striding D with 16-byte loads, a fixed shuffle tree), so even decode's single token
// spreads Wr [E, D] over E/8 blocks; at prefill sizes the wrapper uses gemm.cu's tensor-core GEMM for the
// logits instead. `moe_topk_*` then picks each token's top-k with one warp — E is 16 or 128 and k is 1,
// so k rounds of a warp argmax beat any sort; ties go to the lower expert index and NaN counts as the
// largest (torch's comparator; torch itself leaves the order of exact ties unspecified);
// score = sigmoid(logit) of the chosen, no softmax, no renormalisation. In bf16 mode the logits are
// stored (and compared) in bf16 and the score is rounded to bf16, as HF does
// (its router is an nn.Linear in bf16 and `sigmoid(x.float()).to(bf16)`). (2) `moe_align`: one block
// groups the T·k (token, slot) pairs by expert (vLLM's moe_align_block_size idea): a warp per expert
// counts its pairs with ballots, thread 0 takes the exclusive prefix sum with each expert's count padded
// to MOE_BM, and a second ballot pass writes the flat slot ids t·k+s in order — stable by token then
// slot, deterministic, no atomics — padding with -1, one expert id per MOE_BM-row tile and the inverse
// map slot → row. (3) `moe_gate_up_*`: a grouped GEMM over the padded rows; every MOE_BM-row tile belongs
// to one expert, so a block is an ordinary tensor-core GEMM tile against Wgu[e] ([D, 2I], `kn`, loaded
// with cp.async and read with ldmatrix.trans as in gemm.cu). The A rows are gathered from x by slot and
// scaled by the router score while staged through registers into shared memory (the product rounded to
// the operand dtype, exactly HF's `hidden * router_scores` in bf16). Each block owns MOE_BN columns of
// BOTH gate and up, so the epilogue writes h = silu(gate)·up directly and the [rows, 2I] intermediate
// never exists. (4) `moe_down_*`: the same tile loop for h @ Wd[e] ([I, D], kn). (5) `moe_combine_*`:
// y[t] (+)= Σ over t's slots of out[row(t, slot)] — a gather in fixed order (ascending expert index, as
// HF's sum over experts), no float atomics, so results are bit-reproducible. Rounding points in bf16
// mode follow HF (gate, up, silu(gate), the product, the expert output, the slot sum, the residual add
// are each rounded to bf16); fp32 mode rounds nothing. `*_simple_*` kernels are one thread per output
// with a sequential fp32 sum: the fp32 exact-parity path (bf16 weights upcast) and a bf16 anchor.
// Padded rows (slot -1) carry zero rows through both GEMMs and are never read by the combine.
//
// Buffers (R = T·k + min(E, T·k)·(MOE_BM − 1) rows is the worst case after padding — at most min(E, T·k)
// experts are non-empty, each wasting < MOE_BM rows; tiles = ceil(R / MOE_BM)):
//   x [T, D] (TA = float or bf16), wr [E, D] bf16, logits [T, E] TA, topk_idx [T, k] int32, topk_score
//   [T, k] f32, sorted_slots [R] int32, slot_row [T·k] int32, tile_expert [tiles] int32, expert_offsets
//   [E + 1] int32 (padded starts; [E] = total padded rows), wgu [E, D, 2I] bf16, h [R, I] TA,
//   wd [E, I, D] bf16, out [R, D] TA, y [T, D] TA.
// | kernel                               | parameters                                                    | launch |
// |--------------------------------------|---------------------------------------------------------------|--------|
// | moe_router_logits_{f32,bf16}         | (x, wr, logits, int T, int D, int E)                          | grid = (ceil(E / (MOE_ROUTER_THREADS/32)), min(T, 65535)), block = MOE_ROUTER_THREADS, shared = 0 |
// | moe_topk_{f32,bf16}                  | (logits, topk_idx, topk_score, int T, int E, int k)           | grid = T, block = 32, dynamic shared = 8·E |
// | moe_align                            | (topk_idx, sorted_slots, slot_row, tile_expert, expert_offsets, int T, int k, int E, int bm, int e0) | grid = 1, block = MOE_ALIGN_THREADS, dynamic shared = 4·(2E + 1) |
// | moe_route_{f32,bf16}                 | (x, wr, logits, topk_idx, topk_score, sorted_slots, slot_row, tile_expert, expert_offsets, int T, int D, int E, int k, int bm, int logits_given) | decode (T·k ≤ 32, T·E ≤ 2048): the three above in one block (all E experts local: e0 = 0); grid = 1, block = MOE_ALIGN_THREADS, dynamic shared = 8·T·E + 4·(2E + 1) |
// | moe_gate_up_mma_bf16                 | (x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, h, int k, int D, int I, int E) | grid = (ceil(I/MOE_BN), tiles), block = 32·MOE_WM·MOE_WN, dynamic shared = MOE_STAGES·2·(MOE_BM·(MOE_BK+8) + 2·MOE_BK·(MOE_BN+8)) (default tile: 43008 B) |
// | moe_down_mma_bf16                    | (h, tile_expert, expert_offsets, wd, out, int I, int D, int E) | grid = (ceil(D/MOE_BN), tiles), block = 32·MOE_WM·MOE_WN, dynamic shared = MOE_STAGES·2·(MOE_BM·(MOE_BK+8) + MOE_BK·(MOE_BN+8)) (default tile: 29184 B) |
// | moe_gate_up_simple_{f32,bf16}        | (x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, h, int k, int D, int I, int E, int bm) | grid = (ceil(I/16), ceil(R/16)), block = (16, 16), shared = 0 |
// | moe_down_simple_{f32,bf16}           | (h, tile_expert, expert_offsets, wd, out, int I, int D, int E, int bm) | grid = (ceil(D/16), ceil(R/16)), block = (16, 16), shared = 0 |
// | moe_combine_{f32,bf16}               | (out, slot_row, topk_idx, y, int T, int D, int k, int accumulate) | grid = (ceil(D/MOE_COMBINE_THREADS), min(T, 65535)), block = MOE_COMBINE_THREADS, shared = 0 |
// The mma kernels need the alignment done with bm = MOE_BM; the simple ones take any bm ≥ 1. Expert ids
// outside [0, E) in topk_idx are dropped (slot_row = -1; the combine skips them). gridDim.y ≤ 65535
// bounds R to 65535·MOE_BM rows (mma) or 65535·16 (simple). Expert parallelism: a device holding experts
// [e0, e0 + E) of the model aligns with e0 (the router's ids are global); pairs routed to other devices'
// experts are dropped here, and its combine adds only its own — the all-reduce after the layer adds the rest.
//
// Compile-time parameters (part of the JIT cache key):
//   MOE_BM 64, MOE_BN 64, MOE_BK 32, MOE_WM 2, MOE_WN 2, MOE_STAGES 3 — grouped GEMM tiles (4 warps, 32×32 each);
//   the wrapper's decode tile (T·k ≤ 32) is MOE_BM 16, MOE_BN 32, MOE_WM 1, MOE_WN 2, MOE_STAGES 4 (2 warps,
//   16×16 each; shared 25600 / 15360 B): a 64-row tile would be ¾ padding there, and narrower columns put
//   twice the blocks on the weight stream that decode is bound by.
//   MOE_ROUTER_THREADS 256, MOE_ALIGN_THREADS 1024, MOE_COMBINE_THREADS 256

#include "moe_tile.cuh"

#ifndef MOE_BM
#define MOE_BM 64
#endif
#ifndef MOE_BN
#define MOE_BN 64
#endif
#ifndef MOE_BK
#define MOE_BK 32
#endif
#ifndef MOE_WM
#define MOE_WM 2
#endif
#ifndef MOE_WN
#define MOE_WN 2
#endif
#ifndef MOE_STAGES
#define MOE_STAGES 3
#endif
#ifndef MOE_ROUTER_THREADS
#define MOE_ROUTER_THREADS 256
#endif
#ifndef MOE_ALIGN_THREADS
#define MOE_ALIGN_THREADS 1024
#endif
#ifndef MOE_COMBINE_THREADS
#define MOE_COMBINE_THREADS 256
#endif

namespace l4_moe {

constexpr int BM = MOE_BM, BN = MOE_BN, BK = MOE_BK, WM = MOE_WM, WN = MOE_WN, STAGES = MOE_STAGES;
constexpr int NT = 32 * WM * WN;
constexpr int WTM = BM / WM, WTN = BN / WN;
constexpr int MI = WTM / 16, NI = WTN / 8;
constexpr int PAD = 8;
constexpr int A_LD = BK + PAD, B_LD = BN + PAD;
constexpr int A_STAGE = BM * A_LD, B_STAGE = BK * B_LD;
constexpr int SIMPLE = 16;
static_assert(BM % (16 * WM) == 0, "MOE_BM must be a multiple of 16*MOE_WM");
static_assert(BN % (16 * WN) == 0, "MOE_BN must be a multiple of 16*MOE_WN");
static_assert(BK % 16 == 0, "MOE_BK must be a multiple of 16");
static_assert(STAGES >= 2, "MOE_STAGES must be at least 2");
static_assert(NT <= 1024 && MOE_ALIGN_THREADS % 32 == 0 && MOE_ROUTER_THREADS % 32 == 0, "thread counts");

// torch.topk's order: NaN above everything, then by value; equal values keep the earlier (lower) index
// because candidates are visited in ascending index order and only a strictly better one replaces.
L4_DEV bool better(float v, float best) { return (v != v && best == best) || v > best; }

// ------------------------------------------------------------------------------------------ router
// One warp picks the top-k of s_logit[0, E) (entries with s_taken set are skipped and the chosen get set):
// each lane scans e = lane, lane + 32, … in ascending order keeping the first best, then an xor butterfly
// keeps the better (value, index) pair under the total order "better value, or equal and lower index", so
// every lane ends with the same choice. Writes idx[0, k) and score[0, k) = sigmoid(logit) in TA's precision.
template <typename TA>
L4_DEV void topk_warp(const float* s_logit, int* s_taken, int E, int k, int* __restrict__ idx, float* __restrict__ score) {
    const int lane = threadIdx.x & 31;
    for (int j = 0; j < k; ++j) {
        int best = -1;
        float bv = 0.f;
        for (int e = lane; e < E; e += 32) {
            if (s_taken[e]) continue;
            const float v = s_logit[e];
            if (best < 0 || better(v, bv)) { best = e; bv = v; }
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, best, o);
            if (oi >= 0 && (best < 0 || better(ov, bv) || (!better(bv, ov) && oi < best))) { best = oi; bv = ov; }
        }
        if (lane == 0) {
            idx[j] = best;  // k <= E (checked by the wrapper), so best >= 0
            score[j] = round_to<TA>(1.f / (1.f + expf(-bv)));
            s_taken[best] = 1;
        }
        __syncwarp();
    }
}

// Router logits: one warp per (token, expert) dot product, lanes striding D with 16-byte loads when the
// rows are aligned, then a fixed shuffle tree. Blocks tile the experts (x) and the tokens (y, grid-stride).
// One router dot product x_t · Wr[e] by one whole warp (every lane gets the sum). moe_route uses the same code,
// so its logits are bit-identical to these.
template <typename TA>
L4_DEV float router_dot(const TA* __restrict__ xr, const bf16* __restrict__ w, int D, int lane) {
    float s = 0.f;
    int d0 = 0;
    if (aligned16(xr) && aligned16(w)) {  // 8 elements per lane per step, the tail below
        for (int d = lane * 8; d + 8 <= D; d += 256) {
            float a[8], b[8];
            load8(xr + d, a);
            load8(w + d, b);
#pragma unroll
            for (int j = 0; j < 8; ++j) s += a[j] * b[j];
        }
        d0 = D / 8 * 8;
    }
    for (int d = d0 + lane; d < D; d += 32) s += to_f32(xr[d]) * bf16_to_f32(w[d]);
    return warp_sum(s);
}

template <typename TA>
L4_DEV void router_logits(const TA* __restrict__ x, const bf16* __restrict__ wr, TA* __restrict__ logits, int T, int D, int E) {
    const int lane = threadIdx.x & 31, e = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (e >= E) return;  // whole warps: no collective below is reached by part of a warp
    const bf16* w = wr + (long long)e * D;
    for (long long t = blockIdx.y; t < T; t += gridDim.y) {
        const float s = router_dot<TA>(x + t * D, w, D, lane);
        if (lane == 0) logits[t * E + e] = from_f32<TA>(s);
    }
}

// The top-k of each token's logits (from router_logits, or from gemm.cu at prefill sizes): one warp per token.
template <typename TA>
L4_DEV void topk(const TA* __restrict__ logits, int* __restrict__ topk_idx, float* __restrict__ topk_score, int T, int E, int k) {
    L4_DYNAMIC_SHARED(float, s_logit);                      // [E]
    int* s_taken = reinterpret_cast<int*>(s_logit + E);     // [E]
    const int t = blockIdx.x;
    if (t >= T) return;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        s_logit[e] = to_f32(logits[(long long)t * E + e]);
        s_taken[e] = 0;
    }
    __syncthreads();
    if (threadIdx.x < 32) topk_warp<TA>(s_logit, s_taken, E, k, topk_idx + (long long)t * k, topk_score + (long long)t * k);
}

// ------------------------------------------------------------------------------------------ align
// s_cnt: [2E + 1] ints of shared memory. This device's experts are [e0, e0 + E) of the model's.
L4_DEV void align_block(int* s_cnt, const int* __restrict__ topk_idx, int* __restrict__ sorted_slots, int* __restrict__ slot_row,
                        int* __restrict__ tile_expert, int* __restrict__ expert_offsets, int T, int k, int E, int bm, int e0) {
    int* s_off = s_cnt + E;          // [E + 1]
    const int n = T * k;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    const unsigned below = (1u << lane) - 1u;
    for (int e = warp; e < E; e += nwarps) {
        int cnt = 0;
        for (int base = 0; base < n; base += 32) {
            const int i = base + lane;
            cnt += __popc(__ballot_sync(0xffffffffu, i < n && topk_idx[i] - e0 == e));
        }
        if (lane == 0) s_cnt[e] = cnt;
    }
    for (int i = tid; i < n; i += blockDim.x) {  // pairs routed nowhere (an id outside [e0, e0 + E))
        const int e = topk_idx[i] - e0;
        if (e < 0 || e >= E) slot_row[i] = -1;
    }
    __syncthreads();
    if (tid == 0) {
        int off = 0;
        for (int e = 0; e < E; ++e) {
            s_off[e] = off;
            expert_offsets[e] = off;
            off += (s_cnt[e] + bm - 1) / bm * bm;
        }
        s_off[E] = off;
        expert_offsets[E] = off;
    }
    __syncthreads();
    for (int e = warp; e < E; e += nwarps) {
        const int start = s_off[e], end = s_off[e + 1];
        int pos = start;
        for (int base = 0; base < n; base += 32) {
            const int i = base + lane;
            const bool hit = i < n && topk_idx[i] - e0 == e;
            const unsigned m = __ballot_sync(0xffffffffu, hit);
            if (hit) {
                const int p = pos + __popc(m & below);
                sorted_slots[p] = i;
                slot_row[i] = p;
            }
            pos += __popc(m);
        }
        for (int p = pos + lane; p < end; p += 32) sorted_slots[p] = -1;
        for (int tile = start / bm + lane; tile < end / bm; tile += 32) tile_expert[tile] = e;
    }
}

L4_DEV void align(const int* __restrict__ topk_idx, int* __restrict__ sorted_slots, int* __restrict__ slot_row,
                  int* __restrict__ tile_expert, int* __restrict__ expert_offsets, int T, int k, int E, int bm, int e0) {
    L4_DYNAMIC_SHARED(int, s_cnt);   // [2E + 1]
    align_block(s_cnt, topk_idx, sorted_slots, slot_row, tile_expert, expert_offsets, T, k, E, bm, e0);
}

// ------------------------------------------------------------------------------------------ route (decode)
// The router → top-k → grouping chain of a decode step in ONE block: the logits (a warp per (token, expert),
// router_dot — unless `logits_given`: E too large for one block to stream Wr, moe_router_logits ran first),
// then a warp per token picks its top-k from shared memory (topk_warp), then the block groups the pairs
// (align_block; __syncthreads makes this block's global writes of topk_idx visible to itself). Same code
// paths as the three kernels, so the results are bit-identical to them. Shared: s_logit [T·E] f32,
// s_taken [T·E] int, align [2E + 1] int.
template <typename TA>
L4_DEV void route(const TA* __restrict__ x, const bf16* __restrict__ wr, TA* __restrict__ logits, int* __restrict__ topk_idx,
                  float* __restrict__ topk_score, int* __restrict__ sorted_slots, int* __restrict__ slot_row,
                  int* __restrict__ tile_expert, int* __restrict__ expert_offsets, int T, int D, int E, int k, int bm,
                  int logits_given) {
    L4_DYNAMIC_SHARED(float, s_logit);                      // [T·E]
    int* s_taken = reinterpret_cast<int*>(s_logit + T * E); // [T·E]
    int* s_align = s_taken + T * E;                         // [2E + 1]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    if (!logits_given) {
        for (int job = warp; job < T * E; job += nwarps) {  // whole warps
            const int t = job / E, e = job - t * E;
            const float s = router_dot<TA>(x + (long long)t * D, wr + (long long)e * D, D, lane);
            if (lane == 0) {
                const TA r = from_f32<TA>(s);
                logits[job] = r;
                s_logit[job] = to_f32(r);
            }
        }
    } else {
        for (int i = tid; i < T * E; i += blockDim.x) s_logit[i] = to_f32(logits[i]);
    }
    for (int i = tid; i < T * E; i += blockDim.x) s_taken[i] = 0;
    __syncthreads();
    for (int t = warp; t < T; t += nwarps)
        topk_warp<TA>(s_logit + t * E, s_taken + t * E, E, k, topk_idx + (long long)t * k, topk_score + (long long)t * k);
    __syncthreads();
    align_block(s_align, topk_idx, sorted_slots, slot_row, tile_expert, expert_offsets, T, k, E, bm, 0);
}

// ------------------------------------------------------------------------------------------ grouped GEMM (mma)
// Tiles are staged with l4_load_tile, the main loop and fragments are mma_tile.cuh's (shared with gemm.cu), the
// gathered A tile and the epilogue moe_tile.cuh's (shared with moe_int4.cu).

// GATED: A = x [T, K] gathered by slot and scaled, W = wgu [E, K, 2N], C = h [R, N] = silu(gate)·up.
// !GATED: A = h [R, K] (already in padded row order), W = wd [E, K, N], C = out [R, N].
template <bool GATED>
L4_DEV void grouped_mma(const bf16* __restrict__ A, const float* __restrict__ score, const int* __restrict__ sorted_slots,
                        const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets,
                        const bf16* __restrict__ W, bf16* __restrict__ C, int k, int K, int N, int E) {
    L4_DYNAMIC_SHARED(bf16, smem);
    __shared__ int s_tok[GATED ? BM : 1];
    __shared__ float s_scale[GATED ? BM : 1];
    constexpr int NB = GATED ? 2 : 1;        // B tiles per stage: gate and up, or down
    bf16* As = smem;                         // [STAGES][BM][A_LD]
    bf16* Bs = smem + STAGES * A_STAGE;      // [STAGES][NB][BK][B_LD]

    const int total = expert_offsets[E];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    if (m0 >= total) return;  // beyond the padded rows: the grid is sized for the worst case
    const int e = tile_expert[blockIdx.y];
    const long long ldw = GATED ? 2LL * N : (long long)N;
    const bf16* We = W + (long long)e * K * ldw;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int KT = (K + BK - 1) / BK;

    if constexpr (GATED) moe_tile_tokens<BM, NT>(s_tok, s_scale, sorted_slots, score, m0, k, tid);

    auto load_stage = [&](int stage, int kt) {
        const int k0 = kt * BK;
        bf16* bs = Bs + stage * NB * B_STAGE;
        if constexpr (GATED) {
            moe_gather_scaled_tile<BM, BK, A_LD, NT>(As + stage * A_STAGE, A, s_tok, s_scale, K, k0, tid);
            l4_load_tile<BK, BN, B_LD, NT>(bs, We, K, N, ldw, k0, n0, tid);
            l4_load_tile<BK, BN, B_LD, NT>(bs + B_STAGE, We + N, K, N, ldw, k0, n0, tid);
        } else {
            l4_load_tile<BM, BK, A_LD, NT>(As + stage * A_STAGE, A, total, K, K, m0, k0, tid);
            l4_load_tile<BK, BN, B_LD, NT>(bs, We, K, N, ldw, k0, n0, tid);
        }
    };

    float acc[NB][MI][NI][4];
    l4_zero(acc);
    l4_pipeline_prologue<STAGES>(KT, load_stage);
    for (int kt = 0; kt < KT; ++kt) {
        l4_pipeline_step<STAGES>(kt, KT, load_stage);
        const bf16* as = As + (kt % STAGES) * A_STAGE;
        const bf16* bs = Bs + (kt % STAGES) * NB * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4];
            l4_load_afrag<MI, A_LD>(af, as, wm * WTM, kk, lane);
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                uint32_t bfr[NI][2];
                l4_load_bfrag<true, NI, B_LD>(bfr, bs + b * B_STAGE, wn * WTN, kk, lane);  // [k][n] in shared: .trans
                l4_mma_tile(acc[b], af, bfr);
            }
        }
    }
    cp_async_wait_all();
    moe_store_tile<GATED>(C, acc, m0 + wm * WTM, n0 + wn * WTN, N, lane);
}

// ------------------------------------------------------------------------------------------ grouped GEMM (simple)
template <typename TA>
L4_DEV void gate_up_simple(const TA* __restrict__ x, const float* __restrict__ score, const int* __restrict__ sorted_slots,
                           const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets,
                           const bf16* __restrict__ wgu, TA* __restrict__ h, int k, int D, int I, int E, int bm) {
    const int j = blockIdx.x * SIMPLE + threadIdx.x;
    const int r = blockIdx.y * SIMPLE + threadIdx.y;
    if (r >= expert_offsets[E] || j >= I) return;
    const int slot = sorted_slots[r];
    TA* o = h + (long long)r * I + j;
    if (slot < 0) { *o = from_f32<TA>(0.f); return; }
    const int e = tile_expert[r / bm];
    const TA* xr = x + (long long)(slot / k) * D;
    const float sc = score[slot];
    const bf16* w = wgu + (long long)e * D * 2 * I + j;
    float g = 0.f, u = 0.f;
    for (int d = 0; d < D; ++d) {
        const float a = round_to<TA>(to_f32(xr[d]) * sc);
        g += a * bf16_to_f32(w[(long long)d * 2 * I]);
        u += a * bf16_to_f32(w[(long long)d * 2 * I + I]);
    }
    *o = from_f32<TA>(round_to<TA>(silu(round_to<TA>(g))) * round_to<TA>(u));
}

template <typename TA>
L4_DEV void down_simple(const TA* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets,
                        const bf16* __restrict__ wd, TA* __restrict__ out, int I, int D, int E, int bm) {
    const int j = blockIdx.x * SIMPLE + threadIdx.x;
    const int r = blockIdx.y * SIMPLE + threadIdx.y;
    if (r >= expert_offsets[E] || j >= D) return;
    const int e = tile_expert[r / bm];
    const TA* hr = h + (long long)r * I;
    const bf16* w = wd + (long long)e * I * D + j;
    float s = 0.f;
    for (int i = 0; i < I; ++i) s += to_f32(hr[i]) * bf16_to_f32(w[(long long)i * D]);
    out[(long long)r * D + j] = from_f32<TA>(s);
}

// ------------------------------------------------------------------------------------------ combine
template <typename TA>
L4_DEV void combine(const TA* __restrict__ out, const int* __restrict__ slot_row, const int* __restrict__ topk_idx,
                    TA* __restrict__ y, int T, int D, int k, int accumulate) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    for (long long t = blockIdx.y; t < T; t += gridDim.y) {
        const int* idx = topk_idx + t * k;
        const int* rows = slot_row + t * k;
        float s = 0.f;
        int pe = -1, ps = -1;  // the last (expert, slot) added: slots are visited in ascending (expert, slot) order
        for (int c = 0; c < k; ++c) {
            int be = 0, bs = -1;
            for (int q = 0; q < k; ++q) {
                const int eq = idx[q];
                const bool after = eq > pe || (eq == pe && q > ps);
                if (after && (bs < 0 || eq < be || (eq == be && q < bs))) { be = eq; bs = q; }
            }
            pe = be; ps = bs;
            const int row = rows[bs];
            if (row >= 0) s += to_f32(out[(long long)row * D + j]);
        }
        TA* yo = y + t * D + j;
        if (accumulate) s = round_to<TA>(s) + to_f32(*yo);  // HF: the routed sum in TA, then out.add_(…) in TA
        *yo = from_f32<TA>(s);
    }
}

}  // namespace l4_moe

extern "C" __global__ void __launch_bounds__(MOE_ROUTER_THREADS)
moe_router_logits_f32(const float* __restrict__ x, const bf16* __restrict__ wr, float* __restrict__ logits, int T, int D, int E) {
    l4_moe::router_logits<float>(x, wr, logits, T, D, E);
}
extern "C" __global__ void __launch_bounds__(MOE_ROUTER_THREADS)
moe_router_logits_bf16(const bf16* __restrict__ x, const bf16* __restrict__ wr, bf16* __restrict__ logits, int T, int D, int E) {
    l4_moe::router_logits<bf16>(x, wr, logits, T, D, E);
}
extern "C" __global__ void __launch_bounds__(32)
moe_topk_f32(const float* __restrict__ logits, int* __restrict__ topk_idx, float* __restrict__ topk_score, int T, int E, int k) {
    l4_moe::topk<float>(logits, topk_idx, topk_score, T, E, k);
}
extern "C" __global__ void __launch_bounds__(32)
moe_topk_bf16(const bf16* __restrict__ logits, int* __restrict__ topk_idx, float* __restrict__ topk_score, int T, int E, int k) {
    l4_moe::topk<bf16>(logits, topk_idx, topk_score, T, E, k);
}
extern "C" __global__ void __launch_bounds__(MOE_ALIGN_THREADS)
moe_align(const int* __restrict__ topk_idx, int* __restrict__ sorted_slots, int* __restrict__ slot_row, int* __restrict__ tile_expert, int* __restrict__ expert_offsets, int T, int k, int E, int bm, int e0) {
    l4_moe::align(topk_idx, sorted_slots, slot_row, tile_expert, expert_offsets, T, k, E, bm, e0);
}
extern "C" __global__ void __launch_bounds__(MOE_ALIGN_THREADS)
moe_route_f32(const float* __restrict__ x, const bf16* __restrict__ wr, float* __restrict__ logits, int* __restrict__ topk_idx, float* __restrict__ topk_score, int* __restrict__ sorted_slots, int* __restrict__ slot_row, int* __restrict__ tile_expert, int* __restrict__ expert_offsets, int T, int D, int E, int k, int bm, int logits_given) {
    l4_moe::route<float>(x, wr, logits, topk_idx, topk_score, sorted_slots, slot_row, tile_expert, expert_offsets, T, D, E, k, bm, logits_given);
}
extern "C" __global__ void __launch_bounds__(MOE_ALIGN_THREADS)
moe_route_bf16(const bf16* __restrict__ x, const bf16* __restrict__ wr, bf16* __restrict__ logits, int* __restrict__ topk_idx, float* __restrict__ topk_score, int* __restrict__ sorted_slots, int* __restrict__ slot_row, int* __restrict__ tile_expert, int* __restrict__ expert_offsets, int T, int D, int E, int k, int bm, int logits_given) {
    l4_moe::route<bf16>(x, wr, logits, topk_idx, topk_score, sorted_slots, slot_row, tile_expert, expert_offsets, T, D, E, k, bm, logits_given);
}
extern "C" __global__ void __launch_bounds__(l4_moe::NT)
moe_gate_up_mma_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const bf16* __restrict__ wgu, bf16* __restrict__ h, int k, int D, int I, int E) {
    l4_moe::grouped_mma<true>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, h, k, D, I, E);
}
extern "C" __global__ void __launch_bounds__(l4_moe::NT)
moe_down_mma_bf16(const bf16* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const bf16* __restrict__ wd, bf16* __restrict__ out, int I, int D, int E) {
    l4_moe::grouped_mma<false>(h, nullptr, nullptr, tile_expert, expert_offsets, wd, out, 1, I, D, E);
}
extern "C" __global__ void __launch_bounds__(l4_moe::SIMPLE * l4_moe::SIMPLE)
moe_gate_up_simple_f32(const float* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const bf16* __restrict__ wgu, float* __restrict__ h, int k, int D, int I, int E, int bm) {
    l4_moe::gate_up_simple<float>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, h, k, D, I, E, bm);
}
extern "C" __global__ void __launch_bounds__(l4_moe::SIMPLE * l4_moe::SIMPLE)
moe_gate_up_simple_bf16(const bf16* __restrict__ x, const float* __restrict__ topk_score, const int* __restrict__ sorted_slots, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const bf16* __restrict__ wgu, bf16* __restrict__ h, int k, int D, int I, int E, int bm) {
    l4_moe::gate_up_simple<bf16>(x, topk_score, sorted_slots, tile_expert, expert_offsets, wgu, h, k, D, I, E, bm);
}
extern "C" __global__ void __launch_bounds__(l4_moe::SIMPLE * l4_moe::SIMPLE)
moe_down_simple_f32(const float* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const bf16* __restrict__ wd, float* __restrict__ out, int I, int D, int E, int bm) {
    l4_moe::down_simple<float>(h, tile_expert, expert_offsets, wd, out, I, D, E, bm);
}
extern "C" __global__ void __launch_bounds__(l4_moe::SIMPLE * l4_moe::SIMPLE)
moe_down_simple_bf16(const bf16* __restrict__ h, const int* __restrict__ tile_expert, const int* __restrict__ expert_offsets, const bf16* __restrict__ wd, bf16* __restrict__ out, int I, int D, int E, int bm) {
    l4_moe::down_simple<bf16>(h, tile_expert, expert_offsets, wd, out, I, D, E, bm);
}
extern "C" __global__ void __launch_bounds__(MOE_COMBINE_THREADS)
moe_combine_f32(const float* __restrict__ out, const int* __restrict__ slot_row, const int* __restrict__ topk_idx, float* __restrict__ y, int T, int D, int k, int accumulate) {
    l4_moe::combine<float>(out, slot_row, topk_idx, y, T, D, k, accumulate);
}
extern "C" __global__ void __launch_bounds__(MOE_COMBINE_THREADS)
moe_combine_bf16(const bf16* __restrict__ out, const int* __restrict__ slot_row, const int* __restrict__ topk_idx, bf16* __restrict__ y, int T, int D, int k, int accumulate) {
    l4_moe::combine<bf16>(out, slot_row, topk_idx, y, T, D, k, accumulate);
}
