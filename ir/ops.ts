// The op registry: every op is defined here once, with its group, arity, attribute schema and shape/dtype rule.
// The tracer, verifier, printer, parser and interpreter all ask this table; reference semantics are the complete
// table in ir/semantics.ts, keyed by the same enum.

import { DType, isFloat, isInteger } from './dtype.ts';
import {
  broadcastShapes, Dim, formatShape, sameNumel, sameShape, Shape, TensorType,
} from './shape.ts';

/** Built-in ops; the value is the name printed in the IR text. */
export enum Op {
  // elementwise, one input
  Neg = 'neg', Abs = 'abs', Exp = 'exp', Log = 'log', Sqrt = 'sqrt', Rsqrt = 'rsqrt', Recip = 'recip',
  Sin = 'sin', Cos = 'cos', Tanh = 'tanh', Sigmoid = 'sigmoid', Silu = 'silu', Floor = 'floor', Not = 'not',
  Cast = 'cast',
  // elementwise, two inputs
  Add = 'add', Sub = 'sub', Mul = 'mul', Div = 'div', Pow = 'pow', Maximum = 'maximum', Minimum = 'minimum',
  Eq = 'eq', Ne = 'ne', Lt = 'lt', Le = 'le', Gt = 'gt', Ge = 'ge', And = 'and', Or = 'or',
  // elementwise, three inputs
  Where = 'where',
  // a uniform f32 in [0, 1) from an i32 key (seed) and counter (position): ir/random.ts
  Random = 'random',
  // sources
  Const = 'const', Arange = 'arange',
  // reductions
  Sum = 'sum', Mean = 'mean', Max = 'max', Argmax = 'argmax',
  // composites (decomposed into primitives by a pass where that helps fusion)
  Softmax = 'softmax',
  // contractions
  Matmul = 'matmul',
  // views and data movement
  Reshape = 'reshape', Permute = 'permute', Expand = 'expand', Slice = 'slice', Concat = 'concat',
  Gather = 'gather',
  // in-place update of a state tensor (the KV-cache write)
  UpdateSlice = 'update_slice',
}

export enum OpGroup {
  Unary = 'unary',
  Binary = 'binary',
  Compare = 'compare',
  Ternary = 'ternary',
  Source = 'source',
  Reduce = 'reduce',
  Composite = 'composite',
  Contraction = 'contraction',
  View = 'view',
  Movement = 'movement',
  StateUpdate = 'state-update',
}

export type AttrKind = 'int' | 'float' | 'bool' | 'dtype' | 'ints' | 'dim' | 'dims' | 'string';
export type AttrValue = number | boolean | string | Dim[];
export type Attrs = Readonly<Record<string, AttrValue>>;

export interface OpDef {
  readonly name: string;
  readonly group: OpGroup;
  /** Number of inputs, or 'variadic' (at least one). */
  readonly arity: number | 'variadic';
  readonly attrs: Readonly<Record<string, AttrKind>>;
  /** Shape and dtype of the result; throws OpError naming what is wrong. */
  readonly infer: (inputs: readonly TensorType[], attrs: Attrs) => TensorType;
}

export class OpError extends Error {}

function fail(msg: string): never {
  throw new OpError(msg);
}

function broadcast(a: Shape, b: Shape): Shape {
  const r = broadcastShapes(a, b);
  return typeof r === 'string' ? fail(r) : r;
}

function axisIn(axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < 0 || axis >= rank) fail(`axis ${axis} is out of range for rank ${rank}`);
  return axis;
}

function sameDtypes(op: string, ts: readonly TensorType[]): DType {
  const d = ts[0].dtype;
  for (const t of ts) if (t.dtype !== d) fail(`${op} needs operands of one dtype, got ${ts.map((x) => x.dtype).join(' and ')}`);
  return d;
}

const floatUnary = (name: string) => (inputs: readonly TensorType[]): TensorType => {
  const [x] = inputs;
  if (!isFloat(x.dtype)) fail(`${name} needs a float operand, got ${x.dtype}`);
  return x;
};

/**
 * u32 is a storage type (token ids, packed data): it is read, written, viewed, gathered, selected, compared for
 * equality and cast, but arithmetic, ordering and reductions need a cast to i32 or f32 first, so that no backend
 * has to compute in unsigned integers.
 */
function noU32(name: string, d: DType): void {
  if (d === DType.U32) fail(`${name} does not compute on u32 (a storage type): cast to i32 or f32 first`);
}

