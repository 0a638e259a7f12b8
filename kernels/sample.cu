// sample.cu — next-token sampling on the device: logits [B, V] f32 -> token ids [B] int32, so generation
// never copies logits to the host.
//
// Why it looks like this: one block per row (B is small at decode; V is up to 202,048). Every filter of
// the pipeline penalties -> temperature -> top-k -> top-p -> min-p keeps a *prefix of the tokens sorted by
// their adjusted logit z*, so the whole pipeline reduces to ONE threshold T on z (keep z >= T): top-k's T is
// the k-th largest z, top-p's is the largest value whose kept mass (among top-k survivors) is >= p of their
// mass, min-p's is m + log(min_p). Thresholds are found by binary search over the 32-bit order-preserving
// key of z with block-wide counts (top-k, exact in f32 as V < 2^24) or block-wide sums of exp(z - m)
// (top-p): no sort, no workspace, no shared arrays. z is recomputed from logits (+ counts) on each pass
// instead of being stored (elementwise, L2-resident: a row is 0.8 MB). Cost per row: 2 passes (max, draw)
// + up to 32 passes for top-k + up to 32 for top-p, each V / SAMPLE_THREADS elements per thread:
// O(V · (2 + 32·[top_k active] + 32·[top_p active]) / threads). (A 4-pass 8-bit radix select would cut
// the searches to 8 passes; left for later.) The draw is an exponential race (= Gumbel-max): token i gets
// u_i from Philox-4x32-10 keyed by the 64-bit seed (seed, seed_hi) with counter (i/4, row, step, 0) (word i%4), and the kernel
// picks argmax over kept i of (z_i - m) - log(-log u_i), ties -> lowest id. That samples exactly
// softmax(z) restricted to the kept set, needs only an argmax reduction (no prefix scan), and the C#
// reference (Reference/Sample.cs) computes the same integers bit for bit, so it picks the same token except
// where two scores differ by float rounding. Greedy (temperature <= 0): argmax of the penalised logits,
// ties -> lowest id. Penalties (HF/vLLM): for count c > 0 of the token in the row's history,
// x = x > 0 ? x / rep : x * rep; then x = x - freq·c - pres·[c > 0] (fmaf, so GPU and emulator round
// alike); z = x / temperature (IEEE division). All float steps up to z are exact-rounded and identical in
// the reference; only exp/log/sums differ (they decide boundaries, not the common case).
//
// | kernel     | parameters                                                                   | launch |
// |------------|------------------------------------------------------------------------------|--------|
// | sample_f32 | const float* logits [B, V], const l4_sample_params* params [B] (36 bytes each, below), int* counts [B, V] or null (token history counts; null = no penalties), int* step [B] (Philox counter word), int* ids [B] (out), float* prob [B] (out, or null: the chosen token's probability after filtering; 1 for greedy), int B, int V, int update (1: after choosing, counts[row, id] += 1 (if counts) and step[row] += 1) | grid = B, block = SAMPLE_THREADS, shared = 0 (static ~0.3 KB) |
// | sample_slots_f32 | as sample_f32, but the sampler state is per SEQUENCE, not per row: params [S], counts [S, V] or null, step [S], and const int* slot [B] (distinct, in [0, S)) says whose state row b uses; ids/prob stay [B]. Each row draws with Philox row word 0, so a sequence's stream is (seed, step) alone — what a lone sampler's row 0 draws — whatever its row in the batch or its slot | grid = B, block = SAMPLE_THREADS, shared = 0 |
//
// Why sample_slots_f32: a batched serving step (Serving/BatchedStepEngine) samples its B sequences' rows in ONE
// launch with each sequence's settings, seed, step and penalty counts kept in device buffers indexed by slot;
// the row's result is bit for bit what sample_f32 gives for that state as row 0 of its own launch.
//
// l4_sample_params (9 × 4 bytes, in this order): float temperature (<= 0: greedy), int top_k (<= 0 or >= V:
// off), float top_p (>= 1: off), float min_p (<= 0: off), float repetition (1: off), float frequency,
// float presence, unsigned seed, unsigned seed_hi (the seed's low and high 32 bits: the whole 64-bit seed is
// the Philox key, so no two seeds share a stream; seed_hi = 0 keeps the draws of 32-bit seeds as before).
// Compile-time parameters: SAMPLE_THREADS (default 512, a multiple of 32, <= 1024).

#include "common.cuh"

#ifndef SAMPLE_THREADS
#define SAMPLE_THREADS 512
#endif

struct l4_sample_params {
    float temperature;
    int top_k;
    float top_p, min_p, repetition, frequency, presence;
    unsigned seed, seed_hi;
};

