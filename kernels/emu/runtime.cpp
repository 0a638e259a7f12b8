// kernels/emu/runtime.cpp — libl4emu.so: runs kernel launches on the CPU.
//
// Model: one fiber per CUDA thread; all fibers of a block run on one OS thread (so __shared__ can be
// thread_local), cooperatively: a fiber runs until it waits at a barrier/warp collective or exits, then
// switches straight to the next ready fiber (FIFO ring). Blocks of a launch are shared out over a pool
// of OS threads (the calling thread is one of them). Misuse that would hang or corrupt on the GPU
// (partial __syncthreads, partial-warp collectives) abandons the block and fails the launch with a
// message — kernel code has no destructors, so abandoning fibers leaks nothing.
#define L4EMU_RUNTIME
#include "emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
extern "C" void l4emu_switch(void** save_sp, void* new_sp);
#define L4EMU_HAVE_FAST_SWITCH 1
#else
#define L4EMU_HAVE_FAST_SWITCH 0
#endif

#define L4EMU_EXPORT extern "C" __attribute__((visibility("default")))

static unsigned pick_stack_shift() {
    // Power of two >= 16 KiB so a fiber finds its header from %rsp (see l4emu_hdr_at in emu.h).
    uintptr_t kb = 64;
    if (const char* e = getenv("L4EMU_STACK_KB")) { long v = atol(e); if (v > 0) kb = (uintptr_t)v; }
    unsigned sh = 14;
    while (((uintptr_t)1 << sh) < kb * 1024) ++sh;
    return sh;
}
__attribute__((visibility("default"))) unsigned l4emu_stack_shift = pick_stack_shift();  // declared extern "C" in emu.h

namespace {

enum State : uint8_t { READY, RUNNING, AT_BARRIER, AT_WARP, EXITED };

struct Worker;
struct Fiber {
    l4emu_thread_hdr* hdr;  // at the top of this fiber's stack region
    char* region;           // aligned base; the lowest page is the guard page
    void* sp = nullptr;     // fast switch: saved stack pointer
    ucontext_t* uc = nullptr;
    Worker* w = nullptr;
    unsigned lin = 0;
    State state = READY;
    int group = -1;         // AT_WARP: index of the pending collective in its warp
    void* deposit = nullptr;
    // Deferred cp.async: this thread's copies not yet landed, in issue order (group ids ascending from
    // cp_head); cp_open is the id of the group still open (not committed).
    struct CpCopy { void* dst; unsigned group; unsigned char data[16]; };
    std::vector<CpCopy> cp;
    size_t cp_head = 0;
    unsigned cp_open = 0;
    void cp_reset() { cp.clear(); cp_head = 0; cp_open = 0; }
    // Lands every pending copy of a committed group older than the `keep` most recent committed ones
    // (keep < 0: every pending copy, committed or not).
    void cp_land(int keep) {
        while (cp_head < cp.size() && (keep < 0 || cp[cp_head].group + (unsigned)keep < cp_open)) {
            std::memcpy(cp[cp_head].dst, cp[cp_head].data, 16);
            ++cp_head;
        }
        if (cp_head == cp.size()) { cp.clear(); cp_head = 0; }
    }
};

// A pending warp collective. Several can be pending in one warp at once (lanes 0..15 at a
// __ballot_sync(0xffff) while lane 31 already waits at __syncwarp()): each is keyed by (op, mask).
struct Group {
    unsigned mask, arrived;  // participants, lanes arrived so far
    const char* op;
};
struct WarpState {
    unsigned used = 0;  // bit g: groups[g] is pending
    Group groups[32];
};

struct Launch {
    const l4emu_kernel* k;
    dim3 grid, block;
    unsigned dyn;
    bool cp_deferred;  // cp.async lands at cp_async_wait (L4EMU_CP_ASYNC, read at launch)
    void** args;
    uint64_t total;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex m;
    std::string err;
};

std::atomic<int> g_use_uc{-1};  // -1: decide from L4EMU_UCONTEXT on first use
bool use_ucontext() {
    int v = g_use_uc.load(std::memory_order_relaxed);
    if (v < 0) {
        const char* e = getenv("L4EMU_UCONTEXT");
        v = (!L4EMU_HAVE_FAST_SWITCH || (e && *e && *e != '0')) ? 1 : 0;
        g_use_uc.store(v);
    }
    return v != 0;
}

// Per OS thread: fiber stacks (pooled, grown to the largest block seen), dynamic shared memory,
// and the state of the block currently running on this thread.
struct Worker {
    static constexpr unsigned kChunk = 32;  // fibers allocated per mmap
    static constexpr unsigned kDynBytes = 227 * 1024;
    std::vector<std::pair<char*, size_t>> maps;
    std::vector<std::unique_ptr<Fiber>> owned;
    std::vector<Fiber*> fibers;  // == owned, raw for the hot paths
    void* main_sp = nullptr;
    ucontext_t main_uc;
    bool uc_mode = false;
    char* dyn = nullptr;

