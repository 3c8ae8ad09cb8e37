// The megakernel printer: a megakernel schedule (backends/megakernel-schedule.ts) as one persistent CUDA kernel.
// Each kernel's code becomes a device function of the rows a task runs (the CUDA printer's task form: a loop over
// [tf_first, tf_end) for the launch's grid-stride loop), its shared arrays slices of one pool of dynamic shared
// memory that every task reuses (static __shared__ arrays of device functions would each take their own). The
// kernel walks its block's tasks from a task table in device memory: it prefetches the task's weight ranges into
// L2 (where asked: none by default), waits on the counters of the kernels the task depends on, calls the task, then
// adds one to its kernel's counter. The buffers come from a table of pointers. With the timeline on, each task's
// times are recorded too.
// renderCudaMegakernel takes a module's graph there: lowered again for its blocks (megakernelKernels), scheduled for
// the device, dealt over its multiprocessors, printed.

import { DeviceCaps } from '../device-caps.ts';
import { Binding, KernelIR } from '../kernel-ir.ts';
import { lowerGraph } from '../lower.ts';
import { LoweredGraph, LoweredModule } from '../lowered.ts';
import { bindingKey, DEFAULT_BLOCKS_PER_PROCESSOR, formatMegakernel, MegakernelSchedule, megakernelOrigin, scheduleMegakernel } from '../megakernel-schedule.ts';
import { sizeName } from '../render-base.ts';
import { ScheduledKernel, scheduleKernels, ScheduleOptions, SplitScratchNeeds } from '../schedule.ts';
import { cudaPrelude } from './prelude.ts';
import { cudaElemType, cudaTaskBody } from './render-cuda.ts';

export interface CudaMegakernel {
  /** One compilation unit: the prelude, the task functions and the kernel. */
  readonly source: string;
  readonly name: string;
  /** Dynamic shared memory a block needs: the pool the largest task uses, and the kernel's own words. */
  readonly sharedBytes: number;
  /** Blocks to launch (all resident at once). */
  readonly blocks: number;
  /** The buffers of the pointer table (kernel argument tf_buf), in order. */
  readonly buffers: readonly Binding[];
  /** The task table (kernel argument tf_plan): see TABLE below. */
  readonly plan: Int32Array;
  /** Counters (kernel argument tf_done): one per kernel. */
  readonly counters: number;
  /** Tasks a step runs: entries of the timeline (kernel argument tf_timeline), in the task table's order. */
  readonly tasks: number;
  /** Whether the kernel records each task's times (TIMELINE_WORDS a task) into tf_timeline. */
  readonly timeline: boolean;
  /** The scratch its tasks share work through (kernel arguments tf_ws, tf_count; MegakernelSchedule.scratch), if any. */
  readonly scratch?: SplitScratchNeeds;
}

export interface MegakernelOptions {
  /** The graph to run as one persistent kernel. Default decode: the step a session replays. */
  readonly graph?: string;
  /**
   * Blocks each multiprocessor runs (registers are capped to fit them; refused where they do not fit). Default
   * DEFAULT_BLOCKS_PER_PROCESSOR (2).
   */
  readonly blocksPerProcessor?: number;
  /** How long one wait may spin before the watchdog stops the step and reports it, in ms. Default 5000. */
  readonly watchdogMs?: number;
  /** Record each task's times (wait, inputs ready, end) and multiprocessor every step, for a timeline. Default off. */
  readonly timeline?: boolean;
  /** Weight bytes a task prefetches into L2 before it waits, at most (0: none). Default PREFETCH_BYTES (none). */
  readonly prefetchBytes?: number;
}

/** A megakernel rendered, before compiling. */
export interface PreparedMegakernel {
  readonly graph: string;
  readonly schedule: MegakernelSchedule;
  readonly kernel: CudaMegakernel;
  /** The task list as text (tsfuse compile --dump-kernels writes it beside the source). */
  readonly tasks: string;
}

/** A megakernel the device or the graph cannot run, or options out of range: bad input (one line), not a bug. */
export class MegakernelRefused extends Error {}

