// Reference semantics of every built-in op: a complete table keyed by Op, so a new op without a rule does not build.
// Math runs in float64 per element and is rounded to the result dtype on store; reductions and matmuls accumulate
// in float64. This is the oracle every other backend and pass is tested against. Special values follow the table
// in the README ("Numerics"): IEEE floats, NaN propagating through maximum/max/argmax as in PyTorch, i32 wrapping
// with floor division, saturating casts; the scalar helpers below are that table in code.

import { DType, isFloat, isInteger } from './dtype.ts';
import { Attrs, Op } from './ops.ts';
import { numel, stridesOf } from './shape.ts';
import { randomUniform } from './random.ts';
import { allocHost, HostTensor, rounderFor } from './host-tensor.ts';

/** The result type with symbolic dims already bound. */
export interface ResolvedType {
  readonly dtype: DType;
  readonly shape: number[];
}

export type EvalRule = (inputs: HostTensor[], attrs: Attrs, out: ResolvedType) => HostTensor;

type Num1 = (x: number) => number;
type Num2 = (x: number, y: number) => number;
const unary = (f: Num1): EvalRule => (ins, _a, out) => map1(out, ins[0], f);
const binary = (f: Num2): EvalRule => (ins, _a, out) => map2(out, ins[0], ins[1], f);
/** A rule with an integer form: `int` where the operands are integers (wrapping i32 arithmetic), else `float`. */
const numeric2 = (float: Num2, int: Num2): EvalRule => (ins, a, out) => binary(isInteger(ins[0].dtype) ? int : float)(ins, a, out);
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

export const I32_MIN = -2147483648;
export const I32_MAX = 2147483647;

/** i32 division rounds toward −∞ (PyTorch's `//`, `div(rounding_mode='floor')`); x / 0 is 0; −2³¹ / −1 wraps to −2³¹. */
export function floorDivI32(x: number, y: number): number {
  return y === 0 ? 0 : Math.floor(x / y) | 0;
}

/**
 * i32 power by repeated squaring, wrapping like i32 multiplication. A negative exponent gives the integer part of
 * 1 / xⁿ: 1 for x = 1, ±1 for x = −1, and 0 otherwise (0 for x = 0 too, as x / 0 is).
 */
export function powI32(x: number, y: number): number {
  if (y < 0) return x === 1 ? 1 : x === -1 ? (y & 1 ? -1 : 1) : 0;
  let r = 1;
  let b = x | 0;
  for (let e = y; e > 0; e >>>= 1) {
    if (e & 1) r = Math.imul(r, b);
    b = Math.imul(b, b);
  }
  return r;
}

/**
 * C's (and PyTorch's) pow: a negative base with an integer exponent keeps the sign of an odd power, with a
 * fractional one is NaN; pow(x, 0) = 1 and pow(1, y) = 1 even for NaN; pow(−1, ±∞) = 1. (JavaScript's Math.pow
 * differs only in the last three.)
 */
export function powF(x: number, y: number): number {
  if (y === 0 || x === 1) return 1;
  if (x === -1 && !Number.isFinite(y) && !Number.isNaN(y)) return 1;
  return Math.pow(x, y);
}

/** float → i32: toward zero, saturating at the i32 range; NaN → 0. */
export function floatToI32(x: number): number {
  return Number.isNaN(x) ? 0 : x >= I32_MAX ? I32_MAX : x <= I32_MIN ? I32_MIN : Math.trunc(x);
}

/** float → u32: toward zero, saturating at [0, 2³² − 1]; NaN → 0. */
export function floatToU32(x: number): number {
  return Number.isNaN(x) || x <= 0 ? 0 : x >= 4294967295 ? 4294967295 : Math.trunc(x);
}

/** A value of dtype `from` as dtype `to` holds it (before the store's rounding): the cast op's semantics. */
export function castValue(x: number, from: DType, to: DType): number {
  if (to === DType.Bool) return x !== 0 ? 1 : 0; // NaN is true, as in PyTorch
  if (isFloat(from) && to === DType.I32) return floatToI32(x);
  if (isFloat(from) && to === DType.U32) return floatToU32(x);
  return x; // integers wrap into their new width on store (i32 ↔ u32 keep their bits); ints round to floats
}

/** IEEE maximum/minimum that propagate NaN (torch.maximum); as rules for the max reduction too. */
const maximum: Num2 = (x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.max(x, y));
const minimum: Num2 = (x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.min(x, y));

