// Runs CUDA C kernels on the CPU for tests (force-included by the fake NVRTC in fake-cuda.cpp): a block's threads
// are fibers on one OS thread, switched at __syncthreads and at warp shuffles, so the generated code runs as
// written, barriers and all. A barrier some threads never reach (a shuffle in divergent code, a __syncthreads
// skipped by part of the block) is reported as a deadlock instead of hanging. Up to kResident blocks are resident
// at once: a block runs until it finishes or a thread pauses in a spin (__nanosleep), then the next resident block
// runs, so blocks that wait on each other's counters (the megakernel) make progress; a cluster's blocks are
// neighbours in one wave of resident blocks, its barrier a spin of the same kind. x86-64 only.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <functional>
#include <sys/mman.h>
#include <type_traits>
#include <utility>
#include <unordered_map>
#include <vector>

// Host emulations in the prelude that need the fibers' state (the wgmma queues) test for it.
#define TF_FAKE_CUDA 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// No __shared__: the fake NVRTC rewrites each static declaration into the running block's own copy (block_static);
// a form it does not know fails to compile rather than becoming one copy for every block.
#define __align__(n) __attribute__((aligned(n)))

struct uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct float2 { float x, y; };

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }

namespace tf_fake {

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
// Spin: paused in a spin-wait (__nanosleep), runnable again once the other resident blocks have had a turn.
// WaitFirst: at a barrier of the block's first threads only (bar.sync 1, n: the megakernel's compute threads).
enum State { Runnable, WaitWarp, WaitBlock, WaitFirst, Spin, Done };
struct Fiber {
  void* sp = nullptr;
  State state = Done;
  Dim3 idx;
  unsigned shuffles = 0;  // how many this thread has done: which of two slot arrays the next one posts in
};

constexpr size_t kStack = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;
// Blocks resident at once: the fake's 8 multiprocessors of 4 blocks each (cuOccupancyMaxActiveBlocksPerMultiprocessor).
constexpr unsigned kResident = 32;

// 16 aligned bytes of a block's static shared memory.
struct alignas(16) SharedChunk { unsigned char bytes[16]; };

// What each resident block has of its own: its index, threads, shuffle slots, dynamic shared memory, and static
// shared memory by declaration (the key the fake NVRTC gives each).
struct Block {
  Dim3 idx;
  Fiber fibers[kMaxThreads];
  uint64_t slots[2][kMaxThreads];
  std::vector<unsigned char> shared;
  std::unordered_map<const void*, std::vector<SharedChunk>> statics;
  bool started = false;
  unsigned cluster_syncs = 0;  // cluster barriers its threads have reached
  unsigned first_threads = 0;  // how many threads a WaitFirst barrier waits for
};

inline Dim3 grid_dim, block_dim;
// Blocks a cluster of the grid being run (1: none). Its blocks are neighbours in one wave of resident blocks.
inline unsigned cluster_blocks = 1;
inline Block* resident = nullptr;  // kResident blocks
inline Block* block = nullptr;     // the block being run
inline Fiber* fibers = nullptr;    // its threads
inline Fiber* current = nullptr;
inline void* scheduler_sp = nullptr;
inline char* stacks = nullptr;
inline std::function<void()> body;

inline unsigned char* dynamic_smem() { return block->shared.data(); }

// A static __shared__ declaration's bytes in block b (CUDA gives each block its own; they keep no value from one
// block to the next, as on the device).
inline unsigned char* static_smem(Block* b, const void* key, size_t bytes) {
  auto& chunks = b->statics[key];
  if (chunks.size() * 16 < bytes || chunks.empty()) chunks.resize(bytes / 16 + 1);
  return chunks.front().bytes;
}
inline unsigned char* block_static(const void* key, size_t bytes) { return static_smem(block, key, bytes); }

}  // namespace tf_fake

extern "C" void tf_fake_swap(void** save, void* load);
extern "C" void tf_fake_trampoline();

