// The megakernel's schedule: a graph's scheduled kernels (backends/schedule.ts) run as one persistent kernel of a
// fixed number of blocks, all resident at once. Each kernel's rows are split into tasks of contiguous rows, about
// one a block; a cost model (bytes moved and FLOPs, backends/kernel-cost.ts) deals them to the blocks at compile
// time, each block walking its list in the kernels' order. Before a task, a block may start pulling the weights the
// task's rows read into the cache (backends/element-ranges.ts; none by default, PREFETCH_BYTES), then waits until
// the tasks it needs have finished: of each kernel it depends on (a writer of what it reads, a reader or writer of
// what it overwrites), the tasks that write what it reads where their accesses are bounded (attention's head the
// tasks that wrote its own query, key and value rows), else all of them. Counters in global memory count finished
// tasks, a counter a run of a kernel's tasks, over every step, so nothing resets them. The CUDA printer
// (backends/cuda/megakernel.ts) prints these decisions and takes none; checkMegakernel proves them safe.

import { DType, dtypeBytes } from '../ir/dtype.ts';
import { anyExpr, Binding, evalSize, KernelIR, kernelExprs } from './kernel-ir.ts';
import { gemmFlops, kernelBytes } from './kernel-cost.ts';
import { ElementRange, RowAccesses, rowAccesses, RowForm, weightReads } from './element-ranges.ts';
import { rowInvariantPrologue, ScheduledKernel, scheduleOrigin, SplitScratchNeeds } from './schedule.ts';
import { RowStream, rowStreams } from './weight-stream.ts';

/** One task in a block's list. */
export interface MegakernelTask {
  readonly kernel: number;
  /** Which of the kernel's tasks (MegakernelSchedule.spans says its rows). */
  readonly task: number;
  /**
   * Counters (MegakernelSchedule.counters) that must reach this step's count before the task starts: those its
   * needs name that its block has not awaited earlier in the step.
   */
  readonly waits: readonly number[];
}

/** Tasks [from, to) of a kernel, counted together: each adds one to the counter as it finishes. */
export interface MegakernelCounter {
  readonly kernel: number;
  readonly from: number;
  readonly to: number;
}

/** Rows [from, to) of a kernel: what one task runs. */
export interface RowSpan {
  readonly from: number;
  readonly to: number;
}

/** Bytes [offset, offset + bytes) of a kernel's buffer (by its index in the kernel) a task prefetches. */
export interface PrefetchRange {
  readonly buffer: number;
  readonly offset: number;
  readonly bytes: number;
}

export interface MegakernelSchedule {
  /** The graph's kernels as they run inside the megakernel: at the step's sizes, row form only, no overlap. */
  readonly kernels: readonly ScheduledKernel[];
  /** Tasks of each kernel. */
  readonly tasks: readonly number[];
  /** Rows of each kernel at the step's sizes. */
  readonly rows: readonly number[];
  /** Per kernel, per task, the rows it runs: together every row once, in order. */
  readonly spans: readonly (readonly RowSpan[])[];
  /** Per kernel, per task, the weight bytes it prefetches before it waits. */
  readonly prefetch: readonly (readonly (readonly PrefetchRange[])[])[];
  /**
   * Per kernel, the weights its rows stream through the megakernel's pages of shared memory (empty: it reads them
   * from memory; backends/weight-stream.ts).
   */
  readonly streams: readonly (readonly RowStream[])[];
  /** The size of the pages they stream through (MegakernelOptions.streamPageBytes), where any streams. */
  readonly streamPageBytes?: number;
  /** Per kernel, the earlier kernels it must wait for, by buffer (read after write, write after read or write). */
  readonly dependsOn: readonly (readonly number[])[];
  /**
   * The counters, in kernel order: each kernel's tasks split into runs at the edges of the runs its readers need
   * (one counter for all of them where no reader needs fewer).
   */
  readonly counters: readonly MegakernelCounter[];
  /**
   * Per kernel, per task, the counters that must have reached the step's count before it starts: of the tasks
   * that write what it reads, where bounded (rowAccesses), else of every task of each kernel it depends on; none a
   * counter already implies (waiting for a kernel waits for what its tasks waited for).
   */
  readonly needs: readonly (readonly (readonly number[])[])[];
  /** Per block of the megakernel, its tasks in the order it runs them. */
  readonly blocks: readonly (readonly MegakernelTask[])[];
  /** The sizes the step runs at (every size a kernel reads). */
  readonly sizes: Readonly<Record<string, number>>;
  /** Estimated time of the step by the cost model, in ns (for reports). */
  readonly estimateNs: number;
  /** The scratch of the kernels whose tasks share work through it (attention's chunks of keys), the largest asked. */
  readonly scratch?: SplitScratchNeeds;
}

