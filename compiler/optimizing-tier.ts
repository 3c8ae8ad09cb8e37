// Compiling a model runs once per process and lasts a few hundred milliseconds: too short for V8's optimizing
// compiler (TurboFan) to pay off. Left on, it compiles the passes' hot functions on background threads and costs
// about as much CPU as the compile itself (Llama-3.2-1B: ~0.58 → ~0.30 s of CPU with it off, and less wall time
// too); the baseline tiers (Ignition, Sparkplug) run the compile alone. It is turned back on afterwards: the CPU
// backend's kernels and the interpreter need it. compileModule itself leaves it on: a process compiling many graphs
// (a test file) gains from it (test/compiler/deep-chains: 6 s of CPU with it, 9 s without).

import v8 from 'node:v8';

/** Started with the optimizing tier off (or no JIT at all): then it stays off. */
const offFromStart = process.execArgv.some((a) => /^--(no-opt|no-turbofan|jitless)$/.test(a));
let depth = 0;

/** Runs `fn` (synchronous) with V8's optimizing tier off (process-wide, as V8's flags are), then turns it back on. */
export function withoutOptimizingTier<T>(fn: () => T): T {
  if (offFromStart) return fn();
  if (depth++ === 0) v8.setFlagsFromString('--no-opt');
  try {
    return fn();
  } finally {
    if (--depth === 0) v8.setFlagsFromString('--opt');
  }
}
