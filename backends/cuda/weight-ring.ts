// The megakernel's weight ring (issue 12; what streams: backends/weight-stream.ts): pages of shared memory a warp of
// each block of its own fills with bulk copies of the block's next rows' weights, in the order the block reads them
// and across the waits between kernels. Its sizes, its tables in shared memory, the barriers of a block with a
// producer warp, and its device code; the megakernel (backends/cuda/megakernel.ts) decides where it goes.

import type { MegakernelSchedule } from '../megakernel-schedule.ts';
import { CUDA_BLOCK } from './prelude.ts';

/**
 * Bytes of a page of the weight ring: one row's weights (rows are lowered to fit: RowOptions.rowWeightBytes). 32 KiB
 * is 8 outputs of a 2,048-deep projection (16 KiB pages, whose rows are narrower, measured slower on the H200: 0.943
 * against 0.876 ms a token).
 */
export const PAGE_BYTES = 32 * 1024;
/**
 * Pages a block's ring holds at most; fewer than 2 and it streams nothing (a page would be refilled only after it was
 * read). 2, not the 3 the H200's shared memory holds at 2 blocks a multiprocessor: 0.882 against 0.929 ms a token
 * (BENCHMARKS.md, thirtieth session), since a counter's release waits for the block's copies in flight.
 */
const MAX_PAGES = 2;

/**
 * Bytes of shared memory the megakernel keeps for itself before its pool where it has a ring (the flag of its waits,
 * then from RING_STATE_AT the ring's state, tf_ring_t).
 */
export const RING_OWN_BYTES = 128;
export const RING_STATE_AT = 16;

/**
 * The weight ring a block keeps in shared memory: its pages and their size, and after them the tables its fills
 * read (the block's tasks, each kernel's runs with their addresses), copied there once a launch so that a fill
 * reads no global memory (measured on the H200 with them read from the task table: 1.330 ms a token against 0.867
 * without the ring, a chain of four dependent loads a row).
 */
export interface Ring {
  readonly pages: number;
  readonly pageBytes: number;
  /** Bytes of the tables after the pages. */
  readonly tables: number;
  /** Kernels, and runs in all (the tables' first two parts). */
  readonly kernels: number;
  readonly runs: number;
}

// Bytes of the ring's table entries in shared memory: a task (kernel, first row, end row), a kernel (first run, runs,
// bytes a row), a run (its first byte's address, bytes from a row's to the next's, bytes, offset in the page).
const RING_TASK_BYTES = 12;
const RING_KERNEL_BYTES = 12;
const RING_RUN_BYTES = 24;


/** Where the pool ends, rounded to the ring's alignment (its pages follow it). */
export const poolEnd = (pool: number) => Math.ceil(pool / 128) * 128;

/**
 * The ring of a megakernel whose tasks, printed to stream, take `pool` bytes of shared memory (undefined: none
 * streams), in `sharedPerBlock` bytes a block; undefined where fewer than 2 pages fit (tasks then read their weights
 * from memory).
 */
export function planRing(s: MegakernelSchedule, pool: number | undefined, sharedPerBlock: number): Ring | undefined {
  if (!s.streamPageBytes || pool === undefined) return undefined;
  // The tables: every stream's runs, every kernel, and the tasks of the block with the most.
  const [kernels, runs] = [s.kernels.length, s.streams.reduce((n, r) => n + r.length, 0)];
  const maxTasks = Math.max(0, ...s.blocks.map((b) => b.length));
  const tables = Math.ceil((RING_RUN_BYTES * runs + RING_KERNEL_BYTES * kernels + RING_TASK_BYTES * maxTasks) / 16) * 16;
  const pages = Math.min(MAX_PAGES, Math.floor((sharedPerBlock - RING_OWN_BYTES - poolEnd(pool) - tables) / s.streamPageBytes));
  return pages >= 2 ? { pages, pageBytes: s.streamPageBytes, tables, kernels, runs } : undefined;
}

