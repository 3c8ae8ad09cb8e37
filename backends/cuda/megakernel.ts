// The megakernel printer: a megakernel schedule (backends/megakernel-schedule.ts) as one persistent CUDA kernel.
// Each kernel's code becomes a device function of the rows a task runs (the CUDA printer's task form: a loop over
// [tf_first, tf_end) for the launch's grid-stride loop), its shared arrays slices of one pool of dynamic shared
// memory that every task reuses (static __shared__ arrays of device functions would each take their own). The
// kernel walks its block's tasks from a task table in device memory: it prefetches the task's weight ranges into
// L2 (where asked: none by default), waits on the counters of the tasks it needs (the first warp's lanes a counter
// each), calls the task, then adds one to its own counter. The buffers come from a table of pointers, which each
// block copies into its shared memory as it starts, with the values of the one-element inputs no task writes
// (launchConstants). With the timeline on, each task's times are recorded too.
// renderCudaMegakernel takes a module's graph there: lowered again for its blocks (megakernelKernels), scheduled for
// the device, dealt over its multiprocessors, printed.

import { dtypeBytes } from '../../ir/dtype.ts';
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
import { PAGE_BYTES, planRing, poolEnd, PRODUCER_THREADS, producerBarriers, Ring, RING_OWN_BYTES, RING_STATE_AT, ringHelpers } from './weight-ring.ts';

export interface CudaMegakernel {
  /** One compilation unit: the prelude, the task functions and the kernel. */
  readonly source: string;
  readonly name: string;
  /**
   * Dynamic shared memory a block needs: the pool the largest task uses, the kernel's own words, and its copy of the
   * pointer table and the launch's constants (launchConstants).
   */
  readonly sharedBytes: number;
  /** Blocks to launch (all resident at once), and threads a block: CUDA_BLOCK, and a weight ring's producer warp. */
  readonly blocks: number;
  readonly threads: number;
  /** The buffers of the pointer table (kernel argument tf_buf), in order. */
  readonly buffers: readonly Binding[];
  /** The task table (kernel argument tf_plan): see TABLE below. */
  readonly plan: Int32Array;
  /** Counters (kernel argument tf_done): MegakernelSchedule.counters. */
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
// task index, first row, end row, first wait, waits, first prefetch, prefetches, the counter it adds to); then the
// waits, two words each (the counter awaited, the tasks it counts a step); then the prefetches, three words each
// (the buffer's slot in tf_buf, byte offset, bytes); then per kernel three words (its first run, runs, bytes a row)
// and the runs its rows stream (MegakernelSchedule.streams), five words each (the buffer's slot, first byte, bytes
// from a row's to the next's, bytes, offset in the page). The streams are empty where the kernel keeps no weight ring.
export const TASK_WORDS = 9;
/**
 * The launch's tf_only_kernel: a kernel's index runs only that kernel's tasks (bisecting); RUN_STEP the step;
 * TIMING_WITHOUT_WAITS every task with none waiting for its inputs: what the step would take if its
 * synchronisation cost nothing, its writes meaningless.
 */
export const RUN_STEP = -1;
export const TIMING_WITHOUT_WAITS = -2;
/**
 * Bytes of shared memory the kernel keeps for itself before the pool: the flag thread 0 hands the others after
 * waiting, and with a weight ring the ring's state.
 */
const OWN_BYTES = 16;
const ownBytes = (ring: Ring | undefined) => (ring ? RING_OWN_BYTES : OWN_BYTES);
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
  // The ring's pages take what the launch's table (at the end, 16-byte aligned) leaves.
  const ring = planRing(s, streamed.streams ? streamed.pool : undefined, sharedPerBlock - 16 - launchTableBytes(streamed));
  // Too little shared memory for a ring: every task reads its weights from memory.
  return printKernel(s, name, blocksPerProcessor, ring ? streamed : printTasks(s, false), ring, !!opts.timeline);
}

interface PrintedTasks {
  readonly functions: Map<ScheduledKernel, { name: string; code: string; poolBytes: number }>;
  /** Per kernel, the function it calls and its arguments but the pool's and rows'. */
  readonly calls: readonly { readonly name: string; readonly args: readonly string[] }[];
  readonly buffers: Binding[];
  readonly slotOf: (b: Binding) => number;
  /** The slots of the launch's constants (launchConstants), in the order of their copies. */
  readonly constants: readonly number[];
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
  const constants = launchConstants(s);
  const calls = s.kernels.map((sk, k) => {
    const origin = megakernelOrigin(sk);
    const streams = streamed ? s.streams[k] : [];
    // The function's code holds its streams' offsets: kernels sharing it must stream alike.
    const key = JSON.stringify(streams);
    if ((streamsOf.get(origin) ?? key) !== key) throw new Error(`megakernel: kernel ${sk.kernel.name} streams its weights unlike the kernels whose code it shares`);
    streamsOf.set(origin, key);
    let f = functions.get(origin);
    if (!f) functions.set(origin, (f = taskFunction(origin, `tf_task${functions.size}`, streams)));
    const args = sk.kernel.buffers.map((b) => {
      const at = slot(b.binding);
      const copy = constants.indexOf(bindingKey(b.binding));
      return `(${b.written ? '' : 'const '}${cudaElemType[b.dtype]}*)${copy < 0 ? `tf_bufs[${at}]` : `(tf_constants + ${copy})`}`;
    });
    for (const size of sk.kernel.sizes) args.push(String(s.sizes[size]));
    if (sharesWork(sk)) args.push('tf_ws', 'tf_count');
    if (streams.length) args.push('tf_ring');
    return { name: f.name, args };
  });
  const pool = Math.max(0, ...[...functions.values()].map((f) => f.poolBytes));
  return { functions, calls, buffers, slotOf: slot, constants: constants.map((key) => slotOf.get(key)!), pool, streams: streamed && s.streams.some((r) => r.length > 0) };
}

