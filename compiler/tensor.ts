// The tensor API that model code is written against. Every method records an IR node on the graph being traced.

import { DType, isFloat, isDType } from '../ir/dtype.ts';
import { Value } from '../ir/graph.ts';
import { Op } from '../ir/ops.ts';
import { Dim, formatType, normalizeAxis, Shape, symbolicNumel } from '../ir/shape.ts';
import { callerLocation } from './source-location.ts';
import { activeGraph, record, TraceError } from './trace.ts';

export type TensorLike = Tensor | number;

/** A dtype by its printed name: 'f32', 'bf16', …. */
export type DTypeName = `${DType}`;
/** A shape as a type: static sizes and symbolic ones, `[4, 8]` or `['S', 64]`. */
export type ShapeSpec = readonly (number | string)[];

/**
 * A traced tensor. The type parameters are for signatures only (`x: Tensor<'f32', ['S', 64]>` declares an entry
 * point's input for `tsfuse compile`, which reads them with ts-morph); they are phantom, so every Tensor<…> is
 * interchangeable with a plain Tensor and the methods ignore them.
 */
export class Tensor<D extends DTypeName = DTypeName, S extends ShapeSpec = ShapeSpec> {
  constructor(readonly value: Value) {}

  get dtype(): DType { return this.value.type.dtype; }
  get shape(): Shape { return this.value.type.shape; }
  get rank(): number { return this.shape.length; }
  /** Size of one dimension (negative axes count from the end). */
  dim(axis: number): Dim { return this.shape[normalizeAxis(axis, this.rank)]; }

  // Tensors have no value while tracing: refuse every conversion to a JavaScript value.
  [Symbol.toPrimitive](): never {
    throw controlFlowError(this);
  }
  valueOf(): never { throw controlFlowError(this); }
  toString(): string { return `Tensor<${formatType(this.value.type)}>`; }

  add(y: TensorLike): Tensor { return binary(Op.Add, this, y); }
  sub(y: TensorLike): Tensor { return binary(Op.Sub, this, y); }
  mul(y: TensorLike): Tensor { return binary(Op.Mul, this, y); }
  div(y: TensorLike): Tensor { return binary(Op.Div, this, y); }
  pow(y: TensorLike): Tensor { return binary(Op.Pow, this, y); }
  maximum(y: TensorLike): Tensor { return binary(Op.Maximum, this, y); }
  minimum(y: TensorLike): Tensor { return binary(Op.Minimum, this, y); }
  eq(y: TensorLike): Tensor { return binary(Op.Eq, this, y); }
  ne(y: TensorLike): Tensor { return binary(Op.Ne, this, y); }
  lt(y: TensorLike): Tensor { return binary(Op.Lt, this, y); }
  le(y: TensorLike): Tensor { return binary(Op.Le, this, y); }
  gt(y: TensorLike): Tensor { return binary(Op.Gt, this, y); }
  ge(y: TensorLike): Tensor { return binary(Op.Ge, this, y); }
  and(y: Tensor): Tensor { return record(Op.And, [this, y]); }
  or(y: Tensor): Tensor { return record(Op.Or, [this, y]); }
  not(): Tensor { return record(Op.Not, [this]); }

  neg(): Tensor { return record(Op.Neg, [this]); }
  abs(): Tensor { return record(Op.Abs, [this]); }
  exp(): Tensor { return record(Op.Exp, [this]); }
  log(): Tensor { return record(Op.Log, [this]); }
  sqrt(): Tensor { return record(Op.Sqrt, [this]); }
  rsqrt(): Tensor { return record(Op.Rsqrt, [this]); }
  recip(): Tensor { return record(Op.Recip, [this]); }
  sin(): Tensor { return record(Op.Sin, [this]); }
  cos(): Tensor { return record(Op.Cos, [this]); }
  tanh(): Tensor { return record(Op.Tanh, [this]); }
  sigmoid(): Tensor { return record(Op.Sigmoid, [this]); }
  silu(): Tensor { return record(Op.Silu, [this]); }
  floor(): Tensor { return record(Op.Floor, [this]); }

  cast(dtype: DType | string): Tensor {
    if (!isDType(dtype)) throw new TraceError(`unknown dtype '${dtype}'`, callerLocation());
    return dtype === this.dtype ? this : record(Op.Cast, [this], { dtype });
  }

  sum(axes: number | number[] = allAxes(this), opts: ReduceOptions = {}): Tensor { return reduce(Op.Sum, this, axes, opts); }
  mean(axes: number | number[] = allAxes(this), opts: ReduceOptions = {}): Tensor { return reduce(Op.Mean, this, axes, opts); }
  max(axes: number | number[] = allAxes(this), opts: ReduceOptions = {}): Tensor { return reduce(Op.Max, this, axes, opts); }
  argmax(axis = -1, opts: ReduceOptions = {}): Tensor {
    return record(Op.Argmax, [this], { axis: axisOf(this, axis), keepdims: opts.keepdims ?? false });
  }
  softmax(axis = -1): Tensor { return record(Op.Softmax, [this], { axis: axisOf(this, axis) }); }

  /** x[..., M, K] @ w[..., K, N]; a 16-bit w is widened on load, the result has x's dtype. */
  matmul(w: Tensor): Tensor { return record(Op.Matmul, [this, w]); }

