// The kernel IR: what a fused kernel computes, at the level of loops, loads, math and stores. backends/lower.ts
// produces it once per kernel; backends/schedule.ts decides how a device's threads share it; the JavaScript, WGSL
// and CUDA renderers print the scheduled kernel and decide nothing.
//
// A kernel runs once per row (a GPU workgroup). Within a row, statements run in order:
//   let    a row-uniform scalar;
//   coop   a reduction over a range whose result the whole row shares (threads split the range, then combine);
//   array  a row-local array (GPU shared memory) whose elements are computed in parallel;
//   store  a parallel loop over a range writing one element per iteration.
// Expressions may hold serial reductions (one thread loops).

import { DType } from '../ir/dtype.ts';
import { KernelKind } from '../ir/graph.ts';

/** Types expressions compute in: floats of every width compute in f32. */
export type Scalar = 'f32' | 'i32' | 'bool';

export type UnaryOp = 'neg' | 'abs' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'recip' | 'sin' | 'cos' | 'tanh' | 'sigmoid'
  | 'silu' | 'floor' | 'not';
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'max' | 'min' | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge'
  | 'and' | 'or' | 'idiv' | 'imod'
  /**
   * a as an index into [0, b) (a gather's row, a state write's start): a host kernel throws a RangeError naming it
   * when it is outside, a GPU kernel clamps it into the range (README, Numerics).
   */
  | 'index'
  /** a uniform f32 in [0, 1) from an i32 key and counter (ir/random.ts) */
  | 'random';
export type ReduceOp = 'sum' | 'max' | 'argmax';

export type KExpr =
  | { readonly k: 'const'; readonly value: number; readonly t: Scalar }
  /** A loop or row variable, a let, or a size symbol (a kernel argument). */
  | { readonly k: 'var'; readonly name: string; readonly t: Scalar }
  | { readonly k: 'load'; readonly buf: number; readonly index: KExpr; readonly t: Scalar }
  | { readonly k: 'unary'; readonly op: UnaryOp; readonly a: KExpr; readonly t: Scalar }
  | { readonly k: 'binary'; readonly op: BinaryOp; readonly a: KExpr; readonly b: KExpr; readonly t: Scalar }
  /** Only the chosen side is evaluated (a concat picks one of its operands' loads). */
  | { readonly k: 'select'; readonly cond: KExpr; readonly a: KExpr; readonly b: KExpr; readonly t: Scalar }
  /**
   * `round`: a cast to a 16-bit float rounds to it (the result still computes in f32). `u32`: the i32 side (the
   * operand, or the result) holds the bits of a u32, as u32 values compute.
   */
  | { readonly k: 'cast'; readonly a: KExpr; readonly t: Scalar; readonly round?: 'f16' | 'bf16'; readonly u32?: boolean }
  /** One thread loops `v` over [0, n). */
  | { readonly k: 'reduce'; readonly op: ReduceOp; readonly v: string; readonly n: KExpr; readonly body: KExpr; readonly t: Scalar }
  | { readonly k: 'elem'; readonly array: string; readonly index: KExpr; readonly t: Scalar };

export type KStmt =
  | { readonly k: 'let'; readonly name: string; readonly value: KExpr }
  | { readonly k: 'coop'; readonly name: string; readonly op: ReduceOp; readonly v: string; readonly n: KExpr; readonly body: KExpr }
  | { readonly k: 'array'; readonly name: string; readonly v: string; readonly n: number; readonly value: KExpr }
  | { readonly k: 'store'; readonly buf: number; readonly v: string; readonly n: KExpr; readonly index: KExpr; readonly value: KExpr };

/** Where a kernel's buffer lives in the runtime's memory. */
export type Binding =
  | { readonly kind: 'input' | 'param' | 'state'; readonly name: string }
  | { readonly kind: 'output'; readonly index: number }
  | { readonly kind: 'temp'; readonly slot: number };

export interface KBuffer {
  readonly binding: Binding;
  /** The dtype stored in memory (16-bit floats stay 16-bit). */
  readonly dtype: DType;
  readonly elems: KExpr;
  readonly written: boolean;
}

