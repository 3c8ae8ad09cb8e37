// A step's timeline as its kernels ran inside it (a replayed CUDA graph, kernels overlapping their predecessors),
// from the stamps of a program printed with them (backends/cuda/prelude.ts, TF_STAMPS): each block's start, the
// moment its wait for the predecessor returned, its end and its multiprocessor. Where a profile launches each
// kernel alone, this shows what the step itself does: how long after a kernel's predecessor ended it could go on,
// how unevenly its blocks ended, and each kernel's share of the step.

import { STAMP_MARKS, STAMP_WORDS } from '../backends/cuda/prelude.ts';
import type { KernelTime } from './device.ts';
import { ChromeTrace, chromeTrace, columns, sliceName, stepOverCopyLine, TraceEvent, usOverCopy } from './trace.ts';

/** One block of a kernel, times in ns from the step's first stamp. */
export interface BlockStamp {
  readonly block: number;
  readonly processor: number;
  readonly startNs: number;
  readonly readyNs: number;
  readonly endNs: number;
  /** The marks its kernel's form set between phases (backends/cuda/prelude.ts tf_stamp_mark), undefined where not set. */
  readonly marksNs: readonly (number | undefined)[];
}

/** What the stamps cannot say of a kernel: its graph's name for it, its kind, the bytes and FLOPs it moves. */
export type KernelFacts = Pick<KernelTime, 'kernel' | 'kind' | 'bytes' | 'flops' | 'fused' | 'last'>;

/** One kernel of the step, its blocks in the order they started. */
export interface KernelSpan extends KernelFacts {
  /** The id its launch stamped with (the program's numbering: graph and kernel index). */
  readonly id: number;
  readonly blocks: readonly BlockStamp[];
  /** Its first block's start, its last block's return from the wait, its first and last block's ends. */
  readonly startNs: number;
  readonly readyNs: number;
  readonly firstEndNs: number;
  readonly endNs: number;
}

export interface StepTimeline {
  /** In the order they started. */
  readonly kernels: readonly KernelSpan[];
  /** From the first block's start to the last block's end. */
  readonly spanNs: number;
}

/**
 * The stamps of `count` blocks (STAMP_WORDS words each) as kernels; `facts` names a launch's id. Refused where a
 * kernel's block appears twice: the stamps then hold more than one step.
 */
export function stepTimeline(words: BigUint64Array, count: number, facts: (id: number) => KernelFacts): StepTimeline {
  if (count === 0) return { kernels: [], spanNs: 0 };
  let origin = BigInt('0xffffffffffffffff');
  for (let i = 0; i < count; i++) if (words[STAMP_WORDS * i + 2] < origin) origin = words[STAMP_WORDS * i + 2];
  const byId = new Map<number, BlockStamp[]>();
  for (let i = 0; i < count; i++) {
    const w = (j: number) => words[STAMP_WORDS * i + j];
    const id = Number(w(0) >> 32n);
    const at = (j: number) => Number(w(j) - origin);
    let list = byId.get(id);
    if (!list) byId.set(id, (list = []));
    const marksNs = Array.from({ length: STAMP_MARKS }, (_, m) => (w(5 + m) === 0n ? undefined : at(5 + m)));
    list.push({ block: Number(w(0) & 0xffffffffn), processor: Number(w(1)), startNs: at(2), readyNs: at(3), endNs: at(4), marksNs });
  }
  const kernels = [...byId].map(([id, blocks]): KernelSpan => {
    const seen = new Set<number>();
    for (const b of blocks) {
      if (seen.has(b.block)) throw new Error(`the stamps hold kernel ${facts(id).kernel}'s block ${b.block} twice: clear them before the step`);
      seen.add(b.block);
    }
    blocks.sort((a, b) => a.startNs - b.startNs);
    const ends = blocks.map((b) => b.endNs);
    return {
      ...facts(id), id, blocks, startNs: blocks[0].startNs, readyNs: Math.max(...blocks.map((b) => b.readyNs)),
      firstEndNs: Math.min(...ends), endNs: Math.max(...ends),
    };
  }).sort((a, b) => a.startNs - b.startNs);
  return { kernels, spanNs: Math.max(...kernels.map((k) => k.endNs)) };
}

