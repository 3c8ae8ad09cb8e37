// Progress of long work on a terminal: a bar on stderr for work counted in steps (reading weights, compiling a
// script pass by pass), a spinner for a step of unknown length once it has taken a second (compiling a model,
// NVRTC); nothing when stderr is not a TTY or the output is machine-read (--json), so logs and JSON stay clean.

import { Worker } from 'node:worker_threads';
import cliProgress from 'cli-progress';
import type { LoadedLlama } from './llama.ts';
import { onFirstRead } from './safetensors.ts';

export interface Progress {
  /** One more unit done; `item` names it. */
  tick(item?: string): void;
  /** Removes the bar (the work is over, or failed). */
  stop(): void;
}

const silent: Progress = { tick: () => {}, stop: () => {} };

/** What progress is drawn on: stderr, or a stand-in in tests. */
export interface ProgressStream {
  readonly isTTY?: boolean;
  readonly fd: number;
}

/** Whether progress is shown: stderr is a terminal and the output is not JSON. */
export function showProgress(json: boolean, stream: ProgressStream = process.stderr): boolean {
  return !json && stream.isTTY === true;
}

/** How many bars are drawn now, shared with the spinner threads: a spinner keeps off the line while one is. */
const barsShown = new Int32Array(new SharedArrayBuffer(4));

export function progress(label: string, total: number, enabled: boolean): Progress {
  if (!enabled || total <= 0) return silent;
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {value}/{total} {item}`,
    stream: process.stderr,
    clearOnComplete: true,
    hideCursor: true,
    barsize: 30,
  }, cliProgress.Presets.shades_classic);
  Atomics.add(barsShown, 0, 1);
  bar.start(total, 0, { item: '' });
  let done = 0;
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    bar.stop();
    Atomics.sub(barsShown, 0, 1);
  };
  return {
    tick: (item = '') => {
      bar.update(++done, { item });
      if (done >= total) stop();
    },
    stop,
  };
}

/** The model with a bar counting its weights as they are read; stop the bar when loading is over. */
export function withWeightProgress(model: LoadedLlama, enabled: boolean): { model: LoadedLlama; bar: Progress } {
  if (!enabled) return { model, bar: silent };
  const src = model.weights;
  const bar = progress('reading weights', src.tensors.length, true);
  return { model: { ...model, weights: onFirstRead(src, (name) => bar.tick(name)) }, bar };
}

// ---- spinners ----

/** Whether steps show a spinner: the command line turns this on for a terminal; library calls never draw. */
let spinners = false;

export function setSpinners(enabled: boolean): void {
  spinners = enabled;
}

export interface SpinnerOptions {
  readonly stream?: ProgressStream;
  /** How long the step runs before the spinner appears (default: a second). */
  readonly delayMs?: number;
}

/** Steps running now: one inside another shows no spinner of its own. */
let stepsRunning = 0;

/**
 * Runs `work` (a function, or one returning a promise) as one step: where spinners are on, a spinner labelled
 * `label` turns on stderr once the step has taken a second, and is erased when it ends.
 */
export function step<T>(label: string, work: () => T, opts: SpinnerOptions = {}): T {
  // A step inside another runs under the outer one's spinner.
  if (stepsRunning > 0) return work();
  const s = spinner(label, spinners, opts);
  const end = () => {
    stepsRunning--;
    s.stop();
  };
  stepsRunning++;
  let result: T;
  try {
    result = work();
  } catch (e) {
    end();
    throw e;
  }
  if (result instanceof Promise) return result.finally(end) as T;
  end();
  return result;
}

/**
 * A spinner for one step of unknown length. A worker thread draws it straight to the stream's file descriptor, so
 * it turns even while the step blocks the main thread (tracing, the passes, NVRTC are synchronous); it keeps off
 * the line while a bar is drawn, and ends at the first output on stdout. stop() returns once the line is erased.
 */
export function spinner(label: string, enabled: boolean, opts: SpinnerOptions = {}): { stop(): void } {
  const stream = opts.stream ?? process.stderr;
  if (!enabled || !stream.isTTY) return { stop: () => {} };
  // [0] stop asked, [1] the worker is done, [2] drawing: 0 not yet, 1 started by the worker, -1 forbidden by stop().
  const flags = new Int32Array(new SharedArrayBuffer(12));
  const worker = new Worker(spinnerWorker, { eval: true, workerData: { fd: stream.fd, label, delayMs: opts.delayMs ?? 1000, flags, bars: barsShown } });
  worker.unref();
  // A result printed while the step runs (its summary line) must not land on the spinner's line, nor be erased
  // with it: the first write to stdout ends the spinner.
  const stdout = process.stdout;
  const write = stdout.write;
  stdout.write = function (this: NodeJS.WriteStream, ...args: Parameters<typeof write>) {
    stop();
    return write.apply(this, args);
  } as typeof write;
  let stopped = false;
  function stop(): void {
    if (stopped) return;
    stopped = true;
    stdout.write = write;
    Atomics.store(flags, 0, 1);
    Atomics.notify(flags, 0);
    // Nothing drawn yet: forbid it and go on. Otherwise wait (briefly) for the line to be erased.
    if (Atomics.compareExchange(flags, 2, 0, -1) === 0) return;
    Atomics.wait(flags, 1, 0, 1000);
  }
  return { stop };
}

/** The drawing thread: waits out the delay, redraws every 100 ms while no bar is drawn, and erases its line at the end. */
const spinnerWorker = `
const { workerData: { fd, label, delayMs, flags, bars } } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const frames = '|/-\\\\';
const started = Date.now();
let drawn = false;
for (let i = 0; ; i++) {
  const elapsed = Date.now() - started;
  if (Atomics.wait(flags, 0, 0, elapsed < delayMs ? delayMs - elapsed : 100) !== 'timed-out') break;
  if (Atomics.load(bars, 0) > 0) continue;
  if (!drawn && Atomics.compareExchange(flags, 2, 0, 1) !== 0) break;
  drawn = true;
  writeSync(fd, '\\r\\x1b[2K' + frames[i % 4] + ' ' + label + ' (' + Math.floor((Date.now() - started) / 1000) + ' s)');
}
if (drawn) writeSync(fd, '\\r\\x1b[2K');
Atomics.store(flags, 1, 1);
Atomics.notify(flags, 1);
`;
