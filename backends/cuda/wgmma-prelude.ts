// The prelude's warpgroup matrix instructions (sm_90a's wgmma on operands in shared memory) and their host
// emulation for the tests' fake CUDA: the helpers backends/cuda/wgmma.ts prints calls to.

/** The column counts N of the wgmma m64nNk16 instructions the prelude defines (N / 2 accumulators a thread). */
export const WGMMA_COLUMNS = [64, 96, 128, 256] as const;

/**
 * sm_90a's warpgroup matrix instructions (wgmma) on operands in shared memory, for the GEMM tiles of
 * backends/cuda/wgmma.ts, and their host emulation for the fake CUDA of the tests.
 *
 * A matrix descriptor (64 bits) of a K-major operand: its start address in shared memory / 16 (bits 0–13), the
 * leading byte offset / 16 (16–29; the 128-byte swizzle ignores it), the stride byte offset / 16 (32–45: from one
 * 8 rows to the next, 1,024 bytes for rows of 128), a base offset (49–51, 0: the swizzle's 1,024-byte blocks start
 * at multiples of 1,024) and the layout (62–63: 1 = 128-byte swizzle). Element (r, k) of such an operand lies at
 * start + (r / 8) · stride + (r % 8) · 128 + 2k, its 16-byte chunk (address bits 4–6) exclusive-ored with the row
 * in the block of 8 (bits 7–9). The emulation reads every element at that address, so a layout the copies and the
 * descriptors disagree on fails on the fake as it would on the GPU.
 *
 * The instructions run asynchronously: wgmma.fence before the first of a batch (accumulators written by other
 * instructions), commit closes a batch, wait<N> returns once at most N batches are in flight, after which their
 * accumulators may be read and their shared memory overwritten. The emulation defers each batch's arithmetic to
 * the wait that retires it, reading shared memory then: a stage overwritten before its batch is waited for gives
 * wrong sums on the fake too.
 */
