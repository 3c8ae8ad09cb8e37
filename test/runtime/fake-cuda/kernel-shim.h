// Runs CUDA C kernels on the CPU for tests (force-included by the fake NVRTC in fake-cuda.cpp): a block's threads
// are fibers on one OS thread, switched at __syncthreads and at warp shuffles, so the generated code runs as
// written, barriers and all. A barrier some threads never reach (a shuffle in divergent code, a __syncthreads
// skipped by part of the block) is reported as a deadlock instead of hanging. x86-64 only.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sys/mman.h>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
// Threads are fibers switched only at barriers and shuffles: an atomic needs no lock, a fence orders nothing.
inline unsigned atomicAdd(unsigned* p, unsigned v) { const unsigned old = *p; *p = old + v; return old; }
inline void __threadfence() {}

namespace tf_fake {

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
enum State { Runnable, WaitWarp, WaitBlock, Done };
struct Fiber {
  void* sp = nullptr;
  State state = Done;
  Dim3 idx;
  unsigned shuffles = 0;  // how many this thread has done: which of two slot arrays the next one posts in
};

constexpr size_t kStack = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;

inline Dim3 block_idx, grid_dim, block_dim;
inline Fiber fibers[kMaxThreads];
inline Fiber* current = nullptr;
inline void* scheduler_sp = nullptr;
inline char* stacks = nullptr;
inline uint64_t slots[2][kMaxThreads];
inline std::function<void()> body;
inline std::vector<unsigned char> dynamic_shared;

inline unsigned char* dynamic_smem() { return dynamic_shared.data(); }

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
#define blockIdx (tf_fake::block_idx)
#define gridDim (tf_fake::grid_dim)
#define blockDim (tf_fake::block_dim)

namespace tf_fake {

inline void yield_as(State s) {
  current->state = s;
  leave(current);
}

inline void start(Fiber& f, unsigned t) {
  if (!stacks) {
    stacks = static_cast<char*>(mmap(nullptr, kStack * kMaxThreads, PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (stacks == MAP_FAILED) { std::fprintf(stderr, "tf_fake: cannot map fiber stacks\n"); std::abort(); }
  }
  // Each stack's top sits 320 bytes lower than the last's: tops a power of two apart would share one cache set, and
  // every switch would miss the cache.
  auto top = reinterpret_cast<uintptr_t>(stacks + kStack * (t + 1) - (t * 320) % 65536) & ~uintptr_t(15);
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
  return s == Runnable ? "runnable" : s == WaitWarp ? "at a warp shuffle" : s == WaitBlock ? "at __syncthreads" : "done";
}

inline void deadlock(unsigned n) {
  std::fprintf(stderr, "tf_fake: deadlock in block %u:", block_idx.x);
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

// A warp at a time, so that its lanes' stacks stay in the cache between shuffles.
inline void run_block(unsigned n) {
  for (unsigned t = 0; t < n; t++) start(fibers[t], t);
  for (;;) {
    for (unsigned w = 0; w * 32 < n; w++) run_warp(w, n);
    bool done = true, block_ready = true, any_block = false;
    for (unsigned t = 0; t < n; t++) {
      done = done && fibers[t].state == Done;
      any_block = any_block || fibers[t].state == WaitBlock;
      block_ready = block_ready && (fibers[t].state == WaitBlock || fibers[t].state == Done);
    }
    if (done) return;
    // __syncthreads goes on when every thread is at it or has exited.
    if (!any_block || !block_ready) deadlock(n);
    for (unsigned t = 0; t < n; t++) if (fibers[t].state == WaitBlock) fibers[t].state = Runnable;
  }
}

inline void run_grid(std::function<void()> kernel, unsigned grid, unsigned block, unsigned shared) {
  if (block == 0 || block > kMaxThreads || block % 32 != 0) {
    std::fprintf(stderr, "tf_fake: block of %u threads\n", block);
    std::abort();
  }
  body = std::move(kernel);
  grid_dim = {grid, 1, 1};
  block_dim = {block, 1, 1};
  dynamic_shared.assign(shared + 16, 0xcd);
  for (unsigned b = 0; b < grid; b++) {
    block_idx = {b, 0, 0};
    run_block(block);
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

namespace tf_fake {
// Every lane of the warp posts v and takes the value lane `src` (of the same warp) posted. Shuffles alternate between
// two slot arrays: a lane posts in one again only two shuffles later, when every lane is past the next one and so
// has read this one's.
template <typename T>
T exchange(T v, unsigned src) {
  static_assert(sizeof(T) <= 8, "shuffle of a wide type");
  const unsigned t = threadIdx.x;
  uint64_t* posted = slots[current->shuffles++ & 1];
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
