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

import { cudaCaps, DeviceCaps } from '../device-caps.ts';
import { Binding, KernelIR } from '../kernel-ir.ts';
import { lowerGraph } from '../lower.ts';
import { LoweredGraph, LoweredModule } from '../lowered.ts';
import { bindingKey, DEFAULT_BLOCKS_PER_PROCESSOR, formatMegakernel, MegakernelSchedule, megakernelOrigin, scheduleMegakernel } from '../megakernel-schedule.ts';
import { sizeName } from '../render-base.ts';
import { RowStream } from '../weight-stream.ts';
import { ScheduledKernel, scheduleKernels, ScheduleOptions, SplitScratchNeeds } from '../schedule.ts';
import { CUDA_BLOCK, cudaPrelude } from './prelude.ts';
import { cudaElemType, cudaTaskBody } from './render-cuda.ts';

export interface CudaMegakernel {
  /** One compilation unit: the prelude, the task functions and the kernel. */
  readonly source: string;
  readonly name: string;
  /** Dynamic shared memory a block needs: the pool the largest task uses, and the kernel's own words. */
  readonly sharedBytes: number;
  /** Blocks to launch (all resident at once), and threads a block: CUDA_BLOCK, and a weight ring's producer warp. */
  readonly blocks: number;
  readonly threads: number;
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
  /**
   * Stream each row's weights through pages of shared memory filled by the copy engine ahead of the rows
   * (backends/weight-stream.ts; devices of compute capability 9.0 and later). Default off.
   */
  readonly streamWeights?: boolean;
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
  const schedule = scheduleMegakernel(kernels, {}, { blocks: processors * perProcessor, processors, prefetchBytes: opts.prefetchBytes, streamPageBytes: streamPageBytes(caps, opts) });
  // A multiprocessor's shared memory (what one block may take, and the 1 KiB the device keeps a block) shared by its blocks.
  const sharedPerBlock = Math.floor((caps.workgroupMemoryBytes + RESERVED_SHARED_BYTES) / perProcessor) - RESERVED_SHARED_BYTES;
  const kernel = printCudaMegakernel(schedule, `${graph}_megakernel`, perProcessor, { timeline: !!opts.timeline, sharedPerBlock });
  return { graph, schedule, kernel, tasks: formatMegakernel(schedule) };
}

/** Shared memory a CUDA device keeps for itself a resident block. */
const RESERVED_SHARED_BYTES = 1024;

/**
 * Bytes of a page of the weight ring: one row's weights (rows are lowered to fit: RowOptions.rowWeightBytes). 32 KiB
 * is 8 outputs of a 2,048-deep projection (16 KiB pages, whose rows are narrower, measured slower on the H200: 0.943
 * against 0.876 ms a token).
 */
const PAGE_BYTES = 32 * 1024;
/**
 * Pages a block's ring holds at most; fewer than 2 and it streams nothing (a page would be refilled only after it was
 * read). 2, not the 3 the H200's shared memory holds at 2 blocks a multiprocessor: 0.882 against 0.929 ms a token
 * (BENCHMARKS.md, thirtieth session), since a counter's release waits for the block's copies in flight.
 */
const MAX_PAGES = 2;

