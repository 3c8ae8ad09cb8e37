// fold-constants: a scalar node whose operands are all scalar constants becomes a constant, computed by the
// reference rule of its op so folding can never disagree with execution.

import { evalRule } from '../../ir/semantics.ts';
import { Graph, Node, Value } from '../../ir/graph.ts';
import { isElementwise, Op } from '../../ir/ops.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { constValue, keepNode, rewriteGraph } from './rewrite.ts';

/** A scalar elementwise node whose operands (as the new graph has them) are all constants. */
const foldable = (n: Node, ins: readonly Value[]) =>
  isElementwise(n.op) && n.output.type.shape.length === 0 && ins.length > 0 && ins.every((v) => constValue(v) !== undefined);

export function foldConstants(g: Graph): Graph {
  // Operands become constants only where an earlier node folded: with no node foldable as it is, the graph as it is.
  if (!g.nodes.some((n) => foldable(n, n.inputs))) return g;
  return rewriteGraph(g, (n, ins, out) => {
    if (!foldable(n, ins)) return keepNode(n, ins, out);
    const values = ins.map(constValue);
    const operands = ins.map((v, i) => hostTensor(v.type.dtype, [], [values[i]!]));
    const result = evalRule(n.op)!(operands, n.attrs, { dtype: n.output.type.dtype, shape: [] });
    return out.emit(Op.Const, [], { value: result.data[0], dtype: n.output.type.dtype }, n.loc);
  });
}
