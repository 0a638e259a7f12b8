// tests/emu/selftest.cpp — checks the emulated device and common.cuh through the same C ABI the C#
// side binds: dlopen the primitives module, l4emu_get_function, l4emu_launch with cuLaunchKernel-style
// void** args. Expected values are computed here in plain C++, independently of the emulator code
// (shuffle rules from the CUDA guide, bf16/e4m3 rounding by comparing neighbouring representable values).
// Usage: selftest <path/to/libprimitives.so> [uc]  (uc: only the ucontext pass, e.g. under ASan). Last line: "N passed, N failed"; exit code 1 on failure.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
int l4emu_launch(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                 unsigned dyn_shared_bytes, void** args);
const char* l4emu_last_error(void);
void l4emu_set_threads(int n);
void l4emu_set_ucontext(int on);
void l4emu_set_cp_async(int mode);
const char* l4emu_version(void);
}

static int g_pass = 0, g_fail = 0;
static std::string g_suffix;
static void check(bool ok, const std::string& name, const std::string& detail = "") {
    (ok ? g_pass : g_fail)++;
    printf("%s %s%s%s%s\n", ok ? "ok  " : "FAIL", name.c_str(), g_suffix.c_str(), detail.empty() ? "" : ": ", detail.c_str());
}

static void* g_mod = nullptr;
static void* fn(const char* name) {
    using Get = void* (*)(const char*);
    static Get get = reinterpret_cast<Get>(dlsym(g_mod, "l4emu_get_function"));
    return get(name);
}
struct G { unsigned x = 1, y = 1, z = 1; };
template <class... A> static int launch(const char* k, G g, G b, unsigned shm, A... args) {
    void* p[] = {static_cast<void*>(&args)...};
    return l4emu_launch(fn(k), g.x, g.y, g.z, b.x, b.y, b.z, shm, p);
}
static bool launch_ok(const char* k, int rc) {
    if (rc != 0) check(false, k, std::string("launch failed: ") + l4emu_last_error());
    return rc == 0;
}
template <class T> static uint32_t bits32(T v) { uint32_t u; std::memcpy(&u, &v, 4); return u; }
static float f_of(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// ---------------------------------------------------------------- shuffles (CUDA guide semantics)
static void test_shfl() {
    const int n = 64;
    std::vector<int> out(n * 12, -1);
    if (!launch_ok("t_shfl", launch("t_shfl", G{1}, G{n}, 0, out.data()))) return;
    int bad = 0;
    std::string first;
    for (int tid = 0; tid < n; ++tid) {
        const int lane = tid & 31, w0 = tid & ~31;
        auto v = [&](int l) { return (w0 + l) * 1000 + 7; };
        auto idx = [&](int src, int width) { return v((lane & ~(width - 1)) + (src & (width - 1))); };
        auto up = [&](int d, int width) { return (lane & (width - 1)) < d ? v(lane) : v(lane - d); };
        auto down = [&](int d, int width) { return (lane & (width - 1)) + d >= width ? v(lane) : v(lane + d); };
        auto bfly = [&](int m, int width) { int s = lane ^ m; return s > (lane | (width - 1)) ? v(lane) : v(s); };
        const int exp[12] = {idx((lane * 7 + 3) & 31, 32), idx(lane + 5, 8), idx(-3, 16), bfly(1, 32), bfly(13, 8),
                             up(3, 16), down(5, 16), up(1, 32), down(31, 32), (int)bits32((float)bfly(4, 32) * 0.5f),
                             down(2, 4), idx(31 - lane, 32)};
        for (int k = 0; k < 12; ++k)
            if (out[tid * 12 + k] != exp[k] && bad++ == 0)
                first = "thread " + std::to_string(tid) + " case " + std::to_string(k) + ": got " +
                        std::to_string(out[tid * 12 + k]) + " want " + std::to_string(exp[k]);
    }
    check(bad == 0, "shuffles (idx/up/down/xor, width 32/16/8/4, int/float/unsigned/64-bit)", first);
}

static void test_vote() {
    const int n = 96;
    std::vector<unsigned> out(n * 9, 7);
    if (!launch_ok("t_vote", launch("t_vote", G{1}, G{n}, 0, out.data()))) return;
    int bad = 0;
    std::string first;
    unsigned count = 0;
    for (int t = 0; t < n; ++t) count += t % 3 == 0;
    for (int tid = 0; tid < n; ++tid) {
        const int lane = tid & 31, w0 = tid & ~31;
        unsigned ballot = 0, any = 0, all = 1;
        for (int l = 0; l < 32; ++l) {
            ballot |= unsigned((w0 + l) % 3 == 0) << l;
            any |= (w0 + l) % 64 == 5;
            all &= (w0 + l) % 3 == 0;
        }
        const unsigned exp[9] = {ballot, any, 1, all, 0xffffffffu, count, 1, 1, lane < 16 ? 0xaaaau : 0u};
        for (int k = 0; k < 9; ++k)
            if (out[tid * 9 + k] != exp[k] && bad++ == 0)
                first = "thread " + std::to_string(tid) + " case " + std::to_string(k);
    }
    check(bad == 0, "ballot/any/all/activemask, __syncthreads_count/and/or, partial-mask ballot", first);
}

static void test_sync1024() {
    const int n = 1024, rounds = 20;
    std::vector<int> out(n);
    if (!launch_ok("t_sync1024", launch("t_sync1024", G{1}, G{n}, 0, out.data(), rounds))) return;
    std::vector<int> val(n), s(n);
    for (int t = 0; t < n; ++t) val[t] = t;
    for (int r = 0; r < rounds; ++r) {
        s = val;
        for (int t = 0; t < n; ++t) val[t] = s[(t + 1 + r) % n] + 1;
    }
    check(out == val, "__syncthreads across a 1024-thread block with static shared memory");
}

static void test_block_reduce() {
    for (unsigned bs : {32u, 96u, 256u, 1024u}) {
        const unsigned grid = 3;
        std::vector<float> in(grid * bs), out(2 * grid, -1.0f);
        for (size_t i = 0; i < in.size(); ++i) in[i] = float((int)((i * 37) % 101) - 50);
        int bad = 0;
        if (!launch_ok("t_block_reduce", launch("t_block_reduce", G{grid}, G{bs}, 0, in.data(), out.data(), &bad))) return;
        bool ok = bad == 0;
        for (unsigned b = 0; b < grid; ++b) {
            float s = 0, m = -INFINITY;
            for (unsigned i = 0; i < bs; ++i) { s += in[b * bs + i]; m = std::fmax(m, in[b * bs + i]); }
            ok &= out[2 * b] == s && out[2 * b + 1] == m;
        }
        check(ok, "block_sum/block_max, blockDim " + std::to_string(bs));
    }
}

static void test_dyn_smem() {
    const int n = 200;
    std::vector<float> in(n), out(n);
    for (int i = 0; i < n; ++i) in[i] = float(i * 3 + 1);
    if (!launch_ok("t_dyn_smem", launch("t_dyn_smem", G{1}, G{n}, n * 4, in.data(), out.data(), n))) return;
    bool ok = true;
    for (int t = 0; t < n; ++t) ok &= out[t] == in[n - 1 - t] + (t < 64 ? -in[63 - t] : 0.0f);
    check(ok, "dynamic + static shared memory");
}

static void test_atomics() {
    const unsigned grid = 64, bs = 256, N = grid * bs;
    int ints[8] = {0, 0, 0, 0, -1, 0, -1, 0};
    float f = 0;
    unsigned long long u = 0;
    if (!launch_ok("t_atomics", launch("t_atomics", G{grid}, G{bs}, 0, ints, &f, &u))) return;
    const bool ok = ints[0] == (int)N && ints[1] == (int)N - 1 && ints[2] == -(int)(N - 1) && (unsigned)ints[3] == 0xffffffffu &&
                    (unsigned)ints[4] == 0xffff0000u && ints[5] == (int)N && ints[6] >= 0 && ints[6] < (int)N &&
                    ints[7] == -2 * (int)N && f == 0.5f * N && u == (unsigned long long)N << 33;
    check(ok, "atomics under contention (" + std::to_string(N) + " threads, add/max/min/or/and/CAS/exch/sub, float, u64)");
}

// ---------------------------------------------------------------- bf16
static double bf16_value_unbounded(uint32_t b16) {  // exponent 255 counts as 2^128 (for rounding only)
    const int e = (b16 >> 7) & 0xff, m = b16 & 0x7f;
    const double mag = e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134);
    return (b16 & 0x8000) ? -mag : mag;
}
static uint16_t ref_bf16(float x) {
    const uint32_t u = bits32(x);
    if (std::isnan(x)) return 0x7fff;
    if (std::isinf(x)) return (uint16_t)(u >> 16);
    const uint32_t lo = u >> 16, hi = lo + 1;  // toward zero, and the next one away from zero
    const double dl = std::fabs((double)x - bf16_value_unbounded(lo)), dh = std::fabs(bf16_value_unbounded(hi) - (double)x);
    return (uint16_t)(dl < dh || (dl == dh && (lo & 1) == 0) ? lo : hi);
}
static void test_bf16() {
    std::vector<float> in = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-23f, -1.0f - 0x1p-8f, 3.14159265f,
                             1e-40f, -0.0f, INFINITY, -INFINITY, NAN, f_of(0xffc00001u), f_of(0x7f800001u), 3.4028235e38f,
                             f_of(0x7f7f8000u), f_of(0x7f7effffu), f_of(0x00008000u), f_of(0x80018000u), 65504.0f, -2.5e-3f};
    for (int i = 0; i < 236; ++i) in.push_back(f_of(0x3f800000u + (uint32_t)i * 0x8000u + ((i % 3) ? 0u : 0x7fffu)) * (i % 2 ? -1.f : 1.f));
    const int n = (int)in.size();
    std::vector<uint16_t> o1(n);
    std::vector<uint32_t> o2(n);
    std::vector<float> back(2 * n);
    if (!launch_ok("t_bf16", launch("t_bf16", G{(unsigned)(n + 127) / 128}, G{128}, 0, in.data(), o1.data(), o2.data(), back.data(), n))) return;
    int bad = 0;
    std::string first;
    for (int i = 0; i < n; ++i) {
        const uint16_t e = ref_bf16(in[i]), eh = ref_bf16(in[n - 1 - i]);
        const bool ok = o1[i] == e && o2[i] == (e | (uint32_t)eh << 16) && bits32(back[2 * i]) == (uint32_t)e << 16 &&
                        bits32(back[2 * i + 1]) == (uint32_t)eh << 16;
        if (!ok && bad++ == 0) {
            char b[160];
            snprintf(b, sizeof b, "in 0x%08x: got 0x%04x / 0x%08x, want 0x%04x", bits32(in[i]), o1[i], o2[i], e);
            first = b;
        }
    }
    check(bad == 0, "bf16 round-to-nearest-even (ties, NaN, inf, overflow to inf, subnormals), pack/unpack", first);
}