/** The graph a megakernel runs (MegakernelOptions.graph): the decode step unless another is named. */
export const megakernelGraph = (o: MegakernelOptions): string => o.graph ?? 'decode';

/** The options `megakernel: true` stands for. */
export function megakernelOptions(o: true | MegakernelOptions): MegakernelOptions {
  return o === true ? {} : o;
}

/**
 * The megakernel of `opts.graph` (decode by default) for a device: its kernels scheduled without overlapping launches (there are none
 * to overlap), dealt over multiprocessors × blocksPerProcessor blocks, printed. Refused, naming why, for a device
 * or graph it cannot run on.
 */
export function renderCudaMegakernel(module: LoweredModule, caps: DeviceCaps, opts: MegakernelOptions): PreparedMegakernel {
  const graph = megakernelGraph(opts);
  if (caps.target !== 'cuda') throw new MegakernelRefused(`--megakernel runs on cuda only, not ${caps.name}`);
  // __nanosleep and acquire loads need sm_70.
  if ((caps.computeCapability ?? 0) < 70) throw new MegakernelRefused(`--megakernel needs compute capability 7.0 or later; this device is ${caps.name}`);
  const lg = module.graphs.find((g) => g.graph.name === graph);
  if (!lg) throw new MegakernelRefused(`--megakernel: the program has no graph @${graph} (it has ${module.graphs.map((g) => '@' + g.graph.name).join(', ')})`);
  if (lg.kernels.length === 0) throw new MegakernelRefused(`--megakernel: graph @${graph} has no kernels`);
  const { processors, perProcessor } = megakernelGrid(caps, opts);
  const kernels = scheduleKernels(megakernelKernels(lg, caps, opts), { ...caps, dependentLaunch: false }, megakernelScheduleOptions(caps, opts));
  const schedule = scheduleMegakernel(kernels, {}, { blocks: processors * perProcessor, processors, prefetchBytes: opts.prefetchBytes });
  const kernel = printCudaMegakernel(schedule, `${graph}_megakernel`, perProcessor, { timeline: !!opts.timeline });
  return { graph, schedule, kernel, tasks: formatMegakernel(schedule) };
}

/** The megakernel's multiprocessors and blocks on each; refused where the device does not say or cannot hold them. */
function megakernelGrid(caps: DeviceCaps, opts: MegakernelOptions): { processors: number; perProcessor: number } {
  const perProcessor = opts.blocksPerProcessor ?? DEFAULT_BLOCKS_PER_PROCESSOR;
  const processors = caps.processors?.count;
  if (!processors) throw new MegakernelRefused(`--megakernel: ${caps.name} does not say how many multiprocessors it has`);
  if (!Number.isInteger(perProcessor) || perProcessor < 1 || perProcessor > caps.processors!.maxWorkgroups) {
    throw new MegakernelRefused(`--megakernel-blocks ${perProcessor}: ${caps.name} holds 1 to ${caps.processors!.maxWorkgroups} blocks a multiprocessor`);
  }
  return { processors, perProcessor };
}

/**
 * The kernels of the megakernel's graph, for the megakernel and for its kernels launched one by one: lowered again
 * where the module says how (LoweredGraph.plan), a narrow projection in no more rows than the megakernel has
 * blocks (RowOptions.maxRows: a task a row, not a block's rows one after another); else the module's. Over the same
 * buffers as the module's kernels (the runtime plans those).
 */
export function megakernelKernels(lg: LoweredGraph, caps: DeviceCaps, opts: MegakernelOptions): readonly KernelIR[] {
  if (!lg.plan) return lg.kernels;
  const { processors, perProcessor } = megakernelGrid(caps, opts);
  const maxRows = processors * perProcessor;
  const memo = relowered.get(lg) ?? relowered.set(lg, new Map()).get(lg)!;
  let kernels = memo.get(maxRows);
  if (!kernels) {
    kernels = lowerGraph(lg.graph, lg.plan.slotOf, new Map(), { maxRows });
    const bound = (ks: readonly KernelIR[]) => [...new Set(ks.flatMap((k) => k.buffers.map((b) => bindingKey(b.binding))))].sort().join();
    if (kernels.length !== lg.kernels.length || bound(kernels) !== bound(lg.kernels)) throw new Error(`megakernel: @${lg.graph.name} lowered again for its rows has other kernels or buffers than the module's`);
    memo.set(maxRows, kernels);
  }
  return kernels;
}
const relowered = new WeakMap<LoweredGraph, Map<number, KernelIR[]>>();