/** The page size where the megakernel streams its weights (bulk copies: compute capability 9.0 and later), else undefined. */
function streamPageBytes(caps: DeviceCaps, opts: MegakernelOptions): number | undefined {
  if (!opts.streamWeights) return undefined;
  if ((caps.computeCapability ?? 0) < 90) throw new MegakernelRefused(`--megakernel-stream needs compute capability 9.0 or later (its copy engine's bulk copies); this device is ${caps.name}`);
  return PAGE_BYTES;
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
  const key = `${maxRows}${opts.streamWeights ? ' streamed' : ''}`;
  let kernels = memo.get(key);
  if (!kernels) {
    kernels = lowerGraph(lg.graph, lg.plan.slotOf, new Map(), { maxRows, ...(opts.streamWeights ? { rowWeightBytes: PAGE_BYTES } : {}) });
    const bound = (ks: readonly KernelIR[]) => [...new Set(ks.flatMap((k) => k.buffers.map((b) => bindingKey(b.binding))))].sort().join();
    if (kernels.length !== lg.kernels.length || bound(kernels) !== bound(lg.kernels)) throw new Error(`megakernel: @${lg.graph.name} lowered again for its rows has other kernels or buffers than the module's`);
    memo.set(key, kernels);
  }
  return kernels;
}
const relowered = new WeakMap<LoweredGraph, Map<string, KernelIR[]>>();

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
  const page = streamPageBytes(caps, opts);
  // A weight ring's producer warp takes its share of the registers.
  const threads = caps.threadsPerWorkgroup + (page ? PRODUCER_THREADS : 0);
  return { registersPerThread: Math.floor(REGISTERS_PER_PROCESSOR / (perProcessor * threads)), rowsOnly: true, ...(page ? { streamPageBytes: page } : {}) };
}

/** Words of the watchdog's record (kernel argument tf_watchdog): see WATCHDOG_FIELDS. */
export const WATCHDOG_WORDS = 8;
/** What the record holds after a wait timed out, word by word (word 0 is set once one has). */
export const WATCHDOG_FIELDS = ['tripped', 'block', 'entry', 'kernel', 'task', 'counter', 'seen', 'awaited'] as const;

// TABLE: word 0 where the waits start, word 1 where the prefetches start, word 2 where the streams start; words
// 3..blocks+3 each block's first task (the next block's is its end); then the tasks, TASK_WORDS each (kernel, its
// task index, first row, end row, first wait, waits, first prefetch, prefetches); then the waits, two words each
// (the kernel awaited, its tasks a step); then the prefetches, three words each (the buffer's slot in tf_buf, byte
// offset, bytes); then per kernel three words (its first run, runs, bytes a row) and the runs its rows stream
// (MegakernelSchedule.streams), five words each (the buffer's slot, first byte, bytes from a row's to the next's,
// bytes, offset in the page). The streams are empty where the kernel keeps no weight ring.
const TASK_WORDS = 8;
/**
 * Bytes of shared memory the kernel keeps for itself before the pool: the flag thread 0 hands the others after
 * waiting, and with a weight ring the ring's state.
 */
const OWN_BYTES = 16;
const OWN_BYTES_WITH_RING = 128;
const ownBytes = (ring: Ring | undefined) => (ring ? OWN_BYTES_WITH_RING : OWN_BYTES);
/** Where the ring's state (tf_ring_t) starts in them. */
const RING_STATE_AT = 16;
/**
 * Words (u64) of the timeline a task: when its block started waiting, when its inputs were ready, when it ended (ns,
 * %globaltimer), its multiprocessor, and with a weight ring the block's ns so far spent waiting for pages (thread 0)
 * and issuing fills (the producer), zero without one.
 */
export const TIMELINE_WORDS = 6;

/**
 * Prints the megakernel of a schedule; `blocksPerProcessor` bounds the registers so that that many fit,
 * `sharedPerBlock` (bytes) the pages of its weight ring (default: the H200's share at that many blocks).
 */
export function printCudaMegakernel(s: MegakernelSchedule, name: string, blocksPerProcessor: number, opts: { timeline?: boolean; sharedPerBlock?: number } = {}): CudaMegakernel {
  const sharedPerBlock = opts.sharedPerBlock ?? Math.floor((cudaCaps(90).workgroupMemoryBytes + RESERVED_SHARED_BYTES) / blocksPerProcessor) - RESERVED_SHARED_BYTES;
  const streamed = printTasks(s, true);
  const tables = ringTableBytes(s);
  const pages = s.streamPageBytes && streamed.streams ? Math.min(MAX_PAGES, Math.floor((sharedPerBlock - OWN_BYTES_WITH_RING - poolEnd(streamed.pool) - tables) / s.streamPageBytes)) : 0;
  // Too little shared memory for a ring: every task reads its weights from memory.
  const printed = pages >= 2 ? streamed : printTasks(s, false);
  const ring = pages >= 2 ? { pages, pageBytes: s.streamPageBytes!, tables, ...ringCounts(s) } : undefined;
  return printKernel(s, name, blocksPerProcessor, printed, ring, !!opts.timeline);
}

