// Loops over attention's keys that stop at the causal bound. Decode attention masks the scores of cache positions
// past the current one to −∞ (where(t ≤ pos, s, −∞)); what a loop over the keys adds past that bound is then the
// identity of its reduction: −∞ to a max, exp(−∞ − m) = 0 to a sum, 0 · v to a product with the values. So every
// such loop may run to the bound rather than to the cache's capacity, and an array of scores the masks read only
// below the bound need not be computed past it: decode reads the cache up to the position, not to its length.
//
// The one difference from running every term: a value past the bound that is not finite (a cache slot never
// written holds zeros, so none is) would have made the sum NaN; flash attention's tiles skip the same keys.
//
// The scheduler applies it on every device (in WGSL too: a bounded loop holds no barrier, so uniformity analysis
// has nothing to reject). Where a score's dot product is read 16 bytes at a time only over a constant extent
// (WebGPU), its own sum keeps that extent: the masked scores cost one parallel round of loads, where a bounded sum
// would lose its wide loads for every score.

import { add, int, KernelIR, KExpr, KStmt, offsetAlong, ROW, sub, varsOf } from './kernel-ir.ts';

/** For every value of the loop variable at or past `limit`, the expression is −∞ ('neginf') or 0 ('zero'). */
interface Beyond {
  readonly kind: 'neginf' | 'zero';
  readonly limit: KExpr;
}

type Reduce = Extract<KExpr, { k: 'reduce' }>;

const isConst = (e: KExpr, v: number) => e.k === 'const' && e.value === v;
const key = (e: KExpr) => JSON.stringify(e);
const binary = (op: 'min' | 'max' | 'lt', a: KExpr, b: KExpr): KExpr => ({ k: 'binary', op, a, b, t: op === 'lt' ? 'bool' : 'i32' });
/** n bounded by limit, never below 0. */
const clamp = (n: KExpr, limit: KExpr): KExpr => binary('max', binary('min', n, limit), int(0));

/** `limit` when cond is v + c ≤ x (or < x) with c and x not reading v: cond holds exactly for v < limit. */
function maskLimit(cond: KExpr, v: string): KExpr | undefined {
  if (cond.k !== 'binary' || (cond.op !== 'le' && cond.op !== 'lt')) return undefined;
  const c = offsetAlong(cond.a, v);
  if (!c || varsOf(cond.b).has(v)) return undefined;
  return sub(cond.op === 'le' ? add(cond.b, int(1)) : cond.b, c);
}

/** Where e, as a function of loop variable v, is −∞ or 0 from some bound on (arrays: what their elements are). */
function beyond(e: KExpr, v: string, arrays: ReadonlyMap<string, Beyond>): Beyond | undefined {
  const free = (x: KExpr) => !varsOf(x).has(v);
  const positive = (x: KExpr) => x.k === 'const' && x.value > 0;
  switch (e.k) {
    case 'select': {
      const limit = maskLimit(e.cond, v);
      if (!limit) return undefined;
      if (isConst(e.b, -Infinity)) return { kind: 'neginf', limit };
      if (isConst(e.b, 0)) return { kind: 'zero', limit };
      return undefined;
    }
    case 'elem': return e.index.k === 'var' && e.index.name === v ? arrays.get(e.array) : undefined;
    case 'cast': return e.t === 'f32' && e.a.t === 'f32' ? beyond(e.a, v, arrays) : undefined;
    case 'unary': {
      const a = beyond(e.a, v, arrays);
      return e.op === 'exp' && a?.kind === 'neginf' ? { kind: 'zero', limit: a.limit } : undefined;
    }
    case 'binary': {
      const [a, b] = [beyond(e.a, v, arrays), beyond(e.b, v, arrays)];
      switch (e.op) {
        case 'mul':
          if (a?.kind === 'zero') return a;
          if (b?.kind === 'zero') return b;
          if (a?.kind === 'neginf' && positive(e.b)) return a;
          if (b?.kind === 'neginf' && positive(e.a)) return b;
          return undefined;
        case 'div':
          if (a?.kind === 'zero' && free(e.b)) return a;
          if (a?.kind === 'neginf' && positive(e.b)) return a;
          return undefined;
        case 'add':
          if (a?.kind === 'neginf' && free(e.b)) return a;
          if (b?.kind === 'neginf' && free(e.a)) return b;
          return undefined;
        case 'sub':
          return a?.kind === 'neginf' && free(e.b) ? a : undefined;
        default:
          return undefined;
      }
    }
    default:
      return undefined;
  }
}