export function wgmmaHelpers(): string {
  const instr = (n: number) => {
    const regs = Array.from({ length: n / 2 }, (_, i) => `%${i}`).join(', ');
    const outs = Array.from({ length: n / 2 }, (_, i) => `"+f"(c[${i}])`).join(', ');
    return `__device__ __forceinline__ void tf_wgmma_n${n}(float* c, unsigned long long a, unsigned long long b) {
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %${n / 2 + 2}, 0; wgmma.mma_async.sync.aligned.m64n${n}k16.f32.bf16.bf16 {${regs}}, %${n / 2}, %${n / 2 + 1}, p, 1, 1, 0, 0; }"
    : ${outs} : "l"(a), "l"(b), "r"(1));
}`;
  };
  const emulated = (n: number) => `__device__ __forceinline__ void tf_wgmma_n${n}(float* c, unsigned long long a, unsigned long long b) { tf_wgmma_emu::issue(c, a, b, ${n}); }`;
  return `// Warpgroup matrix instructions (sm_90a): backends/cuda/wgmma-prelude.ts describes descriptors and waits.
// A 128-byte-swizzled K-major operand at shared address addr: stride 1,024 bytes (8 rows of 128), layout 1.
__device__ __forceinline__ unsigned long long tf_wgmma_desc(unsigned addr) {
  return (unsigned long long)((addr & 0x3ffffu) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}
#ifdef __CUDA_ARCH__
__device__ __forceinline__ unsigned tf_smem_addr(const void* p) {
  unsigned a;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(a) : "l"(p));
  return a;
}
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void tf_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void tf_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void tf_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }
// Shared memory written by this thread's copies (the generic proxy) visible to wgmma's reads (the async proxy).
__device__ __forceinline__ void tf_fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Accumulators pinned in place: the compiler moves no access of them across the instructions in flight.
template <int N> __device__ __forceinline__ void tf_wgmma_hold(float* c) {
  #pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(c[i]) :: "memory");
}
${WGMMA_COLUMNS.map(instr).join('\n')}
#endif
#elif defined(TF_FAKE_CUDA)
// Host emulation (the tests' fake CUDA): shared addresses are offsets in the block's dynamic shared memory; each
// thread's batches wait in a queue of its own until a wait retires them.
namespace tf_wgmma_emu {
struct Op { float* c; unsigned long long a, b; int n; };
struct Queue { std::vector<std::vector<Op>> batches; std::vector<Op> open; };
inline std::vector<Queue>& queues() { static std::vector<Queue> q(tf_fake::kResident * tf_fake::kMaxThreads); return q; }
inline Queue& mine() { return queues()[(size_t)(tf_fake::block - tf_fake::resident) * tf_fake::kMaxThreads + threadIdx.x]; }
// Element (r, k) of the operand a descriptor describes, read where the GPU reads it.
inline float element(unsigned long long d, int r, int k) {
  const unsigned start = (unsigned)(d & 0x3fffu) << 4, lead = (unsigned)((d >> 16) & 0x3fffu) << 4, stride = (unsigned)((d >> 32) & 0x3fffu) << 4;
  const unsigned layout = (unsigned)(d >> 62), base = (unsigned)((d >> 49) & 7u);
  unsigned addr = start + (unsigned)(r >> 3) * stride;
  if (layout == 1 && base == 0) {
    addr += (unsigned)(r & 7) * 128u + (unsigned)k * 2u;
    addr ^= ((addr >> 7) & 7u) << 4;
  } else if (layout == 0 && base == 0) {
    addr += (unsigned)(r & 7) * 16u + (unsigned)(k >> 3) * lead + (unsigned)(k & 7) * 2u;
  } else {
    std::fprintf(stderr, "tf_wgmma: descriptor layout %u, base offset %u not emulated\\n", layout, base);
    std::abort();
  }
  if (addr + 2 > tf_fake::block->shared.size()) {
    std::fprintf(stderr, "tf_wgmma: element (%d, %d) at shared address %u, past the %zu bytes given\\n", r, k, addr, tf_fake::block->shared.size());
    std::abort();
  }
  unsigned short v;
  memcpy(&v, tf_fake::dynamic_smem() + addr, 2);
  return tf_bf16(v);
}
// This thread's accumulators of one m64nNk16 product: register i is row 16 · (warp % 4) + lane / 4 (+ 8 for
// i % 4 ≥ 2), column 8 · (i / 4) + 2 · (lane % 4) + i % 2.
inline void run(const Op& op) {
  const int lane = threadIdx.x & 31, w = (threadIdx.x >> 5) & 3;
  for (int i = 0; i < op.n / 2; i++) {
    const int row = 16 * w + (lane >> 2) + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += element(op.a, row, k) * element(op.b, col, k);
    op.c[i] += s;
  }
}
inline void issue(float* c, unsigned long long a, unsigned long long b, int n) {
  mine().open.push_back({c, a, b, n});
}
}  // namespace tf_wgmma_emu
__device__ __forceinline__ unsigned tf_smem_addr(const void* p) {
  return (unsigned)(reinterpret_cast<const unsigned char*>(p) - tf_fake::dynamic_smem());
}
__device__ __forceinline__ void tf_wgmma_fence() {}
__device__ __forceinline__ void tf_wgmma_commit() {
  tf_wgmma_emu::Queue& q = tf_wgmma_emu::mine();
  q.batches.push_back(std::move(q.open));
  q.open.clear();
}
template <int N> __device__ __forceinline__ void tf_wgmma_wait() {
  tf_wgmma_emu::Queue& q = tf_wgmma_emu::mine();
  while (q.batches.size() > (size_t)N) {
    for (const tf_wgmma_emu::Op& op : q.batches.front()) tf_wgmma_emu::run(op);
    q.batches.erase(q.batches.begin());
  }
}
__device__ __forceinline__ void tf_fence_async_smem() {}
template <int N> __device__ __forceinline__ void tf_wgmma_hold(float*) {}
${WGMMA_COLUMNS.map(emulated).join('\n')}
#else
// nvcc's host pass parses kernels it never runs: declarations only.
__device__ unsigned tf_smem_addr(const void* p);
__device__ void tf_wgmma_fence();
__device__ void tf_wgmma_commit();
template <int N> __device__ void tf_wgmma_wait();
__device__ void tf_fence_async_smem();
template <int N> __device__ void tf_wgmma_hold(float* c);
${WGMMA_COLUMNS.map((n) => `__device__ void tf_wgmma_n${n}(float* c, unsigned long long a, unsigned long long b);`).join('\n')}
#endif`;
}