/**
 * The step as a profile (KernelTime, for runtime/trace.ts's table and trace): each kernel from when its last block's
 * wait returned, or its predecessor ended if later, to its last block's end. Those slices tile the step.
 */
export function stepKernelTimes(t: StepTimeline): KernelTime[] {
  let prevEnd = 0;
  return t.kernels.map((k) => {
    const from = Math.max(prevEnd, Math.min(k.readyNs, k.endNs));
    const time: KernelTime = { ...k, startUs: from / 1e3, us: Math.max(0, k.endNs - from) / 1e3 };
    prevEnd = Math.max(prevEnd, k.endNs);
    return time;
  });
}

const us = (ns: number) => (ns / 1e3).toFixed(1);

/**
 * One line per kernel in the order they started: its blocks; when in the step its first block started, its last
 * block's wait returned and its last block ended (µs); `after prev` the time from its predecessor's last end to its
 * last block's return from the wait (the dependent launch's latency, and blocks that could not yet be resident);
 * `spread` from its first block's end to its last's (a tail); `share` from its predecessor's end to its own, which
 * adds up to the step, and the bandwidth over that share; with a copy rate, how far the share runs `over` the time
 * its bytes take at that rate. Then the shares by kind, and the step.
 */
export function stepTimelineTable(t: StepTimeline, copyBandwidth?: number): string[] {
  let prevEnd = 0;
  const byKind = new Map<string, { n: number; shareNs: number; afterNs: number; bytes: number }>();
  const rows = t.kernels.map((k, i) => {
    const shareNs = Math.max(0, k.endNs - prevEnd);
    const afterNs = Math.max(0, k.readyNs - prevEnd);
    prevEnd = Math.max(prevEnd, k.endNs);
    const e = byKind.get(k.kind) ?? { n: 0, shareNs: 0, afterNs: 0, bytes: 0 };
    byKind.set(k.kind, { n: e.n + 1, shareNs: e.shareNs + shareNs, afterNs: e.afterNs + afterNs, bytes: e.bytes + k.bytes });
    const gbPerS = shareNs > 0 ? k.bytes / shareNs : undefined;
    return [String(i), k.kernel, k.kind, String(k.blocks.length), us(k.startNs), us(k.readyNs), us(k.endNs), us(afterNs),
      us(k.endNs - k.firstEndNs), us(shareNs), gbPerS === undefined ? '—' : gbPerS.toFixed(0),
      gbPerS === undefined || !copyBandwidth ? '—' : ((100 * gbPerS * 1e9) / copyBandwidth).toFixed(1),
      copyBandwidth ? usOverCopy(shareNs, k.bytes, copyBandwidth) : '—'];
  });
  const head = ['#', 'kernel', 'kind', 'blocks', 'start', 'ready', 'end', 'after prev', 'spread', 'share', 'GB/s', '% copy', 'over'];
  const lines = columns(head, rows, [true, false, false, true, true, true, true, true, true, true, true, true, true]);
  const kinds = [...byKind].sort((a, b) => b[1].shareNs - a[1].shareNs).map(([kind, e]) => [kind, `${e.n} kernel${e.n === 1 ? '' : 's'}`,
    `${us(e.shareNs)} µs`, `${((100 * e.shareNs) / Math.max(1, t.spanNs)).toFixed(1)} % of the step`, `after prev ${us(e.afterNs)} µs`,
    e.shareNs > 0 ? `${(e.bytes / e.shareNs).toFixed(0)} GB/s` : '', copyBandwidth ? `over ${usOverCopy(e.shareNs, e.bytes, copyBandwidth)} µs` : '']);
  const after = [...byKind.values()].reduce((n, e) => n + e.afterNs, 0);
  const bytes = t.kernels.reduce((n, k) => n + k.bytes, 0);
  return [
    ...lines,
    ...phaseLines(t),
    'by kind (share of the step):',
    ...columns(undefined, kinds, [false, true, true, true, true, true, true]).map((l) => `  ${l}`),
    `step: ${us(t.spanNs)} µs, ${t.kernels.length} kernels; ${us(after)} µs of it between a kernel's predecessor ending and its last block going on`,
    ...(copyBandwidth ? [stepOverCopyLine(t.spanNs, bytes, copyBandwidth)] : []),
  ];
}

