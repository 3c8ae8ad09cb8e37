// A model script with a shape error: the matmul's contraction sizes differ.
import { DType, param, type Tensor } from '../../index.ts';

export function project(x: Tensor<'f32', ['S', 8]>): Tensor {
  const w = param('w', DType.F32, [16, 4]);
  return x.matmul(w); // LINE-MATMUL
}
