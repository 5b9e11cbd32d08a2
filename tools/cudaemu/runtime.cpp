// cudaemu runtime: fibers, the block scheduler, barriers and warp collectives, the CUDA runtime API
// subset the kernels' host code uses, and a shared/global memory race + initialisation checker fed by
// gcc's -fsanitize=thread instrumentation of the kernel translation unit (this file is never
// instrumented; no libtsan is linked: the __tsan_* entry points below are ours).
//
// Environment:
//   CUDAEMU_SCHEDULE=forward|reverse|random  order in which a block's runnable threads resume (default forward)
//   CUDAEMU_SEED=n                           seed of the random schedule
//   CUDAEMU_WORKERS=n                        OS threads running blocks (default 1; forced to 1 with RACECHECK)
//   CUDAEMU_RACECHECK=1                      check races/initialisation (needs the instrumented build)
//   CUDAEMU_MAX_DYN_SHARED=bytes             opt-in dynamic shared memory limit (default 232448, sm_90)
//   CUDAEMU_GRID_CAP=n                       grid-stride kernels (marked by cu2cpp.py) run with at most n blocks
//   CUDAEMU_LOG=path                         also append every report to this file (pytest captures stderr)
//   CUDAEMU_STATS=1                          print launch/block/switch counts at exit
#include "cudaemu/emu.hpp"

#include <dlfcn.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUDAEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDAEMU_ASAN 1
#endif
#endif
#ifdef CUDAEMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// ---- context switch (x86-64 System V): callee-saved registers, MXCSR and the x87 control word ------------
extern "C" void cudaemu_swap(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl cudaemu_swap
  .hidden cudaemu_swap
  .type cudaemu_swap,@function
cudaemu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cudaemu_swap, .-cudaemu_swap
)");

