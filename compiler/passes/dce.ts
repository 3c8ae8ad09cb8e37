// dce: drops nodes whose results reach neither an output nor a state update.

import { Graph, Value } from '../../ir/graph.ts';
import { keepNode, rewriteGraph } from './rewrite.ts';

export function dce(g: Graph): Graph {
  const live = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i];
    if (live.has(n.output)) for (const v of n.inputs) live.add(v);
  }
  // Nothing dead: the graph as it is (a copy would be the same graph).
  if (g.nodes.every((n) => live.has(n.output))) return g;
  return rewriteGraph(g, (n, ins, out) => (live.has(n.output) ? keepNode(n, ins, out) : undefined));
}
