// Seeded random graphs for the differential test (fused-vs-reference.test.ts): small graphs mixing elementwise ops
// with broadcasting, casts, reductions over any axes, views, concats, softmax, gathers and small matmuls, with
// host tensors for their inputs and params. Values are kept in a range where float32 and float64 evaluation agree
// to the test's tolerance: a rough bound on each value's magnitude steers which ops may follow.

import { DType, isFloat } from '../../ir/dtype.ts';
import { Graph, GraphError, Value } from '../../ir/graph.ts';
import { Attrs, Op } from '../../ir/ops.ts';
import { broadcastShapes } from '../../ir/shape.ts';
import { HostTensor, hostTensor } from '../../runtime/host-tensor.ts';

/** mulberry32: a small, fast seeded PRNG, so a seed names one graph on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0; }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo + 1)); }
  chance(p: number): boolean { return this.next() < p; }
  pick<T>(xs: readonly T[]): T { return xs[Math.floor(this.next() * xs.length)]; }
  /** Standard normal (Box–Muller). */
  normal(): number { return Math.sqrt(-2 * Math.log(1 - this.next())) * Math.cos(2 * Math.PI * this.next()); }
  /** A random permutation of 0..n-1. */
  perm(n: number): number[] {
    const p = [...Array(n).keys()];
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(0, i);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }
  /** Picks by weight: entries [weight, value]. */
  weighted<T>(entries: readonly (readonly [number, T])[]): T {
    let r = this.next() * entries.reduce((s, [w]) => s + w, 0);
    for (const [w, v] of entries) if ((r -= w) < 0) return v;
    return entries[entries.length - 1][1];
  }
}

export interface RandomCase {
  readonly graph: Graph;
  readonly inputs: Record<string, HostTensor>;
  readonly params: ReadonlyMap<string, HostTensor>;
  /** Initial values of the state tensors (a run may update them in place: copy before each run). */
  readonly states: ReadonlyMap<string, HostTensor>;
}

/** A value of the graph and a rough bound on the magnitude of its elements. */
interface Val { readonly v: Value; readonly mag: number }

const shapeOf = (x: Val) => x.v.type.shape as readonly number[];
const dtypeOf = (x: Val) => x.v.type.dtype;
const numelOf = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
/** Largest magnitude an operand may have before a growing op (mul, exp, matmul) squashes it with tanh first. */
const BIG = 30;

class Builder {
  readonly g: Graph;
  readonly pool: Val[] = [];
  readonly inputs: Record<string, HostTensor> = {};
  readonly params = new Map<string, HostTensor>();
  readonly states = new Map<string, HostTensor>();
  private counter = 0;

  constructor(readonly rng: Rng, name: string) {
    this.g = new Graph(name);
  }

  shape(minRank = 1, maxRank = 3): number[] {
    return Array.from({ length: this.rng.int(minRank, maxRank) }, () => this.rng.int(1, 7));
  }

  private data(dtype: DType, n: number, scale: number): number[] {
    const r = this.rng;
    if (dtype === DType.Bool) return Array.from({ length: n }, () => r.int(0, 1));
    if (dtype === DType.I32) return Array.from({ length: n }, () => r.int(-4, 4));
    return Array.from({ length: n }, () => r.normal() * scale);
  }

  input(dtype: DType, shape: readonly number[], data?: number[]): Val {
    const name = `x${this.counter++}`;
    const v = this.g.addInput(name, { dtype, shape });
    this.inputs[name] = hostTensor(dtype, shape, data ?? this.data(dtype, numelOf(shape), 1));
    return this.keep({ v, mag: 4 });
  }

  param(dtype: DType, shape: readonly number[], scale = 0.5): Val {
    const name = `w${this.counter++}`;
    const v = this.g.addParam(name, { dtype, shape });
    this.params.set(name, hostTensor(dtype, shape, this.data(dtype, numelOf(shape), scale)));
    return { v, mag: 4 * scale };
  }