namespace cudaemu {

thread_local ThreadCtx t_ctx;

namespace {

// ---- configuration and error reporting ----------------------------------------------------------------------
enum class Schedule { Forward, Reverse, Random };
struct Config {
  Schedule schedule = Schedule::Forward;
  unsigned seed = 1;
  int workers = 1;
  bool racecheck = false;
  std::size_t max_dyn_shared = 232448;  // sm_90 opt-in maximum
  std::size_t stack_bytes = 256 * 1024;
  unsigned grid_cap = 0;  // CUDAEMU_GRID_CAP: run grid-stride kernels with at most this many blocks along x
};
Config g_cfg;
std::once_flag g_cfg_once;

void load_config() {
  std::call_once(g_cfg_once, [] {
    if (const char* s = getenv("CUDAEMU_SCHEDULE")) {
      const std::string v(s);
      g_cfg.schedule = v == "reverse" ? Schedule::Reverse : v == "random" ? Schedule::Random : Schedule::Forward;
    }
    if (const char* s = getenv("CUDAEMU_SEED")) g_cfg.seed = static_cast<unsigned>(strtoul(s, nullptr, 10));
    if (const char* s = getenv("CUDAEMU_WORKERS")) g_cfg.workers = std::max(1, atoi(s));
    if (const char* s = getenv("CUDAEMU_RACECHECK")) g_cfg.racecheck = atoi(s) != 0;
    if (const char* s = getenv("CUDAEMU_MAX_DYN_SHARED")) g_cfg.max_dyn_shared = strtoull(s, nullptr, 10);
    if (const char* s = getenv("CUDAEMU_GRID_CAP")) g_cfg.grid_cap = static_cast<unsigned>(strtoul(s, nullptr, 10));
    if (g_cfg.racecheck || g_cfg.grid_cap) g_cfg.workers = 1;
  });
}

std::atomic<int> g_errors{0};
unsigned long long g_stat_rc_shared = 0, g_stat_rc_global = 0;
std::atomic<unsigned long long> g_stat_launches{0}, g_stat_blocks{0}, g_stat_threads{0}, g_stat_switches{0};
struct StatsAtExit {
  ~StatsAtExit() {
    if (getenv("CUDAEMU_STATS")) {
      fprintf(stderr, "cudaemu stats: %llu launches, %llu blocks, %llu threads, %llu context switches, %d errors; racecheck "
              "saw %llu shared and %llu global accesses\n",
              g_stat_launches.load(), g_stat_blocks.load(), g_stat_threads.load(), g_stat_switches.load(),
              g_errors.load(), g_stat_rc_shared, g_stat_rc_global);
    }
  }
} g_stats_at_exit;
std::atomic<int> g_reports{0};
std::atomic<unsigned long long> g_capped_launches{0};
thread_local cudaError_t t_last_error = cudaSuccess;
std::atomic<int> g_sticky{cudaSuccess};
std::mutex g_report_mutex;

struct LaunchState;
struct Block;
thread_local const LaunchState* t_launch = nullptr;

// ---- device allocations ---------------------------------------------------------------------------------------
std::mutex g_alloc_mutex;
std::map<uintptr_t, std::size_t> g_allocs;  // base -> bytes

bool in_device_alloc(const void* p, std::size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

// ---- fibers, blocks, workers ------------------------------------------------------------------------------------
enum class FState { Ready, Barrier, Warp, Done };

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable address (a guard page sits below)
  std::size_t stack_size = 0;
  uint3 tid{};
  int linear = 0, warp = 0, lane = 0;
  FState state = FState::Done;
  void* asan_fake = nullptr;
  alignas(16) unsigned char result[16];
  const char* bar_file = nullptr;
  int bar_line = 0;
};

struct WarpOp {
  bool pending = false;
  Coll kind = Coll::Idx;
  unsigned mask = 0, arrived = 0;
  int width = 32;
  std::size_t size = 0;
  const char* file = nullptr;
  int line = 0;
  alignas(16) unsigned char values[32][16];
  int params[32];
  uint32_t epoch = 0;  // completed __syncwarp / __syncthreads on this warp (race checker ordering)
};

struct LaunchState {
  LaunchConfig cfg;
  unsigned long long blocks = 0;  // of cfg.grid (shrunk by grid_stride_kernel under CUDAEMU_GRID_CAP)
  void (*invoke)(const void*);
  const void* obj;
  unsigned nthreads;
  std::atomic<bool> failed{false};
  std::atomic<int> failure{cudaSuccess};
};

// Unused bytes before and after a block's dynamic shared memory (run_block, check_access).
constexpr std::size_t kSharedGuard = 1024;

struct Block {
  unsigned linear = 0;
  unsigned nthreads = 0;
  unsigned alive = 0, at_barrier = 0;
  uint32_t phase = 0;
  bool aborted = false;
  std::vector<WarpOp> warps;
  char* shared = nullptr;
  std::size_t shared_bytes = 0;
  std::vector<std::pair<uintptr_t, std::size_t>> static_shared;
};

struct Worker {
  std::vector<Fiber> fibers;
  void* sched_sp = nullptr;
  const void* sched_bottom = nullptr;
  std::size_t sched_size = 0;
  Block* block = nullptr;
  Fiber* current = nullptr;
  std::vector<char> shared_storage;  // replaced per block size, exact size (ASan sees its end)
  char* shared_exact = nullptr;  // kSharedGuard bytes into its allocation (see run_block)
  std::size_t shared_exact_size = 0;
  std::mt19937 rng;
  ~Worker() {
    for (Fiber& f : fibers) {
      if (f.stack) munmap(f.stack - 4096, f.stack_size + 4096);
    }
    if (shared_exact) free(shared_exact - kSharedGuard);
  }
};
thread_local Worker* t_worker = nullptr;

void report(const char* kind, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void report(const char* kind, const char* fmt, ...) {
  g_errors.fetch_add(1);
  if (g_reports.fetch_add(1) >= 50) return;
  std::lock_guard<std::mutex> lock(g_report_mutex);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (const char* path = getenv("CUDAEMU_LOG")) {
    if (FILE* f = fopen(path, "a")) {
      if (t_launch) {
        fprintf(f, "cudaemu: %s in %s (launched at %s:%d) block (%u,%u,%u): %s\n", kind, t_launch->cfg.kernel,
                t_launch->cfg.file, t_launch->cfg.line, t_ctx.block_idx.x, t_ctx.block_idx.y, t_ctx.block_idx.z, msg);
      } else {
        fprintf(f, "cudaemu: %s: %s\n", kind, msg);
      }
      fclose(f);
    }
  }
  if (t_launch && t_worker && t_worker->current) {
    const Fiber& f = *t_worker->current;
    fprintf(stderr, "cudaemu: %s in %s (launched at %s:%d) block (%u,%u,%u) thread (%u,%u,%u): %s\n", kind,
            t_launch->cfg.kernel, t_launch->cfg.file, t_launch->cfg.line, t_ctx.block_idx.x, t_ctx.block_idx.y,
            t_ctx.block_idx.z, f.tid.x, f.tid.y, f.tid.z, msg);
  } else if (t_launch) {
    fprintf(stderr, "cudaemu: %s in %s (launched at %s:%d): %s\n", kind, t_launch->cfg.kernel, t_launch->cfg.file,
            t_launch->cfg.line, msg);
  } else {
    fprintf(stderr, "cudaemu: %s: %s\n", kind, msg);
  }
}

void fail_launch(cudaError_t err) {
  if (t_worker && t_worker->block) t_worker->block->aborted = true;
  if (t_launch) {
    LaunchState* l = const_cast<LaunchState*>(t_launch);
    l->failed = true;
    int expected = cudaSuccess;
    l->failure.compare_exchange_strong(expected, err);
  }
}

// ---- switching ----------------------------------------------------------------------------------------------------
void fiber_entry();

thread_local unsigned long long t_switches = 0;
void resume(Worker& w, Fiber& f) {
  ++t_switches;
  w.current = &f;
  t_ctx.thread_idx = f.tid;
#ifdef CUDAEMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, f.stack_size);
  cudaemu_swap(&w.sched_sp, f.sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  cudaemu_swap(&w.sched_sp, f.sp);
#endif
  w.current = nullptr;
}

// From a fiber back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler(bool dying = false) {
  Worker& w = *t_worker;
  Fiber& f = *w.current;
#ifdef CUDAEMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &f.asan_fake, w.sched_bottom, w.sched_size);
  cudaemu_swap(&f.sp, w.sched_sp);
  __sanitizer_finish_switch_fiber(f.asan_fake, &w.sched_bottom, &w.sched_size);
#else
  (void)dying;
  cudaemu_swap(&f.sp, w.sched_sp);
#endif
}

void fiber_exit();

void fiber_entry() {
#ifdef CUDAEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &t_worker->sched_bottom, &t_worker->sched_size);
#endif
  t_launch->invoke(t_launch->obj);
  fiber_exit();
}

void init_fiber_stack(Fiber& f) {
  if (!f.stack) {
    const std::size_t size = g_cfg.stack_bytes;
    void* m = mmap(nullptr, size + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      fprintf(stderr, "cudaemu: mmap of a fiber stack failed\n");
      abort();
    }
    mprotect(m, 4096, PROT_NONE);  // guard page: a stack overflow faults
    f.stack = static_cast<char*>(m) + 4096;
    f.stack_size = size;
  }
#ifdef CUDAEMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stack_size);
#endif
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t{15};
  uint64_t* s = reinterpret_cast<uint64_t*>(top);
  s[-1] = 0;                                          // fake return address of fiber_entry
  s[-2] = reinterpret_cast<uint64_t>(&fiber_entry);   // popped by ret
  for (int i = 3; i <= 8; ++i) s[-i] = 0;             // rbp rbx r12 r13 r14 r15
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  s[-9] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpucw) << 32);
  f.sp = &s[-9];
}

// ---- race / initialisation checker --------------------------------------------------------------------------------
struct Access {
  uint32_t block = 0, thread = 0, phase = 0, warp_epoch = 0;
  const void* pc = nullptr;
  bool valid = false;
  bool atomic = false;
};
struct Cell {
  Access w, r;
  bool r_multi = false;  // several threads read since the last write, in r's phase
  bool written = false;  // static shared: written by this block
};
std::unordered_map<uintptr_t, Cell> g_global_shadow;
std::unordered_map<uintptr_t, Cell> g_static_shadow;  // static __shared__ bytes, cleared per block
std::vector<Cell> g_shared_shadow;
std::vector<unsigned char> g_shared_written;
std::unordered_set<uint64_t> g_reported_pcs;

std::string symbolize(const void* pc) {
  Dl_info info;
  if (!pc || !dladdr(pc, &info) || !info.dli_fname) return "?";
  const uintptr_t off = reinterpret_cast<uintptr_t>(pc) - reinterpret_cast<uintptr_t>(info.dli_fbase) - 1;
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "addr2line -i -C -f -e '%s' 0x%" PRIxPTR " 2>/dev/null", info.dli_fname, off);
  std::string out;
  if (FILE* p = popen(cmd, "r")) {
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, p) && n < 4) {
      std::string s(line);
      if (!s.empty() && s.back() == '\n') s.pop_back();
      out += (n ? (n % 2 ? " at " : " <- ") : "") + s;
      ++n;
    }
    pclose(p);
  }
  return out.empty() ? "?" : out;
}