/**
 * The weight ring a block keeps in shared memory: its pages and their size, and after them the tables its fills
 * read (the block's tasks, each kernel's runs with their addresses), copied there once a launch so that a fill,
 * which one thread issues between two rows while the other threads wait at the next barrier, reads no
 * global memory (measured on the H200 with them read from the task table: 1.330 ms a token against 0.867 without
 * the ring, a chain of four dependent loads a row).
 */
interface Ring {
  readonly pages: number;
  readonly pageBytes: number;
  /** Bytes of the tables after the pages. */
  readonly tables: number;
  /** Tasks of the block with the most, kernels, runs in all. */
  readonly maxTasks: number;
  readonly kernels: number;
  readonly runs: number;
}

// Bytes of the ring's table entries in shared memory: a task (kernel, first row, end row), a kernel (first run, runs,
// bytes a row), a run (its first byte's address, bytes from a row's to the next's, bytes, offset in the page).
const RING_TASK_BYTES = 12;
const RING_KERNEL_BYTES = 12;
const RING_RUN_BYTES = 24;

function ringCounts(s: MegakernelSchedule): { maxTasks: number; kernels: number; runs: number } {
  return { maxTasks: Math.max(0, ...s.blocks.map((b) => b.length)), kernels: s.kernels.length, runs: s.streams.reduce((n, r) => n + r.length, 0) };
}

function ringTableBytes(s: MegakernelSchedule): number {
  const { maxTasks, kernels, runs } = ringCounts(s);
  return Math.ceil((RING_RUN_BYTES * runs + RING_KERNEL_BYTES * kernels + RING_TASK_BYTES * maxTasks) / 16) * 16;
}

/** Where the pool ends, rounded to the ring's alignment (its pages follow it). */
const poolEnd = (pool: number) => Math.ceil(pool / 128) * 128;

interface PrintedTasks {
  readonly functions: Map<ScheduledKernel, { name: string; code: string; poolBytes: number }>;
  /** Per kernel, the function it calls and its arguments but the pool's and rows'. */
  readonly calls: readonly { readonly name: string; readonly args: readonly string[] }[];
  readonly buffers: Binding[];
  readonly slotOf: (b: Binding) => number;
  readonly pool: number;
  /** Whether any task streams its weights through the ring. */
  readonly streams: boolean;
}

/** One device function per kernel body (every layer's kernels share theirs), reading the ring where `streamed`. */
function printTasks(s: MegakernelSchedule, streamed: boolean): PrintedTasks {
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
  const functions = new Map<ScheduledKernel, { name: string; code: string; poolBytes: number }>();
  const streamsOf = new Map<ScheduledKernel, string>();
  const calls = s.kernels.map((sk, k) => {
    const origin = megakernelOrigin(sk);
    const streams = streamed ? s.streams[k] : [];
    // The function's code holds its streams' offsets: kernels sharing it must stream alike.
    const key = JSON.stringify(streams);
    if ((streamsOf.get(origin) ?? key) !== key) throw new Error(`megakernel: kernel ${sk.kernel.name} streams its weights unlike the kernels whose code it shares`);
    streamsOf.set(origin, key);
    let f = functions.get(origin);
    if (!f) functions.set(origin, (f = taskFunction(origin, `tf_task${functions.size}`, streams)));
    const args = sk.kernel.buffers.map((b) => `(${b.written ? '' : 'const '}${cudaElemType[b.dtype]}*)tf_buf[${slot(b.binding)}]`);
    for (const size of sk.kernel.sizes) args.push(String(s.sizes[size]));
    if (sharesWork(sk)) args.push('tf_ws', 'tf_count');
    if (streams.length) args.push('tf_ring');
    return { name: f.name, args };
  });
  const pool = Math.max(0, ...[...functions.values()].map((f) => f.poolBytes));
  return { functions, calls, buffers, slotOf: slot, pool, streams: streamed && s.streams.some((r) => r.length > 0) };
}

