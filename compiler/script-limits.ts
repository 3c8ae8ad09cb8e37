// Bounds on a model script's evaluation. A script is a program: `for (;;) {}` in it, at the top or in the entry,
// would hang `tsfuse compile` forever, and a runaway allocation would take the process down. So the script is first
// loaded and its entry traced in a worker thread, which is stopped after a time limit and whose JavaScript heap is
// capped; only a script that got through runs again, in the main thread, to be traced for real (the worker's graph
// would have to cross threads as text, and custom ops registered by the script would be missing on this side).
// This module is also the worker's code.

import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Tensor } from './tensor.ts';
import { type InputSpec, trace } from './trace.ts';
import { ScriptError } from './script-error.ts';
import { displayPath } from './source-location.ts';

export interface ScriptLimits {
  /** Seconds that loading the script and tracing its entry may take. */
  readonly timeoutSeconds: number;
  /** Megabytes of JavaScript heap they may use (buffers outside the heap, such as typed arrays' data, are not counted). */
  readonly maxMemoryMb: number;
}

export const defaultScriptLimits: ScriptLimits = { timeoutSeconds: 10, maxMemoryMb: 2048 };

interface ProbeRequest {
  readonly file: string;
  readonly entry: string;
  readonly inputs: readonly InputSpec[];
}

/**
 * A worker whose last probe ended in time, kept (not holding the process open) for the next probe with the same
 * memory limit: starting one and loading tsx and the tracer in it is most of a probe's cost, and a process may probe
 * many scripts (the tests do). A worker that timed out, ran out of memory or ended is never reused.
 */
let spare: { readonly worker: Worker; readonly maxMemoryMb: number; readonly forget: () => void } | undefined;

/**
 * Loads the script and traces its entry in a worker thread under `limits`; a ScriptError if it runs out of time or
 * memory or ends the thread (process.exit). Whatever else the script does there (printing, throwing) is dropped:
 * the run in the main thread that follows does it again and reports it at the script's line.
 */
export async function probeScript(file: string, entry: string, inputs: readonly InputSpec[], limits: ScriptLimits): Promise<void> {
  const shown = displayPath(file);
  const doing = `loading ${shown} and tracing ${entry}`;
  const request: ProbeRequest = { file, entry, inputs };
  const previous = spare;
  spare = undefined;
  previous?.forget();
  const reused = previous?.maxMemoryMb === limits.maxMemoryMb ? previous.worker : undefined;
  if (previous && !reused) stop(previous.worker);
  const worker = reused ?? new Worker(bootstrap(), {
    eval: true, workerData: { scriptProbes: true }, resourceLimits: { maxOldGenerationSizeMb: limits.maxMemoryMb },
  });
  let settle!: { resolve: () => void; reject: (e: Error) => void };
  const probed = new Promise<void>((resolve, reject) => { settle = { resolve, reject }; });
  let started = false;
  let finished = false;
  let timer: NodeJS.Timeout | undefined;
  const onMessage = (m: string) => {
    if (m === 'loaded') {
      worker.postMessage(request);
    } else if (m === 'started') {
      // tsfuse's tracer has loaded in the worker: from here on the time is the script's (with the rest of tsfuse that
      // it imports, a fraction of a second).
      started = true;
      timer = setTimeout(() => settle.reject(new ScriptError(`${doing} took longer than the limit of ${limits.timeoutSeconds} s ` +
        '(--timeout): does it loop forever?')), limits.timeoutSeconds * 1000);
    } else if (m === 'done') {
      finished = true;
      settle.resolve();
    }
  };
  const onError = (e: Error) => {
    if ((e as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY') {
      settle.reject(new ScriptError(`${doing} used more than the limit of ${limits.maxMemoryMb} MB of memory (--max-memory)`));
    } else if (started) {
      settle.resolve(); // the script's own error, reported by the traced run at its line
    } else {
      settle.reject(e);
    }
  };
  const onExit = (code: number) => settle.reject(started
    ? new ScriptError(`${doing}: the script ended its thread (process.exit(${code})); a model script returns its tensors`)
    : new Error(`the worker that runs model scripts stopped before it started (exit code ${code})`));
  worker.on('message', onMessage).on('error', onError).on('exit', onExit).ref();
  if (reused) worker.postMessage(request);
  try {
    await probed;
  } finally {
    clearTimeout(timer);
    worker.off('message', onMessage).off('error', onError).off('exit', onExit);
    // Traced in time, the thread alive (an error of the script's own may have ended it): kept for the next probe.
    if (finished) keepSpare(worker, limits.maxMemoryMb);
    else await stop(worker);
  }
}

/**
 * Ends a worker no one waits on. It may still report an error as it stops (a script over its time limit running out
 * of memory meanwhile: seen in CI): with no listener, that error would end the process.
 */
function stop(worker: Worker): Promise<number> {
  worker.on('error', () => {});
  return worker.terminate();
}

/** Keeps `worker` as the spare (in place of any other), not holding the process open, until it is taken or ends. */
function keepSpare(worker: Worker, maxMemoryMb: number): void {
  if (spare) {
    spare.forget();
    void stop(spare.worker);
  }
  const drop = () => {
    if (spare?.worker === worker) spare = undefined;
  };
  worker.on('error', drop).on('exit', drop).unref();
  spare = { worker, maxMemoryMb, forget: () => worker.off('error', drop).off('exit', drop) };
}

/**
 * The worker's first code: TypeScript through tsx, then this module. tsx is registered for ES modules as
 * bin/tsfuse.mjs registers it (so that `tsfuse` in a checkout's script means its sources) and for CommonJS too: a
 * script outside any `"type": "module"` package is CommonJS to Node, which `node --import tsx` (how the tests run)
 * loads, and the worker must load every script the main thread can.
 */
function bootstrap(): string {
  const here = fileURLToPath(import.meta.url);
  const options = here.endsWith('.ts') ? { tsconfig: path.resolve(path.dirname(here), '../tsconfig.json') } : {};
  const [cjs, esm] = ['tsx/cjs/api', 'tsx/esm/api'].map((m) => JSON.stringify(import.meta.resolve(m)));
  return `Promise.all([import(${cjs}), import(${esm})])` +
    `.then(([cjs, esm]) => { cjs.register(); esm.register(${JSON.stringify(options)}); })` +
    `.then(() => import(${JSON.stringify(import.meta.url)}))`;
}

/** In the worker, once tsfuse's tracer has loaded: says it is starting, then loads the script and traces the entry. */
async function probe({ file, entry, inputs }: ProbeRequest): Promise<void> {
  parentPort!.postMessage('started');
  try {
    type Entry = (...args: Tensor[]) => Tensor | Tensor[];
    const mod = await import(pathToFileURL(file).href) as Record<string, Entry> & { default?: Record<string, Entry> };
    // A CommonJS script's exports arrive as its default export.
    trace(entry, inputs, mod[entry] ?? mod.default?.[entry]);
  } catch {
    // Reported by the traced run in the main thread.
  }
  parentPort!.postMessage('done');
}

// The worker: loaded, it waits for scripts to probe, one at a time. What they print is dropped (the traced run in the
// main thread prints it); a worker with its output piped to the main thread would hold the process open while kept.
if (!isMainThread && (workerData as { scriptProbes?: boolean } | undefined)?.scriptProbes) {
  process.stdout.write = process.stderr.write = () => true;
  parentPort!.on('message', (request: ProbeRequest) => void probe(request));
  parentPort!.postMessage('loaded');
}
