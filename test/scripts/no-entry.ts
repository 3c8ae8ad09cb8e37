// A model script without an entry point: its exported function's input has no dtype and shape in its type.
import { type Tensor } from '../../index.ts';

export function double(x: Tensor): Tensor {
  return x.mul(2);
}

export const scale = 3;