bool ordered(const Access& a, const Access& now, int warp_now, int warp_a) {
  if (a.block != now.block) return false;
  if (a.phase != now.phase) return true;  // a __syncthreads separates them
  return warp_a == warp_now && a.warp_epoch != now.warp_epoch;  // a __syncwarp of their warp separates them
}

void race(const char* what, const char* space, uintptr_t addr, const Access& prev, const Access& now) {
  const uint64_t key = reinterpret_cast<uint64_t>(prev.pc) * 31 + reinterpret_cast<uint64_t>(now.pc);
  if (!g_reported_pcs.insert(key).second) {
    g_errors.fetch_add(1);
    return;
  }
  report("RACE", "%s on %s memory at %#" PRIxPTR " between thread %u of block %u (%s) and thread %u of block %u (%s)",
         what, space, addr, prev.thread, prev.block, symbolize(prev.pc).c_str(), now.thread, now.block,
         symbolize(now.pc).c_str());
}

bool same_thread(const Access& a, const Access& b) { return a.block == b.block && a.thread == b.thread; }

void check_cell(Cell& c, uintptr_t addr, const char* space, bool write, const Access& now, unsigned warps_per_block) {
  auto warp_of = [&](const Access& a) { return static_cast<int>(a.block * warps_per_block + a.thread / 32); };
  const int wn = warp_of(now);
  if (c.w.valid && !same_thread(c.w, now) && !(c.w.atomic && now.atomic) && !ordered(c.w, now, wn, warp_of(c.w))) {
    race(write ? "write after write" : "read after write", space, addr, c.w, now);
  }
  if (write) {
    if (c.r.valid && !(c.r.atomic && now.atomic) && (!same_thread(c.r, now) || c.r_multi) &&
        !ordered(c.r, now, wn, warp_of(c.r))) {
      race(same_thread(c.r, now) ? "write after read (by another thread too)" : "write after read", space, addr, c.r,
           now);
    }
    c.w = now;
    c.r.valid = false;
    c.r_multi = false;
  } else {
    if (!c.r.valid || ordered(c.r, now, wn, warp_of(c.r))) {
      c.r_multi = false;  // every earlier read is ordered before this one
    } else if (!same_thread(c.r, now)) {
      c.r_multi = true;  // two unordered readers: a later write conflicts with at least one other thread
    }
    c.r = now;
  }
}