/**
 * A graph's kernels as they run and what their schedule takes: the megakernel's graph's as the megakernel lowers and
 * schedules them (megakernelKernels, megakernelScheduleOptions), where there is one (its kernels launched one by one,
 * as bisecting and the dumps do, are those); every other graph's as the module lowered them, launched.
 */
export function graphAsRun(lg: LoweredGraph, caps: DeviceCaps, megakernel: MegakernelOptions | undefined): { readonly kernels: readonly KernelIR[]; readonly opts: ScheduleOptions } {
  return megakernel && lg.graph.name === megakernelGraph(megakernel)
    ? { kernels: megakernelKernels(lg, caps, megakernel), opts: megakernelScheduleOptions(caps, megakernel) }
    : { kernels: lg.kernels, opts: {} };
}

/** 32-bit registers a multiprocessor holds (compute capability 7.0 and later, which the megakernel needs). */
const REGISTERS_PER_PROCESSOR = 65536;

/**
 * How the megakernel's graph is scheduled, for the megakernel and for its kernels launched one by one (bisecting
 * compares the two byte for byte): every kernel's code under the megakernel's register cap (launch bounds for its
 * blocks a multiprocessor), and row by row at any size, as its tasks run (a step of several rows would launch tiles).
 */
export function megakernelScheduleOptions(caps: DeviceCaps, opts: MegakernelOptions): ScheduleOptions {
  const perProcessor = opts.blocksPerProcessor ?? DEFAULT_BLOCKS_PER_PROCESSOR;
  return { registersPerThread: Math.floor(REGISTERS_PER_PROCESSOR / (perProcessor * caps.threadsPerWorkgroup)), rowsOnly: true };
}

/** Words of the watchdog's record (kernel argument tf_watchdog): see WATCHDOG_FIELDS. */
export const WATCHDOG_WORDS = 8;
/** What the record holds after a wait timed out, word by word (word 0 is set once one has). */
export const WATCHDOG_FIELDS = ['tripped', 'block', 'entry', 'kernel', 'task', 'counter', 'seen', 'awaited'] as const;

// TABLE: word 0 where the waits start, word 1 where the prefetches start; words 2..blocks+2 each block's first task
// (the next block's is its end); then the tasks, TASK_WORDS each (kernel, its task index, first row, end row, first
// wait, waits, first prefetch, prefetches); then the waits, two words each (the kernel awaited, its tasks a step);
// then the prefetches, three words each (the buffer's slot in tf_buf, byte offset, bytes).
const TASK_WORDS = 8;
/** Bytes of the pool the kernel keeps for itself (the flag thread 0 hands the others after waiting). */
const OWN_BYTES = 16;
/** Words (u64) of the timeline a task: when its block started waiting, when its inputs were ready, when it ended (ns, %globaltimer), and its multiprocessor. */
export const TIMELINE_WORDS = 4;