/** What the megakernel is built for. */
export interface MegakernelOptions {
  /** Blocks of the persistent grid: multiprocessors × blocks each holds at once. */
  readonly blocks: number;
  /** Multiprocessors, for the cost model's per-block bandwidth. */
  readonly processors: number;
  /** Weight bytes a task prefetches at most (0: none). Default PREFETCH_BYTES. */
  readonly prefetchBytes?: number;
  /** Bytes of a page of shared memory the rows' weights stream through (rowStreams), where they do. Default none. */
  readonly streamPageBytes?: number;
}

// The cost model, per multiprocessor (an H200: 4.3 TB/s and ~790 dense bf16 TFLOP/s over 132 of them; decode is
// bandwidth-bound, so only the ratio of the two matters much), and a task's fixed cost (a call, its barriers, its
// counter): enough to keep a block from taking many tiny tasks while others idle.
const BYTES_PER_NS_PER_PROCESSOR = 32;
const FLOPS_PER_NS_PER_PROCESSOR = 6000;
const TASK_NS = 150;
/**
 * Weight bytes one task prefetches into L2 before it waits, by default: none. Llama-3.2-1B decode on the H200
 * (BENCHMARKS.md, thirteenth session): 64 KiB a task 1.100 / 1.103 ms a token, none 1.058 / 1.059 (1.222 against
 * 1.224 in the fifth session); the multi-kernel step lost to L2 prefetches too. `--megakernel-prefetch N` still
 * asks for N KiB.
 */
export const PREFETCH_BYTES = 0;

/**
 * Blocks a multiprocessor holds. Llama-3.2-1B decode on the H200 (BENCHMARKS.md, twenty-second session): 2 a
 * multiprocessor 0.995 / 0.994 ms a token, 3 0.983, 4 0.950 / 0.947 (registers capped at 64), 5 1.040, 6 1.196, 8
 * 1.303. Twice the blocks give each kernel twice the tasks of half the rows, and twice the loads in flight while a
 * task streams its weights. (In the fifth session, with slower task bodies, 2 and 4 had measured alike.) With every
 * lane's weight steps in flight at once where 2 blocks leave 128 registers (REGISTERS_FOR_WHOLE_STEPS in schedule.ts),
 * 2 hold as many loads in flight a multiprocessor as 4 did, and attention no longer spills (twenty-eighth session):
 * 4 blocks 0.871 / 0.870 / 0.878, 2 0.864 / 0.868 / 0.865; at a 2,048-position cache 0.958 / 0.954 against
 * 0.934 / 0.935 (attention's tasks 3.9 → 3.5 µs; QKV's, two rows each on 264 blocks, 4.6 → 5.1).
 */
export const DEFAULT_BLOCKS_PER_PROCESSOR = 2;

/**
 * The megakernel's schedule for `kernels` (one graph's, in launch order, scheduled for a device without
 * overlapping launches), at fixed sizes: every size the kernels read must be bound in `sizes`.
 */