void rc_access(const void* p, std::size_t n, bool write, const void* pc, bool atomic = false) {
  Worker* w = t_worker;
  if (!g_cfg.racecheck || !w || !w->current || !t_launch) return;
  Block& b = *w->block;
  const Fiber& f = *w->current;
  Access now;
  now.block = b.linear;
  now.thread = static_cast<uint32_t>(f.linear);
  now.phase = b.phase;
  now.warp_epoch = b.warps[f.warp].epoch;
  now.pc = pc;
  now.valid = true;
  now.atomic = atomic;
  const unsigned wpb = (b.nthreads + 31) / 32;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t sh = reinterpret_cast<uintptr_t>(b.shared);
  if (b.shared && a >= sh && a + n <= sh + b.shared_bytes) {
    ++g_stat_rc_shared;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t k = a - sh + i;
      if (!write && !g_shared_written[k]) {
        const uint64_t key = reinterpret_cast<uint64_t>(pc) ^ 0x5bd1e995u;
        if (g_reported_pcs.insert(key).second) {
          report("UNINITIALIZED", "read of shared memory byte %zu (of %zu) that no thread of this block wrote (%s)", k,
                 b.shared_bytes, symbolize(pc).c_str());
        } else {
          g_errors.fetch_add(1);
        }
        break;
      }
      if (write) g_shared_written[k] = 1;
      check_cell(g_shared_shadow[k], a + i, "shared", write, now, wpb);
    }
    return;
  }
  for (const auto& [base, bytes] : b.static_shared) {
    if (a >= base && a + n <= base + bytes) {
      ++g_stat_rc_shared;
      for (std::size_t i = 0; i < n; ++i) {
        Cell& c = g_static_shadow[a + i];
        if (!write && !c.written) {
          const uint64_t key = reinterpret_cast<uint64_t>(pc) ^ 0x5bd1e995u;
          if (g_reported_pcs.insert(key).second) {
            report("UNINITIALIZED", "read of static shared memory that no thread of this block wrote (%s)",
                   symbolize(pc).c_str());
          } else {
            g_errors.fetch_add(1);
          }
          break;
        }
        if (write) c.written = true;
        check_cell(c, a + i, "static shared", write, now, wpb);
      }
      return;
    }
  }
  if (in_device_alloc(p, n)) {
    ++g_stat_rc_global;
    for (std::size_t i = 0; i < n; ++i) check_cell(g_global_shadow[a + i], a + i, "global", write, now, wpb);
    return;
  }
  // Not device memory: just past (or before) the dynamic shared buffer is taken as a shared overflow.
  if (b.shared && ((a >= sh + b.shared_bytes && a < sh + b.shared_bytes + kSharedGuard) ||
                   (a < sh && a + kSharedGuard > sh))) {
    const uint64_t key = reinterpret_cast<uint64_t>(pc) ^ 0x9e3779b9u;
    if (g_reported_pcs.insert(key).second) {
      report("OUT OF BOUNDS", "%s of %zu bytes at offset %lld of %zu bytes of dynamic shared memory (%s)",
             write ? "write" : "read", n, static_cast<long long>(a - sh), b.shared_bytes, symbolize(pc).c_str());
    } else {
      g_errors.fetch_add(1);
    }
  }
}

// ---- barriers and collectives ---------------------------------------------------------------------------------
void complete_barrier(Block& b, Worker& w) {
  // Every waiting thread must be at the same __syncthreads (compute-sanitizer's synccheck).
  const char* file = nullptr;
  int line = 0;
  for (unsigned i = 0; i < b.nthreads; ++i) {
    Fiber& f = w.fibers[i];
    if (f.state != FState::Barrier) continue;
    if (!file) {
      file = f.bar_file;
      line = f.bar_line;
    } else if (f.bar_line != line || std::strcmp(f.bar_file, file) != 0) {
      report("BARRIER DIVERGENCE", "threads wait at different __syncthreads: %s:%d and %s:%d (thread %d)", file, line,
             f.bar_file, f.bar_line, f.linear);
      break;
    }
  }
  for (unsigned i = 0; i < b.nthreads; ++i) {
    if (w.fibers[i].state == FState::Barrier) w.fibers[i].state = FState::Ready;
  }
  b.at_barrier = 0;
  ++b.phase;
  for (WarpOp& op : b.warps) ++op.epoch;
}

unsigned lanes_present(const Block& b, int warp) {
  const unsigned first = static_cast<unsigned>(warp) * 32;
  const unsigned n = std::min(32u, b.nthreads - first);
  return n == 32 ? 0xffffffffu : ((1u << n) - 1);
}

void complete_collective(Block& b, Worker& w, int warp) {
  WarpOp& op = b.warps[warp];
  const int width = op.width;
  for (int l = 0; l < 32; ++l) {
    if (!(op.arrived & (1u << l))) continue;
    Fiber& f = w.fibers[warp * 32 + l];
    const int min_lane = l & ~(width - 1), max_lane = min_lane | (width - 1);
    int j = l;
    bool take = true;
    switch (op.kind) {
      case Coll::Idx: j = min_lane | (op.params[l] & (width - 1)); break;
      case Coll::Up: j = l - op.params[l]; take = j >= min_lane; break;
      case Coll::Down: j = l + op.params[l]; take = j <= max_lane; break;
      case Coll::Xor: j = l ^ op.params[l]; take = j <= max_lane; break;
      case Coll::Ballot: {
        unsigned v = 0;
        for (int k = 0; k < 32; ++k) {
          if ((op.arrived & (1u << k)) && *reinterpret_cast<const int*>(op.values[k])) v |= 1u << k;
        }
        std::memcpy(f.result, &v, sizeof v);
        take = false;
        j = -1;
        break;
      }
      case Coll::SyncWarp: take = false; j = -1; break;
    }
    if (op.kind == Coll::Ballot || op.kind == Coll::SyncWarp) {
      // nothing more
    } else if (!take || j < 0 || j > 31) {
      std::memcpy(f.result, op.values[l], op.size);
    } else if (!(op.arrived & (1u << j))) {
      Fiber* saved = w.current;
      w.current = &f;
      report("SHUFFLE FROM INACTIVE LANE", "lane %d reads lane %d, which is not in the mask %#x or has exited (%s:%d): "
             "undefined value", l, j, op.mask, op.file, op.line);
      w.current = saved;
      std::memset(f.result, 0xff, op.size);
    } else {
      std::memcpy(f.result, op.values[j], op.size);
    }
    if (f.state == FState::Warp) f.state = FState::Ready;
  }
  op.pending = false;
  if (op.kind == Coll::SyncWarp) ++op.epoch;
}

