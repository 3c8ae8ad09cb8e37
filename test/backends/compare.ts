// Comparing a backend's tensors with the reference interpreter's: floats within float32 tolerance (one unit in the
// last place for 16-bit floats, whose rounding may go either way near a boundary), ints and bools exactly.

import { DType } from '../../ir/dtype.ts';
import { formatShape } from '../../ir/shape.ts';
import { HostTensor } from '../../ir/host-tensor.ts';

const RTOL: Partial<Record<DType, number>> = { [DType.F32]: 1e-4, [DType.BF16]: 2 ** -7, [DType.F16]: 2 ** -10 };
const ATOL = 1e-5;

/** The first element where `got` differs from `want`, described; undefined when they agree. */
export function mismatch(got: HostTensor, want: HostTensor, rtolF32 = RTOL[DType.F32]!, atol = ATOL): string | undefined {
  if (got.dtype !== want.dtype || formatShape(got.shape) !== formatShape(want.shape)) {
    return `got ${got.dtype}${formatShape(got.shape)}, want ${want.dtype}${formatShape(want.shape)}`;
  }
  const rtol = want.dtype === DType.F32 ? rtolF32 : RTOL[want.dtype];
  for (let i = 0; i < want.data.length; i++) {
    const [a, b] = [got.data[i], want.data[i]];
    const ok = a === b || (Number.isNaN(a) && Number.isNaN(b)) ||
      (rtol !== undefined && Math.abs(a - b) <= atol + rtol * Math.max(Math.abs(a), Math.abs(b)));
    if (!ok) return `element ${i}: got ${a}, want ${b}`;
  }
  return undefined;
}

/** ‖ours − ref‖ / ‖ref‖ (the fixtures' measure of agreement). */
export function relativeError(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    diff += (ours[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}