namespace l4_sample {

// Philox-4x32-10 (Salmon et al. 2011), the Random123 / curand constants.
L4_DEV uint4 philox(uint4 c, uint2 k) {
    for (int r = 0; r < 10; ++r) {
        const unsigned lo0 = 0xD2511F53u * c.x, hi0 = (unsigned)((0xD2511F53ull * c.x) >> 32);
        const unsigned lo1 = 0xCD9E8D57u * c.z, hi1 = (unsigned)((0xCD9E8D57ull * c.z) >> 32);
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k.x += 0x9E3779B9u;
        k.y += 0xBB67AE85u;
    }
    return c;
}
// 24 random bits -> u in (0, 1), exactly representable: (r >> 8) · 2^-24 + 2^-25.
L4_DEV float uniform(unsigned r) { return (float)(r >> 8) * 5.9604644775390625e-8f + 2.98023223876953125e-8f; }
// Order-preserving map float -> unsigned (for NaN-free values).
L4_DEV unsigned key(float f) {
    const unsigned b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Penalised logit (and / temperature unless greedy).
L4_DEV float adjust(float x, int c, const l4_sample_params& p) {
    if (c > 0) {
        x = x > 0.f ? x / p.repetition : x * p.repetition;
        x = fmaf(-p.frequency, (float)c, x);
        x = x - p.presence;
    }
    return x;
}

// (value, index) argmax across the block, ties -> lowest index; every thread gets the result.
L4_DEV void better(float& v, int& i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}
L4_DEV void block_argmax(float& v, int& i) {
    __shared__ float sv[32];
    __shared__ int si[32];
    for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    v = lane < nwarps ? sv[lane] : __uint_as_float(0xff800000u);
    i = lane < nwarps ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
}

__device__ __forceinline__ void sample(const float* __restrict__ logits, const l4_sample_params* __restrict__ params,
                                       int* counts, int* step, int* __restrict__ ids, float* __restrict__ prob,
                                       int B, int V, int update, const int* __restrict__ slots) {
    const int row = blockIdx.x, tid = threadIdx.x;
    if (row >= B) return;
    // State row (params, counts, step) and the Philox row word: the row itself, or the row's slot and word 0.
    const int srow = slots ? slots[row] : row;
    const unsigned rng_row = slots ? 0u : (unsigned)row;
    const l4_sample_params p = params[srow];
    const float* lr = logits + (long long)row * V;
    int* crw = counts ? counts + (long long)srow * V : nullptr;
    const int* cr = crw;
    const bool greedy = !(p.temperature > 0.f);
    auto z = [&](int i) {
        float x = adjust(lr[i], cr ? cr[i] : 0, p);
        return greedy ? x : x / p.temperature;
    };
    const float NEG_INF = __uint_as_float(0xff800000u);

    int chosen;
    float chosen_prob = 1.f;
    if (greedy) {
        float bv = NEG_INF; int bi = 0x7fffffff;
        for (int i = tid; i < V; i += SAMPLE_THREADS) better(bv, bi, z(i), i);
        block_argmax(bv, bi);
        chosen = bi;
    } else {
        float m = NEG_INF;
        for (int i = tid; i < V; i += SAMPLE_THREADS) m = fmaxf(m, z(i));
        m = block_max(m);
        // lo: the threshold key; invariant: the condition holds at lo.
        unsigned lo = 0u;
        const unsigned hi_max = key(m);
        if (p.top_k > 0 && p.top_k < V) {  // largest T with count(key >= T) >= k
            unsigned hi = hi_max;
            while (lo < hi) {
                const unsigned mid = lo + (unsigned)(((unsigned long long)hi - lo + 1ull) >> 1);
                float n = 0.f;
                for (int i = tid; i < V; i += SAMPLE_THREADS) n += key(z(i)) >= mid ? 1.f : 0.f;
                if (block_sum(n) >= (float)p.top_k) lo = mid; else hi = mid - 1u;
            }
        }
        if (p.top_p < 1.f) {  // largest T >= lo with mass(key >= T) >= top_p · mass(key >= lo)
            float tot = 0.f;
            for (int i = tid; i < V; i += SAMPLE_THREADS) { const float v = z(i); if (key(v) >= lo) tot += expf(v - m); }
            const float target = p.top_p * block_sum(tot);
            unsigned hi = hi_max;
            while (lo < hi) {
                const unsigned mid = lo + (unsigned)(((unsigned long long)hi - lo + 1ull) >> 1);
                float s = 0.f;
                for (int i = tid; i < V; i += SAMPLE_THREADS) { const float v = z(i); if (key(v) >= mid) s += expf(v - m); }
                if (block_sum(s) >= target) lo = mid; else hi = mid - 1u;
            }
        }
        const float logmin = p.min_p > 0.f ? logf(p.min_p) : NEG_INF;
        // The race: groups of 4 tokens share one Philox call.
        const uint2 k = make_uint2(p.seed, p.seed_hi);
        const unsigned st = (unsigned)step[srow];
        float bv = NEG_INF, mass = 0.f; int bi = 0x7fffffff;
        for (int g = tid; g < (V + 3) / 4; g += SAMPLE_THREADS) {
            const uint4 r = philox(make_uint4((unsigned)g, rng_row, st, 0u), k);
            const unsigned rr[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = g * 4 + e;
                if (i >= V) break;
                const float v = z(i), d = v - m;
                if (key(v) < lo || !(d >= logmin)) continue;
                mass += expf(d);
                better(bv, bi, d - logf(-logf(uniform(rr[e]))), i);
            }
        }
        mass = block_sum(mass);
        block_argmax(bv, bi);
        chosen = bi;
        if (prob && tid == 0) chosen_prob = expf(z(chosen) - m) / mass;
    }
    if (tid == 0) {
        ids[row] = chosen;
        if (prob) prob[row] = chosen_prob;
        if (update) {
            if (crw) crw[chosen] += 1;
            step[srow] += 1;
        }
    }
}

}  // namespace l4_sample

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_f32(const float* __restrict__ logits, const l4_sample_params* __restrict__ params, int* counts, int* step, int* __restrict__ ids, float* __restrict__ prob, int B, int V, int update) { l4_sample::sample(logits, params, counts, step, ids, prob, B, V, update, nullptr); }
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_slots_f32(const float* __restrict__ logits, const l4_sample_params* __restrict__ params, int* counts, int* step, const int* __restrict__ slot, int* __restrict__ ids, float* __restrict__ prob, int B, int V, int update) { l4_sample::sample(logits, params, counts, step, ids, prob, B, V, update, slot); }