// Lanes that do not exist (a partial last warp) or have exited: PTX's shfl.sync / bar.warp.sync wait only
// for the non-exited threads of the mask.
unsigned lanes_gone(const Block& b, const Worker& w, int warp) {
  unsigned gone = ~lanes_present(b, warp);
  for (int l = 0; l < 32; ++l) {
    const unsigned i = static_cast<unsigned>(warp) * 32 + static_cast<unsigned>(l);
    if (i < b.nthreads && w.fibers[i].state == FState::Done) gone |= 1u << l;
  }
  return gone;
}

void check_pending_after_exit(Block& b, Worker& w, const Fiber& f) {
  WarpOp& op = b.warps[f.warp];
  if (op.pending && (op.mask & (1u << f.lane)) && ((op.arrived | lanes_gone(b, w, f.warp)) & op.mask) == op.mask) {
    complete_collective(b, w, f.warp);
  }
}

void fiber_exit() {
  Worker& w = *t_worker;
  Block& b = *w.block;
  Fiber& f = *w.current;
  f.state = FState::Done;
  --b.alive;
  check_pending_after_exit(b, w, f);
  if (b.at_barrier > 0 && b.at_barrier == b.alive) complete_barrier(b, w);
  yield_to_scheduler(true);
  abort();  // never resumed
}

// ---- running a launch ---------------------------------------------------------------------------------------------
void run_block(Worker& w, LaunchState& l, unsigned block_linear) {
  const LaunchConfig& cfg = l.cfg;  // the grid as run (CUDAEMU_GRID_CAP may shrink it)
  Block b;
  b.linear = block_linear;
  b.nthreads = l.nthreads;
  b.alive = l.nthreads;
  b.warps.assign((l.nthreads + 31) / 32, WarpOp{});
  const unsigned gx = cfg.grid.x, gy = cfg.grid.y;
  t_ctx.block_idx = make_uint3(block_linear % gx, (block_linear / gx) % gy, block_linear / (gx * gy));
  t_ctx.block_dim = cfg.block;
  t_ctx.grid_dim = cfg.grid;
  // Dynamic shared memory: exactly the bytes asked for (ASan flags the first byte past them), filled with
  // 0xff (NaN as float) since shared memory starts undefined.
  // The buffer sits between two unused guards of kSharedGuard bytes: the race checker takes an access to
  // non-device memory within that distance of the buffer for a shared overflow, so no other allocation
  // (a binding build's torch tensors are such memory) may lie there.
  if (cfg.shared_bytes > 0) {
    if (w.shared_exact_size != cfg.shared_bytes) {
      if (w.shared_exact) free(w.shared_exact - kSharedGuard);
      const std::size_t rounded = (cfg.shared_bytes + 15) & ~std::size_t{15};
      char* base = static_cast<char*>(aligned_alloc(16, rounded + 2 * kSharedGuard));
      w.shared_exact = base + kSharedGuard;
      w.shared_exact_size = cfg.shared_bytes;
#ifdef CUDAEMU_ASAN
      // Poison the guards and the tail up to the 16-byte rounding, so the exact ends are checked.
      ASAN_POISON_MEMORY_REGION(base, kSharedGuard);
      ASAN_POISON_MEMORY_REGION(w.shared_exact + cfg.shared_bytes, rounded - cfg.shared_bytes + kSharedGuard);
#endif
    }
    std::memset(w.shared_exact, 0xff, cfg.shared_bytes);
    b.shared = w.shared_exact;
    b.shared_bytes = cfg.shared_bytes;
  }
  if (g_cfg.racecheck) {
    g_shared_shadow.assign(b.shared_bytes, Cell{});
    g_shared_written.assign(b.shared_bytes, 0);
    g_static_shadow.clear();
  }
  if (w.fibers.size() < l.nthreads) w.fibers.resize(l.nthreads);
  for (unsigned i = 0; i < l.nthreads; ++i) {
    Fiber& f = w.fibers[i];
    init_fiber_stack(f);
    f.linear = static_cast<int>(i);
    f.warp = static_cast<int>(i / 32);
    f.lane = static_cast<int>(i % 32);
    f.tid = make_uint3(i % cfg.block.x, (i / cfg.block.x) % cfg.block.y, i / (cfg.block.x * cfg.block.y));
    f.state = FState::Ready;
    f.asan_fake = nullptr;
  }
  w.block = &b;
  std::vector<unsigned> order(l.nthreads);
  for (unsigned i = 0; i < l.nthreads; ++i) order[i] = i;
  if (g_cfg.schedule == Schedule::Reverse) std::reverse(order.begin(), order.end());
  while (b.alive > 0 && !b.aborted) {
    if (g_cfg.schedule == Schedule::Random) std::shuffle(order.begin(), order.end(), w.rng);
    bool progressed = false;
    for (unsigned i : order) {
      Fiber& f = w.fibers[i];
      if (f.state != FState::Ready) continue;
      resume(w, f);
      progressed = true;
      if (b.aborted) break;
    }
    if (!progressed && b.alive > 0 && !b.aborted) {
      std::string states;
      for (unsigned i = 0; i < l.nthreads && states.size() < 600; ++i) {
        const Fiber& f = w.fibers[i];
        if (f.state == FState::Barrier) {
          states += " t" + std::to_string(i) + "@__syncthreads:" + std::to_string(f.bar_line);
        } else if (f.state == FState::Warp) {
          const WarpOp& op = b.warps[f.warp];
          states += " t" + std::to_string(i) + "@warp-collective:" + std::to_string(op.line);
        }
      }
      report("DEADLOCK", "block %u: no thread can proceed:%s", block_linear, states.c_str());
      fail_launch(cudaErrorLaunchFailure);
    }
  }
  w.block = nullptr;
  g_stat_blocks.fetch_add(1, std::memory_order_relaxed);
  g_stat_threads.fetch_add(l.nthreads, std::memory_order_relaxed);
}

}  // namespace