export function scheduleMegakernel(kernels: readonly ScheduledKernel[], sizes: Readonly<Record<string, number>>, opts: MegakernelOptions): MegakernelSchedule {
  if (!Number.isInteger(opts.blocks) || opts.blocks < 1) throw new Error(`megakernel: ${opts.blocks} blocks is not a grid`);
  const prefetchBytes = opts.prefetchBytes ?? PREFETCH_BYTES;
  if (!Number.isInteger(prefetchBytes) || prefetchBytes < 0) throw new Error(`megakernel: prefetching ${prefetchBytes} bytes a task`);
  const fixed = kernels.map((sk) => atFixedSizes(sk, sizes));
  const rows = fixed.map((sk) => evalSize(sk.grid.rows, sizes));
  const spans = rows.map((n) => rowSpans(n, opts.blocks));
  const tasks = spans.map((s) => s.length);
  const prefetch = fixed.map((sk, k) => spans[k].map((span) => prefetchRanges(sk.kernel, sizes, span, prefetchBytes)));
  const dependsOn = dependencies(fixed.map((sk) => sk.kernel));
  const page = opts.streamPageBytes;
  // Only kernels of rows alone (not attention's decode form, which has no row form) read a row's page.
  const streams = fixed.map((sk) => (page && sk.tilesFrom === undefined ? rowStreams(sk.kernel, page, rowInvariantPrologue(sk.kernel) ?? 0) : []));
  const rowNs = fixed.map((sk, i) => rowCost(sk, sizes, rows[i], opts));
  // List scheduling: each kernel's tasks start once the kernels it depends on have finished; each goes to the block
  // that can start it soonest (ties to the lowest block), by the estimated times so far.
  const free = new Array<number>(opts.blocks).fill(0);
  const finish = new Array<number>(fixed.length).fill(0);
  const dealt: number[][][] = Array.from({ length: opts.blocks }, () => []);
  const heap = new MinHeap();
  fixed.forEach((_, k) => {
    if (tasks[k] === 0) return;
    const ready = Math.max(0, ...dependsOn[k].map((d) => finish[d]));
    heap.reset(free.map((t, b) => [Math.max(t, ready), b]));
    spans[k].forEach((span, t) => {
      const [start, b] = heap.pop();
      const end = start + TASK_NS + (span.to - span.from) * rowNs[k];
      free[b] = end;
      finish[k] = Math.max(finish[k], end);
      heap.push([end, b]);
      (dealt[b][k] ??= []).push(t);
    });
  });
  const { counters, needs } = taskNeeds(fixed, sizes, spans, dependsOn);
  const blocks = dealt.map((perKernel) => {
    const awaited = new Set<number>();
    const list: MegakernelTask[] = [];
    perKernel.forEach((ts, k) => {
      for (const task of ts ?? []) {
        const waits = needs[k][task].filter((c) => !awaited.has(c));
        for (const c of waits) awaited.add(c);
        list.push({ kernel: k, task, waits });
      }
    });
    return list;
  });
  const chunked = fixed.flatMap((sk) => (sk.flash?.keyChunks ? [sk.flash.keyChunks] : []));
  const scratch = chunked.length ? { workspaceFloats: Math.max(...chunked.map((c) => c.workspaceFloats)), counters: Math.max(...chunked.map((c) => c.counters)) } : undefined;
  const schedule = { kernels: fixed, tasks, rows, spans, prefetch, streams, ...(page && streams.some((r) => r.length) ? { streamPageBytes: page } : {}), dependsOn, counters, needs, blocks, sizes, estimateNs: Math.max(0, ...finish), ...(scratch ? { scratch } : {}) };
  checkMegakernel(schedule);
  return schedule;
}

/**
 * A kernel's rows as tasks of contiguous rows: the fewest that give no task more than ⌈rows / blocks⌉ rows (with a
 * fixed cost per task, more tasks only add cost, and fewer leave some block more rows), sizes differing by one.
 */
export function rowSpans(rows: number, blocks: number): RowSpan[] {
  if (rows <= 0) return [];
  const tasks = Math.ceil(rows / Math.ceil(rows / blocks));
  return Array.from({ length: tasks }, (_, t) => ({ from: Math.floor((t * rows) / tasks), to: Math.floor(((t + 1) * rows) / tasks) }));
}

/**
 * The weight bytes a task prefetches: the ranges its rows read of each weight (whole 16-byte units, as a bulk
 * prefetch takes them), in buffer order; past `budget` bytes in all, each cut to its share of the budget (by size)
 * from its start, where the task's loop starts reading.
 */
function prefetchRanges(k: KernelIR, sizes: Readonly<Record<string, number>>, span: RowSpan, budget: number): PrefetchRange[] {
  if (budget <= 0) return [];
  const ranges = weightReads(k, sizes, span.from, span.to).map((r) => {
    const size = dtypeBytes[k.buffers[r.buffer].dtype];
    const offset = Math.floor((r.from * size) / 16) * 16;
    return { buffer: r.buffer, offset, bytes: Math.ceil((r.to * size) / 16) * 16 - offset };
  });
  const total = ranges.reduce((n, r) => n + r.bytes, 0);
  const scale = total > budget ? budget / total : 1;
  return ranges.map((r) => ({ ...r, bytes: Math.floor((r.bytes * scale) / 16) * 16 })).filter((r) => r.bytes > 0);
}