  state(shape: readonly number[]): Val {
    const name = `s${this.counter++}`;
    const v = this.g.addState(name, { dtype: DType.F32, shape });
    this.states.set(name, hostTensor(DType.F32, shape, this.data(DType.F32, numelOf(shape), 1)));
    return { v, mag: 4 };
  }

  private keep(x: Val): Val {
    this.pool.push(x);
    return x;
  }

  /** Adds a node; its value joins the pool later steps pick operands from unless `pooled` is false. */
  node(op: Op, ins: Val[], attrs: Attrs, mag: number, pooled = true): Val {
    const x = { v: this.g.addNode(op, ins.map((y) => y.v), attrs), mag };
    return pooled ? this.keep(x) : x;
  }

  konst(value: number, dtype: DType): Val {
    return { v: this.g.addNode(Op.Const, [], { value, dtype }), mag: Math.abs(value) };
  }

  // ---- helpers that keep values in range ----

  /**
   * x, scaled into [-1, 1] when it is a float larger than `limit`. (Not squashed with tanh: a saturated tanh is
   * exactly 1 in float32 but not in float64, and a cast or compare after it would tell the two apart.)
   */
  bounded(x: Val, limit = BIG): Val {
    if (!isFloat(dtypeOf(x)) || x.mag <= limit) return x;
    return this.node(Op.Mul, [x, this.konst(Math.fround(1 / x.mag), dtypeOf(x))], {}, 1);
  }

  /**
   * Floats moved off the values where a cast, floor or compare jumps. Kernels keep intermediates in float64 and
   * the reference rounds each to float32, so a value that is structurally an integer or a tie (the sum of a
   * softmax, a max against its input) can land on either side of the jump: 0.9999999 in one, 1 in the other.
   */
  offTies(x: Val): Val {
    if (!isFloat(dtypeOf(x))) return x;
    return this.node(Op.Add, [x, this.konst(0.3183099, dtypeOf(x))], {}, x.mag + 1);
  }

  /** |x| + 0.5 for floats, |x| + 1 for ints: safe for log, sqrt, division. */
  positive(x: Val): Val {
    const f = isFloat(dtypeOf(x));
    const one = this.konst(f ? 0.5 : 1, dtypeOf(x));
    return this.node(Op.Add, [this.node(Op.Abs, [x], {}, x.mag), one], {}, x.mag + 1);
  }

  /** An operand for a binary op with x: same dtype, a shape that broadcasts with x's. */
  partner(x: Val): Val {
    const r = this.rng;
    const s = shapeOf(x);
    const dtype = dtypeOf(x);
    const fits = this.pool.filter((y) => y !== x && dtypeOf(y) === dtype && typeof broadcastShapes(s, shapeOf(y)) !== 'string' &&
      shapeOf(y).length <= 4);
    const choice = r.weighted<string>([[fits.length ? 4 : 0, 'pool'], [4, 'input'], [dtype === DType.Bool ? 0 : 1.5, 'const']]);
    if (choice === 'pool') return r.pick(fits);
    if (choice === 'const') {
      const c = this.konst(dtype === DType.I32 ? r.int(-3, 3) : r.pick([-2, -1, -0.5, 0, -0, 0.5, 1, 2, 0.25, 3]), dtype);
      // Sometimes broadcast already (simplify sees through it; its rules must still keep the node's type).
      if (r.chance(0.2)) return { v: this.g.addNode(Op.Expand, [c.v], { shape: s.map((d) => (r.chance(0.5) ? d : 1)) }), mag: c.mag };
      if (r.chance(0.2)) return { v: this.g.addNode(Op.Reshape, [c.v], { shape: [1, 1].slice(0, r.int(1, 2)) }), mag: c.mag };
      return c;
    }
    // A new input of a broadcast-compatible shape: the same, a suffix, some dims pinned to 1, a scalar, or one more
    // leading dim.
    const form = r.pick(['same', 'suffix', 'ones', 'scalar', 'lead']);
    let shape: number[] = [...s];
    if (form === 'suffix') shape = s.slice(r.int(0, s.length));
    if (form === 'ones') shape = s.map((d) => (r.chance(0.5) ? 1 : d));
    if (form === 'scalar') shape = [];
    if (form === 'lead' && s.length < 4) shape = [r.int(1, 4), ...s];
    return this.input(dtype, shape);
  }