// ---- entry points used by the kernels (emu.hpp) -------------------------------------------------------------------
void syncthreads(const char* file, int line) {
  Worker& w = *t_worker;
  Block& b = *w.block;
  Fiber& f = *w.current;
  f.state = FState::Barrier;
  f.bar_file = file;
  f.bar_line = line;
  if (++b.at_barrier == b.alive) complete_barrier(b, w);
  yield_to_scheduler();
}

void warp_collective(Coll kind, unsigned mask, const void* value, std::size_t size, int param, int width, void* result,
                     const char* file, int line) {
  Worker& w = *t_worker;
  Block& b = *w.block;
  Fiber& f = *w.current;
  WarpOp& op = b.warps[f.warp];
  const unsigned bit = 1u << f.lane;
  if (width < 1 || width > 32 || (width & (width - 1))) {
    report("INVALID WARP OP", "width %d is not a power of two in [1, 32] (%s:%d)", width, file, line);
    width = 32;
  }
  if (!(mask & bit)) {
    report("INVALID WARP OP", "the calling lane %d is not in the mask %#x (%s:%d)", f.lane, mask, file, line);
    fail_launch(cudaErrorLaunchFailure);
    yield_to_scheduler();
    return;
  }
  if (op.pending) {
    if (op.kind != kind || op.mask != mask || op.size != size || op.width != width) {
      report("WARP OP MISMATCH", "lanes of one warp meet at different collectives or masks: %s:%d (mask %#x) and %s:%d "
             "(mask %#x)", op.file, op.line, op.mask, file, line, mask);
      fail_launch(cudaErrorLaunchFailure);
      yield_to_scheduler();
      return;
    }
  } else {
    op.pending = true;
    op.kind = kind;
    op.mask = mask;
    op.arrived = 0;
    op.width = width;
    op.size = size;
    op.file = file;
    op.line = line;
  }
  std::memcpy(op.values[f.lane], value, size);
  op.params[f.lane] = param;
  op.arrived |= bit;
  f.state = FState::Warp;
  if (((op.arrived | lanes_gone(b, w, f.warp)) & op.mask) == op.mask) complete_collective(b, w, f.warp);
  yield_to_scheduler();  // also when complete: lets the schedule interleave the lanes
  std::memcpy(result, f.result, kind == Coll::Ballot ? sizeof(unsigned) : size);
}

void syncwarp(unsigned mask, const char* file, int line) {
  int dummy = 0, out = 0;
  warp_collective(Coll::SyncWarp, mask, &dummy, sizeof dummy, 0, 32, &out, file, line);
}

void* dynamic_shared(std::size_t) {
  Block* b = t_worker ? t_worker->block : nullptr;
  return b ? b->shared : nullptr;
}

void static_shared(void* p, std::size_t bytes) {
  Block* b = t_worker ? t_worker->block : nullptr;
  if (!b) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (const auto& r : b->static_shared) {
    if (r.first == a) return;
  }
  // First thread of this block to reach the declaration: static shared memory starts undefined on the GPU,
  // here it would hold the previous block's values, so it is poisoned (0xff: NaN as float).
  std::memset(p, 0xff, bytes);
  b->static_shared.emplace_back(a, bytes);
}

// Called at the entry of every grid-stride kernel (cu2cpp.py marks them). Under CUDAEMU_GRID_CAP (one
// worker, so block 0 runs first and no thread has read gridDim yet) the grid shrinks to the cap: each block
// then covers more of the work, which exercises the grid-stride paths that real sizes reach only past the
// launchers' grid caps.
void grid_stride_kernel(const char*) {
  if (!g_cfg.grid_cap || !t_launch) return;
  LaunchState* l = const_cast<LaunchState*>(t_launch);
  if (l->cfg.grid.x <= g_cfg.grid_cap || t_worker->block->linear != 0) return;
  l->cfg.grid.x = g_cfg.grid_cap;
  l->blocks = static_cast<unsigned long long>(l->cfg.grid.x) * l->cfg.grid.y * l->cfg.grid.z;
  t_ctx.grid_dim.x = g_cfg.grid_cap;
  g_capped_launches.fetch_add(1);
}

void launch_bounds_check(int max_threads, const char* kernel) {
  if (t_launch && static_cast<int>(t_launch->nthreads) > max_threads) {
    if (!t_launch->failed) {
      fprintf(stderr, "cudaemu: launch of %s with %u threads per block exceeds its __launch_bounds__(%d): "
              "cudaErrorLaunchOutOfResources\n", kernel, t_launch->nthreads, max_threads);
    }
    fail_launch(cudaErrorLaunchOutOfResources);
    yield_to_scheduler();  // the block is aborted: never resumed
  }
}