/**
 * A contraction over tiles (a projection of many rows: the prefill's): for m < rows, n < n,
 *   acc_i = Σ_{k < k} a(m, k) · b_i(k, n)
 * then the stores, at (m, n), read the accs (an epilogue: residual add, SiLU·mul). `a` is elementwise over loads
 * (a prologue: RMSNorm's row scale applied as the tiles load); every `b_i` is a weight element. Tiles of rows ×
 * columns are the scheduler's: each weight tile is read once per tile of rows, not once per row.
 */
export interface GemmIR {
  /** Rows (m's extent). */
  readonly rows: KExpr;
  /** Loop variables the expressions read: the row, the column, the position along the contraction. */
  readonly m: string;
  readonly n: string;
  readonly k: string;
  readonly columns: number;
  readonly depth: number;
  readonly a: KExpr;
  readonly b: readonly KExpr[];
  /** The names the stores read each product's sum by (one per b). */
  readonly accs: readonly string[];
  readonly stores: readonly { readonly buf: number; readonly index: KExpr; readonly value: KExpr }[];
}

/**
 * Attention over many query rows as tiles (the prefill's): for each batch index b (heads) and query i < queries,
 *   out(b, i, e) = Σ_t softmax_t(score(b, i, t)) · v(b, t, e),   score read from qk = Σ_d q(b, i, d) · k(b, d, t)
 * computed with an online softmax over tiles of keys, so no row of scores is ever whole. Keys at or past `limit`
 * (an expression of b and i, when the score masks them to −∞: the causal bound) are skipped.
 */
export interface FlashIR {
  readonly b: string;
  readonly i: string;
  readonly t: string;
  readonly d: string;
  readonly e: string;
  readonly batch: number;
  readonly queries: KExpr;
  readonly keys: number;
  readonly depth: number;
  readonly width: number;
  readonly q: KExpr;
  readonly k: KExpr;
  /** Reads `qk` (the product at (b, i, t)). */
  readonly score: KExpr;
  readonly qk: string;
  readonly v: KExpr;
  readonly limit?: KExpr;
  /**
   * Where the keys (values) are a state that this step updates in place (a KV cache after its write): the elements
   * of their buffer the update writes, [from, to), read from inputs only. The rest was written before the step.
   */
  readonly fresh?: { readonly k?: FreshRange; readonly v?: FreshRange };
  /**
   * The step's cache writes, where this kernel makes them (one query row: compiler/passes/fuse.ts joins them into
   * attention): a store loop each, whole (for row 0 of 1); the form shares them out among its workgroups. Their rows
   * are read from FreshRange.value, never from memory.
   */
  readonly updates?: readonly Extract<KStmt, { k: 'store' }>[];
  /** Stores at (b, i, e) reading `out`. */
  readonly out: string;
  readonly stores: readonly { readonly buf: number; readonly index: KExpr; readonly value: KExpr }[];
}

/** A run of a buffer's elements, [from, to). */
export interface FreshRange {
  readonly from: KExpr;
  readonly to: KExpr;
  /**
   * Where the kernel computes the run itself (it writes it, FlashIR.updates, or a later kernel does:
   * PassContext.cacheWrites): its elements' values, an expression of the flash's indices as the operand is (b, t and d
   * for keys, e for values), to use in place of memory's. Only with one query row.
   */
  readonly value?: KExpr;
}

export interface KernelIR {
  readonly name: string;
  /** What fusion built the kernel around (it decided the rows). */
  readonly kind: KernelKind;
  /** The IR lines of the nodes it fused, for the comment at the top of the generated code. */
  readonly fused: readonly string[];
  readonly buffers: readonly KBuffer[];
  /** Symbolic sizes the kernel reads as arguments (e.g. S). */
  readonly sizes: readonly string[];
  /** Number of rows (workgroups). */
  readonly rows: KExpr;
  readonly body: readonly KStmt[];
  /**
   * Set for a contraction of many rows: the kernel as tiles. `rows` and `body` are then the same kernel row by row,
   * which the scheduler picks for few rows (or where the tiles do not fit the device); both share the buffers.
   */
  readonly gemm?: GemmIR;
  /** Set for attention over many query rows: the kernel as tiles of queries and keys, beside its row form. */
  readonly flash?: FlashIR;
}

export const ROW = 'row';

// ---- constructors that fold the arithmetic index expressions are full of ----

export const int = (value: number): KExpr => ({ k: 'const', value, t: 'i32' });
export const f32 = (value: number): KExpr => ({ k: 'const', value, t: 'f32' });
export const ivar = (name: string): KExpr => ({ k: 'var', name, t: 'i32' });

