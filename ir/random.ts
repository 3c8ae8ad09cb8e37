// The random number generator of the `random` op, defined once over an integer arithmetic so that the reference
// semantics (JavaScript numbers) and every kernel (kernel-IR i32 expressions) compute the same bits: a uniform
// f32 in [0, 1) from a key (the seed) and a counter (the position). Park and Miller's minimal standard generator
// (x ← 48271·x mod 2³¹−1) stepped with Schrage's method, so no product leaves the i32 range on any backend,
// with a product of the state's low and high parts added between steps, which breaks the lattice a plain LCG
// leaves between neighbouring counters. Good for sampling tokens; not for cryptography.

/** What the recipe needs: i32 arithmetic (division and remainder truncate toward zero) and a branch-free select. */
export interface IntArith<T> {
  int(n: number): T;
  add(a: T, b: T): T;
  sub(a: T, b: T): T;
  mul(a: T, b: T): T;
  div(a: T, b: T): T;
  mod(a: T, b: T): T;
  /** a < 0 ? b : c */
  ifNegative(a: T, b: T, c: T): T;
  /** a <= 0 ? b : c */
  ifNotPositive(a: T, b: T, c: T): T;
}

const M = 2147483647;
const A = 48271;
const Q = 44488; // M / A
const R = 3399; // M % A

/** x in [1, M-1] → the next state, in [1, M-1]. */
function step<T>(ar: IntArith<T>, x: T): T {
  const t = ar.sub(ar.mul(ar.int(A), ar.mod(x, ar.int(Q))), ar.mul(ar.int(R), ar.div(x, ar.int(Q))));
  return ar.ifNegative(t, ar.add(t, ar.int(M)), t);
}

/** x in [1, M-1] plus y in [0, M-2], wrapped into [1, M-1] without overflowing i32. */
function addWrapped<T>(ar: IntArith<T>, x: T, y: T): T {
  const s = ar.add(ar.sub(x, ar.int(M - 1)), y);
  return ar.ifNotPositive(s, ar.add(s, ar.int(M - 1)), s);
}

/** Any i32 → [0, M-2]. */
function wrap<T>(ar: IntArith<T>, k: T): T {
  const r = ar.mod(k, ar.int(M - 1));
  return ar.ifNegative(r, ar.add(r, ar.int(M - 1)), r);
}

/**
 * A step, then the product of two parts of the state (each below 2¹⁵, so it stays in range) added back in:
 * the quadratic term is what makes neighbouring keys and counters diverge (an LCG alone is linear mod M).
 */
function mix<T>(ar: IntArith<T>, x: T): T {
  const y = step(ar, x);
  const q = ar.mul(ar.mod(y, ar.int(32749)), ar.mod(ar.div(y, ar.int(65536)), ar.int(32749)));
  return step(ar, addWrapped(ar, y, q));
}

/** The generator's state after mixing key and counter: 24 random bits as an integer in [0, 2²⁴). */
export function randomBits<T>(ar: IntArith<T>, key: T, counter: T): T {
  let x = mix(ar, addWrapped(ar, ar.int(1), wrap(ar, key)));
  x = addWrapped(ar, step(ar, x), wrap(ar, counter));
  for (let i = 0; i < 3; i++) x = mix(ar, x);
  x = step(ar, x);
  return ar.div(ar.sub(x, ar.int(1)), ar.int(128));
}

/** 2⁻²⁴: the bits times this is the uniform number, exactly, in f32. */
export const RANDOM_SCALE = 1 / 16777216;

const numbers: IntArith<number> = {
  int: (n) => n,
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => Math.trunc(a / b),
  mod: (a, b) => a % b,
  ifNegative: (a, b, c) => (a < 0 ? b : c),
  ifNotPositive: (a, b, c) => (a <= 0 ? b : c),
};

/** The uniform number in [0, 1) for a key and a counter (the reference semantics). */
export function randomUniform(key: number, counter: number): number {
  return randomBits(numbers, key | 0, counter | 0) * RANDOM_SCALE;
}
