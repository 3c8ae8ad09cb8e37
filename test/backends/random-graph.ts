// Seeded random graphs for the differential test (fused-vs-reference.test.ts): small graphs mixing elementwise ops
// with broadcasting, casts, reductions over any axes, views, concats, softmax, gathers, small matmuls and the model
// patterns fusion exists for (attention, norm before a projection, SwiGLU, KV-cache writes), with host tensors for
// their inputs, params and states. A step is picked by weight and applied to a recent value (chains) or any value
// (DAGs); graph-builder.ts keeps the values in range.

import { DType, isFloat } from '../../ir/dtype.ts';
import { Graph, GraphError } from '../../ir/graph.ts';
import { Op } from '../../ir/ops.ts';
import { broadcastShapes } from '../../ir/shape.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { asMatrix, Builder, dtypeOf, numelOf, shapeOf, Step, Val } from './graph-builder.ts';
import { Rng } from './rng.ts';


export interface RandomCase {
  readonly graph: Graph;
  readonly inputs: Record<string, HostTensor>;
  readonly params: ReadonlyMap<string, HostTensor>;
  /** Initial values of the state tensors (a run may update them in place: copy before each run). */
  readonly states: ReadonlyMap<string, HostTensor>;
}

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