/**
 * The kernel as it runs at fixed sizes: scheduled row by row (ScheduleOptions.rowsOnly, as megakernelScheduleOptions
 * asks: a task is a range of rows), or attention's decode form alone.
 */
function atFixedSizes(sk: ScheduledKernel, sizes: Readonly<Record<string, number>>): ScheduledKernel {
  const k = sk.kernel;
  const unbound = k.sizes.filter((s) => sizes[s] === undefined);
  if (unbound.length) throw new Error(`megakernel: kernel ${k.name} reads size ${unbound.join(', ')}, which the step does not fix`);
  if (sk.overlap) throw new Error(`megakernel: kernel ${k.name} was scheduled to overlap its predecessor's launch; schedule the graph without dependent launches`);
  if (sk.tilesFrom === undefined) return sk;
  if (sk.flash?.units === 'decode') return decodeTaskForm(sk);
  throw new Error(`megakernel: kernel ${k.name} was scheduled with tiles; the megakernel deals rows only: schedule the graph row by row (rowsOnly)`);
}

/**
 * Attention's decode form as a task runs it: the form alone (it loops over rows, as a task does; the row form beside
 * it is not needed). Over a long cache its rows are a head's chunks of keys (FlashPlan.keyChunks), the last of a
 * head to finish merging them through the megakernel's scratch (MegakernelSchedule.scratch). Made once for kernels
 * alike, printed once.
 */
function decodeTaskForm(sk: ScheduledKernel): ScheduledKernel {
  const origin = scheduleOrigin(sk);
  let form = decodeForms.get(origin);
  if (!form) {
    form = { ...origin, tilesFrom: 0, stmts: [], arrays: [], dynamicWorkgroupBytes: 0, subgroups: false };
    decodeForms.set(origin, form);
  }
  const fixed = { ...form, kernel: sk.kernel };
  printedFrom.set(fixed, form);
  return fixed;
}
const decodeForms = new WeakMap<ScheduledKernel, ScheduledKernel>();

/** Each decode form taken from one made for a kernel alike, and that one. */
const printedFrom = new WeakMap<ScheduledKernel, ScheduledKernel>();

/**
 * The schedule whose code a kernel of a megakernel shares (kernels alike but for their name, comment and buffers
 * bound: every transformer layer's): the printer prints each once.
 */
export function megakernelOrigin(sk: ScheduledKernel): ScheduledKernel {
  return printedFrom.get(sk) ?? scheduleOrigin(sk);
}

/**
 * The kernels (indices, in order) whose code is one of `kernels`' (every layer's kernel of a kind shares its code),
 * those included. Refused, naming it, for an index that is not one of the schedule's kernels.
 */
export function kernelsAlike(s: Pick<MegakernelSchedule, 'kernels'>, kernels: readonly number[]): number[] {
  const n = s.kernels.length;
  const bad = kernels.find((k) => !(Number.isInteger(k) && k >= 0 && k < n));
  if (bad !== undefined) throw new RangeError(`megakernel: kernel ${bad} is not one of the step's ${n} kernels (0 to ${n - 1})`);
  const origins = new Set(kernels.map((k) => megakernelOrigin(s.kernels[k])));
  return s.kernels.flatMap((sk, k) => (origins.has(megakernelOrigin(sk)) ? [k] : []));
}

/** The estimated time of one row of a kernel on one block, in ns: its share of the bytes and FLOPs at a block's rate. */
function rowCost(sk: ScheduledKernel, sizes: Readonly<Record<string, number>>, rows: number, opts: MegakernelOptions): number {
  if (rows === 0) return 0;
  const share = opts.processors / opts.blocks;
  const bytes = kernelBytes(sk.kernel, sizes, (d: DType, n: number) => n * dtypeBytes[d]);
  const flops = gemmFlops(sk.kernel, sizes) ?? 0;
  return (bytes / (BYTES_PER_NS_PER_PROCESSOR * share) + flops / (FLOPS_PER_NS_PER_PROCESSOR * share)) / rows;
}

/** One buffer of a graph, by where it is bound. */
export function bindingKey(b: Binding): string {
  switch (b.kind) {
    case 'input': case 'param': case 'state': return `${b.kind}:${b.name}`;
    case 'output': return `output:${b.index}`;
    case 'temp': return `temp:${b.slot}`;
    default: return b satisfies never;
  }
}

/**
 * Per kernel, the earlier kernels it must wait for: the last writer of each buffer it reads or writes, and every
 * reader of a buffer it writes since that buffer's last writer. (Waiting for a kernel waits for what it waited for.)
 */