uint64_t atomic_rmw(void* p, std::size_t size, bool is_signed, AOp op, uint64_t v) {
  rc_access(p, size, true, __builtin_return_address(0), true);
  auto apply = [&](uint64_t o) -> uint64_t {
    switch (op) {
      case AOp::Add: return o + v;
      case AOp::Sub: return o - v;
      case AOp::Exch: return v;
      case AOp::And: return o & v;
      case AOp::Or: return o | v;
      case AOp::Xor: return o ^ v;
      case AOp::Min:
      case AOp::Max: {
        bool less;
        if (is_signed) {
          less = size == 4 ? static_cast<int32_t>(v) < static_cast<int32_t>(o)
                           : static_cast<int64_t>(v) < static_cast<int64_t>(o);
        } else {
          less = size == 4 ? static_cast<uint32_t>(v) < static_cast<uint32_t>(o) : v < o;
        }
        return (op == AOp::Min) == less ? v : o;
      }
      case AOp::FAdd: {
        if (size == 4) {
          float a, b;
          uint32_t ob = static_cast<uint32_t>(o), vb = static_cast<uint32_t>(v);
          std::memcpy(&a, &ob, 4);
          std::memcpy(&b, &vb, 4);
          a += b;
          std::memcpy(&ob, &a, 4);
          return ob;
        }
        double a, b;
        std::memcpy(&a, &o, 8);
        std::memcpy(&b, &v, 8);
        a += b;
        uint64_t r;
        std::memcpy(&r, &a, 8);
        return r;
      }
    }
    return o;
  };
  if (size == 4) {
    uint32_t* q = static_cast<uint32_t*>(p);
    uint32_t old = __atomic_load_n(q, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(q, &old, static_cast<uint32_t>(apply(old)), false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
  }
  uint64_t* q = static_cast<uint64_t*>(p);
  uint64_t old = __atomic_load_n(q, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(q, &old, apply(old), false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}

uint64_t atomic_cas(void* p, std::size_t size, uint64_t compare, uint64_t v) {
  rc_access(p, size, true, __builtin_return_address(0), true);
  if (size == 4) {
    uint32_t c = static_cast<uint32_t>(compare);
    __atomic_compare_exchange_n(static_cast<uint32_t*>(p), &c, static_cast<uint32_t>(v), false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return c;
  }
  uint64_t c = compare;
  __atomic_compare_exchange_n(static_cast<uint64_t*>(p), &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return c;
}

void threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

void run_grid(const LaunchConfig& cfg, void (*invoke)(const void*), const void* obj) {
  load_config();
  const dim3 g = cfg.grid, bl = cfg.block;
  const unsigned long long threads = static_cast<unsigned long long>(bl.x) * bl.y * bl.z;
  cudaError_t err = cudaSuccess;
  if (g.x == 0 || g.y == 0 || g.z == 0 || bl.x == 0 || bl.y == 0 || bl.z == 0) err = cudaErrorInvalidConfiguration;
  if (bl.x > 1024 || bl.y > 1024 || bl.z > 64 || threads > 1024) err = cudaErrorInvalidConfiguration;
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535) err = cudaErrorInvalidConfiguration;
  // Dynamic shared memory above 48 KiB needs cudaFuncSetAttribute(MaxDynamicSharedMemorySize); the attribute
  // is not tracked here, so anything above the opt-in maximum is refused and 48 KiB..max is reported.
  if (cfg.shared_bytes > g_cfg.max_dyn_shared) err = cudaErrorInvalidValue;
  if (err == cudaSuccess && cfg.shared_bytes > 48 * 1024) {
    fprintf(stderr, "cudaemu: note: %s launched with %zu bytes of dynamic shared memory (> 48 KiB needs the "
            "MaxDynamicSharedMemorySize attribute)\n", cfg.kernel, cfg.shared_bytes);
  }
  if (g_sticky.load() != cudaSuccess) err = static_cast<cudaError_t>(g_sticky.load());
  if (err != cudaSuccess) {
    t_last_error = err;
    return;
  }
  g_stat_launches.fetch_add(1, std::memory_order_relaxed);
  LaunchState l;
  l.cfg = cfg;
  l.invoke = invoke;
  l.obj = obj;
  l.nthreads = static_cast<unsigned>(threads);
  l.blocks = static_cast<unsigned long long>(l.cfg.grid.x) * g.y * g.z;
  const unsigned long long blocks = l.blocks;
  if (g_cfg.racecheck) {
    g_global_shadow.clear();
  }
  std::atomic<unsigned long long> next{0};
  auto work = [&](int worker_index) {
    Worker w;
    w.rng.seed(g_cfg.seed * 7919u + static_cast<unsigned>(worker_index));
    Worker* saved_worker = t_worker;
    const LaunchState* saved_launch = t_launch;
    const ThreadCtx saved_ctx = t_ctx;
    t_worker = &w;
    t_launch = &l;
    for (;;) {
      const unsigned long long blk = next.fetch_add(1);
      if (blk >= l.blocks || l.failed) break;
      run_block(w, l, static_cast<unsigned>(blk));
    }
    g_stat_switches.fetch_add(t_switches, std::memory_order_relaxed);
    t_switches = 0;
    t_worker = saved_worker;
    t_launch = saved_launch;
    t_ctx = saved_ctx;
  };
  const int workers = static_cast<int>(std::min<unsigned long long>(g_cfg.workers, blocks));
  if (workers <= 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (int i = 1; i < workers; ++i) pool.emplace_back(work, i);
    work(0);
    for (auto& t : pool) t.join();
  }
  if (l.failed) {
    const cudaError_t e = static_cast<cudaError_t>(l.failure.load());
    t_last_error = e;
    // Faults inside a kernel are sticky in CUDA; a refused launch (resources) is not.
    if (e != cudaErrorLaunchOutOfResources) g_sticky = e;
  }
}

}  // namespace cudaemu

// ---- the instrumentation entry points (gcc/clang -fsanitize=thread on the kernel TU only) -----------------------------
extern "C" {
#define CUDAEMU_TSAN_RW(n)                                                                                \
  void __tsan_read##n(void* p) { cudaemu::rc_access(p, n, false, __builtin_return_address(0)); }          \
  void __tsan_write##n(void* p) { cudaemu::rc_access(p, n, true, __builtin_return_address(0)); }          \
  void __tsan_unaligned_read##n(void* p) { cudaemu::rc_access(p, n, false, __builtin_return_address(0)); } \
  void __tsan_unaligned_write##n(void* p) { cudaemu::rc_access(p, n, true, __builtin_return_address(0)); }
CUDAEMU_TSAN_RW(1)
CUDAEMU_TSAN_RW(2)
CUDAEMU_TSAN_RW(4)
CUDAEMU_TSAN_RW(8)
CUDAEMU_TSAN_RW(16)
#undef CUDAEMU_TSAN_RW
void __tsan_read_range(void* p, unsigned long n) { cudaemu::rc_access(p, n, false, __builtin_return_address(0)); }
void __tsan_write_range(void* p, unsigned long n) { cudaemu::rc_access(p, n, true, __builtin_return_address(0)); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
}

// ---- the CUDA runtime API subset ------------------------------------------------------------------------------------------
using cudaemu::g_sticky;
using cudaemu::t_last_error;

extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last_error;
  t_last_error = static_cast<cudaError_t>(g_sticky.load());
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    default: return "cudaError(other)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure (cudaemu: see its report)";
    default: return "cudaemu: error";
  }
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  // Exactly `bytes` (ASan sees the end), filled with 0xff (NaN as float): device memory starts undefined.
  void* m = malloc(bytes ? bytes : 1);
  if (!m) return t_last_error = cudaErrorMemoryAllocation;
  std::memset(m, 0xff, bytes);
  {
    std::lock_guard<std::mutex> lock(cudaemu::g_alloc_mutex);
    cudaemu::g_allocs[reinterpret_cast<uintptr_t>(m)] = bytes;
  }
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(cudaemu::g_alloc_mutex);
    if (!cudaemu::g_allocs.erase(reinterpret_cast<uintptr_t>(p))) return t_last_error = cudaErrorInvalidDevicePointer;
  }
  free(p);
  return cudaSuccess;
}

// Binding builds (tools/cudaemu/binding/): a CUDA binding run on CPU tensors hands the runtime torch's CPU
// allocations as "device" memory, which cudaMalloc never saw; there any pointer may stand on the device
// side (the host side is still checked: it must not be inside a cudaMalloc'd block).
static std::atomic<int> g_unregistered_device_memory{0};

static cudaError_t check_side(const void* p, size_t n, bool device) {
  if (n == 0) return cudaSuccess;
  if (device && g_unregistered_device_memory.load()) return cudaSuccess;
  if (cudaemu::in_device_alloc(p, n) != device) return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind, cudaStream_t) {
  if (g_sticky.load() != cudaSuccess) return static_cast<cudaError_t>(g_sticky.load());
  cudaError_t e = cudaSuccess;
  switch (kind) {
    case cudaMemcpyHostToDevice: e = check_side(src, n, false); if (!e) e = check_side(dst, n, true); break;
    case cudaMemcpyDeviceToHost: e = check_side(src, n, true); if (!e) e = check_side(dst, n, false); break;
    case cudaMemcpyDeviceToDevice: e = check_side(src, n, true); if (!e) e = check_side(dst, n, true); break;
    case cudaMemcpyHostToHost: e = check_side(src, n, false); if (!e) e = check_side(dst, n, false); break;
    default: break;
  }
  if (e != cudaSuccess) {
    fprintf(stderr, "cudaemu: cudaMemcpy of %zu bytes with kind %d between %p and %p: wrong side\n", n, kind, src, dst);
    return t_last_error = e;
  }
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, n, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t) {
  if (g_sticky.load() != cudaSuccess) return static_cast<cudaError_t>(g_sticky.load());
  if (n && !g_unregistered_device_memory.load() && !cudaemu::in_device_alloc(p, n)) {
    fprintf(stderr, "cudaemu: cudaMemsetAsync of %zu bytes at %p: not inside one device allocation\n", n, p);
    return t_last_error = cudaErrorInvalidValue;
  }
  std::memset(p, value, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t n) { return cudaMemsetAsync(p, value, n, nullptr); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return static_cast<cudaError_t>(g_sticky.load()); }
// The emulator never captures graphs: every stream is live.
cudaError_t cudaStreamIsCapturing(cudaStream_t, enum cudaStreamCaptureStatus* status) {
  *status = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return static_cast<cudaError_t>(g_sticky.load()); }
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void*, enum cudaFuncAttribute, int) { return cudaSuccess; }

// ---- control from tests --------------------------------------------------------------------------------------------------
int cudaemu_error_count(void) { return cudaemu::g_errors.load(); }
unsigned long long cudaemu_capped_launches(void) { return cudaemu::g_capped_launches.load(); }
unsigned long long cudaemu_launches(void) { return cudaemu::g_stat_launches.load(); }
void cudaemu_reset(void) {
  cudaemu::g_errors = 0;
  cudaemu::g_reports = 0;
  g_sticky = cudaSuccess;
  t_last_error = cudaSuccess;
  cudaemu::g_reported_pcs.clear();
}
void cudaemu_set_schedule(int schedule, unsigned seed) {
  cudaemu::load_config();
  cudaemu::g_cfg.schedule = static_cast<cudaemu::Schedule>(schedule);
  cudaemu::g_cfg.seed = seed;
}
void cudaemu_set_grid_cap(unsigned cap) {
  cudaemu::load_config();
  cudaemu::g_cfg.grid_cap = cap;
}
void cudaemu_set_workers(int n) {
  cudaemu::load_config();
  cudaemu::g_cfg.workers = cudaemu::g_cfg.racecheck ? 1 : std::max(1, n);
}
void cudaemu_allow_unregistered_device_memory(int on) { g_unregistered_device_memory = on; }
int cudaemu_racecheck(void) {
  cudaemu::load_config();
  return cudaemu::g_cfg.racecheck;
}

}  // extern "C"