/** A reduction over its variable bounded where its terms past a bound are its identity. */
function boundReduce(op: Reduce['op'], v: string, n: KExpr, body: KExpr, arrays: ReadonlyMap<string, Beyond>): KExpr {
  const b = beyond(body, v, arrays);
  const identity = op === 'max' ? 'neginf' : op === 'sum' ? 'zero' : undefined;
  return b && b.kind === identity ? clamp(n, b.limit) : n;
}

/** Every reduction inside e (nested ones too) bounded where it can be. */
function boundExpr(e: KExpr, arrays: ReadonlyMap<string, Beyond>): KExpr {
  switch (e.k) {
    case 'const': case 'var': return e;
    case 'load': return { ...e, index: boundExpr(e.index, arrays) };
    case 'elem': return { ...e, index: boundExpr(e.index, arrays) };
    case 'unary': case 'cast': return { ...e, a: boundExpr(e.a, arrays) };
    case 'binary': return { ...e, a: boundExpr(e.a, arrays), b: boundExpr(e.b, arrays) };
    case 'select': return { ...e, cond: boundExpr(e.cond, arrays), a: boundExpr(e.a, arrays), b: boundExpr(e.b, arrays) };
    case 'reduce': {
      const body = boundExpr(e.body, arrays);
      return { ...e, body, n: boundReduce(e.op, e.v, e.n, body, arrays) };
    }
    default: return e satisfies never;
  }
}

/**
 * Arrays read only under a mask: every read elem(A, w) is the chosen side of a select whose condition holds only
 * for w below one bound, the same for every read. Their elements at or past it are never used.
 */
function maskedReads(body: readonly KStmt[]): Map<string, KExpr> {
  const limits = new Map<string, string | null>();
  const exprs = new Map<string, KExpr>();
  const note = (array: string, limit: KExpr | undefined) => {
    const k = limit ? key(limit) : null;
    if (limits.has(array) && limits.get(array) !== k) limits.set(array, null);
    else if (!limits.has(array)) limits.set(array, k);
    if (limit) exprs.set(array, limit);
  };
  const visit = (e: KExpr, guard?: { v: string; limit: KExpr }): void => {
    switch (e.k) {
      case 'const': case 'var': return;
      case 'elem':
        note(e.array, guard && e.index.k === 'var' && e.index.name === guard.v ? guard.limit : undefined);
        return visit(e.index);
      case 'load': return visit(e.index);
      case 'unary': case 'cast': return visit(e.a, guard);
      case 'binary': visit(e.a, guard); return visit(e.b, guard);
      case 'select': {
        visit(e.cond);
        const c = e.cond;
        const v = c.k === 'binary' && c.a.k === 'var' ? c.a.name : c.k === 'binary' ? sumVar(c.a) : undefined;
        const limit = v ? maskLimit(c, v) : undefined;
        visit(e.a, v && limit ? { v, limit } : guard);
        return visit(e.b, guard);
      }
      case 'reduce': visit(e.n); return visit(e.body);
      default: return e satisfies never;
    }
  };
  for (const st of body) {
    if (st.k === 'let') visit(st.value);
    else if (st.k === 'coop') { visit(st.n); visit(st.body); }
    else if (st.k === 'array') visit(st.value);
    else { visit(st.n); visit(st.index); visit(st.value); }
  }
  return new Map([...limits].filter(([, k]) => k !== null).map(([a]) => [a, exprs.get(a)!]));
}