    const Launch* L = nullptr;
    l4emu_block_info info;
    unsigned n = 0, alive = 0, arrived = 0, bar_count = 0, bar_result = 0, bar_participants = 0;
    std::vector<Fiber*> ring;  // ready queue
    unsigned qhead = 0, qsize = 0;
    WarpState warps[32];
    bool failed = false;
    std::string err;

    Worker() { dyn = static_cast<char*>(aligned_alloc(128, kDynBytes)); }
    ~Worker() {
        for (auto& f : owned) delete f->uc;
        for (auto& m : maps) munmap(m.first, m.second);
        free(dyn);
    }

    void reserve(unsigned count) {
        const uintptr_t S = (uintptr_t)1 << l4emu_stack_shift;
        const long page = sysconf(_SC_PAGESIZE);
        while (fibers.size() < count) {
            const size_t len = (kChunk + 1) * S;  // +1 region of slack to align the first one to S
            char* raw = static_cast<char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
            if (raw == MAP_FAILED) { perror("l4emu: mmap fiber stacks"); abort(); }
            maps.emplace_back(raw, len);
            char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(raw) + S - 1) & ~(S - 1));
            for (unsigned i = 0; i < kChunk; ++i) {
                auto f = std::make_unique<Fiber>();
                f->region = base + i * S;
                mprotect(f->region, page, PROT_NONE);  // guard page: overflow faults instead of corrupting
                f->hdr = l4emu_hdr_at(reinterpret_cast<uintptr_t>(f->region));
                f->hdr->fiber = f.get();
                f->w = this;
                fibers.push_back(f.get());
                owned.push_back(std::move(f));
            }
        }
        if (ring.size() < count) ring.resize(count);
    }

    void push(Fiber* f) { ring[(qhead + qsize++) % n] = f; }
    Fiber* pop() {
        if (!qsize) return nullptr;
        Fiber* f = ring[qhead];
        qhead = (qhead + 1) % n; --qsize;
        return f;
    }
};

thread_local std::unique_ptr<Worker> tl_worker;
Worker& worker() {
    if (!tl_worker) tl_worker = std::make_unique<Worker>();
    return *tl_worker;
}

inline Fiber* self_fiber() { return static_cast<Fiber*>(l4emu_self()->fiber); }

// from/to == nullptr means the worker's own (scheduler) context.
void switch_to(Worker& w, Fiber* from, Fiber* to) {
#if L4EMU_HAVE_FAST_SWITCH
    if (!w.uc_mode) { l4emu_switch(from ? &from->sp : &w.main_sp, to ? to->sp : w.main_sp); return; }
#endif
    swapcontext(from ? from->uc : &w.main_uc, to ? to->uc : &w.main_uc);
}

[[noreturn]] void fiber_main();
extern "C" void fiber_main_uc() { fiber_main(); }

void init_fiber(Worker& w, Fiber* f) {
    char* top = reinterpret_cast<char*>(f->hdr);  // 16-byte aligned
    if (!w.uc_mode) {
        void** sp = reinterpret_cast<void**>(top - 64);  // see switch_x86_64.S
        for (int i = 0; i < 6; ++i) sp[i] = nullptr;
        sp[6] = reinterpret_cast<void*>(&fiber_main);
        sp[7] = nullptr;
        f->sp = sp;
    } else {
        if (!f->uc) f->uc = new ucontext_t;
        getcontext(f->uc);
        const long page = sysconf(_SC_PAGESIZE);
        f->uc->uc_stack.ss_sp = f->region + page;
        f->uc->uc_stack.ss_size = static_cast<size_t>(top - f->region - page);
        f->uc->uc_link = nullptr;
        makecontext(f->uc, fiber_main_uc, 0);
    }
}