const isConst = (e: KExpr, v: number) => e.k === 'const' && e.value === v;

export function add(a: KExpr, b: KExpr): KExpr {
  if (isConst(a, 0)) return b;
  if (isConst(b, 0)) return a;
  if (a.k === 'const' && b.k === 'const') return int(a.value + b.value);
  return { k: 'binary', op: 'add', a, b, t: a.t };
}

export function sub(a: KExpr, b: KExpr): KExpr {
  if (isConst(b, 0)) return a;
  if (a.k === 'const' && b.k === 'const') return int(a.value - b.value);
  return { k: 'binary', op: 'sub', a, b, t: a.t };
}

export function mul(a: KExpr, b: KExpr): KExpr {
  if (isConst(a, 1)) return b;
  if (isConst(b, 1)) return a;
  if (isConst(a, 0) || isConst(b, 0)) return int(0);
  if (a.k === 'const' && b.k === 'const') return int(a.value * b.value);
  return { k: 'binary', op: 'mul', a, b, t: a.t };
}

export function idiv(a: KExpr, b: KExpr): KExpr {
  if (isConst(b, 1)) return a;
  if (a.k === 'const' && b.k === 'const') return int(Math.floor(a.value / b.value));
  return { k: 'binary', op: 'idiv', a, b, t: 'i32' };
}

export function imod(a: KExpr, b: KExpr): KExpr {
  if (isConst(b, 1)) return int(0);
  if (a.k === 'const' && b.k === 'const') return int(a.value % b.value);
  return { k: 'binary', op: 'imod', a, b, t: 'i32' };
}

/** The statement's reductions by loop variable, at any depth (a plan may name a nested one). */
export function reductionsOf(st: KStmt): Map<string, Extract<KExpr, { k: 'reduce' }>> {
  const out = new Map<string, Extract<KExpr, { k: 'reduce' }>>();
  const visit = (e: KExpr): void => {
    switch (e.k) {
      case 'reduce': out.set(e.v, e); visit(e.n); visit(e.body); break;
      case 'load': case 'elem': visit(e.index); break;
      case 'unary': case 'cast': visit(e.a); break;
      case 'binary': visit(e.a); visit(e.b); break;
      case 'select': visit(e.cond); visit(e.a); visit(e.b); break;
      case 'const': case 'var': break;
      default: e satisfies never;
    }
  };
  switch (st.k) {
    case 'let': visit(st.value); break;
    case 'coop': out.set(st.v, { k: 'reduce', op: st.op, v: st.v, n: st.n, body: st.body, t: st.body.t }); visit(st.body); break;
    case 'array': visit(st.value); break;
    case 'store': visit(st.value); visit(st.index); break;
    default: st satisfies never;
  }
  return out;
}

/** The loads an expression makes (its own and those of its indices), in order. */
export function loadsOf(e: KExpr, out: Extract<KExpr, { k: 'load' }>[] = []): Extract<KExpr, { k: 'load' }>[] {
  switch (e.k) {
    case 'load': out.push(e); loadsOf(e.index, out); break;
    case 'elem': loadsOf(e.index, out); break;
    case 'unary': case 'cast': loadsOf(e.a, out); break;
    case 'binary': loadsOf(e.a, out); loadsOf(e.b, out); break;
    case 'select': loadsOf(e.cond, out); loadsOf(e.a, out); loadsOf(e.b, out); break;
    case 'reduce': loadsOf(e.n, out); loadsOf(e.body, out); break;
    case 'const': case 'var': break;
    default: e satisfies never;
  }
  return out;
}

/** Variables an expression reads (to tell row-uniform expressions from those that vary within a row). */
export function varsOf(e: KExpr, out = new Set<string>()): Set<string> {
  switch (e.k) {
    case 'const': break;
    case 'var': out.add(e.name); break;
    case 'load': varsOf(e.index, out); break;
    case 'elem': varsOf(e.index, out); break;
    case 'unary': case 'cast': varsOf(e.a, out); break;
    case 'binary': varsOf(e.a, out); varsOf(e.b, out); break;
    case 'select': varsOf(e.cond, out); varsOf(e.a, out); varsOf(e.b, out); break;
    case 'reduce': {
      varsOf(e.n, out);
      const inner = varsOf(e.body);
      inner.delete(e.v);
      for (const v of inner) out.add(v);
      break;
    }
    default: e satisfies never;
  }
  return out;
}

