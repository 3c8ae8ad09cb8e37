// How bisect decides whether two tensors agree: the relative error ‖got − want‖ / ‖want‖ (the measure the fixtures
// are held to) against a tolerance per dtype, integers and bools exactly, and the element that differs most.

import { DType, isFloat } from '../ir/dtype.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { formatShape } from '../ir/shape.ts';

/**
 * Relative error allowed for f32 values. 16-bit floats are allowed at least half a unit in their last place (values
 * rounded to them may round the other way near a boundary); integers and bools must be equal.
 */
export type Tolerance = number;

/** Float32 on the host (JavaScript kernels and the interpreter both round every step to f32). */
export const HOST_TOLERANCE: Tolerance = 1e-4;
/** Float32 on a GPU: exp, sin, inverseSqrt... are not correctly rounded (the fixtures' bound for GPU backends). */
export const GPU_TOLERANCE: Tolerance = 1e-3;

const halfUlp: Partial<Record<DType, number>> = { [DType.BF16]: 2 ** -8, [DType.F16]: 2 ** -11 };

/** The relative error allowed for values of dtype `d` (0: exact). */
export function toleranceFor(d: DType, f32: Tolerance): number {
  return isFloat(d) ? Math.max(f32, halfUlp[d] ?? 0) : 0;
}

/** The default tolerance when comparing two backends: the looser of theirs. */
export function defaultTolerance(...backends: string[]): Tolerance {
  return backends.some((b) => b === 'webgpu' || b === 'cuda') ? GPU_TOLERANCE : HOST_TOLERANCE;
}

export interface WorstElement {
  /** Index along every axis. */
  readonly index: readonly number[];
  /** Index into the flat (row-major) data. */
  readonly flat: number;
  readonly got: number;
  readonly want: number;
}

export interface Difference {
  /** ‖got − want‖ / ‖want‖; for an all-zero `want`, the root mean square of the difference. Infinity for NaNs. */
  readonly relErr: number;
  readonly tolerance: number;
  readonly agrees: boolean;
  readonly elements: number;
  /** Elements that differ by more than the tolerance times the root mean square of `want` (integers: at all). */
  readonly mismatched: number;
  /** The element with the largest absolute difference; absent when every element is equal. */
  readonly worst?: WorstElement;
}

export function compareTensors(got: HostTensor, want: HostTensor, tolerance: number): Difference {
  if (got.dtype !== want.dtype || formatShape(got.shape) !== formatShape(want.shape)) {
    throw new Error(`bisect compares ${got.dtype}${formatShape(got.shape)} with ${want.dtype}${formatShape(want.shape)}`);
  }
  const n = want.data.length;
  let diff2 = 0;
  let norm2 = 0;
  let worstAt = -1;
  let worstAbs = 0;
  let nan = false;
  for (let i = 0; i < n; i++) {
    const [a, b] = [got.data[i], want.data[i]];
    if (a === b || (Number.isNaN(a) && Number.isNaN(b))) {
      norm2 += Number.isFinite(b) ? b * b : 0;
      continue;
    }
    const d = Math.abs(a - b);
    if (!Number.isFinite(d)) nan = true;
    if (!(d <= worstAbs)) {
      worstAbs = d;
      worstAt = i;
    }
    diff2 += Number.isFinite(d) ? d * d : 0;
    norm2 += Number.isFinite(b) ? b * b : 0;
  }
  const rms = Math.sqrt(norm2 / Math.max(1, n));
  const relErr = nan ? Infinity : diff2 === 0 ? 0 : norm2 > 0 ? Math.sqrt(diff2 / norm2) : Math.sqrt(diff2 / n);
  const exact = tolerance === 0;
  let mismatched = 0;
  if (worstAt >= 0) {
    const bound = exact ? 0 : tolerance * rms;
    for (let i = 0; i < n; i++) {
      const [a, b] = [got.data[i], want.data[i]];
      if (a !== b && !(Number.isNaN(a) && Number.isNaN(b)) && !(Math.abs(a - b) <= bound)) mismatched++;
    }
  }
  return {
    relErr, tolerance, elements: n, mismatched,
    agrees: exact ? worstAt < 0 : relErr <= tolerance,
    worst: worstAt < 0 ? undefined : { index: unflatten(worstAt, got.shape), flat: worstAt, got: got.data[worstAt], want: want.data[worstAt] },
  };
}

function unflatten(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let a = shape.length - 1; a >= 0; a--) {
    out[a] = i % shape[a];
    i = Math.floor(i / shape[a]);
  }
  return out;
}
