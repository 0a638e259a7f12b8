// attention_mma.cuh — the tensor-core (mma.sync) prefill tile of attention.cu's attn_fwd_mma_bf16 (contiguous K/V) and
// paged_attention.cu's paged_attn_mma_bf16 (K/V in pages found through a block table): one block = MBQ = 64 query rows
// of one (sequence, head) against the keys [lo, hi) of its kv head. The two kernels differ only in WHERE key slot j
// lives (`krow(j)`: its element offset from the head's base — a strided run, or page_row(...)·d) and in how they find
// the block's rows and key window; everything else (Q staging, cp.async K/V tiles, ldmatrix, the masks by absolute
// position kp0 + j, the online softmax, P·V, the store) is here once. Include after attention_common.cuh.

#pragma once
#include "attention_common.cuh"

namespace l4_attn {
namespace {

// FlashAttention-2 on mma.sync.m16n8k16 (bf16 in, fp32 accumulate). 4 warps; warp w owns query rows
// 16w..16w+15 of the block's MBQ = 64. Q is staged once through shared memory and kept as A fragments in
// registers; per key tile: S = Q·Kᵀ (K rows via ldmatrix, non-transposed), mask + online softmax on the
// C fragments (each row lives in the 4 lanes of a quad: 2 xor-shuffles), P repacked to bf16 A fragments
// straight from the registers (the C layout of two n8 blocks IS the A layout of one k16 step), O += P·V
// (V rows via ldmatrix.trans). Shared rows are padded by 8 bf16 (16 bytes): conflict-free ldmatrix.
constexpr int MBQ = 64, MBK = (D <= 128 ? 64 : 32), MNT = 128, SP = D + 8;
static_assert(MBQ <= 2 * MBK, "Q staging reuses the K and V tiles");

L4_DEV uint4 ld16_or_gather(const bf16* p, int valid) {  // 8 bf16 at p; zeros when !valid
    if (!valid) return make_uint4(0u, 0u, 0u, 0u);
    if (aligned16(p)) return vload<uint4>(p);
    const uint16_t* e = reinterpret_cast<const uint16_t*>(p);
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = (uint32_t)e[2 * i] | ((uint32_t)e[2 * i + 1] << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// mma_tiles: rows r0 .. min(r0 + MBQ, nq) − 1 of the sequence whose rows start at qs of the packed Q/O [*, H, d] (query
// row r at position qp0 + r), head h, against key slots [lo, hi) (slot j at position kp0 + j; K row at Kh + krow(j),
// V at Vh + krow(j)); d % 16 == 0, block = MNT threads, Q and O 16-byte aligned.
template <class KRow>
L4_DEV void mma_tiles(const bf16* Q, const bf16* Kh, const bf16* Vh, bf16* O, KRow krow, int qs, int nq, int r0, int h,
                      int H, int qp0, int kp0, int lo, int hi, int chunk, float scale) {
    __shared__ __align__(16) uint16_t sm[2 * MBK * SP];
    uint16_t* Ks = sm;
    uint16_t* Vs = sm + MBK * SP;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const float sl2 = scale * LOG2E;

    for (int idx = tid; idx < MBQ * (D / 8); idx += MNT) {
        const int i = idx / (D / 8), c = idx % (D / 8);
        vstore(sm + i * SP + c * 8,
            ld16_or_gather(Q + ((long long)(qs + r0 + min(i, nq - r0 - 1)) * H + h) * D + c * 8, r0 + i < nq));
    }
    __syncthreads();
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
        ldmatrix_x4(qf[ks], sm + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * SP + ks * 16 + (lane >> 4) * 8);

    float o[D / 8][4];
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;
    float mrow[2] = {neg_inf(), neg_inf()}, lrow[2] = {0.f, 0.f};
    const int ra = r0 + warp * 16 + g;        // this lane's rows: ra and ra + 8 (rows past nq mirror the last row's
    const int qpa = qp0 + min(ra, nq - 1), qpb = qp0 + min(ra + 8, nq - 1);  // position: no int overflow near 2^31)

    // K/V tile loader: 16-byte cp.async where the global address is aligned (zero-filled past the last key),
    // else a synchronous gather; one commit group per call.
    auto load_tile = [&](uint16_t* dst, const bf16* src, int jt0, int nt) {
        for (int idx = tid; idx < MBK * (D / 8); idx += MNT) {
            const int j = idx / (D / 8), c = idx % (D / 8);
            const bf16* gp = src + krow(jt0 + min(j, nt - 1)) + c * 8;
            uint16_t* sp = dst + j * SP + c * 8;
            if (aligned16(gp)) cp_async_16_zfill(sp, gp, j < nt ? 16 : 0);
            else vstore(sp, ld16_or_gather(gp, j < nt));  // zeros past the end: 0·V, never NaN
        }
        cp_async_commit();
    };
    __syncthreads();  // every warp holds its Q fragments: the staging area becomes the K/V tiles
    if (lo < hi) load_tile(Ks, Kh, lo, min(MBK, hi - lo));
    // Pipeline (single buffers): V(j) streams in during S = Q·K(j) and the softmax; K(j+1) during O += P·V(j).
    const int ntiles = (int)(((long long)hi - lo + MBK - 1) / MBK);  // counted: j0 + MBK may pass 2^31 − 1
    for (int it = 0; it < ntiles; ++it) {
        const int j0 = lo + it * MBK, n = min(MBK, hi - j0);
        cp_async_wait_all();  // this thread's copies of K(j0) landed
        __syncthreads();      // everyone's did; every warp finished P·V of the previous tile, so Vs is free
        load_tile(Vs, Vh, j0, n);
        float s[MBK / 8][4];
#pragma unroll
        for (int nb = 0; nb < MBK / 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks)
#pragma unroll
            for (int nb2 = 0; nb2 < MBK / 16; ++nb2) {
                uint32_t kb[4];
                ldmatrix_x4(kb, Ks + (nb2 * 16 + (lane >> 4) * 8 + (lane & 7)) * SP + ks * 16 + ((lane >> 3) & 1) * 8);
                mma_m16n8k16_bf16_f32(s[2 * nb2], qf[ks], kb, s[2 * nb2]);
                mma_m16n8k16_bf16_f32(s[2 * nb2 + 1], qf[ks], kb + 2, s[2 * nb2 + 1]);
            }
        float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
        for (int nb = 0; nb < MBK / 8; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = nb * 8 + 2 * t + (e & 1);
                const float v = (j < n && visible(e < 2 ? qpa : qpb, kp0 + j0 + j, chunk)) ? s[nb][e] * sl2 : neg_inf();
                s[nb][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            alpha[r] = mx[r] == neg_inf() ? 1.f : exp2f(mrow[r] - mx[r]);
            mrow[r] = mx[r];
            lrow[r] *= alpha[r];
        }
#pragma unroll
        for (int nd = 0; nd < D / 8; ++nd) {
            o[nd][0] *= alpha[0]; o[nd][1] *= alpha[0];
            o[nd][2] *= alpha[1]; o[nd][3] *= alpha[1];
        }
        cp_async_wait_all();  // V(j0) landed
        __syncthreads();      // for everyone; every warp finished reading K(j0), so Ks is free
        if (it + 1 < ntiles) load_tile(Ks, Kh, j0 + MBK, min(MBK, hi - j0 - MBK));
        uint32_t pa[MBK / 16][4];
#pragma unroll
        for (int nb = 0; nb < MBK / 8; ++nb) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                p[e] = mx[e >> 1] == neg_inf() ? 0.f : exp2f(s[nb][e] - mx[e >> 1]);
                lrow[e >> 1] += p[e];
            }
            pa[nb >> 1][(nb & 1) * 2] = pack_bf16x2(p[0], p[1]);      // rows g:   keys 2t, 2t+1 (+8 for odd nb)
            pa[nb >> 1][(nb & 1) * 2 + 1] = pack_bf16x2(p[2], p[3]);  // rows g+8
        }
#pragma unroll
        for (int kk = 0; kk < MBK / 16; ++kk)
#pragma unroll
            for (int nd2 = 0; nd2 < D / 16; ++nd2) {
                uint32_t vb[4];
                ldmatrix_x4_trans(vb, Vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * SP + nd2 * 16 + (lane >> 4) * 8);
                mma_m16n8k16_bf16_f32(o[2 * nd2], pa[kk], vb, o[2 * nd2]);
                mma_m16n8k16_bf16_f32(o[2 * nd2 + 1], pa[kk], vb + 2, o[2 * nd2 + 1]);
            }
    }
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        inv[r] = l > 0.f ? 1.f / l : 0.f;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = ra + 8 * r;
        if (row >= nq) continue;
        uint32_t* orow = reinterpret_cast<uint32_t*>(O + ((long long)(qs + row) * H + h) * D);
#pragma unroll
        for (int nd = 0; nd < D / 8; ++nd) vstore(orow + nd * 4 + t, pack_bf16x2(o[nd][2 * r] * inv[r], o[nd][2 * r + 1] * inv[r]));
    }
}

}  // namespace
}  // namespace l4_attn