export const evalRules: Record<Op, EvalRule> = {
  // i32 negation and abs wrap: −(−2³¹) = |−2³¹| = −2³¹ (the store's | 0).
  [Op.Neg]: unary((x) => -x),
  [Op.Abs]: unary(Math.abs),
  [Op.Exp]: unary(Math.exp),
  [Op.Log]: unary(Math.log),
  [Op.Sqrt]: unary(Math.sqrt),
  [Op.Rsqrt]: unary((x) => 1 / Math.sqrt(x)),
  [Op.Recip]: unary((x) => 1 / x),
  [Op.Sin]: unary(Math.sin),
  [Op.Cos]: unary(Math.cos),
  [Op.Tanh]: unary(Math.tanh),
  [Op.Sigmoid]: unary(sigmoid),
  [Op.Silu]: unary((x) => x * sigmoid(x)),
  [Op.Floor]: unary(Math.floor),
  [Op.Not]: unary((x) => (x ? 0 : 1)),
  [Op.Cast]: (ins, a, out) => unary((x) => castValue(x, ins[0].dtype, a.dtype as DType))(ins, a, out),

  // i32 sums and differences are exact in float64 and wrap on store; products need imul to wrap exactly.
  [Op.Add]: binary((x, y) => x + y),
  [Op.Sub]: binary((x, y) => x - y),
  [Op.Mul]: numeric2((x, y) => x * y, Math.imul),
  [Op.Div]: numeric2((x, y) => x / y, floorDivI32),
  [Op.Pow]: numeric2(powF, powI32),
  [Op.Maximum]: binary(maximum),
  [Op.Minimum]: binary(minimum),
  [Op.Eq]: binary((x, y) => +(x === y)),
  [Op.Ne]: binary((x, y) => +(x !== y)),
  [Op.Lt]: binary((x, y) => +(x < y)),
  [Op.Le]: binary((x, y) => +(x <= y)),
  [Op.Gt]: binary((x, y) => +(x > y)),
  [Op.Ge]: binary((x, y) => +(x >= y)),
  [Op.And]: binary((x, y) => +(x !== 0 && y !== 0)),
  [Op.Or]: binary((x, y) => +(x !== 0 || y !== 0)),
  [Op.Random]: binary(randomUniform),
  [Op.Where]: (ins, _a, out) => elementwise(out, ins, (v) => (v[0] ? v[1] : v[2])),

  [Op.Const]: (_ins, a, out) => fill(out, () => a.value as number),
  [Op.Arange]: (_ins, _a, out) => fill(out, (i) => i),

  [Op.Sum]: (ins, a, out) => reduce(ins[0], a.axes as number[], out, 0, (acc, x) => acc + x),
  // Over no elements: the identity, −∞ (the smallest i32 for i32).
  [Op.Max]: (ins, a, out) => reduce(ins[0], a.axes as number[], out, isInteger(ins[0].dtype) ? I32_MIN : -Infinity, maximum),
  [Op.Mean]: (ins, a, out) => {
    const axes = a.axes as number[];
    const count = axes.reduce((n, ax) => n * ins[0].shape[ax], 1);
    return reduce(ins[0], axes, out, 0, (acc, x) => acc + x, (acc) => acc / count);
  },
  [Op.Argmax]: (ins, a, out) => argmax(ins[0], a.axis as number, out),
  [Op.Softmax]: (ins, a, out) => softmax(ins[0], a.axis as number, out),

  [Op.Matmul]: (ins, _a, out) => matmul(ins[0], ins[1], out),

  [Op.Reshape]: (ins, _a, out) => ({ dtype: out.dtype, shape: out.shape, data: ins[0].data }),
  [Op.Permute]: (ins, a, out) => {
    const src = stridesOf(ins[0].shape);
    return gatherStrided(out, ins[0], 0, (a.perm as number[]).map((p) => src[p]));
  },
  [Op.Expand]: (ins, _a, out) => elementwise(out, ins, (v) => v[0]),
  [Op.Slice]: (ins, a, out) => {
    const src = stridesOf(ins[0].shape);
    return gatherStrided(out, ins[0], (a.start as number) * src[a.axis as number], src);
  },
  [Op.Concat]: (ins, a, out) => concat(ins, a.axis as number, out),
  [Op.Gather]: (ins, _a, out) => gather(ins[0], ins[1], out),
  [Op.UpdateSlice]: (ins, a, out) => updateSlice(ins[0], ins[1], ins[2].data[0], a.axis as number, out),
};

/** Rules for ops registered at run time (registerOp); built-ins live in the table above. */
const customRules = new Map<string, EvalRule>();

export function registerEvalRule(op: string, rule: EvalRule): void {
  customRules.set(op, rule);
}

export function evalRule(op: string): EvalRule | undefined {
  return (evalRules as Record<string, EvalRule>)[op] ?? customRules.get(op);
}

function fill(out: ResolvedType, f: (i: number) => number): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  for (let i = 0; i < t.data.length; i++) t.data[i] = round(f(i));
  return t;
}

