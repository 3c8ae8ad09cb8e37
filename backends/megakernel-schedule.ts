// The megakernel's schedule: a graph's scheduled kernels (backends/schedule.ts) run as one persistent kernel of a
// fixed number of blocks, all resident at once. Each kernel's blocks become tasks; a cost model (bytes moved and
// FLOPs, backends/kernel-cost.ts) deals them to the blocks at compile time, each block walking its list in the
// kernels' order; before its first task of a kernel a block waits until every task of each kernel it depends on
// (a writer of what it reads, a reader or writer of what it overwrites) has finished. Counters in global memory
// count finished tasks per kernel over every step, so nothing resets them. The CUDA printer
// (backends/cuda/megakernel.ts) prints these decisions and takes none; checkMegakernel proves them safe.

import { DType, dtypeBytes } from '../ir/dtype.ts';
import { anyExpr, Binding, evalSize, KernelIR, kernelExprs } from './kernel-ir.ts';
import { gemmFlops, kernelBytes } from './kernel-cost.ts';
import { ScheduledKernel, scheduleOrigin, workgroupCount } from './schedule.ts';

/** Consecutive tasks of one kernel in a block's list: kernel blocks first, first + stride, … (count of them). */
export interface TaskRun {
  readonly kernel: number;
  readonly first: number;
  readonly stride: number;
  readonly count: number;
  /**
   * Kernels whose every task of this step must have finished before the run starts (those the kernel depends on
   * that the block has not awaited earlier in the step).
   */
  readonly waits: readonly number[];
}

export interface MegakernelSchedule {
  /** The graph's kernels as they run inside the megakernel: at the step's sizes, one form each, no overlap. */
  readonly kernels: readonly ScheduledKernel[];
  /** Tasks of each kernel: the blocks its own launch would have. */
  readonly tasks: readonly number[];
  /** Rows of each kernel at the step's sizes (a run reaching the last row may grid-stride in one call). */
  readonly rows: readonly number[];
  /** Per kernel, the earlier kernels it must wait for, by buffer (read after write, write after read or write). */
  readonly dependsOn: readonly (readonly number[])[];
  /** Per block of the megakernel, its runs in the order it walks them. */
  readonly blocks: readonly (readonly TaskRun[])[];
  /** The sizes the step runs at (every size a kernel reads). */
  readonly sizes: Readonly<Record<string, number>>;
  /** Estimated time of the step by the cost model, in ns (for reports). */
  readonly estimateNs: number;
}

/** What the megakernel is built for. */
export interface MegakernelOptions {
  /** Blocks of the persistent grid: multiprocessors × blocks each holds at once. */
  readonly blocks: number;
  /** Multiprocessors, for the cost model's per-block bandwidth. */
  readonly processors: number;
}

// The cost model, per multiprocessor (an H200: 4.3 TB/s and ~790 dense bf16 TFLOP/s over 132 of them; decode is
// bandwidth-bound, so only the ratio of the two matters much), and a task's fixed cost (a call, its barriers, its
// counter): enough to keep a block from taking many tiny tasks while others idle.
const BYTES_PER_NS_PER_PROCESSOR = 32;
const FLOPS_PER_NS_PER_PROCESSOR = 6000;
const TASK_NS = 150;

/**
 * The megakernel's schedule for `kernels` (one graph's, in launch order, scheduled for a device without
 * overlapping launches), at fixed sizes: every size the kernels read must be bound in `sizes`.
 */