  pickOperand(): Val {
    // Mostly the newest values, so chains form; sometimes any value, so the graph branches and joins.
    const r = this.rng;
    const recent = this.pool.slice(-3);
    return r.chance(0.6) ? r.pick(recent) : r.pick(this.pool);
  }
}

// ---- the ops a step may add; each returns undefined when it does not apply to the operand ----

type Step = (b: Builder, x: Val) => Val | undefined;

const floatUnary: readonly Op[] = [Op.Neg, Op.Abs, Op.Exp, Op.Log, Op.Sqrt, Op.Rsqrt, Op.Recip, Op.Sin, Op.Cos, Op.Tanh,
  Op.Sigmoid, Op.Silu, Op.Floor];

const unary: Step = (b, x) => {
  const r = b.rng;
  const dtype = dtypeOf(x);
  if (dtype === DType.Bool) return b.node(Op.Not, [x], {}, 1);
  if (dtype === DType.I32) return b.node(r.pick([Op.Neg, Op.Abs]), [x], {}, x.mag);
  const op = r.pick(floatUnary);
  switch (op) {
    case Op.Exp: { const y = b.bounded(x, 4); return b.node(op, [y], {}, Math.exp(y.mag)); }
    case Op.Log: return b.node(op, [b.positive(x)], {}, Math.max(1, Math.log(x.mag + 1)));
    case Op.Sqrt: return b.node(op, [b.positive(x)], {}, Math.sqrt(x.mag + 1));
    case Op.Rsqrt: case Op.Recip: return b.node(op, [b.positive(x)], {}, 2);
    case Op.Tanh: case Op.Sigmoid: return b.node(op, [b.bounded(x, 5)], {}, 1);
    case Op.Sin: case Op.Cos: return b.node(op, [x], {}, 1);
    case Op.Floor: return b.node(op, [b.offTies(x)], {}, x.mag + 2);
    default: return b.node(op, [x], {}, x.mag);
  }
};

const binary: Step = (b, x) => {
  const r = b.rng;
  const dtype = dtypeOf(x);
  let y = b.partner(x);
  if (dtype === DType.Bool) return b.node(r.pick([Op.And, Op.Or]), [x, y], {}, 1);
  const f = isFloat(dtype);
  const op = r.pick(f ? [Op.Add, Op.Sub, Op.Mul, Op.Div, Op.Pow, Op.Maximum, Op.Minimum] : [Op.Add, Op.Sub, Op.Mul, Op.Div, Op.Maximum, Op.Minimum]);
  let a = x;
  if (r.chance(0.3)) [a, y] = [y, a];
  switch (op) {
    case Op.Mul:
      if (!f && a.mag * y.mag > 1000) return b.node(Op.Add, [a, y], {}, a.mag + y.mag);
      [a, y] = [b.bounded(a), b.bounded(y)];
      return b.node(op, [a, y], {}, a.mag * y.mag);
    case Op.Div: { const d = b.positive(y); return b.node(op, [a, d], {}, f ? 2 * a.mag : a.mag); }
    case Op.Pow: {
      // A small positive base and a small exponent.
      const base = b.positive(b.bounded(a, 3));
      const e = b.bounded(y, 2);
      return b.node(op, [base, e], {}, Math.pow(base.mag + 1, e.mag) + 1);
    }
    case Op.Maximum: case Op.Minimum: return b.node(op, [a, y], {}, Math.max(a.mag, y.mag));
    default: return b.node(op, [a, y], {}, a.mag + y.mag);
  }
};

const compare: Step = (b, x) => {
  if (dtypeOf(x) === DType.Bool) return undefined;
  const y = b.partner(x);
  return b.node(b.rng.pick([Op.Eq, Op.Ne, Op.Lt, Op.Le, Op.Gt, Op.Ge]), [b.offTies(x), y], {}, 1);
};