  /** New shape; one -1 is inferred from the others when the sizes are static. */
  reshape(...shape: Dim[]): Tensor {
    const target = inferMinusOne(this, shape);
    return record(Op.Reshape, [this], { shape: target });
  }
  permute(...perm: number[]): Tensor { return record(Op.Permute, [this], { perm: perm.map((p) => axisOf(this, p)) }); }
  transpose(a = -2, b = -1): Tensor {
    const perm = [...this.shape.keys()];
    const [i, j] = [axisOf(this, a), axisOf(this, b)];
    [perm[i], perm[j]] = [perm[j], perm[i]];
    return this.permute(...perm);
  }
  expand(...shape: Dim[]): Tensor { return record(Op.Expand, [this], { shape }); }
  /** Elements start..end-1 along one axis (negative bounds count from the end). */
  slice(axis: number, start: number, end?: number): Tensor {
    const ax = axisOf(this, axis);
    const size = this.shape[ax];
    const n = typeof size === 'number' ? size : NaN;
    const norm = (i: number) => (i < 0 ? i + n : i);
    return record(Op.Slice, [this], { axis: ax, start: norm(start), end: end === undefined ? n : norm(end) });
  }
  /** Rows of this table picked by integer indices (an embedding lookup). */
  gather(indices: Tensor): Tensor { return record(Op.Gather, [this, indices]); }

  /**
   * Writes `update` into this state tensor at `index` along `axis`, in place: the result is the updated state,
   * and the graph's final value of the state is set to it (the KV-cache write).
   */
  write(update: Tensor, index: Tensor, axis: number): Tensor {
    const target = rootState(this.value);
    if (!target) throw new TraceError('write() needs a state tensor (declared with state())', callerLocation());
    const out = record(Op.UpdateSlice, [this, update, index], { axis: axisOf(this, axis) });
    activeGraph('write').setState(target, out.value);
    return out;
  }
}

export interface ReduceOptions { keepdims?: boolean }

/** A scalar literal of the given dtype (shape []); broadcasts against anything. */
export function scalar(value: number, dtype: DType = DType.F32): Tensor {
  if (!isFloat(dtype) && !Number.isInteger(value) && Number.isFinite(value)) {
    throw new TraceError(`${value} is not a whole number, so it cannot be a ${dtype} literal`, callerLocation());
  }
  return record(Op.Const, [], { value, dtype });
}

export function arange(n: Dim, dtype: DType = DType.I32): Tensor {
  return record(Op.Arange, [], { n, dtype });
}

export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  const dtype = a instanceof Tensor ? a.dtype : b instanceof Tensor ? b.dtype : DType.F32;
  return record(Op.Where, [cond, lift(a, dtype), lift(b, dtype)]);
}

/** A uniform f32 in [0, 1) per element, from an i32 key (a seed) and counter (a position): the same bits on every backend. */
export function random(key: Tensor, counter: Tensor): Tensor {
  return record(Op.Random, [key, counter]);
}

export function concat(parts: Tensor[], axis: number): Tensor {
  if (parts.length === 0) throw new TraceError('concat needs at least one tensor', callerLocation());
  return record(Op.Concat, parts, { axis: axisOf(parts[0], axis) });
}

/** The state a value was written into: itself, or the state under a chain of writes. */
function rootState(v: Value): Value | undefined {
  if (v.kind === 'state') return v;
  const p = v.producer;
  return p?.op === Op.UpdateSlice ? rootState(p.inputs[0]) : undefined;
}

function lift(x: TensorLike, dtype: DType): Tensor {
  return x instanceof Tensor ? x : scalar(x, dtype);
}

function binary(op: Op, x: Tensor, y: TensorLike): Tensor {
  return record(op, [x, lift(y, x.dtype)]);
}

function reduce(op: Op, x: Tensor, axes: number | number[], opts: ReduceOptions): Tensor {
  const list = (Array.isArray(axes) ? axes : [axes]).map((a) => axisOf(x, a)).sort((a, b) => a - b);
  return record(op, [x], { axes: list, keepdims: opts.keepdims ?? false });
}

function allAxes(x: Tensor): number[] {
  return [...x.shape.keys()];
}

function axisOf(x: Tensor, axis: number): number {
  try {
    return normalizeAxis(axis, x.rank);
  } catch (e) {
    throw new TraceError(`${(e as Error).message} (tensor ${formatType(x.value.type)})`, callerLocation());
  }
}

function inferMinusOne(x: Tensor, shape: Dim[]): Dim[] {
  const holes = shape.filter((d) => d === -1).length;
  if (holes === 0) return shape;
  const known = shape.filter((d) => d !== -1);
  const fail = () => new TraceError(`cannot infer -1 in reshape of ${formatType(x.value.type)} to [${shape.join(',')}]`, callerLocation());
  const have = symbolicNumel(x.shape);
  const want = symbolicNumel(known);
  // The hole takes the leftover size: a static quotient, or exactly one leftover symbol.
  const leftover = [...have.symbols];
  for (const s of want.symbols) {
    const i = leftover.indexOf(s);
    if (i < 0) throw fail();
    leftover.splice(i, 1);
  }
  if (holes > 1 || have.size % want.size !== 0 || leftover.length > 1) throw fail();
  const ratio = have.size / want.size;
  if (leftover.length === 1 && ratio !== 1) throw fail();
  const fill: Dim = leftover.length === 1 ? leftover[0] : ratio;
  return shape.map((d) => (d === -1 ? fill : d));
}

function controlFlowError(t: Tensor): TraceError {
  return new TraceError(
    `a traced tensor (${formatType(t.value.type)}) was used as a JavaScript value (in a condition, Number(), a ` +
    'comparison or a string). While tracing, tensors have no values, so JavaScript control flow cannot depend on ' +
    'them. Select data-dependently with where(cond, a, b), or make the choice a static option of the model.',
    callerLocation(),
  );
}