// ---------------------------------------------------------------- fp8 e4m3
static double e4m3_value(int c) {
    const int e = (c >> 3) & 15, m = c & 7;
    if ((c & 0x7f) == 0x7f) return NAN;
    const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    return (c & 0x80) ? -mag : mag;
}
static uint8_t ref_e4m3(float x) {
    if (std::isnan(x)) return 0x7f;
    const uint8_t s = std::signbit(x) ? 0x80 : 0;
    const double a = std::fabs((double)x);
    if (a >= 448.0) return s | 0x7e;
    int lo = 0;
    while (lo < 0x7e && e4m3_value(lo + 1) <= a) ++lo;
    const double dl = a - e4m3_value(lo), dh = e4m3_value(lo + 1) - a;
    return s | (uint8_t)(dl < dh || (dl == dh && (lo & 1) == 0) ? lo : lo + 1);
}
static void test_fp8() {
    std::vector<float> in;
    for (int c = 0; c < 0x7e; ++c) {
        const double v = e4m3_value(c), mid = (v + e4m3_value(c + 1)) / 2;
        for (double x : {v, mid}) {
            const float f = (float)x;
            for (float g : {f, std::nextafter(f, 0.0f), std::nextafter(f, 1e9f)}) { in.push_back(g); in.push_back(-g); }
        }
    }
    for (float x : {448.0f, 449.0f, 463.99f, 464.0f, 479.0f, 480.0f, 500.0f, 1e9f, INFINITY, -INFINITY, NAN, -NAN, 0x1p-10f,
                    3 * 0x1p-10f, 0x1p-11f, 0x1p-12f, 1e-30f, 1e-40f, -0.0f, 0.0f, 0x1.1p-10f})
        in.push_back(x);
    const int n = (int)in.size();
    std::vector<uint8_t> q(n);
    std::vector<uint16_t> q2(n);
    std::vector<float> dec(256), dec2(2 * n);
    if (!launch_ok("t_fp8", launch("t_fp8", G{(unsigned)(n + 127) / 128}, G{128}, 0, in.data(), q.data(), q2.data(), dec.data(), dec2.data(), n))) return;
    int bad = 0;
    std::string first;
    auto same = [](double a, float b) { return std::isnan(a) ? std::isnan(b) : a == (double)b && std::signbit(a) == std::signbit(b); };
    for (int c = 0; c < 256; ++c)
        if (!same(e4m3_value(c), dec[c]) && bad++ == 0) first = "decode code " + std::to_string(c);
    for (int i = 0; i < n; ++i) {
        const uint8_t e = ref_e4m3(in[i]), eh = ref_e4m3(in[(i + 1) % n]);
        const bool ok = q[i] == e && q2[i] == (e | eh << 8) && same(e4m3_value(e), dec2[2 * i]) && same(e4m3_value(eh), dec2[2 * i + 1]);
        if (!ok && bad++ == 0) {
            char b[160];
            snprintf(b, sizeof b, "in %.9g (0x%08x): got 0x%02x / 0x%04x, want 0x%02x", in[i], bits32(in[i]), q[i], q2[i], e);
            first = b;
        }
    }
    check(bad == 0, "fp8 e4m3 (" + std::to_string(n) + " inputs: all codes, ties, saturation, subnormals, NaN), x2 pack, decode of all 256 codes", first);
}

