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

#include <dlfcn.h>
#include <link.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <map>
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
struct Fiber;
void register_stacks(char* lo, size_t len);
void unregister_stacks(char* lo);
void chk_landing(Fiber* f, void* dst, void* pc);  // checker: a deferred cp.async writes shared memory now
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
    struct CpCopy { void* dst; unsigned group; void* pc; unsigned char data[16]; };
    std::vector<CpCopy> cp;
    size_t cp_head = 0;
    unsigned cp_open = 0;
    void cp_reset() { cp.clear(); cp_head = 0; cp_open = 0; }
    // Lands every pending copy of a committed group older than the `keep` most recent committed ones
    // (keep < 0: every pending copy, committed or not).
    void cp_land(int keep) {
        while (cp_head < cp.size() && (keep < 0 || cp[cp_head].group + (unsigned)keep < cp_open)) {
            chk_landing(this, cp[cp_head].dst, cp[cp_head].pc);
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

struct ModInfo;
struct Launch {
    const l4emu_kernel* k;
    unsigned chk = 0;          // L4EMU_CHK_* flags of this launch (0: unchecked)
    const ModInfo* mod = nullptr;
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
    static constexpr unsigned kDynGuard = 1024;  // checker: bytes of guard on each side of dynamic shared memory
    std::vector<std::pair<char*, size_t>> maps;
    std::vector<std::unique_ptr<Fiber>> owned;
    std::vector<Fiber*> fibers;  // == owned, raw for the hot paths
    void* main_sp = nullptr;
    ucontext_t main_uc;
    bool uc_mode = false;
    char* dyn = nullptr;
    char* dyn_base = nullptr;  // dyn - kDynGuard

    const Launch* L = nullptr;
    Fiber* cur = nullptr;      // the fiber running now (checker: tells kernel code from everything else)
    // ---- checker state (see "checker" below); used only by checked launches
    struct Chk;
    Chk* chk = nullptr;
    l4emu_block_info info;
    unsigned n = 0, alive = 0, arrived = 0, bar_count = 0, bar_result = 0, bar_participants = 0;
    std::vector<Fiber*> ring;  // ready queue
    unsigned qhead = 0, qsize = 0;
    WarpState warps[32];
    bool failed = false;
    std::string err;
    // A fault (SIGSEGV/SIGBUS/SIGFPE/SIGILL) in a fiber of the block running here jumps back to run_block
    // (see "faults" below): the handler fills these, run_block turns them into the launch's error.
    sigjmp_buf fault_jb;
    volatile sig_atomic_t in_block = 0;
    int fault_sig = 0, fault_code = 0;
    void* fault_addr = nullptr;
    void* fault_pc = nullptr;
    unsigned fault_lin = 0;

    Worker() {
        dyn_base = static_cast<char*>(aligned_alloc(128, kDynBytes + 2 * kDynGuard));
        dyn = dyn_base + kDynGuard;
    }
    ~Worker();

    void reserve(unsigned count) {
        const uintptr_t S = (uintptr_t)1 << l4emu_stack_shift;
        const long page = sysconf(_SC_PAGESIZE);
        while (fibers.size() < count) {
            const size_t len = (kChunk + 1) * S;  // +1 region of slack to align the first one to S
            char* raw = static_cast<char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
            if (raw == MAP_FAILED) { perror("l4emu: mmap fiber stacks"); abort(); }
            maps.emplace_back(raw, len);
            register_stacks(raw, len);
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
    w.cur = to;
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

// ---------------------------------------------------------------- checker
// Checked launches (l4emu_launch_ex with L4EMU_CHK_* flags) run a module compiled with g++
// -fsanitize=thread: the compiler puts a call to __tsan_readN/__tsan_writeN(addr) before every load and
// store the kernel makes (and __tsan_atomic* around atomics). No libtsan: those hooks are defined below
// and check each access BEFORE it happens, so a bad access becomes a report, never a fault.
//   race   two threads of a block touch a byte between the same two barriers, >= 1 write, not both atomic
//          (a __syncwarp between them orders lanes of one warp; shuffles/mma/ldmatrix do not order memory)
//   memory global access outside every live allocation (guard zones catch off-by-one), shared access
//          past static + requested dynamic size, a misaligned access (the GPU wants natural alignment)
//   sync   __syncthreads(_count/_and/_or) reached at different call sites in one block; overlapping
//          masks at one warp collective
//   init   a read of device memory never written since allocation, or of shared memory not written
//          since the block started
// Checked launches run their blocks one at a time on the calling thread: the per-byte shadow state
// (Cell, 16 bytes per byte) then needs no locking, and cross-block races are out of scope anyway.
struct Cell { uint32_t epoch, init; uint16_t w, r, wc, rc; };
static_assert(sizeof(Cell) == 16, "Cell");
constexpr uint16_t kNone = 0xffff, kAtomic = 0x8000, kManyWarp = 0x4000, kManyAll = 0x7ffe;

// Device allocations registered by the host side (EmuDevice in checked mode): [lo, hi) plus `guard`
// bytes on each side that the host leaves unused, and the shadow cells of [lo, hi).
// The race cells are mapped at the first checked access (an allocation no checked launch touches costs
// nothing); "written" is a bitmap (1 bit per byte) that uploads fill.
struct Alloc { uintptr_t lo, hi; size_t guard; Cell* sh; size_t shlen; uint8_t* init; };
void free_alloc(Alloc* a) {
    if (a->sh) munmap(a->sh, a->shlen * sizeof(Cell));
    if (a->init) munmap(a->init, a->shlen / 8 + 1);
    delete a;
}
std::map<uintptr_t, Alloc*> g_allocs;  // by lo; changed and read under g_launch_mutex only
uint64_t g_alloc_gen = 1;

struct ModInfo { void* handle = nullptr; size_t tls_size = 0; void* (*touch)() = nullptr; std::string path; };
std::map<const l4emu_kernel*, ModInfo*> g_mods;  // under g_launch_mutex

Cell* new_shadow(size_t n) {
    if (!n) return 0;
    void* p = mmap(nullptr, n * sizeof(Cell), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<Cell*>(p);
}

struct Worker::Chk {
    unsigned flags = 0;
    uint32_t epoch = 0, serial = 0;     // barrier interval id, block id (shared-memory init)
    uint16_t warpgen[32] = {};          // per warp: completed __syncwarp count (orders writes: RAW, WAW)
    uint16_t collgen[32] = {};          // per warp: completed collectives of any kind (orders WAR, see below)
    bool quiet = false;                 // inside a warp collective's compute or the argument unpacking
    Cell* dyn_sh = nullptr;             // kDynBytes + 2 guard
    std::vector<Cell> tls_sh;
    uintptr_t tls_lo = 0; size_t tls_size = 0;
    Alloc* last = nullptr; uint64_t last_gen = 0;
    std::vector<std::pair<uintptr_t, uintptr_t>> images;  // mapped ELF segments (kernel code may read them)
    bool images_valid = false;
    const void* bar_site = nullptr; unsigned bar_first = 0; int bar_op = 0;
    const char* bar_file = nullptr; int bar_line = 0;
    // Same barrier line reached at two code addresses in one barrier interval: g++ duplicated the barrier, or a
    // helper with a barrier was inlined at two call sites that threads reached divergently. Told apart at the
    // end of the block (off the fiber stacks) by the inline chains of the two addresses.
    struct Suspect { void* pc_a; void* pc_b; unsigned lin_a, lin_b; int op; const char* file; int line; };
    std::vector<Suspect> suspects;
    std::vector<void*> err_pcs;         // symbolised after the block is abandoned (off the fiber stack)
    void* analysis = nullptr;           // see "analysis"
};
Worker::~Worker() {
    for (auto& f : owned) delete f->uc;
    for (auto& m : maps) { unregister_stacks(m.first); munmap(m.first, m.second); }
    free(dyn_base);
    if (chk) { if (chk->dyn_sh) munmap(chk->dyn_sh, (kDynBytes + 2 * kDynGuard) * sizeof(Cell)); delete chk; }
}

uint32_t g_epoch = 1, g_serial = 1;  // under g_launch_mutex (checked launches are single-threaded)
Worker* g_chk = nullptr;             // the worker running a checked launch, else null

int img_cb(dl_phdr_info* info, size_t, void* data) {
    auto* v = static_cast<std::vector<std::pair<uintptr_t, uintptr_t>>*>(data);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type == PT_LOAD) v->emplace_back(info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
    }
    return 0;
}
bool in_image(Worker::Chk& c, uintptr_t a) {
    if (!c.images_valid) {
        c.images.clear();
        dl_iterate_phdr(img_cb, &c.images);
        std::sort(c.images.begin(), c.images.end());
        c.images_valid = true;
    }
    auto it = std::upper_bound(c.images.begin(), c.images.end(), std::make_pair(a, ~(uintptr_t)0));
    return it != c.images.begin() && a < (it - 1)->second;
}

const char* kind_name(int kind) { return kind & 1 ? (kind & 2 ? "atomic write" : "write") : (kind & 2 ? "atomic read" : "read"); }

[[noreturn]] void chk_fail(Worker& w, Fiber* f, const char* cls, void* pc, const std::string& what) {
    const uint3 t = f->hdr->threadIdx;
    w.chk->err_pcs.assign(1, pc);
    fail(w, f, fmt("thread %u (%u,%u,%u): check %s: ", f->lin, t.x, t.y, t.z, cls) + what + " @@SITE0@@");
}

std::string who(uint16_t x) {
    const uint16_t b = x & 0x7fff;
    if (b < 1024) return fmt("thread %u", b);
    if (b == kManyAll) return "threads of several warps";
    return fmt("several threads of warp %u", b & 0x3ff);
}

// One byte's race + init bookkeeping. Returns an error text or empty.
inline int cell_access(Worker::Chk& c, Cell& x, unsigned t, int kind, bool shared, uint16_t* other, uint8_t* ibits, size_t ibit) {
    const bool atom = kind & 2;
    const unsigned wp = t >> 5;
    // Lanes of one warp: a __syncwarp orders everything (PTX bar.warp.sync). A read followed by ANY completed
    // collective of the warp (shuffle, vote, mma, ldmatrix) is ordered before the reader's lane-mates' later
    // writes: the collective cannot complete before the read's value was consumed (topk_warp relies on it).
    // A write followed by a shuffle is NOT ordered before another lane's read (the store may still be in
    // flight): RAW and WAW need __syncwarp.
    const uint16_t gen = c.warpgen[wp], cgen = c.collgen[wp];
    auto ordered1 = [&](uint16_t who_, uint16_t g) {  // who_ = a single thread id (no flags); g: its syncwarp gen
        return (who_ >> 5) == wp && g != gen;
    };
    auto ordered_r = [&](uint16_t who_, uint16_t g) {  // g: the reader's collective gen
        return (who_ >> 5) == wp && g != cgen;
    };
    if (!(kind & 1)) {  // read
        if ((c.flags & L4EMU_CHK_INIT) && !(shared ? x.init == c.serial : (ibits[ibit >> 3] >> (ibit & 7)) & 1)) return 1;
        if (!(c.flags & L4EMU_CHK_RACE)) return 0;
        if (x.epoch != c.epoch) { x.epoch = c.epoch; x.w = kNone; x.r = uint16_t(t | (atom ? kAtomic : 0)); x.rc = cgen; return 0; }
        if (x.w != kNone) {
            const uint16_t wb = x.w & 0x7fff;
            if (wb != t && !(atom && (x.w & kAtomic)) && !ordered1(wb, x.wc)) { *other = x.w; return 2; }
        }
        if (x.r == kNone) { x.r = uint16_t(t | (atom ? kAtomic : 0)); x.rc = cgen; return 0; }
        const uint16_t a = (x.r & kAtomic) && atom ? kAtomic : 0, rb = x.r & 0x7fff;
        uint16_t nb;
        if (rb == t) nb = t;
        else if (rb < 1024) nb = (rb >> 5) == wp ? uint16_t(kManyWarp | wp) : kManyAll;
        else if (rb == (kManyWarp | wp)) nb = rb;
        else nb = kManyAll;
        x.r = nb | a; x.rc = cgen;
        return 0;
    }
    // write
    if (c.flags & L4EMU_CHK_INIT) { if (shared) x.init = c.serial; else ibits[ibit >> 3] |= uint8_t(1u << (ibit & 7)); }
    if (!(c.flags & L4EMU_CHK_RACE)) return 0;
    if (x.epoch == c.epoch) {
        if (x.w != kNone) {
            const uint16_t wb = x.w & 0x7fff;
            if (wb != t && !(atom && (x.w & kAtomic)) && !ordered1(wb, x.wc)) { *other = x.w; return 3; }
        }
        if (x.r != kNone && !(atom && (x.r & kAtomic))) {
            const uint16_t rb = x.r & 0x7fff;
            bool conflict;
            if (rb < 1024) conflict = rb != t && !ordered_r(rb, x.rc);
            else if (rb == kManyAll) conflict = true;
            else conflict = !((rb & 0x3ff) == wp && x.rc != cgen);
            if (conflict) { *other = x.r; return 4; }
        }
    }
    x.epoch = c.epoch; x.w = uint16_t(t | (atom ? kAtomic : 0)); x.wc = gen; x.r = kNone;
    return 0;
}

// ---------------------------------------------------------------- analysis (L4EMU_CHK_ANALYZE)
// Memory efficiency from the same hooks. A "warp instruction" is the k-th execution of one access site
// (pc) by the lanes of one warp. Global: requested bytes ÷ (32-byte sectors touched × 32), as Nsight's
// load/store efficiency. Shared: bank conflicts as wavefronts per phase (4-byte banks, 32 of them; 8-byte
// accesses run in 2 phases of 16 lanes, 16-byte ones in 4 phases of 8 lanes; lanes reading the same word
// share it). Vector accesses (vload/vstore, split by the instrumentation into 4-byte pieces) count as one
// instruction of their full size: emu.h announces them (l4emu_rt_vec). Only the first kAnalyzeBlocks blocks
// of a launch are recorded.
struct SiteStats { const char* kernel; void* pc; bool shared, store; uint64_t instrs = 0, bytes = 0, sectors = 0, wavefronts = 0, phases = 0, max_ways = 0; };
struct Analysis {
    std::map<std::tuple<const char*, void*, int>, SiteStats> sites;  // by (kernel, pc, space·2 + store): over the launches analysed
    struct Lane { uintptr_t a; unsigned size; };
    struct Instr { void* pc; bool shared, store; std::vector<Lane> lanes; };
    std::map<std::tuple<void*, unsigned, unsigned>, Instr> open;   // (pc, warp, k) in the current block
    std::map<std::pair<void*, unsigned>, unsigned> count;          // (pc, thread) -> executions so far
    // per fiber: the vector access announced by l4emu_rt_vec, whose 4-byte pieces follow
    struct Vec { uintptr_t a = 0; unsigned size = 0, left = 0; void* pc = nullptr; };
    std::vector<Vec> vec;
    bool landing = false;
};
constexpr uint64_t kAnalyzeBlocks = 4;
Analysis* g_analysis = nullptr;

void analysis_flush(const char* kernel) {
    Analysis& an = *g_analysis;
    for (auto& [key, in] : an.open) {
        SiteStats& st = an.sites[{kernel, in.pc, int(in.shared) * 2 + int(in.store)}];
        st.kernel = kernel; st.pc = in.pc; st.shared = in.shared; st.store = in.store;
        st.instrs++;
        if (!in.shared) {
            std::vector<uintptr_t> sec;
            for (auto& l : in.lanes) {
                st.bytes += l.size;
                for (uintptr_t s = l.a >> 5; s <= (l.a + l.size - 1) >> 5; ++s) sec.push_back(s);
            }
            std::sort(sec.begin(), sec.end());
            st.sectors += std::unique(sec.begin(), sec.end()) - sec.begin();
        } else {
            unsigned size = 4;
            for (auto& l : in.lanes) size = std::max(size, l.size);
            const unsigned per_phase = size >= 16 ? 8 : size >= 8 ? 16 : 32;
            // lanes are in arrival order; group them by lane index (stored in .size's high bits below)
            std::map<unsigned, std::vector<std::pair<unsigned, uintptr_t>>> phases;  // phase -> (bank, word)
            for (auto& l : in.lanes) {
                const unsigned lane = l.size >> 16, sz = l.size & 0xffff;
                st.bytes += sz;
                for (uintptr_t wd = l.a >> 2; wd <= (l.a + sz - 1) >> 2; ++wd) phases[lane / per_phase].emplace_back(unsigned(wd & 31), wd);
            }
            for (auto& [ph, v] : phases) {
                std::sort(v.begin(), v.end());
                v.erase(std::unique(v.begin(), v.end()), v.end());
                unsigned ways = 0;
                for (size_t i = 0; i < v.size();) {
                    size_t j = i;
                    while (j < v.size() && v[j].first == v[i].first) ++j;
                    ways = std::max<unsigned>(ways, unsigned(j - i));
                    i = j;
                }
                st.wavefronts += ways; st.phases++;
                st.max_ways = std::max<uint64_t>(st.max_ways, ways);
            }
        }
    }
    an.open.clear();
    an.count.clear();
}

void analysis_record(Worker& w, Fiber* f, uintptr_t a, unsigned size, int kind, bool shared, void* pc) {
    Analysis& an = *g_analysis;
    if (an.landing) return;
    const uint3 b = w.info.blockIdx;
    const uint64_t lin = b.x + (uint64_t)w.info.gridDim.x * (b.y + (uint64_t)w.info.gridDim.y * b.z);
    if (lin >= kAnalyzeBlocks) return;
    if (an.vec.size() <= f->lin) an.vec.resize(f->lin + 1);
    Analysis::Vec& v = an.vec[f->lin];
    if (v.left && a >= v.a && a + size <= v.a + v.size) {  // a piece of an announced vector access
        const bool first = v.left == v.size;
        v.left -= std::min(v.left, size);
        if (!first) return;
        a = v.a; size = v.size; pc = v.pc;
    } else v.left = 0;
    // one counter per (site, space, kind): a cp.async is a global read and a shared write at one site
    void* key = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(pc) * 4 + (shared ? 2 : 0) + (kind & 1));
    const unsigned k = an.count[{key, f->lin}]++;
    auto& in = an.open[{key, f->lin / 32, k}];
    in.pc = pc; in.shared = shared; in.store = kind & 1;
    in.lanes.push_back({a, shared ? (size | ((f->lin & 31) << 16)) : size});
}

// The hook behind every instrumented access. pc: the return address of the hook call (the access site).
void chk_access(const void* p, unsigned size, int kind, void* pc) {
    Worker* wp = g_chk;
    if (!wp) return;
    Worker& w = *wp;
    Fiber* f = w.cur;
    const uintptr_t sp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    if (!f || ((sp ^ reinterpret_cast<uintptr_t>(f->region)) >> l4emu_stack_shift)) return;  // not kernel code
    Worker::Chk& c = *w.chk;
    if (c.quiet) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (((a ^ reinterpret_cast<uintptr_t>(f->region)) >> l4emu_stack_shift) == 0) return;  // own stack (locals)
    const bool mem = c.flags & L4EMU_CHK_MEMORY;
    Cell* cells = nullptr;
    uint8_t* ibits = nullptr;
    size_t ibit = 0;
    bool shared = false;
    const char* space = "";
    std::string where;
    const uintptr_t dlo = reinterpret_cast<uintptr_t>(w.dyn), dreq = w.L->dyn;
    if (a - reinterpret_cast<uintptr_t>(w.dyn_base) < Worker::kDynBytes + 2 * Worker::kDynGuard) {
        shared = true; space = "dynamic shared memory";
        if (a < dlo || a + size > dlo + dreq) {
            if (mem)
                chk_fail(w, f, "memory", pc, fmt("%s of %u bytes at dynamic shared memory offset %lld, outside the %llu bytes the launch requested",
                                                  kind_name(kind), size, (long long)(a - dlo), (unsigned long long)dreq));
            return;
        }
        cells = c.dyn_sh + (a - reinterpret_cast<uintptr_t>(w.dyn_base));
        where = fmt("dynamic shared memory +%llu", (unsigned long long)(a - dlo));
    } else if (c.tls_size && a - c.tls_lo < c.tls_size) {
        shared = true; space = "static shared memory";
        if (a + size > c.tls_lo + c.tls_size) {
            if (mem)
                chk_fail(w, f, "memory", pc, fmt("%s of %u bytes at static __shared__ offset %llu, past the module's %zu bytes of static shared memory",
                                                  kind_name(kind), size, (unsigned long long)(a - c.tls_lo), c.tls_size));
            return;
        }
        cells = c.tls_sh.data() + (a - c.tls_lo);
        where = fmt("static shared memory +%llu", (unsigned long long)(a - c.tls_lo));
    } else {
        Alloc* al = c.last_gen == g_alloc_gen ? c.last : nullptr;
        if (!al || a < al->lo - al->guard || a >= al->hi + al->guard) {
            al = nullptr;
            auto it = g_allocs.upper_bound(a);
            if (it != g_allocs.end() && a >= it->second->lo - it->second->guard) al = it->second;
            else if (it != g_allocs.begin() && a < std::prev(it)->second->hi + std::prev(it)->second->guard) al = std::prev(it)->second;
            if (al) { c.last = al; c.last_gen = g_alloc_gen; }
        }
        if (al) {
            space = "global memory";
            if (a < al->lo || a + size > al->hi) {
                if (mem) {
                    const long long off = (long long)(a - al->lo);
                    chk_fail(w, f, "memory", pc, fmt("%s of %u bytes at %p: %s of an allocation of %zu bytes at %p (%lld bytes %s)",
                        kind_name(kind), size, p, a < al->lo ? "before the start" : "past the end", (size_t)(al->hi - al->lo), (void*)al->lo,
                        a < al->lo ? -off : (long long)(a + size - al->hi), a < al->lo ? "before it" : "beyond it"));
                }
                return;
            }
            if (!al->sh) {
                al->sh = new_shadow(al->shlen);
                if (!al->sh) chk_fail(w, f, "memory", pc, fmt("cannot map the checker's shadow of an allocation of %zu bytes", al->shlen));
            }
            cells = al->sh + (a - al->lo);
            ibits = al->init; ibit = a - al->lo;
            where = fmt("global %p (allocation %p +%llu)", p, (void*)al->lo, (unsigned long long)(a - al->lo));
        } else {
            // Not device memory: another fiber's stack (runtime deposits), a loaded image (__constant__ data,
            // tables), the block's own info (blockIdx...). Anything else is a wild access.
            if (!mem) return;
            if (c.tls_size && a - c.tls_lo < c.tls_size + 256)
                chk_fail(w, f, "memory", pc, fmt("%s of %u bytes at static __shared__ offset %llu, past the module's %zu bytes of static shared memory",
                                                  kind_name(kind), size, (unsigned long long)(a - c.tls_lo), c.tls_size));
            if (a - reinterpret_cast<uintptr_t>(&w.info) < sizeof(w.info)) return;
            for (auto& m : w.maps) if (a - reinterpret_cast<uintptr_t>(m.first) < m.second) return;
            if (!(kind & 1) && in_image(c, a)) return;
            chk_fail(w, f, "memory", pc, fmt("%s of %u bytes at %p, outside every live device allocation%s", kind_name(kind), size, p,
                                              kind & 1 ? "" : " and every loaded image"));
        }
    }
    if (mem && (size == 2 || size == 4 || size == 8 || size == 16) && (a & (size - 1)))
        chk_fail(w, f, "memory", pc, fmt("misaligned %u-byte %s at %p (%s; address %% %u = %u; the GPU faults)", size, kind_name(kind), p,
                                          where.c_str(), size, (unsigned)(a % size)));
    if (c.analysis) analysis_record(w, f, a, size, kind, shared, pc);
    if (!(c.flags & (L4EMU_CHK_RACE | L4EMU_CHK_INIT))) return;
    for (unsigned i = 0; i < size; ++i) {
        uint16_t other = kNone;
        const int e = cell_access(c, cells[i], f->lin, kind, shared, &other, ibits, ibit + i);
        if (!e) continue;
        if (e == 1)
            chk_fail(w, f, "init", pc, fmt("%s of %u bytes at %s reads byte %u, never written %s", kind_name(kind), size, where.c_str(), i,
                                            shared ? "since the block started" : "since the allocation (no upload, memset or kernel store)"));
        const uint16_t ob = other & 0x7fff;
        const bool same_warp = ob < 1024 ? (ob >> 5) == (f->lin >> 5) : ob != kManyAll && (ob & 0x3ff) == (f->lin >> 5);
        static const char* const names[] = {"", "", "read after write", "write after write", "write after read"};
        chk_fail(w, f, "race", pc, fmt("%s: %s of %u bytes at %s (%s); %s %s byte %u since the last __syncthreads%s",
                                        names[e], kind_name(kind), size, where.c_str(), space, who(other).c_str(),
                                        e == 4 ? "read" : "wrote", i,
                                        same_warp ? " (same warp, no __syncwarp between)" : ", with no barrier between"));
    }
}

void chk_landing(Fiber* f, void* dst, void* pc) {
    if (!g_chk || g_chk->cur != f) return;
    if (g_analysis) g_analysis->landing = true;  // counted once, at issue
    chk_access(dst, 16, 1, pc);
    if (g_analysis) g_analysis->landing = false;
}

// The source frames of a return address, innermost first ("common.cuh:208", "rmsnorm.cu:45"), via addr2line
// (binutils) over the module's DWARF line table (-g); frames in emu.h are skipped. Cached per address (a
// module stays loaded for the process). Empty when addr2line or the line table is missing.
const std::vector<std::string>& frames_of(void* pc) {
    static std::mutex m;
    static std::map<void*, std::vector<std::string>> cache;
    std::lock_guard<std::mutex> lk(m);
    auto it = cache.find(pc);
    if (it != cache.end()) return it->second;
    std::vector<std::string>& frames = cache[pc];
    Dl_info di{};
    if (!pc || !dladdr(static_cast<char*>(pc) - 1, &di) || !di.dli_fname) return frames;
    const uintptr_t off = reinterpret_cast<uintptr_t>(pc) - 1 - reinterpret_cast<uintptr_t>(di.dli_fbase);
    std::string cmd = fmt("addr2line -e '%s' -i 0x%llx 2>/dev/null", di.dli_fname, (unsigned long long)off);
    if (FILE* p = popen(cmd.c_str(), "r")) {
        char line[1024];
        while (fgets(line, sizeof line, p)) {
            std::string s(line);
            while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
            const size_t paren = s.find(" (discriminator");
            if (paren != std::string::npos) s.resize(paren);
            const size_t slash = s.rfind('/');
            if (slash != std::string::npos) s = s.substr(slash + 1);
            const bool unknown = s.empty() || s[0] == '?' || s[0] == ':' || (s.size() >= 2 && (s.compare(s.size() - 2, 2, ":?") == 0 || s.compare(s.size() - 2, 2, ":0") == 0));
            if (!unknown) frames.push_back(s);
        }
        pclose(p);
        // The innermost frames inside the emulator's own header (vload's alignment hook, the barrier
        // wrappers) are not the kernel's line: start at the first frame outside emu.h.
        while (frames.size() > 1 && frames[0].compare(0, 6, "emu.h:") == 0) frames.erase(frames.begin());
    }
    return frames;
}

// "at common.cuh:208 (inlined in rmsnorm.cu:45)" for a return address; "at <module>+0x1234" when the
// module has no line table or addr2line is missing.
std::string symbolize(void* pc) {
    const std::vector<std::string>& frames = frames_of(pc);
    std::string out;
    for (size_t i = 0; i < frames.size(); ++i) out += (i == 0 ? "at " : i == 1 ? " (inlined in " : " in ") + frames[i];
    if (frames.size() > 1) out += ")";
    Dl_info di{};
    if (out.empty() && pc && dladdr(static_cast<char*>(pc) - 1, &di) && di.dli_fname) {
        const uintptr_t off = reinterpret_cast<uintptr_t>(pc) - 1 - reinterpret_cast<uintptr_t>(di.dli_fbase);
        const char* b = strrchr(di.dli_fname, '/');
        out = fmt("at %s+0x%llx", b ? b + 1 : di.dli_fname, (unsigned long long)off);
    }
    return out;
}

const char* const kBarrierForms[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and", "__syncthreads_or"};
const char* base_name(const char* path) { const char* b = strrchr(path, '/'); return b ? b + 1 : path; }

// End of a checked block: the barrier lines reached at two code addresses (Chk::suspects). Both addresses'
// innermost frame is the barrier's line and their inline chains differ: one barrier line reached through two
// different calls of its function (divergent code) — reported. Same chain: g++ duplicated the barrier — fine.
// An address whose innermost frame is another line (a tail call: the return address is the caller's) or
// unknown (no addr2line) cannot tell: not reported.
void chk_resolve_suspects(Worker& w) {
    Worker::Chk& c = *w.chk;
    for (const auto& su : c.suspects) {
        if (w.failed) break;
        const std::string here = fmt("%s:%d", base_name(su.file), su.line);
        const auto& fa = frames_of(su.pc_a);
        const auto& fb = frames_of(su.pc_b);
        if (fa.empty() || fb.empty() || fa[0] != here || fb[0] != here || fa == fb) continue;
        const uint3 b = w.info.blockIdx, t = w.fibers[su.lin_b]->hdr->threadIdx;
        w.err = fmt("kernel %s: block (%u,%u,%u): thread %u (%u,%u,%u): check sync: reached %s %s while thread %u waited at %s %s "
                    "(the same barrier line through different calls) — every thread of a block must reach the same barrier",
                    w.L->k->name, b.x, b.y, b.z, su.lin_b, t.x, t.y, t.z, kBarrierForms[su.op & 3], symbolize(su.pc_b).c_str(), su.lin_a,
                    kBarrierForms[su.op & 3], symbolize(su.pc_a).c_str());
        w.failed = true;
    }
    c.suspects.clear();
}

void chk_begin_block(Worker& w) {
    Worker::Chk& c = *w.chk;
    c.epoch = ++g_epoch; c.serial = ++g_serial;
    for (auto& g : c.warpgen) g = 0;
    for (auto& g : c.collgen) g = 0;
    c.quiet = false;
    c.bar_site = nullptr; c.bar_file = nullptr;
    c.suspects.clear();
}

void chk_begin_launch(Worker& w, const Launch& L) {
    if (!w.chk) w.chk = new Worker::Chk;
    Worker::Chk& c = *w.chk;
    c.flags = L.chk;
    c.analysis = (L.chk & L4EMU_CHK_ANALYZE) ? (g_analysis ? g_analysis : (g_analysis = new Analysis)) : nullptr;
    c.images_valid = false;
    c.last = nullptr;
    if (!c.dyn_sh) c.dyn_sh = new_shadow(Worker::kDynBytes + 2 * Worker::kDynGuard);
    c.tls_lo = 0; c.tls_size = 0;
    if (L.mod && L.mod->handle && L.mod->tls_size) {
        if (L.mod->touch) L.mod->touch();  // allocates this thread's TLS block of the module
        void* tls = nullptr;
        if (dlinfo(L.mod->handle, RTLD_DI_TLS_DATA, &tls) == 0 && tls) {
            c.tls_lo = reinterpret_cast<uintptr_t>(tls);
            c.tls_size = L.mod->tls_size;
            if (c.tls_sh.size() < c.tls_size) c.tls_sh.resize(c.tls_size);
        }
    }
}

struct TlsQuery { uintptr_t base; size_t size; };
int tls_cb(dl_phdr_info* info, size_t, void* data) {
    auto* q = static_cast<TlsQuery*>(data);
    if (info->dlpi_addr != q->base) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i)
        if (info->dlpi_phdr[i].p_type == PT_TLS) q->size = info->dlpi_phdr[i].p_memsz;
    return 1;
}
const ModInfo* module_of(const l4emu_kernel* k) {
    auto it = g_mods.find(k);
    if (it != g_mods.end()) return it->second;
    auto* m = new ModInfo;
    Dl_info di{};
    if (dladdr(reinterpret_cast<void*>(k->entry), &di) && di.dli_fname) {
        m->path = di.dli_fname;
        m->handle = dlopen(di.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
        if (m->handle) m->touch = reinterpret_cast<void* (*)()>(dlsym(m->handle, "l4emu_module_tls_touch"));
        TlsQuery q{reinterpret_cast<uintptr_t>(di.dli_fbase), 0};
        dl_iterate_phdr(tls_cb, &q);
        m->tls_size = q.size;
    }
    g_mods[k] = m;
    return m;
}

// ---------------------------------------------------------------- faults
// A kernel that touches unmapped memory (a wild pointer, an index far out of range), divides an integer by
// zero or overflows its fiber stack must fail ITS launch, not end the host process (the .NET test host, a
// server). SIGSEGV, SIGBUS, SIGFPE and SIGILL get a handler (on an alternate stack, so a stack overflow can be
// handled too) that recognises a fault on a fiber stack of a block that is running, records it and
// siglongjmps back to run_block on the worker's own stack; the block is abandoned like any failed block.
// Every other fault (.NET turns its own SIGSEGVs into NullReferenceException) goes to the handler that was
// installed before ours, untouched. Checked launches see a wild access in the memory check BEFORE it happens;
// this is the net for unchecked launches and for accesses the instrumentation does not see.
// L4EMU_SIGNALS=0 leaves the handlers alone.
constexpr int kMaxStackMaps = 4096;
struct StackMap { std::atomic<uintptr_t> lo{0}, hi{0}; };
StackMap g_stack_maps[kMaxStackMaps];   // every mmap holding fiber stacks (a handler may not take locks)
std::atomic<int> g_stack_map_count{0};
std::mutex g_stack_map_mutex;           // writers only
std::atomic<int> g_in_launch{0};        // launches running: a fault while none runs is never ours
struct sigaction g_prev_action[65];
const int kFaultSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};

void register_stacks(char* lo, size_t len) {
    std::lock_guard<std::mutex> lk(g_stack_map_mutex);
    int n = g_stack_map_count.load();
    int slot = 0;
    while (slot < n && g_stack_maps[slot].lo.load() != 0) ++slot;  // reuse a freed slot
    if (slot == kMaxStackMaps) return;  // not registered: a fault there is not recognised (ends the process)
    g_stack_maps[slot].hi.store(reinterpret_cast<uintptr_t>(lo) + len);
    g_stack_maps[slot].lo.store(reinterpret_cast<uintptr_t>(lo));
    if (slot == n) g_stack_map_count.store(n + 1);
}
void unregister_stacks(char* lo) {
    std::lock_guard<std::mutex> lk(g_stack_map_mutex);
    for (int i = 0; i < g_stack_map_count.load(); ++i)
        if (g_stack_maps[i].lo.load() == reinterpret_cast<uintptr_t>(lo)) { g_stack_maps[i].lo.store(0); g_stack_maps[i].hi.store(0); }
}

void chain_fault(int sig, siginfo_t* info, void* uc) {
    const struct sigaction& p = g_prev_action[sig];
    if (p.sa_flags & SA_SIGINFO) { if (p.sa_sigaction) p.sa_sigaction(sig, info, uc); return; }
    if (p.sa_handler == SIG_IGN) return;
    if (p.sa_handler == SIG_DFL) {  // the default action: re-run the faulting instruction without us
        struct sigaction d{};
        d.sa_handler = SIG_DFL;
        sigemptyset(&d.sa_mask);
        sigaction(sig, &d, nullptr);
        return;
    }
    p.sa_handler(sig);
}

void fault_handler(int sig, siginfo_t* info, void* ucv) {
    auto* uc = static_cast<ucontext_t*>(ucv);
    if (g_in_launch.load(std::memory_order_acquire) > 0 && uc) {
#if defined(__x86_64__)
        const uintptr_t sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
        void* const pc = reinterpret_cast<void*>(uc->uc_mcontext.gregs[REG_RIP]);
#else
        const uintptr_t sp = 0; void* const pc = nullptr;
#endif
        const int n = g_stack_map_count.load(std::memory_order_acquire);
        for (int i = 0; i < n; ++i) {
            const uintptr_t lo = g_stack_maps[i].lo.load(std::memory_order_relaxed), hi = g_stack_maps[i].hi.load(std::memory_order_relaxed);
            if (!(sp >= lo && sp < hi)) continue;
            // A fiber stack: the fiber's header is at the top of its region (the guard page, where a stack
            // overflow faults, is in the same region).
            auto* f = static_cast<Fiber*>(l4emu_hdr_at(sp)->fiber);
            Worker* w = f ? f->w : nullptr;
            if (!w || !w->in_block || w->cur != f) break;
            w->fault_sig = sig; w->fault_code = info ? info->si_code : 0;
            w->fault_addr = info ? info->si_addr : nullptr; w->fault_pc = pc; w->fault_lin = f->lin;
            w->in_block = 0;
            sigset_t un;  // fault_jb was saved without the signal mask: unblock the signal we are handling
            sigemptyset(&un); sigaddset(&un, sig);
            sigprocmask(SIG_UNBLOCK, &un, nullptr);
            siglongjmp(w->fault_jb, 1);
        }
    }
    chain_fault(sig, info, ucv);
}

void install_fault_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (const char* e = getenv("L4EMU_SIGNALS"); e && *e == '0') return;
        for (int sig : kFaultSignals) {
            struct sigaction a{};
            a.sa_sigaction = fault_handler;
            a.sa_flags = SA_SIGINFO | SA_ONSTACK;
            sigemptyset(&a.sa_mask);
            sigaction(sig, &a, &g_prev_action[sig]);
        }
    });
}

// The handler runs on the thread's alternate signal stack (a stack overflow leaves no room on the fiber's).
// .NET gives its threads one; the pool's helper threads get ours.
void ensure_altstack() {
    static thread_local bool done = false;
    if (done) return;
    done = true;
    stack_t cur{};
    if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) && cur.ss_size >= 16384) return;
    const size_t size = 64 * 1024;
    void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return;
    stack_t ss{};
    ss.ss_sp = mem; ss.ss_size = size; ss.ss_flags = 0;
    if (sigaltstack(&ss, nullptr) != 0) munmap(mem, size);  // leaked on success: lives as long as the thread
}