export function dependencies(kernels: readonly KernelIR[]): number[][] {
  const lastWriter = new Map<string, number>();
  const readersSince = new Map<string, number[]>();
  return kernels.map((k, i) => {
    const reads = readBuffers(k);
    const deps = new Set<number>();
    k.buffers.forEach((b, j) => {
      const key = bindingKey(b.binding);
      const writer = lastWriter.get(key);
      if (writer !== undefined && (reads.has(j) || b.written)) deps.add(writer);
      if (b.written) for (const r of readersSince.get(key) ?? []) deps.add(r);
    });
    k.buffers.forEach((b, j) => {
      const key = bindingKey(b.binding);
      if (b.written) {
        lastWriter.set(key, i);
        readersSince.set(key, []);
      } else if (reads.has(j)) {
        readersSince.set(key, [...(readersSince.get(key) ?? []), i]);
      }
    });
    deps.delete(i);
    return [...deps].sort((a, b) => a - b);
  });
}

/** Runs [from, to) of a kernel's task indices, sorted and apart. */
type TaskRuns = readonly (readonly [number, number])[];

/**
 * The counters and each task's needs (MegakernelSchedule.counters, needs). A task needs, of each kernel it depends
 * on, the tasks that write what it reads where it only reads what that kernel wrote and both are bounded
 * (rowAccesses over their rows); else all of them. Needs that others imply are dropped: a task that waited for all
 * of a kernel's tasks (or any of them) has waited for all that every one of them waited for. Each kernel's tasks are
 * then counted in runs split at the edges of what its readers need.
 */
function taskNeeds(kernels: readonly ScheduledKernel[], sizes: Readonly<Record<string, number>>, spans: readonly (readonly RowSpan[])[], dependsOn: readonly (readonly number[])[]): { counters: MegakernelCounter[]; needs: number[][][] } {
  const tasks = spans.map((s) => s.length);
  // Kernels alike (every layer's of a kind) access alike: bounded once for all of them.
  const accessed = new Map<ScheduledKernel, { spans: readonly RowSpan[]; accesses: RowAccesses[] }>();
  const accesses = (k: number) => {
    const origin = megakernelOrigin(kernels[k]);
    let a = accessed.get(origin);
    if (!a || a.spans.length !== spans[k].length || a.spans.some((x, t) => x.from !== spans[k][t].from || x.to !== spans[k][t].to)) {
      accessed.set(origin, (a = { spans: spans[k], accesses: spans[k].map((span) => rowAccesses(kernels[k].kernel, sizes, span.from, span.to, taskForm(kernels[k]))) }));
    }
    return a.accesses;
  };
  // Per kernel, per dependency (with tasks), per task: the dependency's tasks it needs.
  const needed = kernels.map((_, c) => new Map(dependsOn[c].filter((p) => tasks[p] > 0).map((p) => [p, tasksNeeded(kernels, accesses, tasks, c, p) ?? spans[c].map((): TaskRuns => [[0, tasks[p]]])])));
  const all = (runs: TaskRuns, p: number) => runs.length === 1 && runs[0][0] === 0 && runs[0][1] === tasks[p];
  // before[k]: kernels whose every task has finished before any of k's starts; done[k]: those that have once all
  // of k's have.
  const before: Set<number>[] = [];
  const done: Set<number>[] = [];
  kernels.forEach((_, k) => {
    const b = new Set<number>();
    const d = new Set<number>([k]);
    for (const [p, perTask] of needed[k]) {
      if (perTask.every((runs) => all(runs, p))) for (const x of done[p]) b.add(x);
      if (perTask.length && perTask.every((runs) => runs.length > 0)) for (const x of before[p]) b.add(x);
      const covered = perTask.flat().sort((x, y) => x[0] - y[0]).reduce((end, [from, to]) => (from <= end ? Math.max(end, to) : end), 0);
      if (covered >= tasks[p]) for (const x of done[p]) d.add(x);
    }
    for (const x of b) d.add(x);
    before.push(b);
    done.push(d);
  });
  // Each task's needs less those that its others imply.
  const kept = needed.map((deps, c) => {
    const entries = [...deps];
    return spans[c].map((_, t) => entries
      .filter(([p, perTask]) => perTask[t].length > 0 && !entries.some(([q, other]) => q !== p && other[t].length > 0 && (all(other[t], q) ? done[q] : before[q]).has(p)))
      .map(([p, perTask]) => [p, perTask[t]] as const));
  });
  // Counters: each kernel's tasks split at the edges of the runs kept.
  const edges = tasks.map((n) => new Set([0, n]));
  for (const perTask of kept) for (const deps of perTask) for (const [p, runs] of deps) for (const [from, to] of runs) edges[p].add(from).add(to);
  const counters: MegakernelCounter[] = [];
  const firstCounter = edges.map((e, k) => {
    const at = counters.length;
    const sorted = [...e].sort((x, y) => x - y);
    for (let i = 0; i + 1 < sorted.length; i++) counters.push({ kernel: k, from: sorted[i], to: sorted[i + 1] });
    return at;
  });
  const counterAt = (k: number, task: number) => {
    let i = firstCounter[k];
    while (counters[i].to <= task) i++;
    return i;
  };
  const needs = kept.map((perTask) => perTask.map((deps) => deps.flatMap(([p, runs]) => runs.flatMap(([from, to]) => {
    const out: number[] = [];
    for (let i = counterAt(p, from); i < counters.length && counters[i].kernel === p && counters[i].from < to; i++) out.push(i);
    return out;
  })).sort((x, y) => x - y)));
  return { counters, needs };
}

