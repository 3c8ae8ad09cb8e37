// A step's profile (Program.profile: each kernel launched and timed alone) read two ways: a text table (time,
// achieved bandwidth and its fraction of the copy bandwidth, TFLOP/s of GEMMs, per kernel and per kind), and a
// Chrome / Perfetto trace: JSON trace events, one complete ('X') slice per kernel on one track per device queue,
// with the kernel's kind, bytes, bandwidth, TFLOP/s and fused ops as its arguments. Open the trace in
// https://ui.perfetto.dev or chrome://tracing.

import type { KernelTime } from './device.ts';

/** What a kernel achieved: GB/s moved, that as a fraction of the copy bandwidth (if known), TFLOP/s (GEMMs). */
export interface KernelRates {
  readonly gbPerS?: number;
  readonly copyFraction?: number;
  readonly tflopPerS?: number;
}

/** Rates of `k`; none for a kernel that took no measurable time (a host kernel of no rows). */
export function kernelRates(k: Pick<KernelTime, 'bytes' | 'us' | 'flops'>, copyBandwidth?: number): KernelRates {
  if (!(k.us > 0)) return {};
  const bytesPerS = (k.bytes / k.us) * 1e6;
  return {
    gbPerS: bytesPerS / 1e9,
    copyFraction: copyBandwidth ? bytesPerS / copyBandwidth : undefined,
    tflopPerS: k.flops ? k.flops / k.us / 1e6 : undefined,
  };
}

/** The op names of a kernel's fused IR lines (`%3: f32[4] = add %1, %2` → `add`), in order. */
export function fusedOps(fused: readonly string[]): string[] {
  return fused.map((line) => /=\s*([\w.-]+)/.exec(line)?.[1] ?? '?');
}

// ---------------------------------------------------------------------------------------------------------------
// The text table.

/**
 * One line per kernel in launch order (µs, GB/s, % of the copy bandwidth, TFLOP/s of GEMMs, the last IR line it
 * fuses), then the time and bandwidth by kind, largest first, and the total.
 */
export function profileTable(kernels: readonly KernelTime[], copyBandwidth?: number): string[] {
  const num = (x: number | undefined, digits: number) => (x === undefined ? '—' : x.toFixed(digits));
  // Three significant digits for small rates (a CPU's), whole numbers for a GPU's.
  const rate = (x: number | undefined) => num(x, x === undefined || x >= 100 ? 0 : x >= 10 ? 1 : 2);
  // Registers and local memory a thread where the device says (CUDA): a kernel that spills shows local bytes.
  const resources = kernels.some((k) => k.registers !== undefined);
  const rows = kernels.map((k, i) => {
    const r = kernelRates(k, copyBandwidth);
    return [String(i), k.kernel, k.kind, k.us.toFixed(1), rate(r.gbPerS), num(r.copyFraction && 100 * r.copyFraction, 1),
      rate(r.tflopPerS), ...(resources ? [num(k.registers, 0), num(k.localBytes, 0)] : []), k.last.slice(0, 72)];
  });
  const head = ['#', 'kernel', 'kind', 'µs', 'GB/s', '% copy', 'TFLOP/s', ...(resources ? ['regs', 'local B'] : []), 'last fused IR line'];
  const lines = columns(head, rows, [true, false, false, true, true, true, true, ...(resources ? [true, true] : []), false]);

  const byKind = new Map<string, { n: number; us: number; bytes: number }>();
  for (const k of kernels) {
    const e = byKind.get(k.kind) ?? { n: 0, us: 0, bytes: 0 };
    byKind.set(k.kind, { n: e.n + 1, us: e.us + k.us, bytes: e.bytes + k.bytes });
  }
  const total = { n: kernels.length, us: kernels.reduce((t, k) => t + k.us, 0), bytes: kernels.reduce((t, k) => t + k.bytes, 0) };
  const summary = [...[...byKind].sort((a, b) => b[1].us - a[1].us), ['all', total] as const].map(([kind, e]) => {
    const r = kernelRates(e, copyBandwidth);
    return [kind, `${e.n} kernel${e.n === 1 ? '' : 's'}`, `${e.us.toFixed(1)} µs`, `${rate(r.gbPerS)} GB/s`,
      r.copyFraction === undefined ? '' : `${(100 * r.copyFraction).toFixed(1)} % of copy`];
  });
  return [...lines, 'by kind:', ...columns(undefined, summary, [false, true, true, true, true]).map((l) => `  ${l}`)];
}

/**
 * µs (formatted) that `ns` runs over what `bytes` take at `copyBandwidth` (bytes a second): a share of a step less
 * its bytes' time at the copy rate, what synchronisation and latency cost it.
 */
export function usOverCopy(ns: number, bytes: number, copyBandwidth: number): string {
  return ((ns - (1e9 * bytes) / copyBandwidth) / 1e3).toFixed(1);
}