/** The loop variable in a sum of terms (the mask's v + c): the one var term not inside a product. */
function sumVar(e: KExpr): string | undefined {
  if (e.k === 'var') return e.name;
  if (e.k === 'binary' && e.op === 'add') return sumVar(e.a) ?? sumVar(e.b);
  return undefined;
}

export interface BoundOptions {
  /** Whether the sums of array elements read only under the mask stop at its bound too (default true). */
  readonly maskedElements?: boolean;
}

/**
 * The kernel with its loops over attention's keys bounded by the causal mask; the kernel itself where nothing is
 * masked. Only the row form changes (tile forms have their own bound).
 */
export function boundKeyLoops(k: KernelIR, opts: BoundOptions = {}): KernelIR {
  if (k.kind !== 'attention') return k;
  const arrays = new Map<string, Beyond>();
  let changed = false;
  const bounded = k.body.map((st): KStmt => {
    switch (st.k) {
      case 'let': return st;
      case 'coop': {
        const body = boundExpr(st.body, arrays);
        const n = boundReduce(st.op, st.v, st.n, body, arrays);
        changed ||= n !== st.n || body !== st.body;
        return { ...st, body, n };
      }
      case 'array': {
        const value = boundExpr(st.value, arrays);
        const b = beyond(value, st.v, arrays);
        if (b) arrays.set(st.name, b);
        return { ...st, value };
      }
      case 'store': return { ...st, value: boundExpr(st.value, arrays) };
      default: return st satisfies never;
    }
  });
  // Arrays of scores read only below the mask's bound: their elements' own sums stop there too (0 terms past it).
  // The bound must be the same for the whole row (read off the row's lets, the row and the sizes).
  const uniform = new Set([ROW, ...k.sizes, ...k.body.flatMap((st) => (st.k === 'let' || st.k === 'coop' ? [st.name] : []))]);
  const unread = opts.maskedElements === false ? new Map<string, KExpr>() : maskedReads(bounded);
  const body = bounded.map((st): KStmt => {
    const limit = st.k === 'array' ? unread.get(st.name) : undefined;
    if (st.k !== 'array' || !limit || ![...varsOf(limit)].every((v) => uniform.has(v))) return st;
    changed = true;
    const below = binary('lt', { k: 'var', name: st.v, t: 'i32' }, limit);
    return { ...st, value: onlyBelow(st.value, below) };
  });
  return changed ? { ...k, body } : k;
}

/** e with its top reductions running no terms where `below` does not hold. */
function onlyBelow(e: KExpr, below: KExpr): KExpr {
  switch (e.k) {
    case 'reduce': return { ...e, n: { k: 'select', cond: below, a: e.n, b: int(0), t: 'i32' } };
    case 'const': case 'var': case 'load': case 'elem': return e;
    case 'unary': case 'cast': return { ...e, a: onlyBelow(e.a, below) };
    case 'binary': return { ...e, a: onlyBelow(e.a, below), b: onlyBelow(e.b, below) };
    case 'select': return { ...e, cond: onlyBelow(e.cond, below), a: onlyBelow(e.a, below), b: onlyBelow(e.b, below) };
    default: return e satisfies never;
  }
}

/** The largest value an extent can take (a bounded loop's capacity), where it has one. */
export function maxExtent(n: KExpr): number | undefined {
  if (n.k === 'const') return n.value;
  if (n.k === 'select') {
    const [a, b] = [maxExtent(n.a), maxExtent(n.b)];
    return a !== undefined && b !== undefined ? Math.max(a, b) : undefined;
  }
  if (n.k === 'binary' && n.op === 'min') {
    const [a, b] = [maxExtent(n.a), maxExtent(n.b)];
    return a === undefined ? b : b === undefined ? a : Math.min(a, b);
  }
  if (n.k === 'binary' && n.op === 'max' && isConst(n.b, 0)) return maxExtent(n.a);
  return undefined;
}