/**
 * Undoes the division and remainder a reshape puts into an index when the reshape is the identity on the linear
 * index (heads folded back into a row), so renderers can see that consecutive elements are read:
 *   (x / c) * c + x % c = x        ((x / a) % b) * a + x % a = x % (a·b)
 * Terms are matched within one sum, in any order; x is any expression (compared structurally).
 */
export function simplifyIndex(e: KExpr, bounds: ReadonlyMap<string, number> = new Map()): KExpr {
  e = simplifyRanges(e, bounds);
  const terms = sumTerms(e);
  if (terms.length < 2) return e;
  const key = (x: KExpr) => JSON.stringify(x);
  const constOf = (x: KExpr) => (x.k === 'const' ? x.value : undefined);
  /** [x, c] when t = (x / c) * c, or [((x / a) % b), a] shapes: returns the pieces of a scaled quotient term. */
  const scaled = (t: KExpr): { inner: KExpr; scale: number } | undefined => {
    if (t.k !== 'binary' || t.op !== 'mul') return undefined;
    const [a, b] = constOf(t.b) !== undefined ? [t.a, t.b] : [t.b, t.a];
    const c = constOf(b);
    return c === undefined ? undefined : { inner: a, scale: c };
  };
  let changed = true;
  while (changed) {
    changed = false;
    for (let i = 0; i < terms.length && !changed; i++) {
      const m = terms[i];
      if (m.k !== 'binary' || m.op !== 'imod' || constOf(m.b) === undefined) continue;
      const [x, a] = [m.a, constOf(m.b)!];
      for (let j = 0; j < terms.length && !changed; j++) {
        const s = j === i ? undefined : scaled(terms[j]);
        if (!s || s.scale !== a) continue;
        const q = s.inner;
        // (x / a) * a + x % a = x
        if (q.k === 'binary' && q.op === 'idiv' && constOf(q.b) === a && key(q.a) === key(x)) {
          terms.splice(Math.max(i, j), 1);
          terms.splice(Math.min(i, j), 1, x);
          changed = true;
        }
        // ((x / a) % b) * a + x % a = x % (a·b)
        const d = q.k === 'binary' && q.op === 'imod' ? q.a : undefined;
        if (!changed && d && q.k === 'binary' && d.k === 'binary' && d.op === 'idiv' && constOf(d.b) === a && key(d.a) === key(x) && constOf(q.b) !== undefined) {
          terms.splice(Math.max(i, j), 1);
          terms.splice(Math.min(i, j), 1, imod(x, int(a * constOf(q.b)!)));
          changed = true;
        }
      }
    }
  }
  // v % m = v when the loop variable v stays below m.
  const inRange = (t: KExpr) => (t.k === 'binary' && t.op === 'imod' && t.a.k === 'var' && t.b.k === 'const' &&
    (bounds.get(t.a.name) ?? Infinity) <= t.b.value ? t.a : t);
  return terms.map(inRange).reduce((acc, t) => add(acc, t), int(0));
}

/** The value of a size expression (a row count, a buffer length) for given symbolic sizes. */
export function evalSize(e: KExpr, sizes: Readonly<Record<string, number>>): number {
  switch (e.k) {
    case 'const': return e.value;
    case 'var': {
      const v = sizes[e.name];
      if (v === undefined) throw new Error(`size ${e.name} is not bound`);
      return v;
    }
    case 'binary': {
      const [a, b] = [evalSize(e.a, sizes), evalSize(e.b, sizes)];
      switch (e.op) {
        case 'mul': return a * b;
        case 'add': return a + b;
        case 'sub': return a - b;
        case 'idiv': return Math.trunc(a / b);
        case 'imod': return a % b;
        case 'lt': return a < b ? 1 : 0;
        default: break;
      }
      break;
    }
    // The scheduler's choice between a kernel's forms by its size (ScheduledKernel.tilesFrom).
    case 'select': return evalSize(e.cond, sizes) ? evalSize(e.a, sizes) : evalSize(e.b, sizes);
    default: break;
  }
  throw new Error('a kernel size is not integer arithmetic over the symbolic sizes');
}

/** The terms of a sum, however it is nested. */
export function sumTerms(e: KExpr, out: KExpr[] = []): KExpr[] {
  if (e.k === 'binary' && e.op === 'add') {
    sumTerms(e.a, out);
    sumTerms(e.b, out);
  } else {
    out.push(e);
  }
  return out;
}