// Saves the callee-saved registers and the stack pointer into *save, and resumes the context at load.
asm(R"(
  .text
  .hidden tf_fake_swap
  .globl tf_fake_swap
  .type tf_fake_swap, @function
tf_fake_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");

namespace tf_fake {

inline unsigned warp_end = 0;  // one past the last lane of the warp being run

// Leaves `self` for the next lane of its warp that can run, else for the scheduler: one switch per lane instead of
// two through the scheduler (switches are most of the fake's time).
inline void leave(Fiber* self) {
  for (unsigned t = static_cast<unsigned>(self - fibers) + 1; t < warp_end; t++) {
    if (fibers[t].state != Runnable) continue;
    current = &fibers[t];
    tf_fake_swap(&self->sp, fibers[t].sp);
    return;
  }
  tf_fake_swap(&self->sp, scheduler_sp);
}

}  // namespace tf_fake

extern "C" void tf_fake_trampoline() {
  tf_fake::body();
  tf_fake::current->state = tf_fake::Done;
  tf_fake::leave(tf_fake::current);
  std::abort();  // a finished fiber is never resumed
}

#define threadIdx (tf_fake::current->idx)
#define blockIdx (tf_fake::block->idx)
#define gridDim (tf_fake::grid_dim)
#define blockDim (tf_fake::block_dim)

namespace tf_fake {

inline void yield_as(State s) {
  current->state = s;
  leave(current);
}

// Thread t of resident block slot r, on stack r · kMaxThreads + t.
inline void start(Fiber& f, unsigned t, unsigned r) {
  if (!stacks) {
    stacks = static_cast<char*>(mmap(nullptr, kStack * kMaxThreads * kResident, PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (stacks == MAP_FAILED) { std::fprintf(stderr, "tf_fake: cannot map fiber stacks\n"); std::abort(); }
  }
  // Each stack's top sits 320 bytes lower than the last's: tops a power of two apart would share one cache set, and
  // every switch would miss the cache.
  const size_t s = r * kMaxThreads + t;
  auto top = reinterpret_cast<uintptr_t>(stacks + kStack * (s + 1) - (s * 320) % 65536) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                       // keeps the ABI's entry alignment
  *--sp = reinterpret_cast<void*>(&tf_fake_trampoline);  // where the first switch "returns"
  for (int r = 0; r < 6; r++) *--sp = nullptr;           // rbp rbx r12 r13 r14 r15
  f.sp = sp;
  f.state = Runnable;
  f.idx = {t, 0, 0};
  f.shuffles = 0;
}

inline const char* name(State s) {
  return s == Runnable ? "runnable" : s == WaitWarp ? "at a warp shuffle" : s == WaitBlock ? "at __syncthreads" : s == WaitFirst ? "at a barrier of the first threads" : s == Spin ? "spinning" : "done";
}

inline void deadlock(unsigned n) {
  std::fprintf(stderr, "tf_fake: deadlock in block %u:", block->idx.x);
  for (unsigned t = 0; t < n; t++) {
    if (t == 0 || fibers[t].state != fibers[t - 1].state) std::fprintf(stderr, " thread %u.. %s;", t, name(fibers[t].state));
  }
  std::fprintf(stderr, "\n");
  std::abort();
}

/** Runs warp w's lanes until none can go on; a shuffle goes on at once when all of its lanes are at it. */
inline void run_warp(unsigned w, unsigned n) {
  const unsigned end = w * 32 + 32 < n ? w * 32 + 32 : n;
  warp_end = end;
  for (;;) {
    // The first lane that can run; each runs on into the next (leave()), the last back here.
    for (unsigned t = w * 32; t < end; t++) {
      if (fibers[t].state != Runnable) continue;
      current = &fibers[t];
      tf_fake_swap(&scheduler_sp, fibers[t].sp);
    }
    bool all = true;
    for (unsigned t = w * 32; t < end; t++) all = all && fibers[t].state == WaitWarp;
    if (!all) return;
    for (unsigned t = w * 32; t < end; t++) fibers[t].state = Runnable;
  }
}

// Runs resident block slot r, a warp at a time (so that its lanes' stacks stay in the cache between shuffles),
// until it finishes (true) or a thread pauses in a spin (false: the other blocks' turn).
inline bool run_block(unsigned r, unsigned n) {
  block = &resident[r];
  fibers = block->fibers;
  if (!block->started) {
    for (unsigned t = 0; t < n; t++) start(fibers[t], t, r);
    block->started = true;
  }
  for (;;) {
    for (unsigned w = 0; w * 32 < n; w++) run_warp(w, n);
    bool done = true, block_ready = true, any_block = false, any_spin = false;
    for (unsigned t = 0; t < n; t++) {
      done = done && fibers[t].state == Done;
      any_block = any_block || fibers[t].state == WaitBlock;
      any_spin = any_spin || fibers[t].state == Spin;
      block_ready = block_ready && (fibers[t].state == WaitBlock || fibers[t].state == Done);
    }
    if (done) return true;
    // A barrier of the first threads goes on when each of them is at it or has exited, whatever the others do.
    bool any_first = false, first_ready = true;
    for (unsigned t = 0; t < n; t++) any_first = any_first || fibers[t].state == WaitFirst;
    for (unsigned t = 0; t < block->first_threads && t < n; t++) first_ready = first_ready && (fibers[t].state == WaitFirst || fibers[t].state == Done);
    if (any_first && first_ready) {
      for (unsigned t = 0; t < n; t++) if (fibers[t].state == WaitFirst) fibers[t].state = Runnable;
      continue;
    }
    if (any_spin) {
      for (unsigned t = 0; t < n; t++) if (fibers[t].state == Spin) fibers[t].state = Runnable;
      return false;
    }
    // __syncthreads goes on when every thread is at it or has exited.
    if (!any_block || !block_ready) deadlock(n);
    for (unsigned t = 0; t < n; t++) if (fibers[t].state == WaitBlock) fibers[t].state = Runnable;
  }
}

// Blocks kResident at a time, each run in turn until all of them finish (a block that never spins runs to its end
// in its first turn, as blocks one after another would).
inline void run_grid(std::function<void()> kernel, unsigned grid, unsigned threads, unsigned shared, unsigned cluster) {
  if (threads == 0 || threads > kMaxThreads || threads % 32 != 0) {
    std::fprintf(stderr, "tf_fake: block of %u threads\n", threads);
    std::abort();
  }
  if (cluster == 0 || kResident % cluster != 0 || grid % cluster != 0) {
    std::fprintf(stderr, "tf_fake: clusters of %u blocks in a grid of %u\n", cluster, grid);
    std::abort();
  }
  cluster_blocks = cluster;
  if (!resident) resident = new Block[kResident];
  body = std::move(kernel);
  grid_dim = {grid, 1, 1};
  block_dim = {threads, 1, 1};
  for (unsigned first = 0; first < grid; first += kResident) {
    const unsigned n = grid - first < kResident ? grid - first : kResident;
    bool done[kResident] = {};
    for (unsigned r = 0; r < n; r++) {
      resident[r].idx = {first + r, 0, 0};
      resident[r].shared.assign(shared + 16, 0xcd);
      resident[r].started = false;
      resident[r].cluster_syncs = 0;
    }
    for (unsigned left = n; left > 0;) {
      for (unsigned r = 0; r < n; r++) if (!done[r] && run_block(r, threads)) { done[r] = true; left--; }
    }
  }
}

template <typename... A, size_t... I>
void call_with(void (*f)(A...), void** p, std::index_sequence<I...>) {
  f(*reinterpret_cast<std::remove_cv_t<A>*>(p[I])...);
}

template <typename... A>
void call(void (*f)(A...), void** p) {
  call_with(f, p, std::index_sequence_for<A...>{});
}

}  // namespace tf_fake

inline void __syncthreads() { tf_fake::yield_as(tf_fake::WaitBlock); }
// bar.sync 1, n: a barrier of the block's first n threads.
inline void tf_fake_sync_first(unsigned n) {
  tf_fake::block->first_threads = n;
  tf_fake::yield_as(tf_fake::WaitFirst);
}

namespace tf_fake {
// Every lane of the warp posts v and takes the value lane `src` (of the same warp) posted. Shuffles alternate between
// two slot arrays: a lane posts in one again only two shuffles later, when every lane is past the next one and so
// has read this one's.
template <typename T>
T exchange(T v, unsigned src) {
  static_assert(sizeof(T) <= 8, "shuffle of a wide type");
  const unsigned t = threadIdx.x;
  uint64_t* posted = block->slots[current->shuffles++ & 1];
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  posted[t] = bits;
  yield_as(WaitWarp);
  const uint64_t other = posted[(t & ~31u) | (src & 31u)];
  T r;
  std::memcpy(&r, &other, sizeof(T));
  return r;
}
}  // namespace tf_fake

template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  return tf_fake::exchange(v, (threadIdx.x & 31u) ^ static_cast<unsigned>(lane_mask));
}

template <typename T>
T __shfl_sync(unsigned, T v, int src_lane) {
  return tf_fake::exchange(v, static_cast<unsigned>(src_lane));
}

// A spin-wait's pause: the other resident blocks run meanwhile.
inline void __nanosleep(unsigned) { tf_fake::yield_as(tf_fake::Spin); }
// Nanoseconds (a GPU's clock64 counts cycles; the megakernel's watchdog reads it as time here).
inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// One OS thread runs every fiber: the atomics need only be atomic against the compiler.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicCAS(unsigned* p, unsigned expected, unsigned desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}

// Clusters: a barrier of the cluster's threads (its block's first, then its thread 0 spinning until every block of
// the cluster has reached as many), and the same place of a cluster block's shared memory.
namespace tf_fake {
inline Block* cluster_block(unsigned rank) { return block - block->idx.x % cluster_blocks + rank; }
inline void cluster_sync() {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned reached = ++block->cluster_syncs;
    for (unsigned r = 0; r < cluster_blocks; r++) {
      while (cluster_block(r)->cluster_syncs < reached) __nanosleep(0);
    }
  }
  __syncthreads();
}
template <typename T> inline const T* cluster_peer(const T* p, unsigned rank) {
  const auto* q = reinterpret_cast<const unsigned char*>(p);
  const size_t at = static_cast<size_t>(q - block->shared.data());
  if (rank < cluster_blocks && at < block->shared.size()) return reinterpret_cast<const T*>(cluster_block(rank)->shared.data() + at);
  // A static array: the same place of the peer's copy of the same declaration.
  for (auto& [key, chunks] : block->statics) {
    const unsigned char* base = chunks.front().bytes;
    if (rank < cluster_blocks && q >= base && q < base + 16 * chunks.size()) {
      return reinterpret_cast<const T*>(static_smem(cluster_block(rank), key, 16 * chunks.size()) + (q - base));
    }
  }
  std::fprintf(stderr, "tf_fake: a cluster read of block %u (of %u) at shared byte %zu, past its memory\n", rank, cluster_blocks, at);
  std::abort();
}
}  // namespace tf_fake