const select: Step = (b, x) => {
  const r = b.rng;
  if (dtypeOf(x) === DType.Bool) {
    // x as the condition, choosing between two floats.
    const a = b.input(DType.F32, shapeOf(x).slice(r.int(0, shapeOf(x).length)));
    const other = r.chance(0.5) ? b.konst(r.pick([0, -1, 2.5]), DType.F32) : b.partner(a);
    return b.node(Op.Where, [x, a, other], {}, Math.max(a.mag, other.mag));
  }
  const conds = b.pool.filter((c) => dtypeOf(c) === DType.Bool && typeof broadcastShapes(shapeOf(c), shapeOf(x)) !== 'string');
  const cond = conds.length && r.chance(0.5) ? r.pick(conds) : b.node(r.pick([Op.Lt, Op.Gt, Op.Ge]), [b.offTies(x), b.partner(x)], {}, 1);
  const y = b.partner(x);
  const [a, c] = r.chance(0.5) ? [x, y] : [y, x];
  return b.node(Op.Where, [cond, a, c], {}, Math.max(a.mag, c.mag));
};

const cast: Step = (b, x) => {
  const r = b.rng;
  const dtype = dtypeOf(x);
  if (dtype === DType.Bool) return b.node(Op.Cast, [x], { dtype: r.pick([DType.F32, DType.I32]) }, 1);
  if (dtype === DType.I32) return b.node(Op.Cast, [x], { dtype: r.chance(0.8) ? DType.F32 : DType.I32 }, x.mag);
  if (r.chance(0.2)) {
    // Through a 16-bit float and back: inside a kernel too, the narrowing cast rounds.
    const narrow = b.node(Op.Cast, [x], { dtype: r.pick([DType.BF16, DType.F16]) }, x.mag, false);
    return b.node(Op.Cast, [narrow], { dtype: DType.F32 }, x.mag);
  }
  // Scaled first so that truncation yields more than zeros.
  if (x.mag > 1e6) return undefined;
  const y = r.chance(0.5) ? b.node(Op.Mul, [x, b.konst(3, DType.F32)], {}, 3 * x.mag) : x;
  return b.node(Op.Cast, [b.offTies(y)], { dtype: r.chance(0.9) ? DType.I32 : DType.F32 }, y.mag + 1);
};

const reduce: Step = (b, x) => {
  const r = b.rng;
  const s = shapeOf(x);
  if (s.length === 0 || dtypeOf(x) === DType.Bool) return undefined;
  const f = isFloat(dtypeOf(x));
  const op = r.pick(f ? [Op.Sum, Op.Mean, Op.Max, Op.Argmax] : [Op.Sum, Op.Max, Op.Argmax]);
  const keepdims = r.chance(0.5);
  if (op === Op.Argmax) return b.node(op, [x], { axis: r.int(0, s.length - 1), keepdims }, 7);
  // A non-empty set of axes, not only the last, in increasing order.
  let axes = [...s.keys()].filter(() => r.chance(0.5));
  if (axes.length === 0) axes = [r.int(0, s.length - 1)];
  const n = axes.reduce((p, a) => p * s[a], 1);
  return b.node(op, [x], { axes, keepdims }, op === Op.Sum ? n * x.mag : x.mag);
};

/** Splits n into `rank` factors (some of them 1). */
function factorize(r: Rng, n: number, rank: number): number[] {
  const dims = new Array<number>(rank).fill(1);
  for (let p = 2; n > 1; p++) {
    while (n % p === 0) {
      dims[r.int(0, rank - 1)] *= p;
      n /= p;
    }
  }
  return dims;
}