/** Threads of a weight ring's producer: a warp after the block's CUDA_BLOCK compute threads. */
const PRODUCER_THREADS = 32;

/**
 * With a weight ring, a block's barriers (every __syncthreads of the prelude and the tasks) are among its compute
 * threads only, a named barrier, since the producer's warp after them joins none; the whole block meets once, at
 * the launch's start (tf_sync_block).
 */
const producerBarriers = `#if defined(__CUDA_ARCH__)
__device__ __forceinline__ void tf_sync_compute() { asm volatile("bar.sync 1, ${CUDA_BLOCK};" ::: "memory"); }
__device__ __forceinline__ void tf_sync_block() { asm volatile("bar.sync 0;" ::: "memory"); }
#else
inline void tf_sync_compute() { tf_fake_sync_first(${CUDA_BLOCK}); }
inline void tf_sync_block() { __syncthreads(); }
#endif
#define __syncthreads() tf_sync_compute()`;

/** The megakernel's source and what its launch needs, from its tasks' functions. */
function printKernel(s: MegakernelSchedule, name: string, blocksPerProcessor: number, printed: PrintedTasks, ring: Ring | undefined, timeline: boolean): CudaMegakernel {
  const { functions, buffers, pool } = printed;
  const calls = printed.calls.map((c, k) => `      case ${k}: ${c.name}(${[...c.args, 'tf_pool', 'tf_first', 'tf_end'].join(', ')}); break;`);
  const source = [
    // Every load is coherent: a task reads what other blocks wrote earlier in the same launch, which the
    // non-coherent path (__ldg) may serve stale.
    '#define __ldg(p) (*(p))',
    ...(ring ? [producerBarriers] : []),
    cudaPrelude,
    megakernelHelpers,
    ...(ring ? [ringHelpers(ring, timeline)] : []),
    ...[...functions.values()].map((f) => f.code),
    kernelCode(name, blocksPerProcessor, calls, timeline, ring, pool, s.kernels.length),
  ].join('\n');
  const plan = taskTable(s, (k, buffer) => printed.slotOf(s.kernels[k].kernel.buffers[buffer].binding), !!ring);
  const sharedBytes = ring ? OWN_BYTES_WITH_RING + poolEnd(pool) + ring.pages * ring.pageBytes + ring.tables : OWN_BYTES + pool;
  return {
    source, name, sharedBytes, blocks: s.blocks.length, threads: CUDA_BLOCK + (ring ? PRODUCER_THREADS : 0), buffers, plan, counters: s.kernels.length,
    tasks: s.blocks.reduce((n, list) => n + list.length, 0), timeline, ...(s.scratch ? { scratch: s.scratch } : {}),
  };
}

