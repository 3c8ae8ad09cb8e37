// Shapes: static sizes plus named symbolic dimensions (a sequence length "S" bound when the graph runs).

import { DType } from './dtype.ts';

/** A dimension: a static size, or the name of a symbolic size. */
export type Dim = number | string;
export type Shape = readonly Dim[];

export interface TensorType {
  readonly dtype: DType;
  readonly shape: Shape;
}

export function tensorType(dtype: DType, shape: Shape): TensorType {
  return { dtype, shape: [...shape] };
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(',')}]`;
}

export function formatType(t: TensorType): string {
  let text = printedTypes.get(t);
  if (text === undefined) printedTypes.set(t, (text = `${t.dtype}${formatShape(t.shape)}`));
  return text;
}

/**
 * Each type object as printed. Types are never changed, and a few thousand of them are printed again and again
 * (every pass keeps a node's type; each kernel's fused lines and lowering's kernel keys print them).
 */
const printedTypes = new WeakMap<TensorType, string>();

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function sameType(a: TensorType, b: TensorType): boolean {
  return a.dtype === b.dtype && sameShape(a.shape, b.shape);
}

export function isStatic(shape: Shape): shape is readonly number[] {
  return shape.every((d) => typeof d === 'number');
}

/** Binds symbolic dims to sizes; throws naming the unbound symbol. */
export type DimBindings = ReadonlyMap<string, number>;

export function resolveShape(shape: Shape, bindings: DimBindings = new Map()): number[] {
  return shape.map((d) => {
    if (typeof d === 'number') return d;
    const v = bindings.get(d);
    if (v === undefined) throw new Error(`symbolic dimension ${d} is not bound`);
    return v;
  });
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a static shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** Symbolic element count: product of static sizes times a sorted list of symbols. */
export function symbolicNumel(shape: Shape): { size: number; symbols: string[] } {
  let size = 1;
  const symbols: string[] = [];
  for (const d of shape) {
    if (typeof d === 'number') size *= d;
    else symbols.push(d);
  }
  return { size, symbols: symbols.sort() };
}

export function sameNumel(a: Shape, b: Shape): boolean {
  const x = symbolicNumel(a);
  const y = symbolicNumel(b);
  return x.size === y.size && x.symbols.join(',') === y.symbols.join(',');
}

/** Numpy broadcasting of two shapes; returns an error message instead of a shape when they do not broadcast. */
export function broadcastShapes(a: Shape, b: Shape): Shape | string {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  // Aligned at the last axis; a shorter shape has 1s in front (read without negative indices, which are slow).
  const da = n - a.length;
  const db = n - b.length;
  for (let i = 0; i < n; i++) {
    const x = i < da ? 1 : a[i - da];
    const y = i < db ? 1 : b[i - db];
    if (x === y || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else return `shapes ${formatShape(a)} and ${formatShape(b)} do not broadcast (dimension ${i}: ${x} vs ${y})`;
  }
  return out;
}

export function normalizeAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}
