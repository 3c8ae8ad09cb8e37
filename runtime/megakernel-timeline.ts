// A megakernel step as a timeline: each task's times as its block recorded them (backends/cuda/megakernel.ts:
// when it started waiting for its inputs, when they were ready, when it ended, on which multiprocessor, and with a
// weight ring how long it waited for its pages and how long the ring's producer spent issuing fills meanwhile), read
// three ways: tasks by block, a text table per kernel (how long its tasks waited and ran, and when it ran in the
// step), and a Chrome / Perfetto trace with a process per multiprocessor, a thread per block, a slice per task
// and one per wait.

import { TIMELINE_WORDS } from '../backends/cuda/megakernel.ts';
import { kernelBytes } from '../backends/kernel-cost.ts';
import type { MegakernelSchedule } from '../backends/megakernel-schedule.ts';
import { cudaByteLength } from './devices/device-bytes.ts';
import { ChromeTrace, columns, stepOverCopyLine, TraceEvent, usOverCopy } from './trace.ts';

/** One task of a step. Times in ns from the step's first recorded time. */
export interface TaskTime {
  readonly block: number;
  readonly processor: number;
  /** The kernel's index in the graph, its name and kind. */
  readonly kernel: number;
  readonly name: string;
  readonly kind: string;
  /** Which of the kernel's tasks, and its rows [from, to). */
  readonly task: number;
  readonly rows: readonly [number, number];
  /** Weight bytes it prefetched before waiting. */
  readonly prefetchBytes: number;
  readonly waitNs: number;
  readonly readyNs: number;
  readonly endNs: number;
  /** With a weight ring: ns the task waited for its rows' pages to land, and ns the ring's producer spent issuing fills while it ran. */
  readonly pageWaitNs: number;
  readonly fillNs: number;
}

export interface MegakernelTimeline {
  /** Every task of the step, by block, each block's in the order it ran them. */
  readonly tasks: readonly TaskTime[];
  readonly blocks: number;
  /** From the first wait to the last end. */
  readonly spanNs: number;
  /** Bytes each kernel reads and writes (by its index in the graph), as the launched kernels' profile counts them. */
  readonly kernelBytes: readonly number[];
  /** The kernel's registers and local memory a thread, as ptxas compiled it (every task runs under them). */
  readonly registers?: number;
  readonly localBytes?: number;
}

/** The timeline's words (TIMELINE_WORDS a task, in the task table's order: block by block) as tasks. */
export function taskTimes(s: MegakernelSchedule, words: BigUint64Array): MegakernelTimeline {
  const entries = s.blocks.flatMap((list, block) => list.map((t) => ({ block, ...t })));
  const W = TIMELINE_WORDS;
  if (words.length !== W * entries.length) throw new Error(`a megakernel timeline of ${words.length} words for ${entries.length} tasks of ${W} words`);
  let origin = BigInt('0xffffffffffffffff');
  for (let i = 0; i < entries.length; i++) if (words[W * i] < origin) origin = words[W * i];
  const at = (i: number, w: number) => Number(words[W * i + w] - origin);
  // The ring's times are the block's running sums: a task's are the difference from its block's task before.
  const since = (i: number, w: number) => Number(words[W * i + w] - (i > 0 && entries[i - 1].block === entries[i].block ? words[W * (i - 1) + w] : 0n));
  const tasks = entries.map((e, i): TaskTime => {
    const sk = s.kernels[e.kernel];
    const span = s.spans[e.kernel][e.task];
    return {
      block: e.block, processor: Number(words[W * i + 3]), kernel: e.kernel, name: sk.kernel.name, kind: sk.kernel.kind,
      task: e.task, rows: [span.from, span.to], prefetchBytes: s.prefetch[e.kernel][e.task].reduce((n, p) => n + p.bytes, 0),
      waitNs: at(i, 0), readyNs: at(i, 1), endNs: at(i, 2), pageWaitNs: since(i, 4), fillNs: since(i, 5),
    };
  });
  const bytes = s.kernels.map((sk) => kernelBytes(sk.kernel, s.sizes, cudaByteLength));
  return { tasks, blocks: s.blocks.length, spanNs: Math.max(0, ...tasks.map((t) => t.endNs)), kernelBytes: bytes };
}