// ---------------------------------------------------------------- mma / ldmatrix / cp.async
static void test_mma() {
    std::vector<uint16_t> A(256), B(128);
    std::vector<float> Af(256), Bf(128), C(128), D1(128), D2(128);
    for (int i = 0; i < 256; ++i) { Af[i] = float((i * 7 + 3) % 9 - 4) * 0.5f; A[i] = (uint16_t)(bits32(Af[i]) >> 16); }
    for (int i = 0; i < 128; ++i) { Bf[i] = float((i * 5 + 1) % 7 - 3) * 0.25f; B[i] = (uint16_t)(bits32(Bf[i]) >> 16); }
    for (int i = 0; i < 128; ++i) C[i] = float(i % 11) - 5.0f;
    if (!launch_ok("t_mma", launch("t_mma", G{1}, G{32}, 0, A.data(), B.data(), C.data(), D1.data(), D2.data()))) return;
    bool ok1 = true, ok2 = true;
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) {
            double d = C[m * 8 + n];
            for (int k = 0; k < 16; ++k) d += (double)Af[m * 16 + k] * Bf[k * 8 + n];  // exact in fp32 too
            ok1 &= D1[m * 8 + n] == (float)d;
            ok2 &= D2[m * 8 + n] == (float)d;
        }
    check(ok1, "mma m16n8k16 bf16 via ldmatrix_x4 + ldmatrix_x2_trans vs plain loop");
    check(ok2, "mma m16n8k16 bf16 via ldmatrix_x4_trans + ldmatrix_x2 (d aliasing c) vs plain loop");
}