const numericUnary = (name: string) => (inputs: readonly TensorType[]): TensorType => {
  const [x] = inputs;
  if (x.dtype === DType.Bool) fail(`${name} needs a numeric operand, got bool`);
  noU32(name, x.dtype);
  return x;
};

const arith = (name: string) => (inputs: readonly TensorType[]): TensorType => {
  const dtype = sameDtypes(name, inputs);
  if (dtype === DType.Bool) fail(`${name} needs numeric operands, got bool`);
  noU32(name, dtype);
  return { dtype, shape: broadcast(inputs[0].shape, inputs[1].shape) };
};

const compare = (name: string) => (inputs: readonly TensorType[]): TensorType => {
  const dtype = sameDtypes(name, inputs);
  if (name !== 'eq' && name !== 'ne') noU32(name, dtype);
  return { dtype: DType.Bool, shape: broadcast(inputs[0].shape, inputs[1].shape) };
};

/** The range of values a const of an integer dtype may hold. */
const intRange: Partial<Record<DType, readonly [number, number]>> = {
  [DType.I32]: [-2147483648, 2147483647], [DType.U32]: [0, 4294967295], [DType.Bool]: [0, 1],
};

function constType(_: readonly TensorType[], a: Attrs): TensorType {
  const dtype = a.dtype as DType;
  const value = a.value as number;
  const range = intRange[dtype];
  if (range && !(Number.isInteger(value) && value >= range[0] && value <= range[1])) {
    fail(`a const of dtype ${dtype} needs an integer in [${range[0]}, ${range[1]}], got ${value}`);
  }
  return { dtype, shape: [] };
}

const logical = (name: string) => (inputs: readonly TensorType[]): TensorType => {
  for (const t of inputs) if (t.dtype !== DType.Bool) fail(`${name} needs bool operands, got ${t.dtype}`);
  return { dtype: DType.Bool, shape: broadcast(inputs[0].shape, inputs[1].shape) };
};

function reduceShape(x: TensorType, axes: readonly number[], keepdims: boolean): Shape {
  for (const a of axes) axisIn(a, x.shape.length);
  if (new Set(axes).size !== axes.length) fail(`axes ${formatShape(axes)} repeat an axis`);
  return keepdims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
}

function def(name: Op, group: OpGroup, arity: number | 'variadic', attrs: Record<string, AttrKind>,
  infer: OpDef['infer']): OpDef {
  return { name, group, arity, attrs, infer };
}

const U = OpGroup.Unary;
const B = OpGroup.Binary;
const C = OpGroup.Compare;