/**
 * The buffers of one 32-bit element that no task writes during the step (a decode step's position), by binding
 * key: each launch copies their values into shared memory beside the pointer table, where its tasks read them.
 * After a wait every read from memory is a round trip to L2 (the wait's acquire empties the L1 cache), and
 * attention reads the position before anything else.
 */
function launchConstants(s: MegakernelSchedule): string[] {
  const one = new Set<string>();
  const not = new Set<string>();
  for (const sk of s.kernels) {
    for (const b of sk.kernel.buffers) {
      const key = bindingKey(b.binding);
      const single = b.elems.k === 'const' && b.elems.value === 1 && dtypeBytes[b.dtype] === 4;
      (single && !b.written ? one : not).add(key);
    }
  }
  return [...one].filter((key) => !not.has(key));
}

/** The megakernel's source and what its launch needs, from its tasks' functions. */
function printKernel(s: MegakernelSchedule, name: string, blocksPerProcessor: number, printed: PrintedTasks, ring: Ring | undefined, timeline: boolean): CudaMegakernel {
  const { functions, buffers, pool } = printed;
  const calls = printed.calls.map((c, k) => `      case ${k}: ${c.name}(${[...c.args, 'tf_pool', 'tf_first', 'tf_end'].join(', ')}); break;`);
  // The launch's pointers and constants go last, after the pool (and the ring's pages and tables).
  const tableAt = align16(ring ? RING_OWN_BYTES + poolEnd(pool) + ring.pages * ring.pageBytes + ring.tables : OWN_BYTES + pool);
  const source = [
    // Every load is coherent: a task reads what other blocks wrote earlier in the same launch, which the
    // non-coherent path (__ldg) may serve stale.
    '#define __ldg(p) (*(p))',
    ...(ring ? [producerBarriers] : []),
    cudaPrelude,
    megakernelHelpers,
    ...(ring ? [ringHelpers(ring, timeline, TASK_WORDS)] : []),
    ...[...functions.values()].map((f) => f.code),
    kernelCode(name, blocksPerProcessor, calls, timeline, ring, pool, { at: tableAt, pointers: buffers.length, constants: printed.constants }),
  ].join('\n');
  const plan = taskTable(s, (k, buffer) => printed.slotOf(s.kernels[k].kernel.buffers[buffer].binding), !!ring);
  const sharedBytes = tableAt + launchTableBytes(printed);
  return {
    source, name, sharedBytes, blocks: s.blocks.length, threads: CUDA_BLOCK + (ring ? PRODUCER_THREADS : 0), buffers, plan, counters: s.counters.length,
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
  const counterOf = s.tasks.map((n) => new Int32Array(n));
  s.counters.forEach((c, i) => counterOf[c.kernel].fill(i, c.from, c.to));
  let [t, w, p] = [0, 0, 0];
  s.blocks.forEach((list, b) => {
    table[3 + b] = t;
    for (const task of list) {
      const k = task.kernel;
      const span = s.spans[k][task.task];
      const ranges = s.prefetch[k][task.task];
      table.set([k, task.task, span.from, span.to, w, task.waits.length, p, ranges.length, counterOf[k][task.task]], tasksAt + TASK_WORDS * t);
      for (const c of task.waits) table.set([c, s.counters[c].to - s.counters[c].from], waitsAt + 2 * w++);
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

/**
 * The task table with the tasks of `kernels` (indices in the graph) waiting for nothing, the kernel unchanged: for
 * timing what those waits cost the step (its writes then meaningless).
 */
export function planWithoutWaits(k: CudaMegakernel, kernels: ReadonlySet<number>): Int32Array {
  const plan = k.plan.slice();
  const tasksAt = k.blocks + 4;
  for (let t = 0; t < k.plan[3 + k.blocks]; t++) {
    if (kernels.has(k.plan[tasksAt + TASK_WORDS * t])) plan[tasksAt + TASK_WORDS * t + 5] = 0;
  }
  return plan;
}

const align16 = (n: number) => Math.ceil(n / 16) * 16;

/** Bytes of the launch's table in shared memory: a pointer a buffer, then a word a constant. */
const launchTableBytes = (printed: Pick<PrintedTasks, 'buffers' | 'constants'>) => 8 * printed.buffers.length + 4 * printed.constants.length;

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
                                        unsigned block, unsigned entry, unsigned kernel, unsigned task, unsigned awaited) {
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
        watchdog[5] = awaited; watchdog[6] = seen; watchdog[7] = target;
        __threadfence();
      }
      return false;
    }
  }
}
`;

/** Where the kernel's copy of its pointer table and constants lies in shared memory, and their slots in tf_buf. */
interface LaunchTable {
  readonly at: number;
  readonly pointers: number;
  readonly constants: readonly number[];
}

/** The persistent kernel: each block its tasks, prefetching, waiting, calling, releasing (and timing them). */
function kernelCode(name: string, blocksPerProcessor: number, calls: readonly string[], timeline: boolean, ring: Ring | undefined, pool: number, table: LaunchTable): string {
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
  return `extern "C" __global__ void __launch_bounds__(${ring ? `TF_BLOCK + ${PRODUCER_THREADS}` : 'TF_BLOCK'}, ${blocksPerProcessor}) ${name}(void* const* __restrict__ tf_buf, const int* __restrict__ tf_plan,
    unsigned* tf_done, unsigned* tf_steps, unsigned* tf_watchdog, const unsigned long long tf_limit_ns, unsigned long long* tf_timeline,
    float* tf_ws, unsigned* tf_count, const int tf_only_kernel, const int tf_only_task) {
  extern __shared__ __align__(16) unsigned char tf_smem[];
  unsigned char* const tf_pool = tf_smem + ${ownBytes(ring)};
  volatile int* const tf_go = reinterpret_cast<volatile int*>(tf_smem);
  const unsigned tf_me = blockIdx.x;
  const int* const tf_tasks = tf_plan + gridDim.x + 4;
  const int* const tf_waits = tf_plan + tf_plan[0];
  const int* const tf_prefetches = tf_plan + tf_plan[1];
  // The pointer table and the launch's constants, copied into shared memory once a launch (launchConstants).
  void** const tf_bufs = reinterpret_cast<void**>(tf_smem + ${table.at});
  for (int i = threadIdx.x; i < ${table.pointers}; i += blockDim.x) tf_bufs[i] = tf_buf[i];
  unsigned* const tf_constants = reinterpret_cast<unsigned*>(tf_smem + ${table.at + 8 * table.pointers});
${table.constants.map((slot, i) => `  if (threadIdx.x == ${i % CUDA_BLOCK}) tf_constants[${i}] = *static_cast<const unsigned*>(tf_buf[${slot}]);\n`).join('')}${ringStart}  // The block's own count of steps (no other block touches it): the counters' targets this step.
  if (threadIdx.x == 0) {
    tf_steps[tf_me] += 1u;
    *tf_go = 1;
  }
  __syncthreads();
  const unsigned tf_step = tf_steps[tf_me];
  for (int tf_t = tf_plan[3 + tf_me]; tf_t < tf_plan[4 + tf_me]; tf_t++) {
    const int* const tf_task = tf_tasks + ${TASK_WORDS} * tf_t;
    const int tf_kernel = tf_task[0], tf_first = tf_task[2], tf_end = tf_task[3];
    // Bisecting (tf_only_kernel ≥ 0): only that kernel's tasks (or one of them) run, without waiting, the host
    // having run their producers before. Timing the step without its waits (TIMING_WITHOUT_WAITS): every task
    // runs, none waiting.
    if (tf_only_kernel >= 0 && (tf_kernel != tf_only_kernel || (tf_only_task >= 0 && tf_task[1] != tf_only_task))) continue;
    // The weights depend on no task: start pulling them before waiting for the inputs.
    for (int p = tf_task[6]; p < tf_task[6] + tf_task[7]; p++) {
      const int* const tf_range = tf_prefetches + 3 * p;
      tf_mk_prefetch(static_cast<const char*>(tf_buf[tf_range[0]]) + tf_range[1], tf_range[2]);
    }
${time(0, 'tf_now()')}    if (tf_task[5] > 0 && tf_only_kernel == ${RUN_STEP}) {
      // The first warp's lanes poll the counters at once, a counter a lane (a wait that gives up stops the block).
      if (threadIdx.x < 32) {
        bool ok = true;
        for (int w = tf_task[4] + threadIdx.x; ok && w < tf_task[4] + tf_task[5]; w += 32) {
          const int c = tf_waits[2 * w];
          ok = tf_mk_wait(tf_done + c, tf_step * (unsigned)tf_waits[2 * w + 1], tf_limit_ns, tf_watchdog, tf_me, tf_t, tf_kernel, tf_task[1], c);
        }
        if (!ok) *tf_go = 0;
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
${time(2, 'tf_now()')}${time(3, 'tf_processor()')}${ring ? `${time(4, 'tf_ring ? tf_ring->waited : 0ull')}${time(5, 'tf_ring ? *reinterpret_cast<volatile unsigned long long*>(&tf_ring->filling) : 0ull')}` : ''}    if (threadIdx.x == 0) tf_mk_release(tf_done + tf_task[8]);
${ring ? '    if (threadIdx.x == 0) tf_ring_release(tf_ring);\n' : ''}  }
}
`;
}