// The fp8 mma: codes drawn from a set of small dyadic values (every product and partial sum exact in fp32), NaN
// excluded; the twin, the bf16 pair (the sm_80 path) and d-aliasing-c all equal the plain loop exactly.
static void test_mma_fp8() {
    std::vector<uint8_t> A(512), B(256);
    std::vector<float> C(128), D1(128), D2(128), D3(128);
    const uint8_t codes[] = {0x00, 0x80, 0x30, 0xb0, 0x38, 0xb8, 0x3c, 0xbc, 0x40, 0xc0, 0x28, 0xa8, 0x34, 0x44, 0xc4, 0x04, 0x83};  // incl. subnormals 2^-7, -3·2^-9
    for (int i = 0; i < 512; ++i) A[i] = codes[(i * 7 + 3) % 17];
    for (int i = 0; i < 256; ++i) B[i] = codes[(i * 5 + 1) % 17];
    for (int i = 0; i < 128; ++i) C[i] = float(i % 11) - 5.0f;
    if (!launch_ok("t_mma_fp8", launch("t_mma_fp8", G{1}, G{32}, 0, A.data(), B.data(), C.data(), D1.data(), D2.data(), D3.data()))) return;
    bool ok1 = true, ok2 = true, ok3 = true;
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) {
            double p = 0;
            for (int k = 0; k < 32; ++k) p += e4m3_value(A[m * 32 + k]) * e4m3_value(B[n * 32 + k]);  // B stored [n][k]
            const double d = C[m * 8 + n] + p;
            ok1 &= D1[m * 8 + n] == (float)d;
            ok2 &= D2[m * 8 + n] == (float)d;
            ok3 &= D3[m * 8 + n] == (float)(d + p);  // C + 2p
        }
    check(ok1, "mma m16n8k32 e4m3 (twin) via ldmatrix_x4 + ldmatrix_x2 on [m][k] / [n][k] bytes vs plain loop");
    check(ok2, "mma m16n8k32 e4m3 as two exact bf16 m16n8k16 (the sm_80 path) vs plain loop");
    check(ok3, "mma m16n8k32 e4m3 with d aliasing c, chained");
}

