// A model script that branches on tensor values: `tsfuse compile` must reject each branch statically.
import { type Tensor, where } from '../../index.ts';

export function branchy(x: Tensor<'f32', [4]>, y: Tensor<'f32', [4]>): Tensor {
  let out = x;
  if (x.sum().gt(0)) out = out.neg(); // LINE-IF
  const pick = y ? x : y; // LINE-TERNARY
  const both = x && y; // LINE-AND
  while (!out.sum()) out = out.add(1); // LINE-WHILE
  const fine = where(x.gt(0), x, y);
  const maybe: Tensor | undefined = undefined;
  if (maybe) out = out.add(maybe); // a presence check, not a test of a value: allowed
  return out.add(pick).add(both).add(fine);
}