// ---------------------------------------------------------------- diagnostics
std::string ranges(const std::vector<unsigned>& v) {
    std::string s;
    for (size_t i = 0; i < v.size();) {
        size_t j = i;
        while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
        if (!s.empty()) s += ", ";
        s += std::to_string(v[i]);
        if (j > i) s += ".." + std::to_string(v[j]);
        i = j + 1;
    }
    return s;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

// "; threads 32..63 exited; threads 0..15 wait at __shfl_sync (warp 0, mask 0xffffffff)" for every
// thread not in state `skip` — what the rest of the block is doing when the misuse is found.
std::string others(Worker& w, State skip) {
    std::vector<std::pair<std::string, std::vector<unsigned>>> groups;
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber* f = w.fibers[i];
        if (f->state == skip) continue;
        std::string key;
        switch (f->state) {
            case EXITED: key = "exited"; break;
            case AT_BARRIER: key = "wait at __syncthreads"; break;
            case AT_WARP: {
                const Group& g = w.warps[i / 32].groups[f->group];
                key = fmt("wait at %s (warp %u, mask 0x%08x)", g.op, i / 32, g.mask);
                break;
            }
            default: key = "still running"; break;
        }
        auto it = groups.begin();
        while (it != groups.end() && it->first != key) ++it;
        if (it == groups.end()) { groups.emplace_back(key, std::vector<unsigned>{}); it = groups.end() - 1; }
        it->second.push_back(i);
    }
    std::string s;
    for (auto& g : groups) s += "; threads " + ranges(g.second) + " " + g.first;
    return s;
}

[[noreturn]] void fail(Worker& w, Fiber* f, const std::string& what) {
    const uint3 b = w.info.blockIdx;
    w.err = fmt("kernel %s: block (%u,%u,%u): ", w.L->k->name, b.x, b.y, b.z) + what;
    w.failed = true;
    switch_to(w, f, nullptr);  // the scheduler abandons this block; we are never resumed
    __builtin_unreachable();
}

// Nobody can run: every live thread waits at a barrier or a warp collective that can never complete.
[[noreturn]] void fail_stuck(Worker& w, Fiber* f) {
    if (w.arrived)
        fail(w, f, fmt("__syncthreads reached by %u of %u threads", w.arrived, w.n) + others(w, AT_BARRIER));
    for (unsigned wi = 0; wi < 32; ++wi) {
        const WarpState& ws = w.warps[wi];
        if (!ws.used) continue;
        const Group& g = ws.groups[__builtin_ctz(ws.used)];
        fail(w, f, fmt("%s (mask 0x%08x) in warp %u reached by %d of %d lanes", g.op, g.mask, wi,
                       __builtin_popcount(g.arrived), __builtin_popcount(g.mask)) + others(w, READY));
    }
    fail(w, f, "no runnable thread (internal error)" + others(w, READY));
}

// ---------------------------------------------------------------- scheduling
// f stopped running (waits or exited): run the next ready fiber, or hand back to the scheduler.
void run_next(Worker& w, Fiber* f) {
    Fiber* nx = w.pop();
    if (!nx) {
        if (w.alive == 0) { switch_to(w, f, nullptr); __builtin_unreachable(); }
        fail_stuck(w, f);
    }
    nx->state = RUNNING;
    switch_to(w, f, nx);  // returns when someone switches back to f
}

void release_barrier(Worker& w, Fiber* f) {
    if (w.alive < w.n) fail(w, f, fmt("__syncthreads reached by %u of %u threads", w.arrived, w.n) + others(w, AT_BARRIER));
    w.bar_result = w.bar_count;
    w.bar_participants = w.arrived;
    w.arrived = w.bar_count = 0;
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber* o = w.fibers[i];
        if (o->state == AT_BARRIER && o != f) { o->state = READY; w.push(o); }
    }
    f->state = RUNNING;
}