static void test_cp_async() {
    const int n = 64;
    std::vector<uint32_t> g(4 * n), out(4 * n);
    std::vector<int> nb(n);
    for (int i = 0; i < 4 * n; ++i) g[i] = 0x01010101u * (uint32_t)(i + 1);
    for (int i = 0; i < n; ++i) nb[i] = (i * 3) % 17;
    if (!launch_ok("t_cp_async", launch("t_cp_async", G{1}, G{n}, 0, g.data(), out.data(), nb.data()))) return;
    bool ok = true;
    for (int i = 0; i < n; ++i) {
        unsigned char want[16] = {};
        std::memcpy(want, &g[4 * i], i % 2 == 0 ? 16 : nb[i]);
        ok &= std::memcmp(want, &out[4 * i], 16) == 0;
    }
    check(ok, "cp.async 16 B and zero-fill (0..16 source bytes), commit/wait_group/wait_all");
}

// Deferred (default) cp.async lands at the wait that completes its group; immediate copies at issue.
static void test_cp_async_order() {
    const int n = 32;
    std::vector<uint32_t> g(4 * 3 * n), out(4 * 5 * n);
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0x10000u + (uint32_t)i;
    auto row = [&](int i, int step) { return &out[4 * (5 * i + step)]; };
    auto is = [&](const uint32_t* v, int src) {  // src < 0: stale
        for (int e = 0; e < 4; ++e) if (v[e] != (src < 0 ? 0xdeadbeefu : g[4 * src + e])) return false;
        return true;
    };
    for (int mode : {1, 0}) {
        l4emu_set_cp_async(mode);
        std::fill(out.begin(), out.end(), 0u);
        const int rc = launch("t_cp_async_order", G{1}, G{n}, 0, g.data(), out.data());
        l4emu_set_cp_async(-1);
        if (!launch_ok("t_cp_async_order", rc)) return;
        bool ok = true;
        for (int i = 0; i < n; ++i) {
            ok &= is(row(i, 0), mode ? -1 : 3 * i) && is(row(i, 1), 3 * i) && is(row(i, 2), mode ? -1 : 3 * i + 1);
            ok &= is(row(i, 3), mode ? -1 : 3 * i + 2) && is(row(i, 4), 3 * i + 2);
        }
        check(ok, mode ? "deferred cp.async: a read before the wait is stale; wait_group 1 lands all but the newest group; "
                         "an uncommitted copy lands only at wait_all"
                       : "L4EMU_CP_ASYNC=immediate: copies land at issue");
    }
}