/** Threads of a weight ring's producer: a warp after the block's CUDA_BLOCK compute threads. */
export const PRODUCER_THREADS = 32;

/**
 * With a weight ring, a block's barriers (every __syncthreads of the prelude and the tasks) are among its compute
 * threads only, a named barrier, since the producer's warp after them joins none; the whole block meets once, at
 * the launch's start (tf_sync_block).
 */
export const producerBarriers = `#if defined(__CUDA_ARCH__)
__device__ __forceinline__ void tf_sync_compute() { asm volatile("bar.sync 1, ${CUDA_BLOCK};" ::: "memory"); }
__device__ __forceinline__ void tf_sync_block() { asm volatile("bar.sync 0;" ::: "memory"); }
#else
inline void tf_sync_compute() { tf_fake_sync_first(${CUDA_BLOCK}); }
inline void tf_sync_block() { __syncthreads(); }
#endif
#define __syncthreads() tf_sync_compute()`;

/**
 * The weight ring's state and functions (backends/weight-stream.ts): `pages` pages of shared memory that the copy
 * engine fills with the streamed rows' weights in the order the block runs those rows, up to that many rows ahead of
 * the row being read and across the waits between kernels. A warp of its own (the producer, after the block's
 * TF_BLOCK compute threads) issues the fills: issuing a bulk copy stalls the issuing thread while the copy engine's
 * queue is full (about 1 µs a 32 KiB row on the H200 under a full ring), which a compute thread issuing them put on
 * every row's critical path (0.940 against 0.973 ms a token on the H200, BENCHMARKS.md, thirtieth session). The
 * compute threads take a row's page (its full barrier's phase) before the row and give it back after it (their
 * barrier, then one arrival on its empty barrier, which the producer waits for before filling it again; a task's
 * last page after its counter's release).
 */