/** Prints the megakernel of a schedule; `blocksPerProcessor` bounds the registers so that that many fit. */
export function printCudaMegakernel(s: MegakernelSchedule, name: string, blocksPerProcessor: number, opts: { timeline?: boolean } = {}): CudaMegakernel {
  const buffers: Binding[] = [];
  const slotOf = new Map<string, number>();
  const slot = (b: Binding) => {
    const key = bindingKey(b);
    let i = slotOf.get(key);
    if (i === undefined) {
      slotOf.set(key, (i = buffers.length));
      buffers.push(b);
    }
    return i;
  };
  // One device function per kernel body (every layer's kernels share theirs).
  const functions = new Map<ScheduledKernel, { name: string; code: string; poolBytes: number }>();
  const calls = s.kernels.map((sk, k) => {
    const origin = megakernelOrigin(sk);
    let f = functions.get(origin);
    if (!f) functions.set(origin, (f = taskFunction(origin, `tf_task${functions.size}`)));
    const args = sk.kernel.buffers.map((b) => `(${b.written ? '' : 'const '}${cudaElemType[b.dtype]}*)tf_buf[${slot(b.binding)}]`);
    for (const size of sk.kernel.sizes) args.push(String(s.sizes[size]));
    if (sharesWork(sk)) args.push('tf_ws', 'tf_count');
    return `      case ${k}: ${f.name}(${[...args, 'tf_pool', 'tf_first', 'tf_end'].join(', ')}); break;`;
  });
  const pool = Math.max(0, ...[...functions.values()].map((f) => f.poolBytes));
  const timeline = !!opts.timeline;
  const source = [
    // Every load is coherent: a task reads what other blocks wrote earlier in the same launch, which the
    // non-coherent path (__ldg) may serve stale.
    '#define __ldg(p) (*(p))',
    cudaPrelude,
    megakernelHelpers,
    ...[...functions.values()].map((f) => f.code),
    kernelCode(name, blocksPerProcessor, calls, timeline),
  ].join('\n');
  const plan = taskTable(s, (k, buffer) => slot(s.kernels[k].kernel.buffers[buffer].binding));
  return {
    source, name, sharedBytes: OWN_BYTES + pool, blocks: s.blocks.length, buffers, plan, counters: s.kernels.length,
    tasks: s.blocks.reduce((n, list) => n + list.length, 0), timeline, ...(s.scratch ? { scratch: s.scratch } : {}),
  };
}

/** The task table the kernel walks (TABLE); `slotOf` gives a kernel's buffer's slot in the pointer table. */
function taskTable(s: MegakernelSchedule, slotOf: (kernel: number, buffer: number) => number): Int32Array {
  const tasks = s.blocks.flat();
  const waits = tasks.reduce((n, t) => n + t.waits.length, 0);
  const prefetches = tasks.reduce((n, t) => n + s.prefetch[t.kernel][t.task].length, 0);
  const blocks = s.blocks.length;
  const tasksAt = blocks + 3;
  const waitsAt = tasksAt + TASK_WORDS * tasks.length;
  const prefetchesAt = waitsAt + 2 * waits;
  const table = new Int32Array(prefetchesAt + 3 * prefetches);
  table.set([waitsAt, prefetchesAt]);
  let [t, w, p] = [0, 0, 0];
  s.blocks.forEach((list, b) => {
    table[2 + b] = t;
    for (const task of list) {
      const k = task.kernel;
      const span = s.spans[k][task.task];
      const ranges = s.prefetch[k][task.task];
      table.set([k, task.task, span.from, span.to, w, task.waits.length, p, ranges.length], tasksAt + TASK_WORDS * t);
      for (const d of task.waits) table.set([d, s.tasks[d]], waitsAt + 2 * w++);
      for (const r of ranges) {
        if (r.offset + r.bytes > 0x7fffffff) throw new Error(`megakernel: kernel ${s.kernels[k].kernel.name} prefetches bytes ${r.offset}..${r.offset + r.bytes} of buffer ${r.buffer}, past what the task table's 32-bit words hold`);
        table.set([slotOf(k, r.buffer), r.offset, r.bytes], prefetchesAt + 3 * p++);
      }
      t++;
    }
  });
  table[2 + blocks] = t;
  return table;
}

/** Whether a kernel's tasks share work through the megakernel's scratch: attention over a cache in chunks of keys. */
const sharesWork = (sk: ScheduledKernel) => !!sk.flash?.keyChunks;

/**
 * A kernel's code as a device function of the task's rows [tf_first, tf_end), its shared arrays placed in the
 * pool: memory the launch would have given first (the schedule's dynamic offsets), the arrays it declares
 * statically after that (the printer's task form: cudaTaskBody).
 */