/** The line that sets a step of `ns` against its `bytes` at the copy rate. */
export function stepOverCopyLine(ns: number, bytes: number, copyBandwidth: number): string {
  return `at the copy rate (${(copyBandwidth / 1e12).toFixed(2)} TB/s) the step's ${(bytes / 1e6).toFixed(1)} MB take `
    + `${((1e9 * bytes) / copyBandwidth / 1e3).toFixed(1)} µs: the step runs ${usOverCopy(ns, bytes, copyBandwidth)} µs over it`;
}

/** Rows as aligned columns (right-aligned where `right` says), with a header line if given. */
export function columns(head: readonly string[] | undefined, rows: readonly (readonly string[])[], right: readonly boolean[]): string[] {
  const all = head ? [head, ...rows] : rows;
  const width = right.map((_, c) => Math.max(0, ...all.map((r) => r[c].length)));
  return all.map((r) => r.map((x, c) => (right[c] ? x.padStart(width[c]) : x.padEnd(width[c]))).join('  ').trimEnd());
}

// ---------------------------------------------------------------------------------------------------------------
// The Chrome / Perfetto trace.

/** One queue's kernels: a track of the trace, under its device. */
export interface TraceTrack {
  /** The device, as Device.description says it: the trace's process. */
  readonly device: string;
  /** The queue the kernels ran on (`cuda stream`, `webgpu queue`): the process's thread. */
  readonly queue: string;
  /** A profile, in launch order. */
  readonly kernels: readonly KernelTime[];
  /** Bytes per second (read + write) a copy kernel reaches on the device: slices then say what fraction they reach. */
  readonly copyBandwidth?: number;
}

/** A trace event as the Trace Event Format spells it: ts and dur in µs. */
export interface TraceEvent {
  readonly name: string;
  readonly ph: 'X' | 'M';
  readonly pid: number;
  readonly tid: number;
  readonly ts?: number;
  readonly dur?: number;
  readonly cat?: string;
  readonly args?: Readonly<Record<string, unknown>>;
}

export interface ChromeTrace {
  readonly traceEvents: TraceEvent[];
  readonly displayTimeUnit: 'ns';
  /** Shown by the viewers as the trace's metadata. */
  readonly otherData: Readonly<Record<string, string>>;
}

/**
 * The tracks as trace events: a process per device, a thread per queue (named by metadata events), one 'X' slice
 * per kernel. Times are whole nanoseconds; a slice that would begin before the previous one on its track ended
 * (separately rounded device timestamps) begins at that end instead, so a track's slices never overlap.
 */
export function chromeTrace(tracks: readonly TraceTrack[], about: Readonly<Record<string, string>> = {}): ChromeTrace {
  const events: TraceEvent[] = [];
  const pids = new Map<string, number>();
  const threads = new Map<number, number>();
  for (const track of tracks) {
    let pid = pids.get(track.device);
    if (pid === undefined) {
      pids.set(track.device, (pid = pids.size + 1));
      events.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: track.device } });
    }
    const tid = (threads.get(pid) ?? 0) + 1;
    threads.set(pid, tid);
    events.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: track.queue } });
    let endNs = -Infinity;
    track.kernels.forEach((k, index) => {
      const startNs = Math.max(Math.round(k.startUs * 1e3), endNs);
      const durNs = Math.max(0, Math.round(k.us * 1e3));
      endNs = startNs + durNs;
      const r = kernelRates(k, track.copyBandwidth);
      const args: Record<string, unknown> = { kernel: k.kernel, index, kind: k.kind, bytes: k.bytes };
      if (r.gbPerS !== undefined) args['GB/s'] = round(r.gbPerS, 1);
      if (r.copyFraction !== undefined) args['% of copy bandwidth'] = round(100 * r.copyFraction, 1);
      if (r.tflopPerS !== undefined) args['TFLOP/s'] = round(r.tflopPerS, 2);
      args.ops = fusedOps(k.fused).join(' ');
      args.fused = k.fused;
      events.push({ name: sliceName(k), ph: 'X', pid, tid, ts: startNs / 1e3, dur: durNs / 1e3, cat: k.kind || 'kernel', args });
    });
  }
  return { traceEvents: events, displayTimeUnit: 'ns', otherData: { ...about } };
}

/** A trace as JSON text, one event per line (so that it reads and diffs as text too). */
export function traceText(trace: ChromeTrace): string {
  const { traceEvents, ...rest } = trace;
  const fields = Object.entries(rest).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
  return `{"traceEvents":[\n${traceEvents.map((e) => JSON.stringify(e)).join(',\n')}\n],\n${fields.join(',\n')}}\n`;
}

/** A slice's name: the kernel and its kind (`k12 contraction`). */
export function sliceName(k: Pick<KernelTime, 'kernel' | 'kind'>): string {
  return k.kind ? `${k.kernel} ${k.kind}` : k.kernel;
}

const round = (x: number, digits: number) => Number(x.toFixed(digits));