static void test_index() {
    const G g{3, 2, 2}, b{4, 3, 2};
    std::vector<uint32_t> out(12 * 24, 0xffffffffu);
    if (!launch_ok("t_index", launch("t_index", g, b, 0, out.data()))) return;
    bool ok = true;
    for (unsigned bz = 0; bz < 2; ++bz) for (unsigned by = 0; by < 2; ++by) for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz) for (unsigned ty = 0; ty < 3; ++ty) for (unsigned tx = 0; tx < 4; ++tx) {
            const unsigned bl = bx + 3 * (by + 2 * bz), tl = tx + 4 * (ty + 3 * tz);
            ok &= out[bl * 24 + tl] == (tx | ty << 4 | tz << 8 | bx << 12 | by << 16 | bz << 20);
        }
    check(ok, "3-D threadIdx/blockIdx/blockDim/gridDim");
}

// ---------------------------------------------------------------- misuse must fail cleanly
static void expect_error(const std::string& name, int rc, std::initializer_list<const char*> parts) {
    const std::string msg = rc ? l4emu_last_error() : "";
    bool ok = rc != 0;
    for (const char* p : parts) ok &= msg.find(p) != std::string::npos;
    check(ok, name, rc ? "\"" + msg + "\"" : "launch unexpectedly succeeded");
}
static void test_misuse() {
    std::vector<float> f(256);
    std::vector<int> iv(256);
    expect_error("partial __syncthreads (others exited) is reported", launch("bad_sync_exit", G{4}, G{64}, 0, f.data()),
                 {"kernel bad_sync_exit: block (", "__syncthreads reached by 32 of 64 threads", "threads 32..63 exited"});
    expect_error("partial-warp shuffle is reported", launch("bad_shfl_partial", G{1}, G{32}, 0, iv.data()),
                 {"kernel bad_shfl_partial: block (0,0,0)", "__shfl_xor_sync (mask 0xffffffff) in warp 0 reached by 16 of 32 lanes", "threads 16..31 exited"});
    expect_error("__syncthreads while warp-mates wait at a shuffle is reported", launch("bad_sync_vs_shfl", G{2}, G{64}, 0, iv.data()),
                 {"__syncthreads reached by 48 of 64 threads", "threads 0..15 wait at __shfl_sync (warp 0, mask 0xffffffff)"});
    expect_error("divergent collectives (same mask, different op) are reported", launch("bad_divergent_collectives", G{1}, G{32}, 0, iv.data()),
                 {"__shfl_sync (mask 0xffffffff) in warp 0 reached by 16 of 32 lanes", "threads 16..31 wait at __ballot_sync (warp 0, mask 0xffffffff)"});
    expect_error("__trap is reported", launch("bad_trap", G{1}, G{32}, 0, iv.data()), {"kernel bad_trap: block (0,0,0): thread 5: __trap() called"});
    expect_error("block of 1025 threads is refused", launch("t_shfl", G{1}, G{1025}, 0, iv.data()), {"exceeds CUDA's limits"});
    expect_error("block (32,32,2) is refused", launch("t_shfl", G{1}, G{32, 32, 2}, 0, iv.data()), {"2048 threads"});
    expect_error("228 KiB dynamic shared memory is refused", launch("t_shfl", G{1}, G{32}, 232449, iv.data()), {"227 KiB"});
    expect_error("gridDim.y 65536 is refused", launch("t_shfl", G{1, 65536}, G{32}, 0, iv.data()), {"grid (1,65536,1)"});
    expect_error("block above __launch_bounds__(64) is refused", launch("t_index", G{1}, G{65}, 0, iv.data()),
                 {"kernel t_index: block (65,1,1) = 65 threads exceeds its __launch_bounds__(64)"});
    std::vector<float> vin(4 * 32 + 8), vout(4 * 32 + 8);
    expect_error("misaligned float4 load is reported", launch("bad_misaligned", G{1}, G{32}, 0, vin.data(), vout.data(), 4, 0),
                 {"kernel bad_misaligned: block (0,0,0): thread 3 (3,0,0): misaligned 16-byte load at 0x", "% 16 = 4"});
    expect_error("misaligned float2 store is reported", launch("bad_misaligned", G{1}, G{32}, 0, vin.data(), vout.data(), 4, 1),
                 {"kernel bad_misaligned: block (0,0,0): thread 3 (3,0,0): misaligned 8-byte store at 0x", "% 8 = 4"});
    expect_error("misaligned cp.async is reported", launch("bad_misaligned", G{1}, G{32}, 0, vin.data(), vout.data(), 8, 2),
                 {"kernel bad_misaligned: block (0,0,0): thread 3 (3,0,0): misaligned 16-byte cp.async"});
    check(launch("bad_misaligned", G{1}, G{32}, 0, vin.data(), vout.data(), 0, 0) == 0 &&
          launch("bad_misaligned", G{1}, G{32}, 0, vin.data(), vout.data(), 16, 0) == 0, "aligned vector accesses pass the check");
    expect_error("null kernel is refused", l4emu_launch(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr), {"null kernel"});
}

