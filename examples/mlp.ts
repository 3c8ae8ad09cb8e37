// A two-layer MLP block as a model script for `tsfuse compile examples/mlp.ts`: RMSNorm, an up projection with
// SiLU, a down projection and a residual. The input's dtype and shape are declared in the signature (a symbolic
// row count S), the weights with param().
//   npx tsfuse compile examples/mlp.ts --dump-ir --out /tmp/mlp.ts

import { DType, param, type Tensor } from 'tsfuse';

const hidden = 64;
const inner = 256;

/** x / rms(x) * weight over the last axis. */
function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-5): Tensor {
  return x.mul(x.pow(2).mean(-1, { keepdims: true }).add(eps).rsqrt()).mul(weight);
}

export function mlp(x: Tensor<'f32', ['S', 64]>): Tensor {
  const h = rmsNorm(x, param('norm.weight', DType.F32, [hidden]));
  const up = h.matmul(param('up.weight', DType.F32, [hidden, inner])).silu();
  const down = up.matmul(param('down.weight', DType.F32, [inner, hidden]));
  return x.add(down);
}