/** The task table the kernel walks (TABLE); `slotOf` gives a kernel's buffer's slot in the pointer table. */
function taskTable(s: MegakernelSchedule, slotOf: (kernel: number, buffer: number) => number, streamed: boolean): Int32Array {
  const tasks = s.blocks.flat();
  const waits = tasks.reduce((n, t) => n + t.waits.length, 0);
  const prefetches = tasks.reduce((n, t) => n + s.prefetch[t.kernel][t.task].length, 0);
  const streams = streamed ? s.streams : s.streams.map(() => []);
  const runs = streams.reduce((n, r) => n + r.length, 0);
  const blocks = s.blocks.length;
  const tasksAt = blocks + 4;
  const waitsAt = tasksAt + TASK_WORDS * tasks.length;
  const prefetchesAt = waitsAt + 2 * waits;
  const streamsAt = prefetchesAt + 3 * prefetches;
  const table = new Int32Array(streamsAt + 3 * streams.length + 5 * runs);
  table.set([waitsAt, prefetchesAt, streamsAt]);
  let run = 0;
  streams.forEach((list, k) => {
    table.set([run, list.length, list.reduce((n, r) => n + r.bytes, 0)], streamsAt + 3 * k);
    for (const r of list) {
      if (r.first + r.perRow * (s.rows[k] - 1) > 0x7fffffff) throw new Error(`megakernel: kernel ${s.kernels[k].kernel.name} streams bytes past what the task table's 32-bit words hold`);
      table.set([slotOf(k, r.buffer), r.first, r.perRow, r.bytes, r.pageOffset], streamsAt + 3 * streams.length + 5 * run++);
    }
  });
  let [t, w, p] = [0, 0, 0];
  s.blocks.forEach((list, b) => {
    table[3 + b] = t;
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
  table[3 + blocks] = t;
  return table;
}

/** Whether a kernel's tasks share work through the megakernel's scratch: attention over a cache in chunks of keys. */
const sharesWork = (sk: ScheduledKernel) => !!sk.flash?.keyChunks;

/**
 * A kernel's code as a device function of the task's rows [tf_first, tf_end), its shared arrays placed in the
 * pool: memory the launch would have given first (the schedule's dynamic offsets), the arrays it declares
 * statically after that (the printer's task form: cudaTaskBody).
 */
function taskFunction(sk: ScheduledKernel, name: string, streams: readonly RowStream[]): { name: string; code: string; poolBytes: number } {
  const k = sk.kernel;
  const { body, poolBytes } = cudaTaskBody(sk, streams);
  // The printer refuses what a task cannot run; this catches a path of it that prints a launch's code regardless.
  const launchOnly = /\b(__shared__|blockIdx|gridDim)\b/.exec(body);
  if (launchOnly) throw new Error(`megakernel: kernel ${k.name}'s code has ${launchOnly[1]}, which a task cannot run`);
  // Weights are never written during a step: the compiler may read them through the read-only path.
  const params = k.buffers.map((b, i) => `${b.written ? '' : 'const '}${cudaElemType[b.dtype]}*${b.binding.kind === 'param' ? ' __restrict__' : ''} b${i}`);
  for (const s of k.sizes) params.push(`const int ${sizeName(s)}`);
  if (sharesWork(sk)) params.push('float* __restrict__ tf_ws', 'unsigned* __restrict__ tf_count');
  if (streams.length) params.push('tf_ring_t* const tf_ring');
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
function ringHelpers(ring: Ring, timeline: boolean): string {
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
static_assert(sizeof(tf_ring_t) <= ${OWN_BYTES_WITH_RING - RING_STATE_AT}, "the ring's state fits the kernel's own shared bytes");
static_assert(sizeof(tf_ring_task) == ${RING_TASK_BYTES} && sizeof(tf_ring_kernel) == ${RING_KERNEL_BYTES} && sizeof(tf_ring_run) == ${RING_RUN_BYTES}, "the ring's tables as laid out");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void tf_ring_init(unsigned long long* bar) { tf_bar_init(bar); }
__device__ __forceinline__ void tf_ring_arm(unsigned long long* bar, unsigned bytes) { tf_bar_expect(bar, bytes); }
// Each weight is read once a step: its lines are the first L2 evicts (as tf_ld16_once's).
__device__ __forceinline__ void tf_ring_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile("{\\n\\t.reg .b64 tf_policy;\\n\\tcreatepolicy.fractional.L2::evict_first.b64 tf_policy, 1.0;\\n\\t"
    "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], tf_policy;\\n\\t}"
    :: "r"(tf_shared_address(dst)), "l"(src), "r"(bytes), "r"(tf_shared_address(bar)) : "memory");
}
__device__ __forceinline__ void tf_ring_landed(unsigned long long*) {}
__device__ __forceinline__ void tf_ring_arrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(tf_shared_address(bar)) : "memory");
}
// Whether the phase of that parity completed (one probe, which may wait a while in the hardware).
__device__ __forceinline__ bool tf_ring_passed(unsigned long long* bar, unsigned parity) {
  unsigned done;
  asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
    : "=r"(done) : "r"(tf_shared_address(bar)), "r"(parity) : "memory");
  return done != 0;
}
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
    const int* const t = tasks + ${TASK_WORDS} * (first + i);
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