std::string fault_message(Worker& w) {
    const char* name = w.fault_sig == SIGSEGV ? "SIGSEGV" : w.fault_sig == SIGBUS ? "SIGBUS" : w.fault_sig == SIGFPE ? "SIGFPE" : "SIGILL";
    Fiber* f = w.fibers[w.fault_lin];
    const uintptr_t a = reinterpret_cast<uintptr_t>(w.fault_addr), region = reinterpret_cast<uintptr_t>(f->region);
    const long page = sysconf(_SC_PAGESIZE);
    std::string what;
    if (w.fault_sig == SIGSEGV && a >= region && a < region + (uintptr_t)page)
        what = fmt("fiber stack overflow (each CUDA thread has a %zu KiB stack here: raise L4EMU_STACK_KB)", ((size_t)1 << l4emu_stack_shift) / 1024);
    else if (w.fault_sig == SIGSEGV || w.fault_sig == SIGBUS)
        what = w.fault_code == SI_KERNEL  // a general-protection fault: the kernel reports no address
            ? fmt("%s (an access to a non-canonical address; on the GPU an illegal-address fault)", name)
            : fmt("%s at %p (an access to unmapped memory; on the GPU an illegal-address fault)", name, w.fault_addr);
    else if (w.fault_sig == SIGFPE)
        what = "SIGFPE (integer division by zero or overflow; the GPU gives an undefined value, x86 traps)";
    else
        what = "SIGILL (an illegal instruction: g++ plants one where the code is undefined, e.g. a null dereference it can see)";
    const uint3 t = f->hdr->threadIdx, b = w.info.blockIdx;
    std::string site = symbolize(w.fault_pc);
    return fmt("kernel %s: block (%u,%u,%u): thread %u (%u,%u,%u): fault: ", w.L->k->name, b.x, b.y, b.z, w.fault_lin, t.x, t.y, t.z) + what +
           (site.empty() ? "" : " " + site) +
           (w.L->chk & L4EMU_CHK_MEMORY ? "" : "; run it under the checker (L4EMU_CHECK=memory, llama4 selftest --check memory) for the source line of the access");
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
    if (w.L->chk) { w.chk->epoch = ++g_epoch; w.chk->bar_site = nullptr; w.chk->bar_file = nullptr; }
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
    if (L.chk) chk_begin_block(w);
    Fiber* first = w.pop();
    first->state = RUNNING;
    // Without the signal mask (no syscall per block): the handler unblocks its signal before jumping here.
    if (sigsetjmp(w.fault_jb, 0) == 0) {
        w.in_block = 1;
        switch_to(w, nullptr, first);
        w.in_block = 0;
    } else {
        // A fault in a fiber (see "faults"): the block is abandoned like a failed one.
        w.cur = nullptr;
        if (L.chk) { w.chk->quiet = false; if (g_analysis) g_analysis->landing = false; }
        w.err = fault_message(w);
        w.failed = true;
    }
    if (L.chk && !w.chk->suspects.empty()) chk_resolve_suspects(w);
    if (L.chk && w.chk->analysis) analysis_flush(L.k->name);
    return !w.failed;
}