const view: Step = (b, x) => {
  const r = b.rng;
  const s = shapeOf(x);
  const kind = r.pick(['reshape', 'permute', 'slice', 'expand']);
  switch (kind) {
    case 'reshape': return b.node(Op.Reshape, [x], { shape: factorize(r, numelOf(s), r.int(1, 4)) }, x.mag);
    case 'permute': return s.length < 2 ? undefined : b.node(Op.Permute, [x], { perm: r.perm(s.length) }, x.mag);
    case 'slice': {
      const axes = [...s.keys()].filter((a) => s[a] >= 2);
      if (axes.length === 0) return undefined;
      const axis = r.pick(axes);
      const start = r.int(0, s[axis] - 1);
      return b.node(Op.Slice, [x], { axis, start, end: r.int(start + 1, s[axis]) }, x.mag);
    }
    default: {
      const shape = [...(s.length < 4 && r.chance(0.4) ? [r.int(2, 4)] : []), ...s.map((d) => (d === 1 ? r.int(1, 5) : d))];
      return b.node(Op.Expand, [x], { shape }, x.mag);
    }
  }
};

const concatStep: Step = (b, x) => {
  const r = b.rng;
  const s = shapeOf(x);
  if (s.length === 0) return undefined;
  const axis = r.int(0, s.length - 1);
  const parts: Val[] = [x];
  for (let i = r.int(1, 2); i > 0; i--) {
    const same = b.pool.filter((y) => y !== x && dtypeOf(y) === dtypeOf(x) && shapeOf(y).length === s.length &&
      shapeOf(y).every((d, k) => k === axis || d === s[k]));
    parts.push(same.length && r.chance(0.5) ? r.pick(same) : b.input(dtypeOf(x), s.map((d, k) => (k === axis ? r.int(1, 4) : d))));
  }
  if (r.chance(0.3)) parts.reverse();
  return b.node(Op.Concat, parts, { axis }, Math.max(...parts.map((p) => p.mag)));
};

/** x as a matrix (or batch of them) with a float dtype and a bounded magnitude. */
function asMatrix(b: Builder, x: Val): Val | undefined {
  if (dtypeOf(x) !== DType.F32) return undefined;
  let m = b.bounded(x, 4);
  if (shapeOf(m).length === 1) m = b.node(Op.Reshape, [m], { shape: b.rng.chance(0.5) ? [1, shapeOf(m)[0]] : [shapeOf(m)[0], 1] }, m.mag);
  return shapeOf(m).length >= 2 ? m : undefined;
}

const matmul: Step = (b, x) => {
  const r = b.rng;
  const m = asMatrix(b, x);
  if (!m) return undefined;
  const s = shapeOf(m);
  const k = s[s.length - 1];
  const n = r.int(1, 7);
  const form = r.pick(['param', 'transposed', 'input', 'batched']);
  let w: Val;
  if (form === 'param') w = b.param(r.chance(0.5) ? DType.BF16 : DType.F32, [k, n]);
  else if (form === 'transposed') w = b.node(Op.Permute, [b.param(r.pick([DType.F32, DType.BF16]), [n, k])], { perm: [1, 0] }, 2, false);
  else if (form === 'input') w = b.input(DType.F32, [k, n]);
  else w = b.input(DType.F32, [...s.slice(0, -2).map((d) => (r.chance(0.3) ? 1 : d)), k, n]);
  return b.node(Op.Matmul, [m, w], {}, k * m.mag * w.mag);
};

/** Two or three projections of one input by transposed weights (concat-projections' pattern). */
const projections: Step = (b, x) => {
  const m = asMatrix(b, x);
  if (!m) return undefined;
  const k = shapeOf(m)[shapeOf(m).length - 1];
  let last: Val | undefined;
  for (let i = b.rng.int(2, 3); i > 0; i--) {
    const w = b.param(b.rng.pick([DType.F32, DType.BF16]), [b.rng.int(1, 6), k]);
    last = b.node(Op.Matmul, [m, b.node(Op.Permute, [w], { perm: [1, 0] }, w.mag, false)], {}, k * m.mag * w.mag);
  }
  return last;
};

const softmax: Step = (b, x) => {
  const s = shapeOf(x);
  if (!isFloat(dtypeOf(x)) || s.length === 0) return undefined;
  return b.node(Op.Softmax, [x], { axis: b.rng.int(0, s.length - 1) }, 1);
};

