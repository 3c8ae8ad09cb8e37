// The `random` op in the kernel IR. Its recipe (ir/random.ts) runs as a helper function of each target
// (backends/random-source.ts; ir/random.ts itself in JavaScript): as an expression tree, each intermediate value
// read twice, it would grow exponentially.

import { KExpr } from './kernel-ir.ts';

/** random(key, counter): one kernel-IR operation, printed as a call of the target's tf_random. */
export function lowerRandom(key: KExpr, counter: KExpr): KExpr {
  return { k: 'binary', op: 'random', a: key, b: counter, t: 'f32' };
}