/**
 * `base` when `index` = v + base with base not reading v: consecutive v read consecutive elements (what the
 * scheduler looks for to read 16 bytes at a time).
 */
export function offsetAlong(index: KExpr, v: string): KExpr | undefined {
  const terms = sumTerms(index);
  const at = terms.findIndex((t) => t.k === 'var' && t.name === v);
  if (at < 0) return undefined;
  const rest = terms.filter((_, i) => i !== at);
  if (rest.some((t) => varsOf(t).has(v))) return undefined;
  return rest.reduce<KExpr>((a, t) => add(a, t), int(0));
}

/** Whether an index expression is a multiple of m for every value of its variables. */
function multipleOf(e: KExpr, m: number): boolean {
  if (e.k === 'const') return e.value % m === 0;
  if (e.k !== 'binary') return false;
  if (e.op === 'add' || e.op === 'sub') return multipleOf(e.a, m) && multipleOf(e.b, m);
  if (e.op === 'mul') return multipleOf(e.a, m) || multipleOf(e.b, m);
  return false;
}

/**
 * Whether `index` reads runs of n consecutive elements along v that start at multiples of n: for every v0 that is a
 * multiple of n and j < n, index(v0 + j) = index(v0) + j, and index(v0) is a multiple of n. Wider than offsetAlong:
 * divisions and remainders of v by multiples of n (a reshape putting heads side by side) keep the runs whole.
 */
export function runsAlong(index: KExpr, v: string, n: number): boolean {
  const r = runStep(index, v, n);
  return r !== undefined && r.step === 1 && r.aligned;
}

/** e(v0 + j) = e(v0) + step · j for j < n and v0 a multiple of n; aligned: e(v0) is a multiple of n. */
function runStep(e: KExpr, v: string, n: number): { step: number; aligned: boolean } | undefined {
  if (!varsOf(e).has(v)) return { step: 0, aligned: multipleOf(e, n) };
  if (e.k === 'var') return { step: 1, aligned: true };
  if (e.k !== 'binary') return undefined;
  const constant = (x: KExpr) => (x.k === 'const' ? x.value : undefined);
  switch (e.op) {
    case 'add': case 'sub': {
      const [a, b] = [runStep(e.a, v, n), runStep(e.b, v, n)];
      if (!a || !b) return undefined;
      return { step: e.op === 'add' ? a.step + b.step : a.step - b.step, aligned: a.aligned && b.aligned };
    }
    case 'mul': {
      const [a, b] = [runStep(e.a, v, n), runStep(e.b, v, n)];
      if (!a || !b) return undefined;
      // Constant over the run times constant over the run; else a stepping side times a number.
      if (a.step === 0 && b.step === 0) return { step: 0, aligned: a.aligned || b.aligned };
      const [c, r] = constant(e.a) !== undefined ? [constant(e.a)!, b] : constant(e.b) !== undefined ? [constant(e.b)!, a] : [undefined, undefined];
      return c === undefined ? undefined : { step: r!.step * c, aligned: r!.aligned || c % n === 0 };
    }
    case 'idiv': case 'imod': {
      const [r, by] = [runStep(e.a, v, n), runStep(e.b, v, n)];
      if (!r || !by || by.step !== 0) return undefined;
      const d = constant(e.b);
      // Of what is constant over the run, constant; a run starting at a multiple of n never crosses a multiple of d
      // when n divides d: the quotient stays, the remainder runs on.
      if (r.step === 0) return { step: 0, aligned: e.op === 'imod' && r.aligned && d !== undefined && d % n === 0 };
      if (r.step !== 1 || !r.aligned || d === undefined || d % n !== 0) return undefined;
      return e.op === 'idiv' ? { step: 0, aligned: false } : { step: 1, aligned: true };
    }
    default: return undefined;
  }
}

/** Whether `test` holds for the expression or any expression inside it (indices, operands, bounds, bodies). */
export function anyExpr(e: KExpr, test: (x: KExpr) => boolean): boolean {
  if (test(e)) return true;
  switch (e.k) {
    case 'const': case 'var': return false;
    case 'load': case 'elem': return anyExpr(e.index, test);
    case 'unary': case 'cast': return anyExpr(e.a, test);
    case 'binary': return anyExpr(e.a, test) || anyExpr(e.b, test);
    case 'select': return anyExpr(e.cond, test) || anyExpr(e.a, test) || anyExpr(e.b, test);
    case 'reduce': return anyExpr(e.n, test) || anyExpr(e.body, test);
    default: return e satisfies never;
  }
}