/**
 * Per task of kernel c, the tasks of kernel p that write what it reads, where c only reads what p writes (it
 * writes nothing p reads or writes) and every access involved is bounded; else undefined.
 */
function tasksNeeded(kernels: readonly ScheduledKernel[], accesses: (k: number) => RowAccesses[], tasks: readonly number[], c: number, p: number): TaskRuns[] | undefined {
  const [kc, kp] = [kernels[c].kernel, kernels[p].kernel];
  const inP = new Map(kp.buffers.map((b, j) => [bindingKey(b.binding), j]));
  if (kc.buffers.some((b) => b.written && inP.has(bindingKey(b.binding)))) return undefined;
  // The buffers p writes that c reads: (c's index, p's index).
  const reads = readBuffers(kc);
  const linked = kc.buffers.flatMap((b, j) => {
    const jp = inP.get(bindingKey(b.binding));
    return jp !== undefined && kp.buffers[jp].written && reads.has(j) ? [[j, jp] as const] : [];
  });
  if (!linked.length) return undefined;
  const writes = accesses(p).map((a) => linked.map(([, jp]) => a.writes.get(jp)));
  if (writes.some((w) => w.some((r) => r === undefined || r === 'unbounded'))) return undefined;
  // Where all that p writes of each buffer lies: a task reading all of it needs every task.
  const hull = linked.map((_, i) => writes.reduce((h, w) => (w[i] as ElementRange[]).reduce((x, r) => [Math.min(x[0], r.from), Math.max(x[1], r.to)], h), [Infinity, -Infinity]));
  const out: TaskRuns[] = [];
  for (const a of accesses(c)) {
    const read = linked.map(([j]) => a.reads.get(j));
    if (read.some((r) => r === undefined || r === 'unbounded')) return undefined;
    if (linked.some((_, i) => (read[i] as ElementRange[]).some((r) => r.from <= hull[i][0] && hull[i][1] <= r.to))) {
      out.push([[0, tasks[p]]]);
      continue;
    }
    const overlaps = (q: number) => linked.some((_, i) => (writes[q][i] as ElementRange[]).some((w) => (read[i] as ElementRange[]).some((r) => w.from < r.to && r.from < w.to)));
    const runs: [number, number][] = [];
    for (let q = 0; q < tasks[p]; q++) {
      if (!overlaps(q)) continue;
      const last = runs[runs.length - 1];
      if (last && last[1] === q) last[1] = q + 1;
      else runs.push([q, q + 1]);
    }
    out.push(runs);
  }
  return out;
}

/** The form a kernel's tasks run in, for rowAccesses: attention's decode form (atFixedSizes) or rows. */
function taskForm(sk: ScheduledKernel): RowForm {
  const f = sk.flash;
  if (sk.tilesFrom === undefined || f?.units !== 'decode') return { form: 'rows' };
  return { form: 'decode', chunks: f.keyChunks?.count ?? 1, ...(f.updateShare ? { updates: f.updateShare } : {}) };
}