[[noreturn]] void fiber_main() {
    Fiber* f = self_fiber();
    Worker& w = *f->w;
    w.L->k->entry(w.L->args);
    f->cp_land(-1);  // copies a thread never waited for still complete on the GPU
    f->state = EXITED;
    --w.alive;
    if (w.arrived && w.arrived == w.alive) release_barrier(w, f);  // fails: completes only with exited threads
    if (w.alive == 0) { switch_to(w, f, nullptr); __builtin_unreachable(); }
    run_next(w, f);
    __builtin_unreachable();  // an exited fiber is never switched back to
}

bool run_block(Worker& w, const Launch& L, uint64_t linear_block) {
    const dim3 g = L.grid, b = L.block;
    w.L = &L;
    w.info.blockIdx = uint3{unsigned(linear_block % g.x), unsigned(linear_block / g.x % g.y), unsigned(linear_block / g.x / g.y)};
    w.info.blockDim = b;
    w.info.gridDim = g;
    w.info.dyn_smem = w.dyn;
    w.n = b.x * b.y * b.z;
    w.uc_mode = use_ucontext();
    w.reserve(w.n);
    w.qhead = w.qsize = 0;
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber* f = w.fibers[i];
        f->lin = i;
        f->state = READY;
        f->hdr->threadIdx = uint3{i % b.x, i / b.x % b.y, i / (b.x * b.y)};
        f->hdr->lin = i;
        f->hdr->blk = &w.info;
        f->cp_reset();
        init_fiber(w, f);
        w.push(f);
    }
    w.alive = w.n;
    w.arrived = w.bar_count = 0;
    for (auto& ws : w.warps) ws.used = 0;
    w.failed = false;
    Fiber* first = w.pop();
    first->state = RUNNING;
    switch_to(w, nullptr, first);
    return !w.failed;
}

// ---------------------------------------------------------------- the pool
void run_blocks(Launch& L) {
    Worker& w = worker();
    for (;;) {
        if (L.failed.load(std::memory_order_relaxed)) return;  // skip the rest after an error
        const uint64_t i = L.next.fetch_add(1, std::memory_order_relaxed);
        if (i >= L.total) return;
        if (!run_block(w, L, i)) {
            std::lock_guard<std::mutex> lk(L.m);
            if (!L.failed.exchange(true)) L.err = w.err;
            return;
        }
    }
}

struct Pool {
    std::mutex m;
    std::condition_variable wake, done;
    Launch* job = nullptr;
    uint64_t gen = 0;
    unsigned want = 0, busy = 0, created = 0;
    std::atomic<int> threads{0};  // 0: default
};
Pool& pool() { static Pool* p = new Pool; return *p; }  // never destroyed: helpers outlive static dtors

void helper(unsigned idx) {
    Pool& p = pool();
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(p.m);
    for (;;) {
        p.wake.wait(lk, [&] { return p.gen != seen; });  // sleeps: no spinning on the other cores
        seen = p.gen;
        if (idx >= p.want) continue;
        Launch* L = p.job;
        lk.unlock();
        run_blocks(*L);
        lk.lock();
        if (--p.busy == 0) p.done.notify_all();
    }
}

unsigned pool_size() {
    int n = pool().threads.load();
    if (n <= 0) {
        const char* e = getenv("L4EMU_THREADS");
        n = e ? atoi(e) : 0;
        if (n <= 0) n = (int)std::max(1u, std::thread::hardware_concurrency());
    }
    return (unsigned)n;
}

std::atomic<int> g_cp_deferred{-1};  // -1: L4EMU_CP_ASYNC, read at every launch
bool cp_deferred() {
    const int v = g_cp_deferred.load(std::memory_order_relaxed);
    if (v >= 0) return v != 0;
    const char* e = getenv("L4EMU_CP_ASYNC");
    return !(e && strcmp(e, "immediate") == 0);  // default: deferred
}

std::mutex g_launch_mutex;  // launches are serialised (each one already uses every pool thread)
thread_local std::string tl_error;

int set_error(std::string s) { tl_error = std::move(s); return 1; }

}  // namespace

// ---------------------------------------------------------------- entry points for kernel code
L4EMU_EXPORT int l4emu_rt_syncthreads(int op, int pred) {
    Fiber* f = self_fiber();
    Worker& w = *f->w;
    f->state = AT_BARRIER;
    ++w.arrived;
    w.bar_count += pred != 0;
    if (w.arrived == w.alive) release_barrier(w, f);
    else run_next(w, f);
    switch (op) {
        case 2: return w.bar_result == w.bar_participants;
        case 3: return w.bar_result != 0;
        default: return (int)w.bar_result;  // read before this thread can reach the next barrier
    }
}

