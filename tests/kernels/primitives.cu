// tests/kernels/primitives.cu — one test kernel per primitive of kernels/common.cuh and the emulated
// device. Checked on the CPU by tests/emu/selftest.cpp (expected values computed there in plain C++);
// compiled by NVRTC for sm_80 / sm_90a by tests/emu/nvrtc_check.py.
#include "common.cuh"

#define FULL 0xffffffffu

// Shuffles of each kind and width (out: 12 ints per thread).
extern "C" __global__ void t_shfl(int* out) {
    const int tid = threadIdx.x, lane = tid & 31;
    const int v = tid * 1000 + 7;
    int* o = out + tid * 12;
    o[0] = __shfl_sync(FULL, v, (lane * 7 + 3) & 31);
    o[1] = __shfl_sync(FULL, v, lane + 5, 8);
    o[2] = __shfl_sync(FULL, v, -3, 16);
    o[3] = __shfl_xor_sync(FULL, v, 1);
    o[4] = __shfl_xor_sync(FULL, v, 13, 8);
    o[5] = __shfl_up_sync(FULL, v, 3, 16);
    o[6] = __shfl_down_sync(FULL, v, 5, 16);
    o[7] = __shfl_up_sync(FULL, v, 1);
    o[8] = __shfl_down_sync(FULL, v, 31);
    o[9] = __float_as_int(__shfl_xor_sync(FULL, (float)v * 0.5f, 4));
    o[10] = (int)__shfl_down_sync(FULL, (unsigned)v, 2, 4);
    o[11] = (int)(__shfl_sync(FULL, (long long)v << 20, 31 - lane) >> 20);
}

// Votes and block-wide predicates (out: 9 unsigned per thread); 96 threads = 3 warps.
extern "C" __global__ void t_vote(unsigned* out) {
    const int tid = threadIdx.x, lane = tid & 31;
    const int pred = tid % 3 == 0;
    unsigned* o = out + tid * 9;
    o[0] = __ballot_sync(FULL, pred);
    o[1] = __any_sync(FULL, tid % 64 == 5);
    o[2] = __all_sync(FULL, lane < 32);
    o[3] = __all_sync(FULL, pred);
    o[4] = __activemask();
    o[5] = __syncthreads_count(pred);
    o[6] = __syncthreads_and(tid < 1000);
    o[7] = __syncthreads_or(tid == 95);
    o[8] = 0;
    if (lane < 16) o[8] = __ballot_sync(0x0000ffffu, lane & 1);  // a partial mask
    __syncwarp();
}

// Rotating values through static shared memory with __syncthreads (1024 threads).
extern "C" __global__ void t_sync1024(int* out, int rounds) {
    __shared__ int s[1024];
    const int tid = threadIdx.x, n = blockDim.x;
    int val = tid;
    for (int r = 0; r < rounds; ++r) {
        s[tid] = val;
        __syncthreads();
        val = s[(tid + 1 + r) % n] + 1;
        __syncthreads();
    }
    out[tid] = val;
}

// block_sum / block_max: out[2b], out[2b+1] from thread 0; bad[0] counts threads that disagree.
extern "C" __global__ void t_block_reduce(const float* in, float* out, int* bad) {
    const float x = in[blockIdx.x * blockDim.x + threadIdx.x];
    const float s = block_sum(x);
    const float m = block_max(x);
    if (threadIdx.x == 0) { out[2 * blockIdx.x] = s; out[2 * blockIdx.x + 1] = m; }
    __syncthreads();
    if (s != out[2 * blockIdx.x] || m != out[2 * blockIdx.x + 1]) atomicAdd(bad, 1);
}

// Dynamic shared memory next to static shared memory: reverse in[0..n) through both.
extern "C" __global__ void t_dyn_smem(const float* in, float* out, int n) {
    L4_DYNAMIC_SHARED(float, dyn);
    __shared__ float stat[64];
    const int tid = threadIdx.x;
    dyn[tid] = in[tid];
    if (tid < 64) stat[tid] = -in[tid];
    __syncthreads();
    out[tid] = dyn[n - 1 - tid] + (tid < 64 ? stat[63 - tid] : 0.0f);
}

// Atomics under contention: ints[0] add, [1] max, [2] min, [3] or, [4] and, [5] CAS-loop add,
// [6] exch, [7] sub; f[0] float add; u[0] unsigned long long add.
extern "C" __global__ void t_atomics(int* ints, float* f, unsigned long long* u) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&ints[0], 1);
    atomicMax(&ints[1], g);
    atomicMin(&ints[2], -g);
    atomicOr((unsigned*)&ints[3], 1u << (g % 32));
    atomicAnd((unsigned*)&ints[4], ~(1u << (g % 16)));
    int old = ints[5], seen;
    while ((seen = atomicCAS(&ints[5], old, old + 1)) != old) old = seen;
    atomicExch(&ints[6], g);
    atomicSub(&ints[7], 2);
    atomicAdd(&f[0], 0.5f);
    atomicAdd(&u[0], 1ull << 33);
}