const us = (ns: number) => (ns / 1e3).toFixed(1);

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const m = sorted.length >> 1;
  return sorted.length % 2 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
}

/**
 * One line per kernel in the graph's order: its tasks, their mean and largest wait and run (µs), the time its tasks
 * kept blocks busy, when in the step its first task's inputs were ready and its last task ended, its `share` of the
 * step (from the kernels before it ending to its own end: the shares add up to the step), its `gap` (from the
 * kernels before it ending to its first task being ready; negative where it started before them) and `tail` (from
 * its median task ending to its last), and the bandwidth over that share (its bytes as the launched profile counts
 * them; as a fraction of `copyBandwidth`, bytes a second, where given) and, with a copy rate, its share `over` the
 * time its bytes take at that rate (what synchronisation and latency cost it: attention, which reads few bytes,
 * loses nearly its whole share); then by kind, and the step.
 */
export function timelineTable(t: MegakernelTimeline, copyBandwidth?: number): string[] {
  const byKernel = new Map<number, TaskTime[]>();
  for (const task of t.tasks) {
    let list = byKernel.get(task.kernel);
    if (!list) byKernel.set(task.kernel, (list = []));
    list.push(task);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const rate = (bytes: number, ns: number) => (ns > 0 ? bytes / ns : undefined);
  const over = (share: number, bytes: number) => (copyBandwidth ? usOverCopy(share, bytes, copyBandwidth) : '—');
  const shares = new Map<number, number>();
  const ringed = t.tasks.some((x) => x.pageWaitNs > 0 || x.fillNs > 0);
  let before = 0;
  let gaps = 0;
  let tails = 0;
  const rows = [...byKernel].sort((a, b) => a[0] - b[0]).map(([k, tasks]) => {
    const waits = tasks.map((x) => x.readyNs - x.waitNs);
    const runs = tasks.map((x) => x.endNs - x.readyNs);
    const end = Math.max(...tasks.map((x) => x.endNs));
    const from = Math.min(...tasks.map((x) => x.readyNs));
    // The boundary before the kernel (its first task ready after the kernels before it ended: the release, the poll,
    // the barrier) and the one it leaves (its last task ending after its median one).
    const gap = from - before;
    const tail = end - median(tasks.map((x) => x.endNs));
    const share = Math.max(0, end - before);
    if (k > 0) gaps += Math.max(0, gap);
    tails += tail;
    before = Math.max(before, end);
    shares.set(k, share);
    const gbPerS = rate(t.kernelBytes[k] ?? 0, share);
    return [String(k), tasks[0].name, tasks[0].kind, String(tasks.length), us(mean(waits)), us(Math.max(...waits)), us(mean(runs)),
      us(Math.max(...runs)), us(runs.reduce((a, b) => a + b, 0)), us(from), us(end), us(share), k > 0 ? us(gap) : '—', us(tail),
      gbPerS === undefined ? '—' : gbPerS.toFixed(0), gbPerS === undefined || !copyBandwidth ? '—' : ((100 * gbPerS * 1e9) / copyBandwidth).toFixed(1),
      over(share, t.kernelBytes[k] ?? 0),
      ...(ringed ? [us(mean(tasks.map((x) => x.pageWaitNs))), us(mean(tasks.map((x) => x.fillNs)))] : [])];
  });
  // With a weight ring: how long a task waited for its pages, and the producer spent issuing fills meanwhile (means).
  const head = ['#', 'kernel', 'kind', 'tasks', 'wait µs', 'max', 'run µs', 'max', 'busy µs', 'from µs', 'to µs', 'share µs', 'gap µs', 'tail µs', 'GB/s', '% copy', 'over µs', ...(ringed ? ['pages µs', 'fills µs'] : [])];
  const lines = columns(head, rows, head.map((_, i) => i < 1 || i > 2));
  const byKind = new Map<string, { kernels: Set<number>; busy: number; wait: number; share: number; bytes: number }>();
  for (const x of t.tasks) {
    const e = byKind.get(x.kind) ?? { kernels: new Set<number>(), busy: 0, wait: 0, share: 0, bytes: 0 };
    if (!e.kernels.has(x.kernel)) {
      e.kernels.add(x.kernel);
      e.share += shares.get(x.kernel)!;
      e.bytes += t.kernelBytes[x.kernel] ?? 0;
    }
    e.busy += x.endNs - x.readyNs;
    e.wait += x.readyNs - x.waitNs;
    byKind.set(x.kind, e);
  }
  const busy = t.tasks.reduce((n, x) => n + x.endNs - x.readyNs, 0);
  const wait = t.tasks.reduce((n, x) => n + x.readyNs - x.waitNs, 0);
  const kinds = [...byKind].sort((a, b) => b[1].busy - a[1].busy).map(([kind, e]) => {
    const gbPerS = rate(e.bytes, e.share);
    return [kind, `${e.kernels.size} kernel${e.kernels.size === 1 ? '' : 's'}`, `busy ${us(e.busy)} µs`, `waiting ${us(e.wait)} µs`, `${((100 * e.busy) / Math.max(1, busy)).toFixed(1)} % of busy`,
      `share ${us(e.share)} µs`, gbPerS === undefined ? '' : `${gbPerS.toFixed(0)} GB/s`, copyBandwidth ? `over ${over(e.share, e.bytes)} µs` : ''];
  });
  const stepBytes = [...byKernel.keys()].reduce((n, k) => n + (t.kernelBytes[k] ?? 0), 0);
  const capacity = t.blocks * t.spanNs;
  return [
    ...lines,
    'by kind:',
    ...columns(undefined, kinds, [false, true, true, true, true, true, true, true]).map((l) => `  ${l}`),
    `step: ${us(t.spanNs)} µs on ${t.blocks} blocks; tasks ran ${((100 * busy) / Math.max(1, capacity)).toFixed(1)} % of it, `
      + `waited ${((100 * wait) / Math.max(1, capacity)).toFixed(1)} %, the rest between tasks (table, prefetch, call, release)`,
    ...(copyBandwidth ? [stepOverCopyLine(t.spanNs, stepBytes, copyBandwidth)] : []),
    `boundaries: ${us(gaps)} µs from the kernels before one ending to its first task ready, ${us(tails)} µs from kernels' median tasks ending to their last`,
    ...(t.registers !== undefined ? [`the kernel: ${t.registers} registers and ${t.localBytes ?? 0} bytes of local memory a thread (above 0: it spills)`] : []),
  ];
}

/**
 * The step as trace events: a process per multiprocessor, a thread per block (named by metadata events), a slice
 * per task named by kernel and task (its rows, wait and prefetch as arguments) and, where it waited, a slice for
 * the wait before it. Times in µs from the step's start.
 */
export function timelineTrace(t: MegakernelTimeline, device: string, about: Readonly<Record<string, string>> = {}): ChromeTrace {
  const events: TraceEvent[] = [];
  const named = new Set<string>();
  for (const x of t.tasks) {
    const [pid, tid] = [x.processor + 1, x.block + 1];
    if (!named.has(`p${pid}`)) {
      named.add(`p${pid}`);
      events.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: `${device} SM ${x.processor}` } });
    }
    if (!named.has(`t${tid}`)) {
      named.add(`t${tid}`);
      events.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: `block ${x.block}` } });
    }
    if (x.readyNs > x.waitNs) {
      events.push({ name: `wait ${x.name}`, ph: 'X', pid, tid, ts: x.waitNs / 1e3, dur: (x.readyNs - x.waitNs) / 1e3, cat: 'wait', args: { kernel: x.kernel, task: x.task } });
    }
    events.push({
      name: `${x.name} task ${x.task}`, ph: 'X', pid, tid, ts: x.readyNs / 1e3, dur: (x.endNs - x.readyNs) / 1e3, cat: x.kind || 'task',
      args: {
        kernel: x.kernel, task: x.task, rows: `[${x.rows[0]}, ${x.rows[1]})`, 'wait µs': (x.readyNs - x.waitNs) / 1e3, 'prefetch bytes': x.prefetchBytes,
        ...(x.pageWaitNs || x.fillNs ? { 'pages wait µs': x.pageWaitNs / 1e3, 'fills µs': x.fillNs / 1e3 } : {}),
      },
    });
  }
  return { traceEvents: events, displayTimeUnit: 'ns', otherData: { ...about } };
}