static void run_functional() {
    test_shfl();
    test_vote();
    test_sync1024();
    test_block_reduce();
    test_dyn_smem();
    test_atomics();
    test_bf16();
    test_fp8();
    test_mma();
    test_mma_fp8();
    test_cp_async();
    test_cp_async_order();
    test_index();
    test_misuse();
    test_shfl();  // the runtime still works after abandoned blocks
}

static double time_ns_per(const char* k, unsigned threads, int iters, double ops_per_thread_iter) {
    std::vector<float> out(threads);
    launch(k, G{1}, G{threads}, 0, 10, out.data());  // warm: stacks mapped
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {  // best of 3: this machine is shared
        const auto t0 = std::chrono::steady_clock::now();
        const int rc = launch(k, G{1}, G{threads}, 0, iters, out.data());
        best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
        if (rc) check(false, k, l4emu_last_error());
    }
    return best / (threads * (double)iters * ops_per_thread_iter);
}

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s libprimitives.so [uc]\n", argv[0]); return 2; }
    g_mod = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!g_mod) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
    printf("%s\n", l4emu_version());
    using Names = const char* (*)(void);
    const std::string names = reinterpret_cast<Names>(dlsym(g_mod, "l4emu_module_kernels"))();
    check(names.rfind("t_shfl,t_vote,", 0) == 0 && names.find("bench_warp_sum") != std::string::npos, "l4emu_module_kernels lists the kernels", names.substr(0, 40) + "...");
    check(fn("t_mma") != nullptr && fn("no_such_kernel") == nullptr, "l4emu_get_function finds kernels, NULL when absent");

    if (argc == 3 && std::string(argv[2]) == "uc") {  // ucontext only: the mode to run under ASan or gdb
        g_suffix = " [ucontext]";
        l4emu_set_ucontext(1);
        run_functional();
        printf("%d passed, %d failed\n", g_pass, g_fail);
        return g_fail ? 1 : 0;
    }
    l4emu_set_threads(2);
    l4emu_set_ucontext(0);
    run_functional();
    g_suffix = " [ucontext]";
    l4emu_set_ucontext(1);
    run_functional();
    g_suffix = " [1 thread]";
    l4emu_set_ucontext(0);
    l4emu_set_threads(1);
    test_atomics();
    test_block_reduce();
    g_suffix = "";
    l4emu_set_threads(0);

    const double fast_sync = time_ns_per("bench_sync", 256, 2000, 1);
    const double fast_shfl = time_ns_per("bench_warp_sum", 256, 400, 5);
    l4emu_set_ucontext(1);
    const double uc_sync = time_ns_per("bench_sync", 256, 400, 1);
    const double uc_shfl = time_ns_per("bench_warp_sum", 256, 80, 5);
    l4emu_set_ucontext(0);
    {   // per-block overhead: 2000 blocks x 256 threads of an (almost) empty kernel on the pool
        std::vector<int> out(256);
        double us = 1e30;
        int rc = 0;
        for (int rep = 0; rep < 3; ++rep) {
            const auto t0 = std::chrono::steady_clock::now();
            rc |= launch("bench_sync", G{2000}, G{256}, 0, 0, out.data());
            us = std::min(us, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        check(rc == 0, "2000-block launch");
        printf("timing: empty 256-thread block: %.2f us per block (pool of default size)\n", us / 2000);
    }
    printf("timing: __syncthreads per thread: fast switch %.1f ns, ucontext %.1f ns (%.1fx)\n", fast_sync, uc_sync, uc_sync / fast_sync);
    printf("timing: __shfl_xor_sync per thread: fast switch %.1f ns, ucontext %.1f ns (%.1fx)\n", fast_shfl, uc_shfl, uc_shfl / fast_shfl);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
