// Waiting for a CPU adapter without taking a core from it. Dawn for Node waits for the GPU by polling: while one of
// its promises (mapAsync, onSubmittedWorkDone, popErrorScope) is pending, each poll schedules the next with
// setImmediate, a core busy for the whole wait. On a GPU that buys latency; on a CPU adapter (lavapipe) the busy
// core is one the shaders should run on (a tiny Llama's 24-token logits on a 2-core machine: 1.0 → 0.6 s wall, 1.8 →
// 1.1 s of CPU). There the polls are paced: those in the first SPIN_MS of a wait still come at once, later ones once
// a millisecond (a timer). Dawn looks setImmediate up on the global object each time it schedules a poll, so the
// paced one is installed only while a call of ours starts a wait and while Dawn's poll runs; nothing else sees it.
// Browsers have no setImmediate and do their own waiting: there this changes nothing.

const SPIN_MS = 0.5;

const immediate = (globalThis as { setImmediate?: typeof setImmediate }).setImmediate;
/** When the wait being polled started. */
let since = 0;

function pacedImmediate(poll: () => void): unknown {
  const run = () => withPacedPolls(poll);
  return performance.now() - since < SPIN_MS ? immediate!(run) : setTimeout(run, 0);
}

function withPacedPolls<T>(f: () => T): T {
  const g = globalThis as { setImmediate?: unknown };
  const saved = g.setImmediate;
  g.setImmediate = pacedImmediate;
  try {
    return f();
  } finally {
    g.setImmediate = saved;
  }
}

/** Whether waits on `gpu` should be paced: a CPU adapter (WebGPU's fallback adapter) under Node. */
export function pacesPolls(gpu: GPUDevice): boolean {
  const info = (gpu as GPUDevice & { adapterInfo?: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).adapterInfo;
  return immediate !== undefined && info?.isFallbackAdapter === true;
}

/** Calls `start` (which begins a Dawn wait: mapAsync, onSubmittedWorkDone, popErrorScope) with Dawn's polls paced. */
export function pacedWait<T>(start: () => T): T {
  since = performance.now();
  return withPacedPolls(start);
}