L4EMU_EXPORT void l4emu_rt_warp_sync(unsigned mask, const char* what, void* mine, void (*compute)(void* const*, unsigned)) {
    Fiber* f = self_fiber();
    Worker& w = *f->w;
    const unsigned warp = f->lin / 32, lane = f->lin % 32;
    const unsigned lanes_here = std::min(32u, w.n - warp * 32);
    const unsigned exist = lanes_here == 32 ? 0xffffffffu : (1u << lanes_here) - 1;
    const unsigned need = mask & exist;  // lanes past the end of a partial last warp never take part
    WarpState& ws = w.warps[warp];
    if (!(need >> lane & 1))
        fail(w, f, fmt("%s in warp %u called by lane %u, which is not in its mask 0x%08x", what, warp, lane, mask));
    // Join the pending collective with the same op and mask, or open a new one.
    int gi = -1;
    for (unsigned u = ws.used; u; u &= u - 1) {
        const int c = __builtin_ctz(u);
        if (ws.groups[c].mask == need && (ws.groups[c].op == what || strcmp(ws.groups[c].op, what) == 0)) { gi = c; break; }
    }
    if (gi < 0) {
        gi = __builtin_ctz(~ws.used);  // at most 32 groups: each waiting lane is in exactly one
        ws.used |= 1u << gi;
        ws.groups[gi] = Group{need, 0, what};
    }
    Group& g = ws.groups[gi];
    f->deposit = mine;
    g.arrived |= 1u << lane;
    if (g.arrived != need) {
        f->state = AT_WARP;
        f->group = gi;
        run_next(w, f);  // an impossible collective ends when nobody can run: fail_stuck reports it
        return;
    }
    // Last to arrive: compute every lane's result, then let the others go.
    ws.used &= ~(1u << gi);
    Fiber* const* fs = &w.fibers[warp * 32];
    void* lanes[32];
    for (unsigned l = 0; l < 32; ++l) lanes[l] = (need >> l & 1) ? fs[l]->deposit : nullptr;
    compute(lanes, need);
    for (unsigned l = 0; l < 32; ++l) {
        if (!(need >> l & 1) || l == lane) continue;
        fs[l]->state = READY;
        w.push(fs[l]);
    }
}

L4EMU_EXPORT unsigned l4emu_rt_activemask(void) {
    Fiber* f = self_fiber();
    Worker& w = *f->w;
    const unsigned warp = f->lin / 32;
    unsigned m = 0;
    for (unsigned l = 0; l < 32 && warp * 32 + l < w.n; ++l)
        if (w.fibers[warp * 32 + l]->state != EXITED) m |= 1u << l;
    return m;
}

L4EMU_EXPORT void l4emu_rt_trap(const char* why) {
    Fiber* f = self_fiber();
    fail(*f->w, f, fmt("thread %u: %s", f->lin, why));
}

L4EMU_EXPORT void l4emu_rt_misaligned(const void* p, unsigned align, const char* what) {
    Fiber* f = self_fiber();
    const uint3 t = f->hdr->threadIdx;
    fail(*f->w, f, fmt("thread %u (%u,%u,%u): misaligned %u-byte %s at %p (address %% %u = %u; the GPU faults)",
                       f->lin, t.x, t.y, t.z, align, what, p, align, (unsigned)((uintptr_t)p % align)));
}

L4EMU_EXPORT void l4emu_rt_cp_async(void* dst, const void* src, int src_bytes) {
    Fiber* f = self_fiber();
    if (((uintptr_t)dst | (uintptr_t)src) & 15u) {
        const uint3 t = f->hdr->threadIdx;
        fail(*f->w, f, fmt("thread %u (%u,%u,%u): misaligned 16-byte cp.async (shared %p, global %p; both must be 16-byte aligned)",
                           f->lin, t.x, t.y, t.z, dst, src));
    }
    const size_t n = (size_t)(src_bytes < 0 ? 0 : src_bytes > 16 ? 16 : src_bytes);
    unsigned char* to = static_cast<unsigned char*>(dst);
    if (f->w->L->cp_deferred) {
        f->cp.push_back(Fiber::CpCopy{dst, f->cp_open, {}});
        to = f->cp.back().data;  // the source is read now, the destination written at the wait
    }
    std::memcpy(to, src, n);
    std::memset(to + n, 0, 16 - n);
}