const builtins: OpDef[] = [
  def(Op.Neg, U, 1, {}, numericUnary('neg')),
  def(Op.Abs, U, 1, {}, numericUnary('abs')),
  def(Op.Exp, U, 1, {}, floatUnary('exp')),
  def(Op.Log, U, 1, {}, floatUnary('log')),
  def(Op.Sqrt, U, 1, {}, floatUnary('sqrt')),
  def(Op.Rsqrt, U, 1, {}, floatUnary('rsqrt')),
  def(Op.Recip, U, 1, {}, floatUnary('recip')),
  def(Op.Sin, U, 1, {}, floatUnary('sin')),
  def(Op.Cos, U, 1, {}, floatUnary('cos')),
  def(Op.Tanh, U, 1, {}, floatUnary('tanh')),
  def(Op.Sigmoid, U, 1, {}, floatUnary('sigmoid')),
  def(Op.Silu, U, 1, {}, floatUnary('silu')),
  def(Op.Floor, U, 1, {}, floatUnary('floor')),
  def(Op.Not, U, 1, {}, ([x]) => (x.dtype === DType.Bool ? x : fail(`not needs a bool operand, got ${x.dtype}`))),
  def(Op.Cast, U, 1, { dtype: 'dtype' }, ([x], a) => ({ dtype: a.dtype as DType, shape: x.shape })),

  def(Op.Add, B, 2, {}, arith('add')),
  def(Op.Sub, B, 2, {}, arith('sub')),
  def(Op.Mul, B, 2, {}, arith('mul')),
  def(Op.Div, B, 2, {}, arith('div')),
  def(Op.Pow, B, 2, {}, arith('pow')),
  def(Op.Maximum, B, 2, {}, arith('maximum')),
  def(Op.Minimum, B, 2, {}, arith('minimum')),
  def(Op.Eq, C, 2, {}, compare('eq')),
  def(Op.Ne, C, 2, {}, compare('ne')),
  def(Op.Lt, C, 2, {}, compare('lt')),
  def(Op.Le, C, 2, {}, compare('le')),
  def(Op.Gt, C, 2, {}, compare('gt')),
  def(Op.Ge, C, 2, {}, compare('ge')),
  def(Op.And, C, 2, {}, logical('and')),
  def(Op.Or, C, 2, {}, logical('or')),

  def(Op.Where, OpGroup.Ternary, 3, {}, ([c, a, b]) => {
    if (c.dtype !== DType.Bool) fail(`where needs a bool condition, got ${c.dtype}`);
    const dtype = sameDtypes('where', [a, b]);
    return { dtype, shape: broadcast(c.shape, broadcast(a.shape, b.shape)) };
  }),

  def(Op.Random, B, 2, {}, ([key, counter]) => {
    if (key.dtype !== DType.I32 || counter.dtype !== DType.I32) fail(`random needs i32 key and counter, got ${key.dtype} and ${counter.dtype}`);
    return { dtype: DType.F32, shape: broadcast(key.shape, counter.shape) };
  }),

  def(Op.Const, OpGroup.Source, 0, { value: 'float', dtype: 'dtype' }, constType),
  def(Op.Arange, OpGroup.Source, 0, { n: 'dim', dtype: 'dtype' }, (_, a) => {
    const dtype = a.dtype as DType;
    if (dtype === DType.Bool) fail('arange cannot produce bool');
    return { dtype, shape: [a.n as Dim] };
  }),

  def(Op.Sum, OpGroup.Reduce, 1, { axes: 'ints', keepdims: 'bool' }, ([x], a) => {
    if (x.dtype === DType.Bool) fail('sum needs a numeric operand, got bool');
    noU32('sum', x.dtype);
    return { dtype: x.dtype, shape: reduceShape(x, a.axes as number[], a.keepdims as boolean) };
  }),
  def(Op.Mean, OpGroup.Reduce, 1, { axes: 'ints', keepdims: 'bool' }, ([x], a) => {
    if (!isFloat(x.dtype)) fail(`mean needs a float operand, got ${x.dtype}`);
    return { dtype: x.dtype, shape: reduceShape(x, a.axes as number[], a.keepdims as boolean) };
  }),
  def(Op.Max, OpGroup.Reduce, 1, { axes: 'ints', keepdims: 'bool' }, ([x], a) => {
    if (x.dtype === DType.Bool) fail('max needs a numeric operand, got bool');
    noU32('max', x.dtype);
    return { dtype: x.dtype, shape: reduceShape(x, a.axes as number[], a.keepdims as boolean) };
  }),
  def(Op.Argmax, OpGroup.Reduce, 1, { axis: 'int', keepdims: 'bool' }, ([x], a) => {
    if (x.dtype === DType.Bool) fail('argmax needs a numeric operand, got bool');
    noU32('argmax', x.dtype);
    return { dtype: DType.I32, shape: reduceShape(x, [a.axis as number], a.keepdims as boolean) };
  }),

  def(Op.Softmax, OpGroup.Composite, 1, { axis: 'int' }, ([x], a) => {
    if (!isFloat(x.dtype)) fail(`softmax needs a float operand, got ${x.dtype}`);
    axisIn(a.axis as number, x.shape.length);
    return x;
  }),

  def(Op.Matmul, OpGroup.Contraction, 2, {}, ([x, w]) => {
    // Mixed precision is allowed: a 16-bit weight is widened on load and the result has the activation's dtype.
    if (!isFloat(x.dtype) || !isFloat(w.dtype)) fail(`matmul needs float operands, got ${x.dtype} and ${w.dtype}`);
    if (x.shape.length < 2 || w.shape.length < 2) {
      fail(`matmul needs operands of rank 2 or more, got ${formatShape(x.shape)} and ${formatShape(w.shape)}`);
    }
    const k1 = x.shape[x.shape.length - 1];
    const k2 = w.shape[w.shape.length - 2];
    if (k1 !== k2) fail(`matmul contraction sizes differ: ${formatShape(x.shape)} @ ${formatShape(w.shape)}`);
    const batch = broadcast(x.shape.slice(0, -2), w.shape.slice(0, -2));
    return { dtype: x.dtype, shape: [...batch, x.shape[x.shape.length - 2], w.shape[w.shape.length - 1]] };
  }),

  def(Op.Reshape, OpGroup.View, 1, { shape: 'dims' }, ([x], a) => {
    const shape = a.shape as Dim[];
    if (!sameNumel(x.shape, shape)) fail(`cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
    return { dtype: x.dtype, shape };
  }),
  def(Op.Permute, OpGroup.View, 1, { perm: 'ints' }, ([x], a) => {
    const perm = a.perm as number[];
    const ok = perm.length === x.shape.length && [...perm].sort((p, q) => p - q).every((p, i) => p === i);
    if (!ok) fail(`permutation ${formatShape(perm)} does not fit rank ${x.shape.length}`);
    return { dtype: x.dtype, shape: perm.map((p) => x.shape[p]) };
  }),
  def(Op.Expand, OpGroup.View, 1, { shape: 'dims' }, ([x], a) => {
    const shape = a.shape as Dim[];
    const r = broadcastShapes(x.shape, shape);
    if (typeof r === 'string' || !sameShape(r, shape)) fail(`cannot expand ${formatShape(x.shape)} to ${formatShape(shape)}`);
    return { dtype: x.dtype, shape };
  }),
  def(Op.Slice, OpGroup.View, 1, { axis: 'int', start: 'int', end: 'int' }, ([x], a) => {
    const axis = axisIn(a.axis as number, x.shape.length);
    const [start, end] = [a.start as number, a.end as number];
    const size = x.shape[axis];
    if (typeof size !== 'number') fail(`slice along symbolic dimension ${size} is not supported`);
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= size)) {
      fail(`slice ${start}:${end} is out of range for dimension ${axis} of size ${size}`);
    }
    return { dtype: x.dtype, shape: x.shape.map((d, i) => (i === axis ? end - start : d)) };
  }),
  def(Op.Concat, OpGroup.Movement, 'variadic', { axis: 'int' }, (xs, a) => {
    const dtype = sameDtypes('concat', xs);
    const axis = axisIn(a.axis as number, xs[0].shape.length);
    let total = 0;
    for (const t of xs) {
      const ok = t.shape.length === xs[0].shape.length && t.shape.every((d, i) => i === axis || d === xs[0].shape[i]);
      if (!ok) fail(`concat along axis ${axis} needs matching shapes, got ${xs.map((q) => formatShape(q.shape)).join(', ')}`);
      const d = t.shape[axis];
      if (typeof d !== 'number') fail(`concat along symbolic dimension ${d} is not supported`);
      total += d;
    }
    return { dtype, shape: xs[0].shape.map((d, i) => (i === axis ? total : d)) };
  }),
  def(Op.Gather, OpGroup.Movement, 2, {}, ([table, ids]) => {
    if (!isInteger(ids.dtype)) fail(`gather needs integer indices, got ${ids.dtype}`);
    if (table.shape.length < 1) fail('gather needs a table of rank 1 or more');
    return { dtype: table.dtype, shape: [...ids.shape, ...table.shape.slice(1)] };
  }),

  def(Op.UpdateSlice, OpGroup.StateUpdate, 3, { axis: 'int' }, ([target, update, index], a) => {
    const axis = axisIn(a.axis as number, target.shape.length);
    if (update.dtype !== target.dtype) fail(`update_slice writes ${update.dtype} into ${target.dtype}`);
    if (!isInteger(index.dtype) || !(index.shape.length === 0 || (index.shape.length === 1 && index.shape[0] === 1))) {
      fail(`update_slice needs an integer scalar index, got ${index.dtype}${formatShape(index.shape)}`);
    }
    const ok = update.shape.length === target.shape.length && update.shape.every((d, i) => i === axis || d === target.shape[i]);
    if (!ok) fail(`update_slice cannot write ${formatShape(update.shape)} into ${formatShape(target.shape)} along axis ${axis}`);
    return target;
  }),
];

const registry = new Map<string, OpDef>(builtins.map((d) => [d.name, d]));

export function opDef(name: string): OpDef | undefined {
  return registry.get(name);
}

/** Adds an op to the registry (custom ops for framework authors); refuses to shadow an existing one. */
export function registerOpDef(d: OpDef): void {
  if (registry.has(d.name)) throw new Error(`op ${d.name} is already registered`);
  registry.set(d.name, d);
}

export function isElementwise(name: string): boolean {
  const g = opDef(name)?.group;
  return g === OpGroup.Unary || g === OpGroup.Binary || g === OpGroup.Compare || g === OpGroup.Ternary;
}
