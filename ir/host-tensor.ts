// Tensors in host memory, as the reference interpreter and the CPU backends hold them: floats of every width are
// kept in a Float32Array with values rounded to their dtype, integers in Int32Array/Uint32Array, bools in bytes.

import { DType } from './dtype.ts';
import { formatShape, numel } from './shape.ts';
import { roundBf16, roundF16 } from './half.ts';

export { roundBf16, roundF16 };

export type HostData = Float32Array | Int32Array | Uint32Array | Uint8Array;

export interface HostTensor {
  readonly dtype: DType;
  readonly shape: number[];
  readonly data: HostData;
}

export function allocHost(dtype: DType, shape: readonly number[]): HostTensor {
  const n = numel(shape);
  return { dtype, shape: [...shape], data: allocData(dtype, n) };
}

export function allocData(dtype: DType, n: number): HostData {
  switch (dtype) {
    case DType.F32: case DType.F16: case DType.BF16: return new Float32Array(n);
    case DType.I32: return new Int32Array(n);
    case DType.U32: return new Uint32Array(n);
    case DType.Bool: return new Uint8Array(n);
    default: return dtype satisfies never;
  }
}

export function hostTensor(dtype: DType, shape: readonly number[], values: ArrayLike<number>): HostTensor {
  const t = allocHost(dtype, shape);
  if (values.length !== t.data.length) {
    throw new Error(`${values.length} values do not fill a ${dtype}${formatShape(shape)} tensor`);
  }
  const round = rounderFor(dtype);
  for (let i = 0; i < values.length; i++) t.data[i] = round(values[i]);
  return t;
}

/** The rounding a value gets when stored as `dtype`. */
export function rounderFor(dtype: DType): (x: number) => number {
  switch (dtype) {
    case DType.F32: return Math.fround;
    case DType.F16: return roundF16;
    case DType.BF16: return roundBf16;
    case DType.I32: return (x) => Math.trunc(x) | 0;
    case DType.U32: return (x) => Math.trunc(x) >>> 0;
    case DType.Bool: return (x) => (x ? 1 : 0);
    default: return dtype satisfies never;
  }
}

/** Nested arrays of numbers, as a user writes a small tensor literal. */
export type NestedNumbers = number | readonly NestedNumbers[];

/**
 * A host tensor from values: flat values with a shape, or nested arrays whose nesting gives the shape
 * (`tensor([[1, 2], [3, 4]])` is f32[2,2]). Values are rounded to the dtype as it stores them.
 */
export function tensor(data: ArrayLike<number> | NestedNumbers, shape?: readonly number[], dtype: DType | `${DType}` = DType.F32): HostTensor {
  const flat: number[] = [];
  const nestedShape: number[] = [];
  const walk = (x: NestedNumbers | ArrayLike<number>, depth: number): void => {
    if (typeof x === 'number') {
      if (depth !== nestedShape.length && nestedShape.length > 0) throw new Error('tensor(): ragged nested arrays');
      flat.push(x);
      return;
    }
    const n = x.length;
    if (depth === nestedShape.length) nestedShape.push(n);
    else if (nestedShape[depth] !== n) throw new Error(`tensor(): ragged nested arrays (${n} vs ${nestedShape[depth]} at depth ${depth})`);
    for (let i = 0; i < n; i++) walk((x as ArrayLike<NestedNumbers>)[i], depth + 1);
  };
  walk(data as NestedNumbers, 0);
  return hostTensor(dtype as DType, shape ?? nestedShape, flat);
}