// ---------------------------------------------------------------- the pool
void run_blocks(Launch& L) {
    Worker& w = worker();
    ensure_altstack();
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
L4EMU_EXPORT int l4emu_rt_syncthreads_at(int op, int pred, const char* file, int line) {
    Fiber* f = self_fiber();
    Worker& w = *f->w;
    if (w.L->chk & L4EMU_CHK_SYNC) {
        // Every thread of the block must reach the SAME barrier (source line and form): on the GPU a
        // __syncthreads in divergent code is undefined (hangs or lets threads past one another). Barriers are
        // compared by line (g++ may duplicate one: jump threading, unrolling); two code addresses on one line
        // are told apart at the end of the block by their inline chains (chk_resolve_suspects).
        Worker::Chk& c = *w.chk;
        void* site = __builtin_return_address(0);
        if (w.arrived == 0) { c.bar_site = site; c.bar_first = f->lin; c.bar_op = op; c.bar_file = file; c.bar_line = line; }
        else if (op != c.bar_op || line != c.bar_line || (file != c.bar_file && (!file || !c.bar_file || strcmp(file, c.bar_file) != 0))) {
            const uint3 t = f->hdr->threadIdx;
            c.err_pcs = {site, const_cast<void*>(c.bar_site)};
            fail(w, f, fmt("thread %u (%u,%u,%u): check sync: reached %s @@SITE0@@ while %u other thread(s) (first: thread %u) wait at %s @@SITE1@@ — "
                           "every thread of a block must reach the same barrier", f->lin, t.x, t.y, t.z, kBarrierForms[op & 3], w.arrived, c.bar_first,
                           kBarrierForms[c.bar_op & 3]));
        } else if (site != c.bar_site && c.suspects.size() < 64) {
            bool known = false;
            for (const auto& su : c.suspects) known |= su.pc_a == c.bar_site && su.pc_b == site;
            if (!known) c.suspects.push_back({const_cast<void*>(c.bar_site), site, c.bar_first, f->lin, op, file ? file : "", line});
        }
    }
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

// " at common.cuh:193" for a collective's source location ("" when it has none: mma/ldmatrix helpers).
std::string at_line(const char* file, int line) { return file && line > 0 ? fmt(" at %s:%d", base_name(file), line) : std::string(); }

// ret: the kernel's return address (the access site of an ldmatrix row).
static void warp_sync(unsigned mask, const char* what, void* mine, void (*compute)(void* const*, unsigned), const char* file, int line, void* ret);
L4EMU_EXPORT void l4emu_rt_warp_sync(unsigned mask, const char* what, void* mine, void (*compute)(void* const*, unsigned)) {
    warp_sync(mask, what, mine, compute, nullptr, 0, __builtin_return_address(0));
}
L4EMU_EXPORT void l4emu_rt_warp_sync_at(unsigned mask, const char* what, void* mine, void (*compute)(void* const*, unsigned),
                                        const char* file, int line) {
    warp_sync(mask, what, mine, compute, file, line, __builtin_return_address(0));
}

static void warp_sync(unsigned mask, const char* what, void* mine, void (*compute)(void* const*, unsigned), const char* file, int line, void* ret) {
    Fiber* f = self_fiber();
    Worker& w = *f->w;
    const unsigned warp = f->lin / 32, lane = f->lin % 32;
    const unsigned lanes_here = std::min(32u, w.n - warp * 32);
    const unsigned exist = lanes_here == 32 ? 0xffffffffu : (1u << lanes_here) - 1;
    const unsigned need = mask & exist;  // lanes past the end of a partial last warp never take part
    WarpState& ws = w.warps[warp];
    if (!(need >> lane & 1))
        fail(w, f, fmt("%s in warp %u called by lane %u, which is not in its mask 0x%08x", what, warp, lane, mask) + at_line(file, line));
    // Join the pending collective with the same op and mask, or open a new one.
    int gi = -1;
    for (unsigned u = ws.used; u; u &= u - 1) {
        const int c = __builtin_ctz(u);
        if (ws.groups[c].mask == need && (ws.groups[c].op == what || strcmp(ws.groups[c].op, what) == 0)) { gi = c; break; }
    }
    if (gi < 0 && (w.L->chk & L4EMU_CHK_SYNC)) {
        for (unsigned u = ws.used; u; u &= u - 1) {
            const Group& o = ws.groups[__builtin_ctz(u)];
            if ((o.mask & need) && (o.op == what || strcmp(o.op, what) == 0))
                fail(w, f, fmt("thread %u: check sync: %s in warp %u called by lane %u with mask 0x%08x while lanes 0x%08x wait at it with mask 0x%08x "
                               "(inconsistent masks: every lane in a mask must pass the same mask)", f->lin, what, warp, lane, mask, o.arrived, o.mask) + at_line(file, line));
        }
    }
    if (w.L->chk && mine && strncmp(what, "ldmatrix", 8) == 0) {
        // ldmatrix: this lane's 16-byte row (common.cuh's l4_emu::LdmLane starts with the row pointer) is
        // read by the collective; record it as this lane's read, before anyone reads it.
        chk_access(*static_cast<void* const*>(mine), 16, 0, ret);
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
    if (w.L->chk) {
        // The collective's own reads of the lanes' deposits are not kernel accesses; a __syncwarp orders
        // the memory accesses of its lanes (PTX bar.warp.sync), shuffles/votes/mma/ldmatrix do not.
        w.chk->quiet = true;
        compute(lanes, need);
        w.chk->quiet = false;
        if (strcmp(what, "__syncwarp") == 0) ++w.chk->warpgen[warp];
        ++w.chk->collgen[warp];
    } else {
        compute(lanes, need);
    }
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
    if (f->w->L->chk & L4EMU_CHK_MEMORY)  // checked: a memory report with the access's source line
        chk_fail(*f->w, f, "memory", __builtin_return_address(0),
                 fmt("misaligned %u-byte vector %s at %p (address %% %u = %u; the GPU faults)", align, what, p, align, (unsigned)((uintptr_t)p % align)));
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
    void* pc = __builtin_return_address(0);
    if (f->w->L->chk) {
        // The source is read at issue; the destination may be written any time from issue to the wait
        // that completes the group: recorded at both ends (a race with either is a race on the GPU).
        if (n) chk_access(src, (unsigned)n, 0, pc);
        chk_access(dst, 16, 1, pc);
    }
    if (f->w->L->cp_deferred) {
        f->cp.push_back(Fiber::CpCopy{dst, f->cp_open, pc, {}});
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
L4EMU_EXPORT int l4emu_launch_ex(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 unsigned dyn_shared_bytes, void** args, unsigned check) {
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

    install_fault_handlers();
    std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
    struct InLaunch {
        InLaunch() { g_in_launch.fetch_add(1, std::memory_order_release); }
        ~InLaunch() { g_in_launch.fetch_sub(1, std::memory_order_release); }
    } in_launch;
    Launch L;
    L.k = k; L.grid = dim3(gx, gy, gz); L.block = dim3(bx, by, bz); L.dyn = dyn_shared_bytes; L.args = args;
    L.cp_deferred = cp_deferred();
    L.total = (uint64_t)gx * gy * gz;
    L.chk = check & L4EMU_CHK_ALL;
    // Analysis of big launches (the perf cases): only the first kAnalyzeBlocks blocks run (their accesses
    // are the sample); the results of such a launch are incomplete. L4EMU_ANALYZE_ALL=1 runs every block.
    if ((L.chk & L4EMU_CHK_ANALYZE) && !getenv("L4EMU_ANALYZE_ALL")) L.total = std::min<uint64_t>(L.total, kAnalyzeBlocks);
    if (L.chk) {
        L.mod = module_of(k);
        chk_begin_launch(worker(), L);
        g_chk = &worker();
    }
    Pool& p = pool();
    // A checked launch runs its blocks one at a time on this thread (the shadow state is not shared).
    const unsigned helpers = L.chk ? 0 : (unsigned)std::min<uint64_t>(pool_size() - 1, L.total - 1);
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
    if (L.chk) {
        g_chk = nullptr;
        Worker::Chk& c = *worker().chk;
        if (L.failed) {
            // Source lines of the sites named in the message (symbolised here, off the fiber stacks).
            for (size_t i = 0; i < c.err_pcs.size(); ++i) {
                const std::string tag = "@@SITE" + std::to_string(i) + "@@";
                const size_t at = L.err.find(tag);
                if (at != std::string::npos) L.err.replace(at, tag.size(), symbolize(c.err_pcs[i]));
            }
        }
        c.err_pcs.clear();
    }
    if (L.failed) return set_error(L.err);
    return 0;
}

L4EMU_EXPORT int l4emu_launch(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                              unsigned dyn_shared_bytes, void** args) {
    return l4emu_launch_ex(fn, gx, gy, gz, bx, by, bz, dyn_shared_bytes, args, 0);
}

L4EMU_EXPORT const char* l4emu_last_error(void) { return tl_error.c_str(); }
L4EMU_EXPORT void l4emu_set_threads(int n) { pool().threads.store(n); }
// Not part of the C# contract: selects the ucontext switch (1) or the fast one (0) for later launches.
L4EMU_EXPORT void l4emu_set_ucontext(int on) { g_use_uc.store(on || !L4EMU_HAVE_FAST_SWITCH ? 1 : 0); }
// Not part of the C# contract: cp.async mode for later launches: 1 deferred, 0 immediate, -1 L4EMU_CP_ASYNC.
L4EMU_EXPORT void l4emu_set_cp_async(int mode) { g_cp_deferred.store(mode < 0 ? -1 : mode ? 1 : 0); }
L4EMU_EXPORT const char* l4emu_version(void) { return "l4emu 1.1 (fibers; fast x86-64 switch, ucontext fallback; checker)"; }

// ---------------------------------------------------------------- checker: host side
// Device memory for checked launches: the host allocates bytes + 2*guard and registers [p, p+bytes) with
// `guard` unused bytes on each side. Returns 0, or nonzero when the shadow cannot be mapped.
L4EMU_EXPORT int l4emu_mem_register(void* p, size_t bytes, size_t guard) {
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    if (!bytes) return 0;
    void* bits = mmap(nullptr, bytes / 8 + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (bits == MAP_FAILED) return 1;
    auto* a = new Alloc{lo, lo + bytes, guard, nullptr, bytes, static_cast<uint8_t*>(bits)};
    auto it = g_allocs.find(lo);
    if (it != g_allocs.end()) { free_alloc(it->second); g_allocs.erase(it); }
    g_allocs[lo] = a;
    ++g_alloc_gen;
    return 0;
}
L4EMU_EXPORT void l4emu_mem_unregister(void* p) {
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == g_allocs.end()) return;
    free_alloc(it->second);
    g_allocs.erase(it);
    ++g_alloc_gen;
}
// Uploads, memsets and copies write device memory outside kernels: mark [p, p+bytes) initialised
// (clipped to the registered allocation holding p; nothing when p is not registered).
L4EMU_EXPORT void l4emu_mem_written(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return;
    Alloc* al = std::prev(it)->second;
    if (a >= al->hi) return;
    size_t i = a - al->lo, e = i + std::min<size_t>(bytes, al->hi - a);
    for (; i < e && (i & 7); ++i) al->init[i >> 3] |= uint8_t(1u << (i & 7));
    if (e - i >= 8) { memset(al->init + (i >> 3), 0xff, (e - i) >> 3); i += (e - i) & ~size_t(7); }
    for (; i < e; ++i) al->init[i >> 3] |= uint8_t(1u << (i & 7));
}
// Flags understood by l4emu_launch_ex, from "race,memory,sync,init" / "all" / "none" (also analyze).
L4EMU_EXPORT unsigned l4emu_check_flags(const char* spec) {
    if (!spec) return 0;
    unsigned f = 0;
    std::string s(spec);
    size_t i = 0;
    while (i <= s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        std::string t = s.substr(i, j - i);
        if (t == "all") f |= L4EMU_CHK_ALL & ~L4EMU_CHK_ANALYZE;
        else if (t == "race") f |= L4EMU_CHK_RACE;
        else if (t == "memory") f |= L4EMU_CHK_MEMORY;
        else if (t == "sync") f |= L4EMU_CHK_SYNC;
        else if (t == "init") f |= L4EMU_CHK_INIT;
        else if (t == "analyze") f |= L4EMU_CHK_ANALYZE;
        i = j + 1;
    }
    return f;
}
// vload/vstore in an instrumented module: the next `size` bytes of accesses at p by this thread are one
// vector instruction (the analysis counts it once, at its full size).
L4EMU_EXPORT void l4emu_rt_vec(const void* p, unsigned size) {
    Worker* w = g_chk;
    if (!w || !g_analysis || !w->chk || !w->chk->analysis || !w->cur) return;
    Fiber* f = w->cur;
    if (g_analysis->vec.size() <= f->lin) g_analysis->vec.resize(f->lin + 1);
    g_analysis->vec[f->lin] = Analysis::Vec{reinterpret_cast<uintptr_t>(p), size, size, __builtin_return_address(0)};
}
// The analysis so far, one line per access site, tab-separated:
// kernel, site, space (global|shared), kind (load|store), instructions, bytes, sectors, wavefronts, phases, max ways.
// reset != 0 clears it after. The text stays valid until the next call.
L4EMU_EXPORT const char* l4emu_analysis_report(int reset) {
    static std::string out;
    out.clear();
    std::lock_guard<std::mutex> lk(g_launch_mutex);
    if (!g_analysis) return "";
    for (auto& [key, st] : g_analysis->sites)
        out += fmt("%s\t%s\t%s\t%s\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu\n", st.kernel, symbolize(st.pc).c_str(), st.shared ? "shared" : "global",
                   st.store ? "store" : "load", (unsigned long long)st.instrs, (unsigned long long)st.bytes, (unsigned long long)st.sectors,
                   (unsigned long long)st.wavefronts, (unsigned long long)st.phases, (unsigned long long)st.max_ways);
    if (reset) g_analysis->sites.clear();
    return out.c_str();
}
// Kernel argument unpacking (module.h) is not kernel code: on = 1 before, 0 after.
L4EMU_EXPORT void l4emu_rt_quiet(int on) {
    if (g_chk && g_chk->chk) g_chk->chk->quiet = on != 0;
}

// ---- the -fsanitize=thread ABI (GCC 12). The module is linked without libtsan; these are its hooks.
#define L4EMU_TSAN_RW(N) \
    L4EMU_EXPORT void __tsan_read##N(void* p) { chk_access(p, N, 0, __builtin_return_address(0)); } \
    L4EMU_EXPORT void __tsan_write##N(void* p) { chk_access(p, N, 1, __builtin_return_address(0)); } \
    L4EMU_EXPORT void __tsan_unaligned_read##N(void* p) { chk_access(p, N, 0, __builtin_return_address(0)); } \
    L4EMU_EXPORT void __tsan_unaligned_write##N(void* p) { chk_access(p, N, 1, __builtin_return_address(0)); } \
    L4EMU_EXPORT void __tsan_volatile_read##N(void* p) { chk_access(p, N, 0, __builtin_return_address(0)); } \
    L4EMU_EXPORT void __tsan_volatile_write##N(void* p) { chk_access(p, N, 1, __builtin_return_address(0)); }
L4EMU_TSAN_RW(1) L4EMU_TSAN_RW(2) L4EMU_TSAN_RW(4) L4EMU_TSAN_RW(8) L4EMU_TSAN_RW(16)
#undef L4EMU_TSAN_RW
L4EMU_EXPORT void __tsan_read_range(void* p, unsigned long n) {
    for (unsigned long i = 0; i < n; i += 16) chk_access(static_cast<char*>(p) + i, (unsigned)std::min(16ul, n - i), 0, __builtin_return_address(0));
}
L4EMU_EXPORT void __tsan_write_range(void* p, unsigned long n) {
    for (unsigned long i = 0; i < n; i += 16) chk_access(static_cast<char*>(p) + i, (unsigned)std::min(16ul, n - i), 1, __builtin_return_address(0));
}
L4EMU_EXPORT void __tsan_init(void) {}
L4EMU_EXPORT void __tsan_func_entry(void*) {}
L4EMU_EXPORT void __tsan_func_exit(void) {}
L4EMU_EXPORT void __tsan_vptr_update(void**, void*) {}
L4EMU_EXPORT void __tsan_vptr_read(void**) {}
L4EMU_EXPORT void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
L4EMU_EXPORT void __tsan_atomic_signal_fence(int) {}
// Atomics: recorded as atomic accesses (two atomics never race), then done for real (blocks of an
// unchecked launch run on several OS threads).
#define L4EMU_TSAN_ATOMIC(N, T) \
    L4EMU_EXPORT T __tsan_atomic##N##_load(const volatile T* a, int) { \
        chk_access((const void*)a, N / 8, 2, __builtin_return_address(0)); return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT void __tsan_atomic##N##_store(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_exchange(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_fetch_add(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_fetch_sub(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_fetch_and(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_fetch_or(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_fetch_xor(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_fetch_nand(volatile T* a, T v, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT int __tsan_atomic##N##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT int __tsan_atomic##N##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); } \
    L4EMU_EXPORT T __tsan_atomic##N##_compare_exchange_val(volatile T* a, T c, T v, int, int) { \
        chk_access((const void*)a, N / 8, 3, __builtin_return_address(0)); \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return c; }
L4EMU_TSAN_ATOMIC(8, uint8_t) L4EMU_TSAN_ATOMIC(16, uint16_t) L4EMU_TSAN_ATOMIC(32, uint32_t) L4EMU_TSAN_ATOMIC(64, uint64_t)
#undef L4EMU_TSAN_ATOMIC