export function scheduleMegakernel(kernels: readonly ScheduledKernel[], sizes: Readonly<Record<string, number>>, opts: MegakernelOptions): MegakernelSchedule {
  if (!Number.isInteger(opts.blocks) || opts.blocks < 1) throw new Error(`megakernel: ${opts.blocks} blocks is not a grid`);
  const fixed = kernels.map((sk) => atFixedSizes(sk, sizes));
  const rows = fixed.map((sk) => evalSize(sk.grid.rows, sizes));
  const tasks = fixed.map((sk, i) => (rows[i] > 0 ? workgroupCount(sk.grid, rows[i])[0] : 0));
  const dependsOn = dependencies(fixed.map((sk) => sk.kernel));
  const costs = fixed.map((sk, i) => taskCost(sk, sizes, tasks[i], opts));
  // List scheduling: each kernel's tasks start once the kernels it depends on have finished; each goes to the block
  // that can start it soonest (ties to the lowest block), by the estimated times so far.
  const free = new Array<number>(opts.blocks).fill(0);
  const finish = new Array<number>(fixed.length).fill(0);
  const assigned: number[][][] = Array.from({ length: opts.blocks }, () => []);
  const heap = new MinHeap();
  fixed.forEach((_, k) => {
    if (tasks[k] === 0) return;
    const ready = Math.max(0, ...dependsOn[k].map((d) => finish[d]));
    heap.reset(free.map((t, b) => [Math.max(t, ready), b]));
    const mine = new Map<number, number[]>();
    for (let t = 0; t < tasks[k]; t++) {
      const [start, b] = heap.pop();
      const end = start + costs[k];
      free[b] = end;
      finish[k] = Math.max(finish[k], end);
      heap.push([end, b]);
      let list = mine.get(b);
      if (!list) mine.set(b, (list = []));
      list.push(t);
    }
    for (const [b, list] of mine) assigned[b][k] = list;
  });
  const blocks = assigned.map((perKernel) => {
    const awaited = new Set<number>();
    const runs: TaskRun[] = [];
    perKernel.forEach((list, k) => {
      if (!list) return;
      const waits = dependsOn[k].filter((d) => tasks[d] > 0 && !awaited.has(d));
      for (const d of waits) awaited.add(d);
      arithmeticRuns(list).forEach((r, i) => runs.push({ kernel: k, ...r, waits: i === 0 ? waits : [] }));
    });
    return runs;
  });
  const schedule = { kernels: fixed, tasks, rows, dependsOn, blocks, sizes, estimateNs: Math.max(0, ...finish) };
  checkMegakernel(schedule);
  return schedule;
}

/**
 * The kernel as it runs at fixed sizes: where those decide which form runs (a GEMM or flash kernel's rows against
 * the rows its tiles start from), only that form, so that the shared memory of the other is not reserved.
 */
function atFixedSizes(sk: ScheduledKernel, sizes: Readonly<Record<string, number>>): ScheduledKernel {
  const k = sk.kernel;
  const unbound = k.sizes.filter((s) => sizes[s] === undefined);
  if (unbound.length) throw new Error(`megakernel: kernel ${k.name} reads size ${unbound.join(', ')}, which the step does not fix`);
  if (sk.overlap) throw new Error(`megakernel: kernel ${k.name} was scheduled to overlap its predecessor's launch; schedule the graph without dependent launches`);
  const extent = k.gemm?.rows ?? k.flash?.queries;
  if (sk.tilesFrom === undefined || sk.tilesFrom === 0 || !extent || evalSize(extent, sizes) >= sk.tilesFrom) return sk;
  const origin = scheduleOrigin(sk);
  let rowForm = rowForms.get(origin);
  if (!rowForm) {
    const bytes = (a: ScheduledKernel['arrays'][number]) => Math.ceil((a.elements * (a.type === 'bool' ? 1 : 4)) / 16) * 16;
    const dynamic = origin.arrays.reduce((n, a) => (a.dynamicOffset === undefined ? n : Math.max(n, a.dynamicOffset + bytes(a))), 0);
    const { gemm: _g, flash: _f, tilesFrom: _t, ...rest } = origin;
    rowForm = { ...rest, grid: { ...origin.grid, rows: origin.kernel.rows }, dynamicWorkgroupBytes: dynamic };
    rowForms.set(origin, rowForm);
  }
  const fixed = { ...rowForm, kernel: k };
  printedFrom.set(fixed, rowForm);
  return fixed;
}

/** Row forms made, by the schedule they were made from. */
const rowForms = new WeakMap<ScheduledKernel, ScheduledKernel>();
/** Each row form taken from one made for a kernel alike, and that one. */
const printedFrom = new WeakMap<ScheduledKernel, ScheduledKernel>();

/**
 * The schedule whose code a kernel of a megakernel shares (kernels alike but for their name, comment and buffers
 * bound: every transformer layer's): the printer prints each once.
 */
export function megakernelOrigin(sk: ScheduledKernel): ScheduledKernel {
  return printedFrom.get(sk) ?? scheduleOrigin(sk);
}