// bf16: scalar conversion, pack (lo = in[i], hi = in[n-1-i]) and unpack.
extern "C" __global__ void t_bf16(const float* in, uint16_t* out1, uint32_t* out2, float* back, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out1[i] = f32_to_bf16(in[i]).bits;
    out2[i] = pack_bf16x2(in[i], in[n - 1 - i]);
    const float2 u = unpack_bf16x2(out2[i]);
    back[2 * i] = u.x;
    back[2 * i + 1] = u.y;
    bf16 h; h.bits = out1[i];
    if (bf16_to_f32(h) != u.x && u.x == u.x) back[2 * i] = 12345.0f;  // scalar and packed must agree
}

// fp8 e4m3: q[i] scalar, q2[i] pair (lo = in[i], hi = in[(i+1)%n]); dec[c] = value of code c (c < 256),
// dec2[2i..2i+1] = decoded q2[i].
extern "C" __global__ void t_fp8(const float* in, uint8_t* q, uint16_t* q2, float* dec, float* dec2, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < 256) dec[i] = e4m3_to_f32((uint8_t)i);
    if (i >= n) return;
    q[i] = f32_to_e4m3(in[i]);
    q2[i] = f32x2_to_e4m3x2(in[i], in[(i + 1) % n]);
    const float2 d = e4m3x2_to_f32x2(q2[i]);
    dec2[2 * i] = d.x;
    dec2[2 * i + 1] = d.y;
}

