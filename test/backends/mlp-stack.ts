// A model of another structure than Llama for the megakernel's tests: a stack of RMSNorm → up projection → SiLU →
// down projection → residual blocks and an untied head, at sizes that divide no tile (3 rows, 48 wide, 200 inner,
// 75 outputs), with random weights (the head's in bf16).

import { DType, param, trace } from '../../compiler/index.ts';
import { Tensor } from '../../compiler/tensor.ts';
import { Graph } from '../../ir/graph.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Rng } from './rng.ts';

export const MLP_ROWS = 3;
const [hidden, inner, outputs, layers] = [48, 200, 75, 3];

const rmsNorm = (x: Tensor, w: Tensor) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).mul(w);

/** The graph @mlp: x f32[rows, 48] → f32[rows, 75] (3 rows, or a symbolic count). */
export function mlpStack(rows: number | string = MLP_ROWS): Graph {
  return trace('mlp', [{ name: 'x', dtype: DType.F32, shape: [rows, hidden] }], (x: Tensor) => {
    let h = x;
    for (let l = 0; l < layers; l++) {
      const up = rmsNorm(h, param(`l${l}.norm`, DType.F32, [hidden])).matmul(param(`l${l}.up`, DType.F32, [hidden, inner])).silu();
      h = h.add(up.matmul(param(`l${l}.down`, DType.F32, [inner, hidden])));
    }
    return rmsNorm(h, param('final.norm', DType.F32, [hidden])).matmul(param('head', DType.BF16, [hidden, outputs]));
  });
}

/** Random values for every parameter of `g` and for its input, from `seed`. */
export function mlpValues(g: Graph, seed: number): { params: Map<string, HostTensor>; x: HostTensor } {
  const rng = new Rng(seed);
  const random = (dtype: DType, shape: readonly number[], scale: number) =>
    hostTensor(dtype, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => scale * rng.normal()));
  const params = new Map<string, HostTensor>();
  for (const v of g.params) params.set(v.name!, random(v.type.dtype, v.type.shape as number[], 0.15));
  return { params, x: random(DType.F32, [MLP_ROWS, hidden], 1) };
}