/** A gathered table (an embedding) or an arange, combined with x. */
const source: Step = (b, x) => {
  const r = b.rng;
  const s = shapeOf(x);
  if (r.chance(0.5) && s.length >= 1) {
    const last = s[s.length - 1];
    const dtype = dtypeOf(x) === DType.Bool ? DType.I32 : dtypeOf(x);
    const a = b.node(Op.Arange, [], { n: last, dtype }, last);
    return b.node(Op.Add, [x.v.type.dtype === dtype ? x : b.node(Op.Cast, [x], { dtype }, 1), a], {}, x.mag + last);
  }
  const rows = r.int(1, 7);
  const table = b.param(r.pick([DType.F32, DType.BF16]), [rows, r.int(1, 7)], 1);
  const ids = b.input(DType.I32, b.shape(1, 2), undefined);
  const data = b.inputs[ids.v.name!];
  for (let i = 0; i < data.data.length; i++) data.data[i] = r.int(0, rows - 1);
  const e = b.node(Op.Gather, [table, ids], {}, table.mag, dtypeOf(table) === DType.F32);
  return dtypeOf(table) === DType.F32 ? e : b.node(Op.Cast, [e], { dtype: DType.F32 }, e.mag);
};

/** scores = q·kᵀ (scaled, sometimes causally masked), softmax over them, then ·v: the attention pattern. */
const attention: Step = (b, x) => {
  const r = b.rng;
  const q = asMatrix(b, x);
  if (!q) return undefined;
  const s = shapeOf(q);
  const [m, d] = [s[s.length - 2], s[s.length - 1]];
  const t = r.int(1, 7);
  const batch = s.slice(0, -2).map((n) => (r.chance(0.3) ? 1 : n));
  const keys = b.input(DType.F32, [...batch, t, d]);
  const perm = [...batch.keys(), batch.length + 1, batch.length];
  const kT = b.node(Op.Permute, [keys], { perm }, keys.mag, false);
  let scores = b.node(Op.Mul, [b.node(Op.Matmul, [q, kT], {}, d * q.mag * 4), b.konst(Math.fround(1 / d), DType.F32)], {}, q.mag * 4);
  if (r.chance(0.5)) {
    // Position p sees keys 0..p+offset, as a decode step sees the cache.
    const offset = r.int(0, Math.max(0, t - 1));
    const rows = b.node(Op.Reshape, [b.node(Op.Add, [b.node(Op.Arange, [], { n: m, dtype: DType.I32 }, m, false), b.konst(offset, DType.I32)], {}, m, false)], { shape: [m, 1] }, m, false);
    const cols = b.node(Op.Reshape, [b.node(Op.Arange, [], { n: t, dtype: DType.I32 }, t, false)], { shape: [1, t] }, t, false);
    const visible = b.node(Op.Le, [cols, rows], {}, 1, false);
    scores = b.node(Op.Where, [visible, scores, b.konst(-Infinity, DType.F32)], {}, scores.mag);
  }
  const probs = b.node(Op.Softmax, [scores], { axis: shapeOf(scores).length - 1 }, 1);
  const values = b.input(DType.F32, [...batch.map((n) => (r.chance(0.3) ? 1 : n)), t, r.int(1, 7)]);
  return b.node(Op.Matmul, [probs, values], {}, t * values.mag);
};

/** RMSNorm over the last axis, then a projection: the norm becomes the projection's prologue. */
const normProjection: Step = (b, x) => {
  const m = asMatrix(b, x);
  if (!m) return undefined;
  const s = shapeOf(m);
  const k = s[s.length - 1];
  const sq = b.node(Op.Mul, [m, m], {}, m.mag * m.mag, false);
  const ms = b.node(Op.Mean, [sq], { axes: [s.length - 1], keepdims: true }, m.mag * m.mag, false);
  const inv = b.node(Op.Rsqrt, [b.node(Op.Add, [ms, b.konst(1e-5, DType.F32)], {}, ms.mag, false)], {}, 100, false);
  const w = b.param(DType.BF16, [k], 1);
  const h = b.node(Op.Mul, [b.node(Op.Mul, [m, inv], {}, 2, false), b.node(Op.Cast, [w], { dtype: DType.F32 }, w.mag, false)], {}, 8);
  const p = b.param(b.rng.pick([DType.F32, DType.BF16]), [b.rng.int(1, 7), k]);
  return b.node(Op.Matmul, [h, b.node(Op.Permute, [p], { perm: [1, 0] }, p.mag, false)], {}, k * 8 * p.mag);
};