/**
 * For the kernels whose form marks its phases: per phase (from the wait's return to mark 0, from each mark to the
 * next set one, from the last to the block's end) the mean µs over the blocks that reached it, and how many did.
 */
function phaseLines(t: StepTimeline): string[] {
  const rows: string[][] = [];
  t.kernels.forEach((k, i) => {
    if (!k.blocks.some((b) => b.marksNs.some((m) => m !== undefined))) return;
    const phases: { sum: number; n: number }[] = Array.from({ length: STAMP_MARKS + 1 }, () => ({ sum: 0, n: 0 }));
    for (const b of k.blocks) {
      let from = b.readyNs;
      b.marksNs.forEach((m, j) => {
        if (m === undefined) return;
        phases[j].sum += m - from;
        phases[j].n++;
        from = m;
      });
      phases[STAMP_MARKS].sum += b.endNs - from;
      phases[STAMP_MARKS].n++;
    }
    rows.push([String(i), k.kernel, ...phases.map((p) => (p.n ? `${us(p.sum / p.n)} (${p.n})` : '—'))]);
  });
  if (!rows.length) return [];
  const head = ['#', 'kernel', ...Array.from({ length: STAMP_MARKS }, (_, j) => (j ? `to mark ${j}` : 'ready to mark 0')), 'to end'];
  return ['phases of the kernels that mark them, mean µs (blocks that reached them):',
    ...columns(head, rows, [true, false, ...Array(STAMP_MARKS + 1).fill(true)]).map((l) => `  ${l}`)];
}

/**
 * The step as a Chrome / Perfetto trace: the kernels on the device's stream (stepKernelTimes: a slice from a kernel's
 * last block's return from the wait, or its predecessor's end, to its last block's end), then a process per
 * multiprocessor with a slice per block from its start to its end (its wait and marks as arguments), each on the
 * first of the multiprocessor's tracks free by then (blocks resident together on separate tracks).
 */
export function stepTimelineTrace(t: StepTimeline, device: string, copyBandwidth: number | undefined, about: Readonly<Record<string, string>> = {}): ChromeTrace {
  const trace = chromeTrace([{ device, queue: 'cuda stream', kernels: stepKernelTimes(t), copyBandwidth }], about);
  const blocks = t.kernels.flatMap((k) => k.blocks.map((b) => ({ k, b }))).sort((x, y) => x.b.startNs - y.b.startNs);
  const tracks = new Map<number, number[]>();
  const events: TraceEvent[] = [];
  for (const { k, b } of blocks) {
    const pid = b.processor + 2;
    let ends = tracks.get(b.processor);
    if (!ends) {
      tracks.set(b.processor, (ends = []));
      events.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: `${device} SM ${b.processor}` } });
    }
    let slot = ends.findIndex((end) => end <= b.startNs);
    if (slot < 0) {
      slot = ends.length;
      events.push({ name: 'thread_name', ph: 'M', pid, tid: slot + 1, args: { name: `resident block ${slot}` } });
    }
    ends[slot] = b.endNs;
    const marks = Object.fromEntries(b.marksNs.flatMap((m, j) => (m === undefined ? [] : [[`mark ${j} µs`, (m - b.startNs) / 1e3]])));
    events.push({
      name: sliceName(k), ph: 'X', pid, tid: slot + 1, ts: b.startNs / 1e3, dur: (b.endNs - b.startNs) / 1e3, cat: k.kind || 'kernel',
      args: { block: b.block, 'wait µs': (b.readyNs - b.startNs) / 1e3, ...marks },
    });
  }
  return { ...trace, traceEvents: [...trace.traceEvents, ...events] };
}