/** Strides of `shape` seen from a broadcast `outShape`: 0 along broadcast dimensions. */
function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const own = stridesOf(shape);
  const lead = outShape.length - shape.length;
  return outShape.map((d, i) => (i < lead || shape[i - lead] === 1 ? 0 : own[i - lead]));
}

/** Applies f to broadcast operands element by element (custom elementwise ops use it too). */
export function elementwise(out: ResolvedType, ins: HostTensor[], f: (v: number[]) => number): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  const strides = ins.map((x) => broadcastStrides(x.shape, out.shape));
  const datas = ins.map((x) => x.data);
  const to = t.data;
  const offsets = new Array<number>(ins.length).fill(0);
  const idx = new Array<number>(out.shape.length).fill(0);
  const v = new Array<number>(ins.length);
  for (let i = 0; i < to.length; i++) {
    for (let k = 0; k < ins.length; k++) v[k] = datas[k][offsets[k]];
    to[i] = round(f(v));
    // advance the multi-index and every operand offset
    for (let d = out.shape.length - 1; d >= 0; d--) {
      idx[d]++;
      for (let k = 0; k < ins.length; k++) offsets[k] += strides[k][d];
      if (idx[d] < out.shape[d]) break;
      for (let k = 0; k < ins.length; k++) offsets[k] -= strides[k][d] * idx[d];
      idx[d] = 0;
    }
  }
  return t;
}

/** elementwise for one operand: f applied to each element (an operand of the result's shape read in order). */
function map1(out: ResolvedType, x: HostTensor, f: Num1): HostTensor {
  if (!sameDims(x.shape, out.shape)) return elementwise(out, [x], (v) => f(v[0]));
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  const [to, xd] = [t.data, x.data];
  for (let i = 0; i < to.length; i++) to[i] = round(f(xd[i]));
  return t;
}

/** elementwise for two operands, without its per-element operand list; where neither broadcasts, read in order. */
function map2(out: ResolvedType, a: HostTensor, b: HostTensor, f: Num2): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  const [to, ad, bd] = [t.data, a.data, b.data];
  if (sameDims(a.shape, out.shape) && sameDims(b.shape, out.shape)) {
    for (let i = 0; i < to.length; i++) to[i] = round(f(ad[i], bd[i]));
    return t;
  }
  const [sa, sb] = [broadcastStrides(a.shape, out.shape), broadcastStrides(b.shape, out.shape)];
  const idx = new Array<number>(out.shape.length).fill(0);
  let [oa, ob] = [0, 0];
  for (let i = 0; i < to.length; i++) {
    to[i] = round(f(ad[oa], bd[ob]));
    for (let d = out.shape.length - 1; d >= 0; d--) {
      idx[d]++;
      oa += sa[d];
      ob += sb[d];
      if (idx[d] < out.shape[d]) break;
      oa -= sa[d] * idx[d];
      ob -= sb[d] * idx[d];
      idx[d] = 0;
    }
  }
  return t;
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** out[idx] = x[base + Σ idx[d]·strides[d]] for every output index (a permute or a slice of x). */
function gatherStrided(out: ResolvedType, x: HostTensor, base: number, strides: readonly number[]): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const [to, xd] = [t.data, x.data];
  const rank = out.shape.length;
  // Where the last dimension is contiguous in x too, each of its rows is one copy.
  const run = rank > 0 && strides[rank - 1] === 1 ? out.shape[rank - 1] : 1;
  const loops = run > 1 ? rank - 1 : rank;
  const idx = new Array<number>(loops).fill(0);
  let from = base;
  for (let i = 0; i < to.length; i += run) {
    if (run > 1) to.set(xd.subarray(from, from + run), i);
    else to[i] = xd[from];
    for (let d = loops - 1; d >= 0; d--) {
      from += strides[d];
      if (++idx[d] < out.shape[d]) break;
      from -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
  return t;
}

/** Splits a shape around `axes` into (outer, reduced, inner) loops for a reduction over contiguous axes. */
function reduce(x: HostTensor, axes: number[], out: ResolvedType, init: number,
  step: (acc: number, x: number) => number, finish: (acc: number) => number = (a) => a): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  const acc = new Float64Array(t.data.length).fill(init);
  // Output offset of each input element: drop the reduced axes from the multi-index.
  const keptStrides = stridesOf(x.shape.filter((_, i) => !axes.includes(i)));
  const strides: number[] = [];
  let k = 0;
  x.shape.forEach((_, i) => strides.push(axes.includes(i) ? 0 : keptStrides[k++]));
  const idx = new Array<number>(x.shape.length).fill(0);
  const xd = x.data;
  let o = 0;
  for (let i = 0; i < xd.length; i++) {
    acc[o] = step(acc[o], xd[i]);
    for (let d = x.shape.length - 1; d >= 0; d--) {
      idx[d]++;
      o += strides[d];
      if (idx[d] < x.shape[d]) break;
      o -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
  for (let i = 0; i < acc.length; i++) t.data[i] = round(finish(acc[i]));
  return t;
}

/** Loops over (outer, axis, inner) for ops along one axis. */
function axisLoops(shape: readonly number[], axis: number): [number, number, number] {
  return [numel(shape.slice(0, axis)), shape[axis], numel(shape.slice(axis + 1))];
}

function argmax(x: HostTensor, axis: number, out: ResolvedType): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const [outer, n, inner] = axisLoops(x.shape, axis);
  const xd = x.data;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = 0;
      let bestV = -Infinity;
      for (let j = 0; j < n; j++) {
        const v = xd[(o * n + j) * inner + i];
        if (v > bestV || (Number.isNaN(v) && !Number.isNaN(bestV))) { best = j; bestV = v; }
      }
      t.data[o * inner + i] = best;
    }
  }
  return t;
}

