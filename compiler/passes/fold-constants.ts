// fold-constants: a scalar node whose operands are all scalar constants becomes a constant, computed by the
// reference rule of its op so folding can never disagree with execution.

import { evalRule } from '../../ir/semantics.ts';
import { Graph } from '../../ir/graph.ts';
import { isElementwise, Op } from '../../ir/ops.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { constValue, keepNode, rewriteGraph } from './rewrite.ts';

export function foldConstants(g: Graph): Graph {
  return rewriteGraph(g, (n, ins, out) => {
    const values = ins.map(constValue);
    const foldable = isElementwise(n.op) && n.output.type.shape.length === 0 && ins.length > 0 && values.every((v) => v !== undefined);
    if (!foldable) return keepNode(n, ins, out);
    const operands = ins.map((v, i) => hostTensor(v.type.dtype, [], [values[i]!]));
    const result = evalRule(n.op)!(operands, n.attrs, { dtype: n.output.type.dtype, shape: [] });
    return out.emit(Op.Const, [], { value: result.data[0], dtype: n.output.type.dtype }, n.loc);
  });
}
