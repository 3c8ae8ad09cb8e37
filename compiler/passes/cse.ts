// cse: nodes with the same op, operands and attributes compute the same value; keep the first.

import { Graph, Value } from '../../ir/graph.ts';
import { Op } from '../../ir/ops.ts';
import { printAttrs } from '../../ir/printer.ts';
import { keepNode, rewriteGraph } from './rewrite.ts';

export function cse(g: Graph): Graph {
  const ids = new Map<Value, number>();
  const seen = new Map<string, Value>();
  const id = (v: Value) => {
    let i = ids.get(v);
    if (i === undefined) ids.set(v, (i = ids.size));
    return i;
  };
  return rewriteGraph(g, (n, ins, out) => {
    // A state write has an effect: two identical writes are still two writes.
    if (n.op === Op.UpdateSlice) return keepNode(n, ins, out);
    const key = `${n.op}(${ins.map(id).join(',')})${printAttrs(n.attrs)}`;
    const hit = seen.get(key);
    if (hit) return hit;
    const v = keepNode(n, ins, out);
    seen.set(key, v);
    return v;
  });
}