function softmax(x: HostTensor, axis: number, out: ResolvedType): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  const [outer, n, inner] = axisLoops(x.shape, axis);
  const e = new Float64Array(n);
  const [xd, td] = [x.data, t.data];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number) => (o * n + j) * inner + i;
      let m = -Infinity;
      for (let j = 0; j < n; j++) m = Math.max(m, xd[at(j)]);
      let s = 0;
      for (let j = 0; j < n; j++) s += e[j] = Math.exp(xd[at(j)] - m);
      for (let j = 0; j < n; j++) td[at(j)] = round(e[j] / s);
    }
  }
  return t;
}

function matmul(x: HostTensor, w: HostTensor, out: ResolvedType): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const round = rounderFor(out.dtype);
  const r = out.shape.length;
  const [m, n] = [out.shape[r - 2], out.shape[r - 1]];
  const k = x.shape[x.shape.length - 1];
  const batchShape = out.shape.slice(0, -2);
  const xb = broadcastStrides(x.shape.slice(0, -2), batchShape);
  const wb = broadcastStrides(w.shape.slice(0, -2), batchShape);
  const row = new Float64Array(n);
  // Read once: a bf16 weight's data is a getter.
  const [xd, wd, td] = [x.data, w.data, t.data];
  const batches = numel(batchShape);
  const bIdx = new Array<number>(batchShape.length).fill(0);
  for (let b = 0; b < batches; b++) {
    const xo = bIdx.reduce((s, v, i) => s + v * xb[i], 0) * m * k;
    const wo = bIdx.reduce((s, v, i) => s + v * wb[i], 0) * k * n;
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        // No shortcut for a zero activation: 0 × ∞ is NaN.
        const a = xd[xo + i * k + p];
        const wr = wo + p * n;
        for (let j = 0; j < n; j++) row[j] += a * wd[wr + j];
      }
      const to = (b * m + i) * n;
      for (let j = 0; j < n; j++) td[to + j] = round(row[j]);
    }
    for (let d = batchShape.length - 1; d >= 0; d--) {
      if (++bIdx[d] < batchShape[d]) break;
      bIdx[d] = 0;
    }
  }
  return t;
}

function concat(ins: HostTensor[], axis: number, out: ResolvedType): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const [outer, total, inner] = axisLoops(out.shape, axis);
  let start = 0;
  for (const x of ins) {
    const n = x.shape[axis];
    for (let o = 0; o < outer; o++) {
      t.data.set(x.data.subarray(o * n * inner, (o + 1) * n * inner), (o * total + start) * inner);
    }
    start += n;
  }
  return t;
}

function gather(table: HostTensor, ids: HostTensor, out: ResolvedType): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const rowLen = numel(table.shape.slice(1));
  for (let i = 0; i < ids.data.length; i++) {
    const id = ids.data[i];
    if (!(id >= 0 && id < table.shape[0])) {
      throw new RangeError(`gather index ${id} is out of range for a table of ${table.shape[0]} rows`);
    }
    t.data.set(table.data.subarray(id * rowLen, (id + 1) * rowLen), i * rowLen);
  }
  return t;
}

function updateSlice(target: HostTensor, update: HostTensor, index: number, axis: number, out: ResolvedType): HostTensor {
  const n = update.shape[axis];
  if (!(index >= 0 && index + n <= target.shape[axis])) {
    throw new RangeError(`update_slice writes ${n} entries at ${index}, past the end of axis ${axis} (size ${target.shape[axis]})`);
  }
  const t = allocHost(out.dtype, out.shape);
  t.data.set(target.data);
  const [outer, size, inner] = axisLoops(target.shape, axis);
  for (let o = 0; o < outer; o++) {
    t.data.set(update.data.subarray(o * n * inner, (o + 1) * n * inner), (o * size + index) * inner);
  }
  return t;
}