/** The expressions a statement evaluates at its top. */
export function statementExprs(s: KStmt): KExpr[] {
  switch (s.k) {
    case 'let': case 'array': return [s.value];
    case 'coop': return [s.n, s.body];
    case 'store': return [s.n, s.index, s.value];
    default: return s satisfies never;
  }
}

/** Every expression a kernel evaluates at the top: its row form's statements, and its GEMM or flash tile form's. */
export function kernelExprs(k: KernelIR): KExpr[] {
  const out: KExpr[] = k.body.flatMap(statementExprs);
  const stores = (ss: readonly { readonly index: KExpr; readonly value: KExpr }[]) => ss.flatMap((x) => [x.index, x.value]);
  if (k.gemm) out.push(k.gemm.rows, k.gemm.a, ...k.gemm.b, ...stores(k.gemm.stores));
  if (k.flash) {
    const f = k.flash;
    const fresh = [f.fresh?.k, f.fresh?.v].flatMap((r) => (r ? [r.from, r.to, ...(r.value ? [r.value] : [])] : []));
    const updates = (f.updates ?? []).flatMap((u) => [u.n, u.index, u.value]);
    out.push(f.queries, f.q, f.k, f.v, f.score, ...(f.limit ? [f.limit] : []), ...stores(f.stores), ...fresh, ...updates);
  }
  return out;
}

/** The reductions of an expression not inside another reduction, in evaluation order. */
export function topReductions(e: KExpr, out: Extract<KExpr, { k: 'reduce' }>[] = []): Extract<KExpr, { k: 'reduce' }>[] {
  switch (e.k) {
    case 'reduce': out.push(e); break;
    case 'load': case 'elem': topReductions(e.index, out); break;
    case 'unary': case 'cast': topReductions(e.a, out); break;
    case 'binary': topReductions(e.a, out); topReductions(e.b, out); break;
    case 'select': topReductions(e.cond, out); topReductions(e.a, out); topReductions(e.b, out); break;
    case 'const': case 'var': break;
    default: e satisfies never;
  }
  return out;
}

/** `e` with the given reductions replaced by the variables holding their results (unchanged parts shared). */
export function replaceReductions(e: KExpr, names: ReadonlyMap<Extract<KExpr, { k: 'reduce' }>, string>): KExpr {
  switch (e.k) {
    case 'reduce': return names.has(e) ? { k: 'var', name: names.get(e)!, t: e.t } : e;
    case 'load': case 'elem': {
      const index = replaceReductions(e.index, names);
      return index === e.index ? e : { ...e, index };
    }
    case 'unary': case 'cast': {
      const a = replaceReductions(e.a, names);
      return a === e.a ? e : { ...e, a };
    }
    case 'binary': {
      const [a, b] = [replaceReductions(e.a, names), replaceReductions(e.b, names)];
      return a === e.a && b === e.b ? e : { ...e, a, b };
    }
    case 'select': {
      const [cond, a, b] = [replaceReductions(e.cond, names), replaceReductions(e.a, names), replaceReductions(e.b, names)];
      return cond === e.cond && a === e.a && b === e.b ? e : { ...e, cond, a, b };
    }
    default: return e;
  }
}

/**
 * The loads `e` makes whichever way its selects go, outside its reductions (each outermost: an index's own loads are
 * part of it), with the structural key replaceLoads takes.
 */
export function unconditionalLoads(e: KExpr, out = new Map<string, Extract<KExpr, { k: 'load' }>>()): Map<string, Extract<KExpr, { k: 'load' }>> {
  switch (e.k) {
    case 'load': out.set(jsonKey(e), e); break;
    case 'unary': case 'cast': unconditionalLoads(e.a, out); break;
    case 'binary': unconditionalLoads(e.a, out); unconditionalLoads(e.b, out); break;
    case 'select': unconditionalLoads(e.cond, out); break;
    case 'elem': case 'reduce': case 'const': case 'var': break;
    default: e satisfies never;
  }
  return out;
}

/** `e` with every load or element read whose structural key (JSON) is in `by` replaced by its expression (unchanged
 * parts shared). */