/** Buffers a kernel loads from. */
export function readBuffers(k: KernelIR): Set<number> {
  const read = new Set<number>();
  for (const e of kernelExprs(k)) {
    anyExpr(e, (x) => {
      if (x.k === 'load') read.add(x.buf);
      return false;
    });
  }
  return read;
}

/**
 * Refuses a schedule that could read before a write, overwrite before a read, miss a row or hang: each kernel's
 * tasks run its rows once each, in order; every task is dealt exactly once; each kernel's counters count each of its
 * tasks once; each block walks its tasks in the kernels' order; each task waits for (or its block awaited earlier in
 * the step) every counter it needs, needs only counters of kernels it depends on, and needs some counter of each
 * (or a kernel that depends on it); every wait is for a counter of an earlier kernel (so with every block resident,
 * no wait can be part of a cycle). The error names the block, task and kernel.
 */
export function checkMegakernel(s: Pick<MegakernelSchedule, 'tasks' | 'rows' | 'spans' | 'dependsOn' | 'counters' | 'needs' | 'blocks'>): void {
  s.spans.forEach((spans, k) => {
    if (spans.length !== s.tasks[k]) throw new Error(`megakernel: kernel ${k} has ${s.tasks[k]} tasks and ${spans.length} row spans`);
    let next = 0;
    spans.forEach((span, t) => {
      if (span.from !== next || span.to <= span.from) throw new Error(`megakernel: task ${t} of kernel ${k} runs rows [${span.from}, ${span.to}), not from row ${next} on`);
      next = span.to;
    });
    if (next !== s.rows[k]) throw new Error(`megakernel: the tasks of kernel ${k} run ${next} of its ${s.rows[k]} rows`);
  });
  const counted = s.tasks.map(() => 0);
  s.counters.forEach((c, i) => {
    if (c.kernel < 0 || c.kernel >= s.tasks.length || c.from !== counted[c.kernel] || c.to <= c.from || c.to > s.tasks[c.kernel] || (i > 0 && s.counters[i - 1].kernel > c.kernel)) {
      throw new Error(`megakernel: counter ${i} counts tasks [${c.from}, ${c.to}) of kernel ${c.kernel}, not the next run of its tasks`);
    }
    counted[c.kernel] = c.to;
  });
  counted.forEach((n, k) => {
    if (n !== s.tasks[k]) throw new Error(`megakernel: the counters of kernel ${k} count ${n} of its ${s.tasks[k]} tasks`);
  });
  // Per kernel, every kernel it depends on, directly or not.
  const upstream: Set<number>[] = [];
  s.dependsOn.forEach((deps, k) => {
    upstream[k] = new Set(deps);
    for (const d of deps) for (const x of upstream[d] ?? []) upstream[k].add(x);
  });
  const counter = (i: number) => `counter ${i} (kernel ${s.counters[i]?.kernel}, tasks ${s.counters[i]?.from}..${(s.counters[i]?.to ?? 0) - 1})`;
  const dealt = s.tasks.map((n) => new Uint8Array(n));
  s.blocks.forEach((list, b) => {
    const awaited = new Set<number>();
    let last = -1;
    list.forEach((task, i) => {
      const where = `megakernel block ${b}, task ${i} (kernel ${task.kernel})`;
      if (task.kernel < last) throw new Error(`${where}: comes after a task of kernel ${last}: a block walks the kernels in order`);
      last = task.kernel;
      const t = task.task;
      if (!(t >= 0 && t < (s.tasks[task.kernel] ?? 0))) throw new Error(`${where}: task ${t} is not one of the kernel's ${s.tasks[task.kernel] ?? 0}`);
      for (const w of task.waits) {
        if (!s.counters[w]) throw new Error(`${where}: waits for counter ${w}, which is not one of the ${s.counters.length}`);
        if (s.counters[w].kernel >= task.kernel) throw new Error(`${where}: waits for ${counter(w)}, whose kernel is not earlier: a cycle`);
        awaited.add(w);
      }
      const needs = s.needs[task.kernel]?.[t] ?? [];
      const deps = s.dependsOn[task.kernel] ?? [];
      for (const c of needs) {
        if (!deps.includes(s.counters[c]?.kernel)) throw new Error(`${where}: needs ${counter(c)}, of a kernel it does not depend on`);
        if (!awaited.has(c)) throw new Error(`${where}: does not wait for ${counter(c)}, which it needs`);
      }
      // Each kernel it depends on is needed, or a later one it needs depends on it (which waited for it).
      const needed = new Set(needs.map((c) => s.counters[c].kernel));
      for (const d of deps) {
        if (s.tasks[d] > 0 && !needed.has(d) && ![...needed].some((q) => upstream[q].has(d))) throw new Error(`${where}: needs no counter of kernel ${d}, which it depends on, nor of any kernel that depends on it`);
      }
      if (dealt[task.kernel][t]) throw new Error(`${where}: task ${t} is dealt twice`);
      dealt[task.kernel][t] = 1;
    });
  });
  dealt.forEach((d, k) => {
    const missing = d.indexOf(0);
    if (missing >= 0) throw new Error(`megakernel: task ${missing} of kernel ${k} is dealt to no block`);
  });
}