/** The estimated time of one task of a kernel, in ns: its share of the bytes and FLOPs at one block's rate. */
function taskCost(sk: ScheduledKernel, sizes: Readonly<Record<string, number>>, tasks: number, opts: MegakernelOptions): number {
  if (tasks === 0) return 0;
  const share = opts.processors / opts.blocks;
  const bytes = kernelBytes(sk.kernel, sizes, (d: DType, n: number) => n * dtypeBytes[d]);
  const flops = gemmFlops(sk.kernel, sizes) ?? 0;
  return TASK_NS + (bytes / (BYTES_PER_NS_PER_PROCESSOR * share) + flops / (FLOPS_PER_NS_PER_PROCESSOR * share)) / tasks;
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

/** Buffers a kernel loads from. */
function readBuffers(k: KernelIR): Set<number> {
  const read = new Set<number>();
  for (const e of kernelExprs(k)) {
    anyExpr(e, (x) => {
      if (x.k === 'load') read.add(x.buf);
      return false;
    });
  }
  return read;
}

/** Ascending task indices as runs of constant stride (each as long as it goes). */
function arithmeticRuns(list: readonly number[]): { first: number; stride: number; count: number }[] {
  const runs: { first: number; stride: number; count: number }[] = [];
  let i = 0;
  while (i < list.length) {
    const stride = i + 1 < list.length ? list[i + 1] - list[i] : 1;
    let n = 1;
    while (i + n < list.length && list[i + n] - list[i + n - 1] === stride) n++;
    runs.push({ first: list[i], stride, count: n });
    i += n;
  }
  return runs;
}

/**
 * Refuses a schedule that could read before a write, overwrite before a read, or hang: every kernel's tasks are
 * dealt exactly once; each block walks its runs in the kernels' order; each run waits for (or its block awaited
 * earlier in the step) every kernel its kernel depends on; every wait is for an earlier kernel (so with every block
 * resident, no wait can be part of a cycle). The error names the block, run and kernel.
 */
export function checkMegakernel(s: Pick<MegakernelSchedule, 'tasks' | 'dependsOn' | 'blocks'>): void {
  const dealt = s.tasks.map((n) => new Uint8Array(n));
  s.blocks.forEach((runs, b) => {
    const awaited = new Set<number>();
    let last = -1;
    runs.forEach((r, i) => {
      const where = `megakernel block ${b}, run ${i} (kernel ${r.kernel})`;
      if (r.kernel < last) throw new Error(`${where}: comes after a run of kernel ${last}: a block walks the kernels in order`);
      last = r.kernel;
      for (const w of r.waits) {
        if (w >= r.kernel) throw new Error(`${where}: waits for kernel ${w}, which is not earlier: a cycle`);
        awaited.add(w);
      }
      for (const d of s.dependsOn[r.kernel] ?? []) {
        if (s.tasks[d] > 0 && !awaited.has(d)) throw new Error(`${where}: does not wait for kernel ${d}, which it depends on`);
      }
      for (let c = 0; c < r.count; c++) {
        const t = r.first + c * r.stride;
        if (!(t >= 0 && t < (s.tasks[r.kernel] ?? 0))) throw new Error(`${where}: task ${t} is not one of the kernel's ${s.tasks[r.kernel] ?? 0}`);
        if (dealt[r.kernel][t]) throw new Error(`${where}: task ${t} is dealt twice`);
        dealt[r.kernel][t] = 1;
      }
    });
  });
  dealt.forEach((d, k) => {
    const missing = d.indexOf(0);
    if (missing >= 0) throw new Error(`megakernel: task ${missing} of kernel ${k} is dealt to no block`);
  });
}

/** The task list as text: per block its runs (kernel, tasks) and what each waits for; blocks alike shown once. */
export function formatMegakernel(s: MegakernelSchedule): string {
  const lines = [`megakernel: ${s.kernels.length} kernels, ${s.tasks.reduce((a, b) => a + b, 0)} tasks on ${s.blocks.length} blocks; estimated ${(s.estimateNs / 1000).toFixed(1)} µs a step`];
  s.kernels.forEach((sk, k) => lines.push(`  kernel ${k} ${sk.kernel.name}: ${s.tasks[k]} tasks${s.dependsOn[k].length ? `, after ${s.dependsOn[k].join(' ')}` : ''}`));
  const text = (runs: readonly TaskRun[]) => runs.map((r) => {
    const tasks = r.count === 1 ? `${r.first}` : `${r.first}..+${r.stride}×${r.count}`;
    return `${r.waits.length ? `wait(${r.waits.join(' ')}) ` : ''}k${r.kernel}[${tasks}]`;
  }).join('; ');
  let previous = '';
  s.blocks.forEach((runs, b) => {
    const t = text(runs);
    lines.push(t === previous ? `  block ${b}: as block ${b - 1}` : `  block ${b}: ${t || '(no tasks)'}`);
    previous = t;
  });
  return lines.join('\n') + '\n';
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