function taskFunction(sk: ScheduledKernel, name: string): { name: string; code: string; poolBytes: number } {
  const k = sk.kernel;
  const { body, poolBytes } = cudaTaskBody(sk);
  // The printer refuses what a task cannot run; this catches a path of it that prints a launch's code regardless.
  const launchOnly = /\b(__shared__|blockIdx|gridDim)\b/.exec(body);
  if (launchOnly) throw new Error(`megakernel: kernel ${k.name}'s code has ${launchOnly[1]}, which a task cannot run`);
  // Weights are never written during a step: the compiler may read them through the read-only path.
  const params = k.buffers.map((b, i) => `${b.written ? '' : 'const '}${cudaElemType[b.dtype]}*${b.binding.kind === 'param' ? ' __restrict__' : ''} b${i}`);
  for (const s of k.sizes) params.push(`const int ${sizeName(s)}`);
  if (sharesWork(sk)) params.push('float* __restrict__ tf_ws', 'unsigned* __restrict__ tf_count');
  params.push('unsigned char* const tf_pool', 'const int tf_first', 'const int tf_end');
  const code = `// ${k.name}'s code (and every kernel's alike)\nstatic __device__ __noinline__ void ${name}(${params.join(', ')}) {\n${body}`;
  return { name, code, poolBytes };
}

/**
 * The waits and the release (a counter released by one thread after a barrier, with a release reduction; acquired
 * by one thread, then handed to the block by a barrier), the watchdog (a wait that passes its bound records where
 * it is and gives up), and the prefetch; the timeline's clock and multiprocessor are the prelude's (tf_now,
 * tf_processor).
 */
const megakernelHelpers = `// tsfuse megakernel: counters, waits, the watchdog
#ifdef __CUDA_ARCH__
__device__ __forceinline__ unsigned tf_mk_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// Starts pulling bytes [p, p + bytes) into L2, the block's threads sharing the work, and goes on without waiting.
// p and bytes are multiples of 16 (the schedule's prefetch ranges are).
__device__ __forceinline__ void tf_mk_prefetch(const char* p, int bytes) {
#if __CUDA_ARCH__ >= 900
  // A bulk prefetch a chunk of 4 KiB a thread.
  for (int at = threadIdx.x * 4096; at < bytes; at += TF_BLOCK * 4096) {
    const int n = bytes - at < 4096 ? bytes - at : 4096;
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p + at), "r"(n) : "memory");
  }
#else
  for (int at = threadIdx.x * 128; at < bytes; at += TF_BLOCK * 128) asm volatile("prefetch.global.L2 [%0];" :: "l"(p + at));
#endif
}
// Adds one to a counter, ordered after every write the block made before its barrier: a release reduction, with no
// fence of its own (a fence and an atomic add measured 0.950 against 0.921 ms a decode step, BENCHMARKS.md).
__device__ __forceinline__ void tf_mk_release(unsigned* p) { asm volatile("red.release.gpu.global.add.u32 [%0], 1;" :: "l"(p) : "memory"); }
#else
// Host compilers (the tests' CPU emulation): __nanosleep lets other blocks run; a prefetch changes nothing there.
__device__ __forceinline__ unsigned tf_mk_acquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
__device__ __forceinline__ void tf_mk_release(unsigned* p) { __atomic_fetch_add(p, 1u, __ATOMIC_RELEASE); }
__device__ __forceinline__ void tf_mk_prefetch(const char*, int) {}
#endif
// Counters count up over every step (wrapping): reached once the count is at or past the target.
__device__ __forceinline__ bool tf_mk_reached(unsigned seen, unsigned target) { return (int)(seen - target) >= 0; }
// Spins until *counter reaches target; past limit_ns, records the wait in the watchdog (the first to time out does)
// and returns false.
__device__ __noinline__ bool tf_mk_wait(const unsigned* counter, unsigned target, unsigned long long limit_ns, unsigned* watchdog,
                                        unsigned block, unsigned entry, unsigned kernel, unsigned task, unsigned awaited_kernel) {
  unsigned seen = tf_mk_acquire(counter);
  if (tf_mk_reached(seen, target)) return true;
  const unsigned long long start = tf_now();
  for (;;) {
    __nanosleep(100);
    seen = tf_mk_acquire(counter);
    if (tf_mk_reached(seen, target)) return true;
    if (tf_now() - start > limit_ns) {
      if (atomicCAS(watchdog, 0u, 1u) == 0u) {
        watchdog[1] = block; watchdog[2] = entry; watchdog[3] = kernel; watchdog[4] = task;
        watchdog[5] = awaited_kernel; watchdog[6] = seen; watchdog[7] = target;
        __threadfence();
      }
      return false;
    }
  }
}
`;