/**
 * The schedule as text: per kernel its tasks, the runs they are counted in and what it depends on; per block its
 * tasks (kernel.task) and the counters each waits for (counterName); per kernel each task's rows and the weight
 * bytes it prefetches (b3@8192+16384: bytes 8192 on of the kernel's buffer 3).
 */
export function formatMegakernel(s: MegakernelSchedule): string {
  const lines = [`megakernel: ${s.kernels.length} kernels, ${s.tasks.reduce((a, b) => a + b, 0)} tasks on ${s.blocks.length} blocks; estimated ${(s.estimateNs / 1000).toFixed(1)} µs a step by the list scheduler's cost model, in which a wait costs nothing past its producers' end`];
  s.kernels.forEach((sk, k) => {
    const most = Math.max(0, ...s.spans[k].map((r) => r.to - r.from));
    const streamed = s.streams[k].length ? `, streaming ${s.streams[k].map((r) => `b${r.buffer}`).join(' ')} (${s.streams[k].reduce((n, r) => n + r.bytes, 0)} bytes a row)` : '';
    const runs = s.counters.filter((c) => c.kernel === k).length;
    lines.push(`  kernel ${k} ${sk.kernel.name}: ${s.rows[k]} rows as ${s.tasks[k]} tasks of at most ${most}${runs > 1 ? `, counted in ${runs} runs` : ''}${s.dependsOn[k].length ? `, after ${s.dependsOn[k].join(' ')}` : ''}${streamed}`);
  });
  s.blocks.forEach((list, b) => {
    const text = list.map((t) => `${t.waits.length ? `wait(${t.waits.map((c) => counterName(s, c)).join(' ')}) ` : ''}k${t.kernel}.${t.task}`).join('; ');
    lines.push(`  block ${b}: ${text || '(no tasks)'}`);
  });
  lines.push('rows and prefetches of each task:');
  s.spans.forEach((spans, k) => {
    if (!spans.length) return;
    const text = spans.map((r, t) => {
      const pf = s.prefetch[k][t].map((p) => ` b${p.buffer}@${p.offset}+${p.bytes}`).join('');
      return `${t}:[${r.from},${r.to})${pf}`;
    });
    lines.push(`  k${k}: ${text.join('; ')}`);
  });
  return lines.join('\n') + '\n';
}

/** A counter as the task list names it: its kernel (k5), and the tasks it counts where it counts some (k5.8-11). */
function counterName(s: Pick<MegakernelSchedule, 'counters' | 'tasks'>, i: number): string {
  const c = s.counters[i];
  return c.from === 0 && c.to === s.tasks[c.kernel] ? `k${c.kernel}` : `k${c.kernel}.${c.from}-${c.to - 1}`;
}

/** A binary min-heap of [time, block], ties broken by block. */
class MinHeap {
  private items: [number, number][] = [];

  reset(items: [number, number][]): void {
    this.items = items.sort(less);
  }

  push(x: [number, number]): void {
    const a = this.items;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(a[p], a[i]) <= 0) break;
      [a[p], a[i]] = [a[i], a[p]];
      i = p;
    }
  }

  pop(): [number, number] {
    const a = this.items;
    const top = a[0];
    const end = a.pop()!;
    if (a.length > 0) {
      a[0] = end;
      let i = 0;
      for (;;) {
        const [l, r] = [2 * i + 1, 2 * i + 2];
        let m = i;
        if (l < a.length && less(a[l], a[m]) < 0) m = l;
        if (r < a.length && less(a[r], a[m]) < 0) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i], a[m]];
        i = m;
      }
    }
    return top;
  }
}

const less = (x: [number, number], y: [number, number]) => x[0] - y[0] || x[1] - y[1];