export function ringHelpers(ring: Ring, timeline: boolean, taskWords: number): string {
  return `// tsfuse megakernel: the weight ring
${timeline ? '#define TF_RING_TIMES 1\n' : ''}#define TF_RING_PAGES ${ring.pages}
#define TF_PAGE_BYTES ${ring.pageBytes}
// The producer: the first thread of the warp after the compute threads.
#define TF_RING_PRODUCER TF_BLOCK
struct tf_ring_task { int kernel, first, end; };
struct tf_ring_kernel { int first_run, runs, row_bytes; };
struct tf_ring_run { const char* src; int per_row, bytes, page_offset; };
struct tf_ring_t {
  unsigned long long full[TF_RING_PAGES];   // a barrier a page: the fill it waits for landed
  unsigned long long empty[TF_RING_PAGES];  // a barrier a page: the row read from it was given back
  unsigned char* pages;
  const tf_ring_task* tasks;      // the block's, in order (in shared memory, as the two below)
  const tf_ring_kernel* kernels;  // per kernel
  const tf_ring_run* runs;
  int end;    // the block's tasks
  int taken;  // rows its tasks read and gave back so far (thread 0's count; a task starts from it)
  int held;   // the page of a task's last row, given back after the task's release (-1: none)
  int stop;  // set by thread 0 where a wait gave up: the producer stops filling
  unsigned long long waited, filling;  // the timeline's: ns thread 0 waited for pages, ns the producer spent issuing fills
};
static_assert(sizeof(tf_ring_t) <= ${RING_OWN_BYTES - RING_STATE_AT}, "the ring's state fits the kernel's own shared bytes");
static_assert(sizeof(tf_ring_task) == ${RING_TASK_BYTES} && sizeof(tf_ring_kernel) == ${RING_KERNEL_BYTES} && sizeof(tf_ring_run) == ${RING_RUN_BYTES}, "the ring's tables as laid out");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void tf_ring_init(unsigned long long* bar) { tf_bar_init(bar); }
__device__ __forceinline__ void tf_ring_arm(unsigned long long* bar, unsigned bytes) { tf_bar_expect(bar, bytes); }
// Each weight is read once a step: its lines are the first L2 evicts (as tf_ld16_once's).
__device__ __forceinline__ void tf_ring_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;"
    :: "r"(tf_shared_address(dst)), "l"(src), "r"(bytes), "r"(tf_shared_address(bar)), "l"(tf_evict_first()) : "memory");
}
__device__ __forceinline__ void tf_ring_landed(unsigned long long*) {}
__device__ __forceinline__ void tf_ring_arrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(tf_shared_address(bar)) : "memory");
}
__device__ __forceinline__ bool tf_ring_passed(unsigned long long* bar, unsigned parity) { return tf_bar_passed(bar, parity); }
#elif defined(TF_FAKE_CUDA)
// The host emulation copies at once; a barrier's word counts its completed phases.
inline void tf_ring_init(unsigned long long* bar) { __atomic_store_n(bar, 0ull, __ATOMIC_SEQ_CST); }
inline void tf_ring_arm(unsigned long long*, unsigned) {}
inline void tf_ring_copy(void* dst, const void* src, unsigned bytes, unsigned long long*) { memcpy(dst, src, bytes); }
inline void tf_ring_landed(unsigned long long* bar) { __atomic_fetch_add(bar, 1ull, __ATOMIC_SEQ_CST); }
inline void tf_ring_arrive(unsigned long long* bar) { __atomic_fetch_add(bar, 1ull, __ATOMIC_SEQ_CST); }
inline bool tf_ring_passed(unsigned long long* bar, unsigned parity) {
  if ((__atomic_load_n(bar, __ATOMIC_SEQ_CST) & 1ull) != parity) return true;
  __nanosleep(0);
  return false;
}
#else
#error "the weight ring needs bulk copies (compute capability 9.0)"
#endif
__device__ __forceinline__ void tf_ring_wait(unsigned long long* bar, unsigned parity) {
  while (!tf_ring_passed(bar, parity)) {}
}
// Every thread at the launch's start: the ring's tables copied into shared memory after its pages, its barriers
// readied (a barrier of the whole block must follow before the producer fills).
__device__ __forceinline__ void tf_ring_load(tf_ring_t* r, unsigned char* pages, void* const* buf, const int* plan, const int* tasks, int first, int end) {
  tf_ring_run* const runs = reinterpret_cast<tf_ring_run*>(pages + TF_RING_PAGES * TF_PAGE_BYTES);
  tf_ring_kernel* const kernels = reinterpret_cast<tf_ring_kernel*>(runs + ${ring.runs});
  tf_ring_task* const mine = reinterpret_cast<tf_ring_task*>(kernels + ${ring.kernels});
  const int* const k = plan + plan[2];
  for (int i = threadIdx.x; i < ${ring.runs}; i += blockDim.x) {
    const int* const run = k + ${3 * ring.kernels} + 5 * i;
    runs[i] = { static_cast<const char*>(buf[run[0]]) + run[1], run[2], run[3], run[4] };
  }
  for (int i = threadIdx.x; i < ${ring.kernels}; i += blockDim.x) kernels[i] = { k[3 * i], k[3 * i + 1], k[3 * i + 2] };
  for (int i = threadIdx.x; i < end - first; i += blockDim.x) {
    const int* const t = tasks + ${taskWords} * (first + i);
    mine[i] = { t[0], t[2], t[3] };
  }
  if (threadIdx.x == 0) {
    r->pages = pages;
    r->tasks = mine;
    r->kernels = kernels;
    r->runs = runs;
    r->end = end - first;
    r->taken = r->stop = 0;
    r->held = -1;
    r->waited = r->filling = 0;
    for (int p = 0; p < TF_RING_PAGES; p++) {
      tf_ring_init(&r->full[p]);
      tf_ring_init(&r->empty[p]);
    }
  }
}
// The producer: fills the block's streamed rows into the pages in the order its tasks read them, one at a time, each
// page once the row before in it was given back; stops where thread 0 says a wait gave up, after its fills in flight
// landed.
static __device__ __noinline__ void tf_ring_produce(tf_ring_t* r) {
  int filled = 0;
  for (int task = 0; task < r->end; task++) {
    const tf_ring_task t = r->tasks[task];
    const tf_ring_kernel k = r->kernels[t.kernel];
    if (k.runs == 0) continue;
    for (int row = t.first; row < t.end; row++, filled++) {
      const int page = filled % TF_RING_PAGES;
      if (filled >= TF_RING_PAGES) {
        const unsigned parity = (unsigned)(filled / TF_RING_PAGES - 1) & 1u;
        while (!tf_ring_passed(&r->empty[page], parity)) {
          if (*reinterpret_cast<volatile int*>(&r->stop)) {
            for (int u = filled > TF_RING_PAGES ? filled - TF_RING_PAGES : 0; u < filled; u++) tf_ring_wait(&r->full[u % TF_RING_PAGES], (unsigned)(u / TF_RING_PAGES) & 1u);
            return;
          }
        }
      }
      // One fill in flight at a time: the row before landed first. Fewer bytes queued in the memory system shorten
      // the other blocks' waits for counters (0.870 against 0.876 ms a token, BENCHMARKS.md, thirtieth session).
      if (filled > 0) tf_ring_wait(&r->full[(filled - 1) % TF_RING_PAGES], (unsigned)((filled - 1) / TF_RING_PAGES) & 1u);
#ifdef TF_RING_TIMES
      const unsigned long long start = tf_now();
#endif
      unsigned char* const dst = r->pages + page * TF_PAGE_BYTES;
      tf_ring_arm(&r->full[page], (unsigned)k.row_bytes);
      for (int i = k.first_run; i < k.first_run + k.runs; i++) {
        const tf_ring_run& run = r->runs[i];
        tf_ring_copy(dst + run.page_offset, run.src + (long long)run.per_row * row, (unsigned)run.bytes, &r->full[page]);
      }
      tf_ring_landed(&r->full[page]);
#ifdef TF_RING_TIMES
      *reinterpret_cast<volatile unsigned long long*>(&r->filling) += tf_now() - start;
#endif
    }
  }
}
// Rows taken so far (a task's first row is the next): every compute thread keeps its own count through the task.
__device__ __forceinline__ int tf_ring_first(const tf_ring_t* r) { return r ? r->taken : 0; }
// The page of the next row once its fill landed; nullptr without a ring (bisecting: the weights are read from memory).
__device__ __forceinline__ const unsigned char* tf_ring_take(tf_ring_t* r, int taken) {
  if (!r) return nullptr;
  const int page = taken % TF_RING_PAGES;
#ifdef TF_RING_TIMES
  const unsigned long long start = threadIdx.x == 0 ? tf_now() : 0;
#endif
  tf_ring_wait(&r->full[page], (unsigned)(taken / TF_RING_PAGES) & 1u);
#ifdef TF_RING_TIMES
  if (threadIdx.x == 0) r->waited += tf_now() - start;
#endif
  return r->pages + page * TF_PAGE_BYTES;
}
// The row's page back once every compute thread has read it (the fence orders their reads of it before the copy
// engine's next writes). A task's last page is held until thread 0 has released the task's counter (tf_ring_release):
// the release waits for the block's copies in flight, so a fill issued just before it would delay it (0.929 against
// 0.941 ms a token with 3 pages, 0.882 against 0.901 with 2: BENCHMARKS.md, thirtieth session).
__device__ __forceinline__ void tf_ring_give(tf_ring_t* r, int& taken, bool last) {
  if (!r) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    r->taken = taken + 1;
    tf_fence_async_shared();
    if (last) r->held = taken % TF_RING_PAGES;
    else tf_ring_arrive(&r->empty[taken % TF_RING_PAGES]);
  }
  taken++;
}
// Thread 0, after releasing a task's counter: the page its last row held back.
__device__ __forceinline__ void tf_ring_release(tf_ring_t* r) {
  if (r && r->held >= 0) {
    tf_ring_arrive(&r->empty[r->held]);
    r->held = -1;
  }
}
`;
}
