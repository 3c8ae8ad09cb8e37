// Reference semantics of every built-in op: a complete table keyed by Op, so a new op without a rule does not build.
// Math runs in float64 per element and is rounded to the result dtype on store; reductions and matmuls accumulate
// in float64. This is the oracle every other backend and pass is tested against.

import { DType } from './dtype.ts';
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

const unary = (f: (x: number) => number): EvalRule => (ins, _a, out) => elementwise(out, ins, (v) => f(v[0]));
const binary = (f: (x: number, y: number) => number): EvalRule => (ins, _a, out) => elementwise(out, ins, (v) => f(v[0], v[1]));
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

export const evalRules: Record<Op, EvalRule> = {
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
  [Op.Cast]: unary((x) => x),

  [Op.Add]: binary((x, y) => x + y),
  [Op.Sub]: binary((x, y) => x - y),
  [Op.Mul]: binary((x, y) => x * y),
  [Op.Div]: binary((x, y) => x / y),
  [Op.Pow]: binary(Math.pow),
  [Op.Maximum]: binary((x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.max(x, y))),
  [Op.Minimum]: binary((x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.min(x, y))),
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
  [Op.Max]: (ins, a, out) => reduce(ins[0], a.axes as number[], out, -Infinity, (acc, x) => (x > acc || Number.isNaN(x) ? x : acc)),
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
    return gatherIndex(out, ins[0], (idx) => (a.perm as number[]).reduce((off, p, i) => off + idx[i] * src[p], 0));
  },
  [Op.Expand]: (ins, _a, out) => elementwise(out, ins, (v) => v[0]),
  [Op.Slice]: (ins, a, out) => {
    const src = stridesOf(ins[0].shape);
    const [axis, start] = [a.axis as number, a.start as number];
    return gatherIndex(out, ins[0], (idx) => idx.reduce((off, x, i) => off + (i === axis ? x + start : x) * src[i], 0));
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
  const offsets = new Array<number>(ins.length).fill(0);
  const idx = new Array<number>(out.shape.length).fill(0);
  const v = new Array<number>(ins.length);
  for (let i = 0; i < t.data.length; i++) {
    for (let k = 0; k < ins.length; k++) v[k] = ins[k].data[offsets[k]];
    t.data[i] = round(f(v));
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

/** out[idx] = x[sourceOffset(idx)] for every output index. */
function gatherIndex(out: ResolvedType, x: HostTensor, sourceOffset: (idx: number[]) => number): HostTensor {
  const t = allocHost(out.dtype, out.shape);
  const idx = new Array<number>(out.shape.length).fill(0);
  for (let i = 0; i < t.data.length; i++) {
    t.data[i] = x.data[sourceOffset(idx)];
    for (let d = out.shape.length - 1; d >= 0; d--) {
      if (++idx[d] < out.shape[d]) break;
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
  let o = 0;
  for (let i = 0; i < x.data.length; i++) {
    acc[o] = step(acc[o], x.data[i]);
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
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = 0;
      let bestV = -Infinity;
      for (let j = 0; j < n; j++) {
        const v = x.data[(o * n + j) * inner + i];
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
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number) => (o * n + j) * inner + i;
      let m = -Infinity;
      for (let j = 0; j < n; j++) m = Math.max(m, x.data[at(j)]);
      let s = 0;
      for (let j = 0; j < n; j++) s += e[j] = Math.exp(x.data[at(j)] - m);
      for (let j = 0; j < n; j++) t.data[at(j)] = round(e[j] / s);
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
  const batches = numel(batchShape);
  const bIdx = new Array<number>(batchShape.length).fill(0);
  for (let b = 0; b < batches; b++) {
    const xo = bIdx.reduce((s, v, i) => s + v * xb[i], 0) * m * k;
    const wo = bIdx.reduce((s, v, i) => s + v * wb[i], 0) * k * n;
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        const a = x.data[xo + i * k + p];
        if (a === 0) continue;
        const wr = wo + p * n;
        for (let j = 0; j < n; j++) row[j] += a * w.data[wr + j];
      }
      const to = (b * m + i) * n;
      for (let j = 0; j < n; j++) t.data[to + j] = round(row[j]);
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