L4EMU_EXPORT void l4emu_rt_cp_async_commit(void) { ++self_fiber()->cp_open; }

L4EMU_EXPORT void l4emu_rt_cp_async_wait(int n) {
    Fiber* f = self_fiber();
    if (n < 0) { ++f->cp_open; n = 0; }  // wait_all = commit_group + wait_group 0
    f->cp_land(n);
}

// ---------------------------------------------------------------- C ABI
L4EMU_EXPORT int l4emu_launch(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                              unsigned dyn_shared_bytes, void** args) {
    const l4emu_kernel* k = static_cast<const l4emu_kernel*>(fn);
    if (!k || !k->entry) return set_error("l4emu_launch: null kernel");
    const char* name = k->name;
    const uint64_t threads = (uint64_t)bx * by * bz;
    if (bx == 0 || by == 0 || bz == 0 || gx == 0 || gy == 0 || gz == 0)
        return set_error(fmt("kernel %s: grid (%u,%u,%u) / block (%u,%u,%u) has a zero dimension", name, gx, gy, gz, bx, by, bz));
    if (bx > 1024 || by > 1024 || bz > 64 || threads > 1024)
        return set_error(fmt("kernel %s: block (%u,%u,%u) = %llu threads exceeds CUDA's limits (1024 per block; x,y <= 1024, z <= 64)",
                             name, bx, by, bz, (unsigned long long)threads));
    if (k->max_threads && threads > k->max_threads)
        return set_error(fmt("kernel %s: block (%u,%u,%u) = %llu threads exceeds its __launch_bounds__(%u)", name, bx, by, bz,
                             (unsigned long long)threads, k->max_threads));
    if (gx > 2147483647u || gy > 65535 || gz > 65535)
        return set_error(fmt("kernel %s: grid (%u,%u,%u) exceeds CUDA's limits (x < 2^31, y,z <= 65535)", name, gx, gy, gz));
    if (dyn_shared_bytes > Worker::kDynBytes)
        return set_error(fmt("kernel %s: %u bytes of dynamic shared memory exceeds 227 KiB (232448)", name, dyn_shared_bytes));

    std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
    Launch L;
    L.k = k; L.grid = dim3(gx, gy, gz); L.block = dim3(bx, by, bz); L.dyn = dyn_shared_bytes; L.args = args;
    L.cp_deferred = cp_deferred();
    L.total = (uint64_t)gx * gy * gz;
    Pool& p = pool();
    const unsigned helpers = (unsigned)std::min<uint64_t>(pool_size() - 1, L.total - 1);
    if (helpers) {
        std::lock_guard<std::mutex> lk(p.m);
        while (p.created < helpers) std::thread(helper, p.created++).detach();
        p.job = &L; p.want = helpers; p.busy = helpers; ++p.gen;
        p.wake.notify_all();
    }
    run_blocks(L);
    if (helpers) {
        std::unique_lock<std::mutex> lk(p.m);
        p.done.wait(lk, [&] { return p.busy == 0; });
    }
    if (L.failed) return set_error(L.err);
    return 0;
}

L4EMU_EXPORT const char* l4emu_last_error(void) { return tl_error.c_str(); }
L4EMU_EXPORT void l4emu_set_threads(int n) { pool().threads.store(n); }
// Not part of the C# contract: selects the ucontext switch (1) or the fast one (0) for later launches.
L4EMU_EXPORT void l4emu_set_ucontext(int on) { g_use_uc.store(on || !L4EMU_HAVE_FAST_SWITCH ? 1 : 0); }
// Not part of the C# contract: cp.async mode for later launches: 1 deferred, 0 immediate, -1 L4EMU_CP_ASYNC.
L4EMU_EXPORT void l4emu_set_cp_async(int mode) { g_cp_deferred.store(mode < 0 ? -1 : mode ? 1 : 0); }
L4EMU_EXPORT const char* l4emu_version(void) { return "l4emu 1.0 (fibers; fast x86-64 switch, ucontext fallback)"; }