/** The persistent kernel: each block its tasks, prefetching, waiting, calling, releasing (and timing them). */
function kernelCode(name: string, blocksPerProcessor: number, calls: readonly string[], timeline: boolean): string {
  // Thread 0 records the times; the barrier after the wait orders its "ready" after every thread is past the wait.
  const time = (word: number, what: string) => (timeline ? `    if (threadIdx.x == 0) tf_timeline[${TIMELINE_WORDS} * tf_t + ${word}] = ${what};\n` : '');
  return `extern "C" __global__ void __launch_bounds__(TF_BLOCK, ${blocksPerProcessor}) ${name}(void* const* __restrict__ tf_buf, const int* __restrict__ tf_plan,
    unsigned* tf_done, unsigned* tf_steps, unsigned* tf_watchdog, const unsigned long long tf_limit_ns, unsigned long long* tf_timeline,
    float* tf_ws, unsigned* tf_count, const int tf_only_kernel, const int tf_only_task) {
  extern __shared__ __align__(16) unsigned char tf_smem[];
  unsigned char* const tf_pool = tf_smem + ${OWN_BYTES};
  volatile int* const tf_go = reinterpret_cast<volatile int*>(tf_smem);
  const unsigned tf_me = blockIdx.x;
  // The block's own count of steps (no other block touches it): the counters' targets this step.
  if (threadIdx.x == 0) tf_steps[tf_me] += 1u;
  __syncthreads();
  const unsigned tf_step = tf_steps[tf_me];
  const int* const tf_tasks = tf_plan + gridDim.x + 3;
  const int* const tf_waits = tf_plan + tf_plan[0];
  const int* const tf_prefetches = tf_plan + tf_plan[1];
  for (int tf_t = tf_plan[2 + tf_me]; tf_t < tf_plan[3 + tf_me]; tf_t++) {
    const int* const tf_task = tf_tasks + ${TASK_WORDS} * tf_t;
    const int tf_kernel = tf_task[0], tf_first = tf_task[2], tf_end = tf_task[3];
    // Bisecting (tf_only_kernel ≥ 0): only that kernel's tasks (or one of them) run, without waiting, the host
    // having run their producers before.
    if (tf_only_kernel >= 0 && (tf_kernel != tf_only_kernel || (tf_only_task >= 0 && tf_task[1] != tf_only_task))) continue;
    // The weights depend on no task: start pulling them before waiting for the inputs.
    for (int p = tf_task[6]; p < tf_task[6] + tf_task[7]; p++) {
      const int* const tf_range = tf_prefetches + 3 * p;
      tf_mk_prefetch(static_cast<const char*>(tf_buf[tf_range[0]]) + tf_range[1], tf_range[2]);
    }
${time(0, 'tf_now()')}    if (tf_task[5] > 0 && tf_only_kernel < 0) {
      if (threadIdx.x == 0) {
        bool ok = true;
        for (int w = tf_task[4]; ok && w < tf_task[4] + tf_task[5]; w++) {
          const int d = tf_waits[2 * w];
          ok = tf_mk_wait(tf_done + d, tf_step * (unsigned)tf_waits[2 * w + 1], tf_limit_ns, tf_watchdog, tf_me, tf_t, tf_kernel, tf_task[1], d);
        }
        *tf_go = ok;
      }
      __syncthreads();
      if (!*tf_go) return;
    }
${time(1, 'tf_now()')}    switch (tf_kernel) {
${calls.map((c) => c.slice(2)).join('\n')}
    }
    // The next task reuses the pool; the release covers every thread's writes.
    __syncthreads();
${time(2, 'tf_now()')}${time(3, 'tf_processor()')}    if (threadIdx.x == 0) tf_mk_release(tf_done + tf_kernel);
  }
}
`;
}