/** The persistent kernel: each block its tasks, prefetching, waiting, calling, releasing (and timing them). */
function kernelCode(name: string, blocksPerProcessor: number, calls: readonly string[], timeline: boolean, ring: Ring | undefined, pool: number, kernels: number): string {
  // Thread 0 records the times; the barrier after the wait orders its "ready" after every thread is past the wait.
  const time = (word: number, what: string) => (timeline ? `    if (threadIdx.x == 0) tf_timeline[${TIMELINE_WORDS} * tf_t + ${word}] = ${what};\n` : '');
  // The ring's producer starts filling before the first wait, then leaves the block's loop to the compute threads;
  // none fills when bisecting (tasks then read their weights from memory).
  const ringStart = ring ? `  tf_ring_t* const tf_ring = tf_only_kernel < 0 ? reinterpret_cast<tf_ring_t*>(tf_smem + ${RING_STATE_AT}) : nullptr;
  if (tf_ring) tf_ring_load(tf_ring, tf_pool + ${poolEnd(pool)}, tf_buf, tf_plan, tf_tasks, tf_plan[3 + tf_me], tf_plan[4 + tf_me]);
  tf_sync_block();
  if (threadIdx.x >= TF_BLOCK) {
    if (tf_ring && threadIdx.x == TF_RING_PRODUCER) tf_ring_produce(tf_ring);
    return;
  }
` : '';
  // A wait that gave up stops the producer too (it returns once its fills in flight landed).
  const stop = ring ? '        if (tf_ring && threadIdx.x == 0) *reinterpret_cast<volatile int*>(&tf_ring->stop) = 1;\n' : '';
  return `extern "C" __global__ void __launch_bounds__(${ring ? 'TF_BLOCK + 32' : 'TF_BLOCK'}, ${blocksPerProcessor}) ${name}(void* const* __restrict__ tf_buf, const int* __restrict__ tf_plan,
    unsigned* tf_done, unsigned* tf_steps, unsigned* tf_watchdog, const unsigned long long tf_limit_ns, unsigned long long* tf_timeline,
    float* tf_ws, unsigned* tf_count, const int tf_only_kernel, const int tf_only_task) {
  extern __shared__ __align__(16) unsigned char tf_smem[];
  unsigned char* const tf_pool = tf_smem + ${ownBytes(ring)};
  volatile int* const tf_go = reinterpret_cast<volatile int*>(tf_smem);
  const unsigned tf_me = blockIdx.x;
  const int* const tf_tasks = tf_plan + gridDim.x + 4;
  const int* const tf_waits = tf_plan + tf_plan[0];
  const int* const tf_prefetches = tf_plan + tf_plan[1];
${ringStart}  // The block's own count of steps (no other block touches it): the counters' targets this step.
  if (threadIdx.x == 0) tf_steps[tf_me] += 1u;
  __syncthreads();
  const unsigned tf_step = tf_steps[tf_me];
  for (int tf_t = tf_plan[3 + tf_me]; tf_t < tf_plan[4 + tf_me]; tf_t++) {
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
      if (!*tf_go) {
${stop}        return;
      }
    }
${time(1, 'tf_now()')}    switch (tf_kernel) {
${calls.map((c) => c.slice(2)).join('\n')}
    }
    // The next task reuses the pool; the release covers every thread's writes.
    __syncthreads();
${time(2, 'tf_now()')}${time(3, 'tf_processor()')}${ring ? `${time(4, 'tf_ring ? tf_ring->waited : 0ull')}${time(5, 'tf_ring ? *reinterpret_cast<volatile unsigned long long*>(&tf_ring->filling) : 0ull')}` : ''}    if (threadIdx.x == 0) tf_mk_release(tf_done + tf_kernel);
${ring ? '    if (threadIdx.x == 0) tf_ring_release(tf_ring);\n' : ''}  }
}
`;
}