// One 16x8x16 bf16 mma fed by ldmatrix, two ways (32 threads):
//  D1: A row-major via ldmatrix_x4,          B as [k][n] via ldmatrix_x2_trans
//  D2: A stored transposed via ldmatrix_x4_trans, B as [n][k] via ldmatrix_x2
extern "C" __global__ void t_mma(const uint16_t* A, const uint16_t* B, const float* C, float* D1, float* D2) {
    __shared__ __align__(16) uint16_t sA[16 * 16], sAt[16 * 16], sB[16 * 8], sBt[8 * 16];
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    for (int i = lane; i < 256; i += 32) { sA[i] = A[i]; sAt[(i % 16) * 16 + i / 16] = A[i]; }
    for (int i = lane; i < 128; i += 32) { sB[i] = B[i]; sBt[(i % 8) * 16 + i / 8] = B[i]; }
    __syncthreads();
    float c[4], d[4];
    for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    uint32_t a[4], b[2];
    const int l16 = lane & 15;
    ldmatrix_x4(a, &sA[((lane & 7) + 8 * ((lane >> 3) & 1)) * 16 + 8 * (lane >> 4)]);
    ldmatrix_x2_trans(b, &sB[l16 * 8]);
    mma_m16n8k16_bf16_f32(d, a, b, c);
    for (int i = 0; i < 4; ++i) D1[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
    ldmatrix_x4_trans(a, &sAt[((lane & 7) + 8 * (lane >> 4)) * 16 + 8 * ((lane >> 3) & 1)]);
    ldmatrix_x2(b, &sBt[(l16 & 7) * 16 + 8 * (l16 >> 3)]);
    mma_m16n8k16_bf16_f32(c, a, b, c);  // d aliasing c is allowed
    for (int i = 0; i < 4; ++i) D2[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = c[i];
}

// One 16x8x32 e4m3 mma fed by ldmatrix as the FP8 GEMMs feed it (32 threads): A [16][32] bytes via ldmatrix_x4, B
// stored [n][k] ([8][32] bytes) via ldmatrix_x2; D1 = mma_m16n8k32_e4m3_f32 (hardware on sm_89+, the twin here),
// D2 = mma_m16n8k32_e4m3_via_bf16 (the sm_80 path), D3 = D1 fed again as C with d aliasing c.
extern "C" __global__ void t_mma_fp8(const uint8_t* A, const uint8_t* B, const float* C, float* D1, float* D2, float* D3) {
    __shared__ __align__(16) uint8_t sA[16 * 32], sB[8 * 32];
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    for (int i = lane; i < 512; i += 32) sA[i] = A[i];
    for (int i = lane; i < 256; i += 32) sB[i] = B[i];
    __syncthreads();
    float c[4], d[4];
    for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    uint32_t a[4], b[2];
    ldmatrix_x4(a, &sA[((lane & 7) + 8 * ((lane >> 3) & 1)) * 32 + 16 * (lane >> 4)]);
    ldmatrix_x2(b, &sB[(lane & 7) * 32 + 16 * ((lane >> 3) & 1)]);
    mma_m16n8k32_e4m3_f32(d, a, b, c);
    for (int i = 0; i < 4; ++i) D1[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
    mma_m16n8k32_e4m3_via_bf16(d, a, b, c);
    for (int i = 0; i < 4; ++i) D2[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
    mma_m16n8k32_e4m3_f32(c, a, b, c);
    mma_m16n8k32_e4m3_f32(c, a, b, c);
    for (int i = 0; i < 4; ++i) D3[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = c[i];
}

// cp.async: even threads copy 16 bytes, odd threads copy nbytes[i] and zero-fill the rest.
extern "C" __global__ void t_cp_async(const uint4* g, uint4* out, const int* nbytes) {
    __shared__ __align__(16) uint4 s[64];
    const int i = threadIdx.x;
    s[i] = make_uint4(0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu);
    __syncthreads();
    if (i % 2 == 0) cp_async_16(&s[i], &g[i]);
    cp_async_commit();
    if (i % 2 == 1) cp_async_16_zfill(&s[i], &g[i], nbytes[i]);
    cp_async_commit();
    cp_async_wait<1>();
    cp_async_wait_all();
    __syncthreads();
    out[i] = s[i];
}

// cp.async ordering: what a thread sees in shared memory at each step, out[5 * i + step]:
//   0: A read before any wait (stale on the GPU and under deferred cp.async), 1: A after wait_group 1,
//   2: B after wait_group 1 (its group is the most recent one: may still be in flight), 3: C after
//   wait_group 0 (never committed: not waited for), 4: C after wait_all. Stale reads see 0xdeadbeef.
extern "C" __global__ void t_cp_async_order(const uint4* g, uint4* out) {
    __shared__ __align__(16) uint4 a[32], b[32], c[32];
    const int i = threadIdx.x;
    const uint4 stale = make_uint4(0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu);
    a[i] = stale; b[i] = stale; c[i] = stale;
    cp_async_16(&a[i], &g[3 * i]);
    cp_async_commit();
    out[5 * i + 0] = a[i];  // wrong on purpose: read before the wait
    cp_async_16(&b[i], &g[3 * i + 1]);
    cp_async_commit();
    cp_async_wait<1>();
    out[5 * i + 1] = a[i];
    out[5 * i + 2] = b[i];
    cp_async_16(&c[i], &g[3 * i + 2]);
    cp_async_wait<0>();
    out[5 * i + 3] = c[i];
    cp_async_wait_all();
    out[5 * i + 4] = c[i];
}

// Misaligned vector accesses (fault on the GPU): thread 3 is off by `off` bytes; mode 0 float4 load,
// 1 float2 store, 2 cp.async.
extern "C" __global__ void bad_misaligned(const float* in, float* out, int off, int mode) {
    __shared__ __align__(16) float s[32 * 4];
    const int i = threadIdx.x;
    const int o = i == 3 ? off : 0;
    const char* src = reinterpret_cast<const char*>(in + 4 * i) + o;
    if (mode == 0) vstore(out + 4 * i, vload<float4>(src));
    else if (mode == 1) vstore(reinterpret_cast<char*>(out + 4 * i) + o, make_float2(1.f, 2.f));
    else { cp_async_16(reinterpret_cast<char*>(&s[4 * i]) + o, in + 4 * i); cp_async_wait_all(); }
}

// Thread/block indices in 3-D grids and blocks: out[global linear thread] = packed ids.
extern "C" __global__ void __launch_bounds__(64) t_index(uint32_t* out) {
    const uint32_t bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const uint32_t tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    out[bl * (blockDim.x * blockDim.y * blockDim.z) + tl] =
        threadIdx.x | threadIdx.y << 4 | threadIdx.z << 8 | blockIdx.x << 12 | blockIdx.y << 16 | blockIdx.z << 20;
}

// ---- misuse: the emulator must report these (they hang or corrupt on the GPU); never launched there.
extern "C" __global__ void bad_sync_exit(float* out) {
    if (threadIdx.x >= 32) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void bad_shfl_partial(int* out) {
    int v = threadIdx.x;
    if ((threadIdx.x & 31) < 16) v = __shfl_xor_sync(FULL, v, 1);
    out[threadIdx.x] = v;
}
extern "C" __global__ void bad_sync_vs_shfl(int* out) {
    int v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_sync(FULL, v, 0);
    __syncthreads();
    out[threadIdx.x] = v;
}
extern "C" __global__ void bad_divergent_collectives(int* out) {
    int v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_sync(FULL, v, 0);
    else v = (int)__ballot_sync(FULL, 1);
    out[threadIdx.x] = v;
}
extern "C" __global__ void bad_trap(int* out) {
    if (threadIdx.x == 5) __trap();
    out[threadIdx.x] = 1;
}

// ---- timing
extern "C" __global__ void bench_sync(int iters, int* out) {
    for (int i = 0; i < iters; ++i) __syncthreads();
    out[threadIdx.x] = iters;
}
extern "C" __global__ void bench_warp_sum(int iters, float* out) {
    float v = (float)threadIdx.x;
    for (int i = 0; i < iters; ++i) v = warp_sum(v) * (1.0f / 32.0f);
    out[threadIdx.x] = v;
}
