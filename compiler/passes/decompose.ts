// decompose: composite ops into primitives, so that fusion sees reductions and elementwise ops it can group.

import { Op } from '../../ir/ops.ts';
import { keepNode, NodeVisitor, rewriteGraph } from './rewrite.ts';
import { Graph } from '../../ir/graph.ts';

const decomposeNode: NodeVisitor = (n, inputs, out) => {
  const [x] = inputs;
  switch (n.op) {
    case Op.Softmax: {
      // softmax(x) = exp(x - max(x)) / sum(exp(x - max(x)))
      const axes = [n.attrs.axis as number];
      const m = out.emit(Op.Max, [x], { axes, keepdims: true }, n.loc);
      const e = out.emit(Op.Exp, [out.emit(Op.Sub, [x, m], {}, n.loc)], {}, n.loc);
      const s = out.emit(Op.Sum, [e], { axes, keepdims: true }, n.loc);
      return out.emit(Op.Div, [e, s], {}, n.loc);
    }
    default:
      return keepNode(n, inputs, out);
  }
};

export function decompose(g: Graph): Graph {
  return rewriteGraph(g, decomposeNode);
}