/** silu(x·gateᵀ) · (x·upᵀ): paired projections with their combination as the epilogue. */
const swiglu: Step = (b, x) => {
  const m = asMatrix(b, x);
  if (!m) return undefined;
  const k = shapeOf(m)[shapeOf(m).length - 1];
  const n = b.rng.int(1, 7);
  const proj = () => {
    const w = b.param(DType.F32, [n, k]);
    return b.node(Op.Matmul, [m, b.node(Op.Permute, [w], { perm: [1, 0] }, w.mag, false)], {}, k * m.mag * w.mag, false);
  };
  const gate = b.node(Op.Silu, [proj()], {}, k * m.mag, false);
  const up = proj();
  return b.node(Op.Mul, [gate, up], {}, gate.mag * up.mag);
};

/** Writes x (as rows) into a new state at a position given as an input: the KV-cache write. */
const stateWrite: Step = (b, x) => {
  const r = b.rng;
  const s = shapeOf(x);
  if (dtypeOf(x) !== DType.F32 || s.length === 0 || b.g.stateUpdates.length >= 2) return undefined;
  const length = s[0] + r.int(0, 3);
  const state = b.state([length, ...s.slice(1)]);
  const at = r.int(0, length - s[0]);
  const pos = b.input(DType.I32, r.chance(0.5) ? [] : [1], [at]);
  const written = b.node(Op.UpdateSlice, [state, x, pos], { axis: 0 }, Math.max(state.mag, x.mag));
  b.g.setState(state.v, written.v);
  // Sometimes the old value is read too (before the write, as the reference reads it).
  if (r.chance(0.3)) b.node(Op.Sum, [state], { axes: [0], keepdims: false }, length * 4);
  return written;
};

const steps: readonly (readonly [number, Step])[] = [
  [6, unary], [7, binary], [2, compare], [2, select], [2, cast], [5, reduce], [6, view], [2, concatStep],
  [1.5, matmul], [0.7, projections], [1.2, softmax], [0.8, source], [0.8, attention], [0.5, normProjection],
  [0.5, swiglu], [0.6, stateWrite],
];

/** The graph of one seed. */
export function randomGraph(seed: number): RandomCase {
  const r = new Rng(seed);
  const b = new Builder(r, `seed${seed}`);
  b.input(r.chance(0.85) ? DType.F32 : DType.I32, b.shape(0, 3));
  if (r.chance(0.5)) b.partner(b.pool[0]);
  for (let n = r.int(2, 10); n > 0;) {
    const x = b.pickOperand();
    const step = r.weighted(steps);
    try {
      if (step(b, x)) n--;
    } catch (e) {
      // Operands picked for x that do not broadcast with each other (a where's condition and other side): the
      // step is dropped; what it added so far is dead code.
      if (!(e instanceof GraphError)) throw e;
    }
  }
  // The newest value and a few others; rarely an input itself or one value twice.
  const nodes = b.pool.filter((x) => x.v.kind === 'node');
  const outs = [nodes[nodes.length - 1] ?? b.pool[0]];
  for (let i = r.int(0, 2); i > 0; i--) outs.push(r.pick(r.chance(0.1) ? b.pool : nodes.length ? nodes : b.pool));
  // Sometimes an f32 output is returned as bf16: kernels compute in f32 and round where it is stored, which is
  // where the reference rounds it too. (bf16 values inside a kernel stay f32 by design, so the generator does no
  // arithmetic on them: bf16 params are matmul weights or gathered and widened at once.)
  b.g.outputs = outs.map((x) => (dtypeOf(x) === DType.F32 && r.chance(0.1) ? b.node(Op.Cast, [x], { dtype: DType.BF16 }, x.mag) : x).v);
  return { graph: b.g, inputs: b.inputs, params: b.params, states: b.states };
}