export function replaceLoads(e: KExpr, by: ReadonlyMap<string, KExpr>): KExpr {
  switch (e.k) {
    case 'const': case 'var': return e;
    case 'load': case 'elem': {
      const hit = by.get(jsonKey(e));
      if (hit) return hit;
      const index = replaceLoads(e.index, by);
      return index === e.index ? e : { ...e, index };
    }
    case 'unary': case 'cast': {
      const a = replaceLoads(e.a, by);
      return a === e.a ? e : { ...e, a };
    }
    case 'binary': {
      const [a, b] = [replaceLoads(e.a, by), replaceLoads(e.b, by)];
      return a === e.a && b === e.b ? e : { ...e, a, b };
    }
    case 'select': {
      const [cond, a, b] = [replaceLoads(e.cond, by), replaceLoads(e.a, by), replaceLoads(e.b, by)];
      return cond === e.cond && a === e.a && b === e.b ? e : { ...e, cond, a, b };
    }
    case 'reduce': {
      const [n, body] = [replaceLoads(e.n, by), replaceLoads(e.body, by)];
      return n === e.n && body === e.body ? e : { ...e, n, body };
    }
    default: return e satisfies never;
  }
}

const jsonKeys = new WeakMap<KExpr, string>();
/** JSON.stringify(e), once per expression object (expressions are never changed in place). */
function jsonKey(e: KExpr): string {
  let k = jsonKeys.get(e);
  if (k === undefined) jsonKeys.set(e, (k = JSON.stringify(e)));
  return k;
}

/** The largest value an index expression takes, with loop and row variables in [0, bound); Infinity if unknown. */
function maxValue(e: KExpr, bounds: ReadonlyMap<string, number>): number {
  switch (e.k) {
    case 'const': return e.value;
    case 'var': return (bounds.get(e.name) ?? Infinity) - 1;
    case 'binary': {
      const [a, b] = [maxValue(e.a, bounds), maxValue(e.b, bounds)];
      switch (e.op) {
        case 'add': return a + b;
        case 'mul': return a * b;
        case 'idiv': return e.b.k === 'const' ? Math.floor(a / e.b.value) : Infinity;
        case 'imod': return e.b.k === 'const' ? Math.min(a, e.b.value - 1) : Infinity;
        case 'index': return e.b.k === 'const' ? e.b.value - 1 : Infinity;
        default: return Infinity;
      }
    }
    default: return Infinity;
  }
}

/** t = c·m·x (or a multiple of m as a constant): returns c·x, the term divided by m; else undefined. */
function dividedBy(t: KExpr, m: number): KExpr | undefined {
  if (t.k === 'const') return t.value % m === 0 ? int(t.value / m) : undefined;
  if (t.k !== 'binary' || t.op !== 'mul') return undefined;
  const [x, c] = t.b.k === 'const' ? [t.a, t.b.value] : t.a.k === 'const' ? [t.b, t.a.value] : [undefined, 0];
  return x && c % m === 0 ? mul(x, int(c / m)) : undefined;
}

/**
 * Division and remainder by a constant over a sum of non-negative terms (what reshapes produce), bottom up:
 *   (m·a + x) % m = x % m,   (m·a + x) / m = a + x / m,   x % m = x and x / m = 0 when x < m.
 */
function simplifyRanges(e: KExpr, bounds: ReadonlyMap<string, number>): KExpr {
  if (e.k !== 'binary') return e;
  const a = simplifyRanges(e.a, bounds);
  const b = simplifyRanges(e.b, bounds);
  if ((e.op !== 'imod' && e.op !== 'idiv') || b.k !== 'const' || b.value <= 0) {
    return a === e.a && b === e.b ? e : { ...e, a, b };
  }
  const m = b.value;
  const multiples: KExpr[] = [];
  const rest: KExpr[] = [];
  for (const t of sumTerms(a)) {
    const q = dividedBy(t, m);
    if (q) multiples.push(q);
    else rest.push(t);
  }
  const x = rest.reduce<KExpr>((acc, t) => add(acc, t), int(0));
  const small = maxValue(x, bounds) < m;
  if (e.op === 'imod') return small ? x : imod(x, int(m));
  const quotient = multiples.reduce<KExpr>((acc, t) => add(acc, t), int(0));
  return add(quotient, small ? int(0) : idiv(x, int(m)));
}
