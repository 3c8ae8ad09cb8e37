// A model script with a custom op whose kernel lowering disagrees with its reference semantics (the sign of the
// lowering is flipped): `tsfuse bisect` must name the kernel that fuses it and, with --inside, the op's node.
import { DType, param, registerOp, type Tensor } from '../../../index.ts';

const softsign = registerOp({
  name: 'bisect_softsign',
  arity: 1,
  reference: ([x]) => x / (1 + Math.abs(x)),
  lower: ([x], b) => b.div(b.unary('neg', x), b.add(b.const(1), b.unary('abs', x))),
});

export function block(x: Tensor<'f32', ['S', 16]>): Tensor {
  const h = x.matmul(param('w', DType.F32, [16, 32]));
  const y = softsign(h); // LINE-OP
  return y.matmul(param('v', DType.F32, [32, 16])).add(x);
}
