// A model script for the artifact tests (test/compiler/artifact.test.ts): a symbolic row count, a reduction, a bf16
// weight next to an f32 one, and a state written at a position, so an artifact exercises each kind of buffer.
import { DType, param, state, type Tensor } from '../../index.ts';

export function cachedMlp(x: Tensor<'f32', ['S', 16]>, pos: Tensor<'i32', []>): Tensor {
  const h = x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt());
  const y = h.matmul(param('up', DType.BF16, [16, 32])).silu().matmul(param('down', DType.F32, [32, 16]));
  state('rows', DType.F32, [8, 16]).write(y, pos, 0);
  return x.add(y);
}
