// Rebuilding a graph node by node: the mechanism the local passes share. A visitor sees each node with its
// operands already mapped into the new graph and returns the value that replaces the node's result.

import { Graph, Node, Value } from '../../ir/graph.ts';
import { Attrs } from '../../ir/ops.ts';
import { sameType } from '../../ir/shape.ts';

export interface Emitter {
  /** Appends a node to the new graph (type inferred), keeping the given source line. */
  emit(op: string, inputs: Value[], attrs?: Attrs, loc?: string): Value;
  /** The new graph being built (for declaring params). */
  readonly graph: Graph;
}

/** Returns the value replacing the node's result, or undefined to drop a node nothing uses. */
export type NodeVisitor = (node: Node, inputs: Value[], out: Emitter) => Value | undefined;

/** Copies a node unchanged (operands mapped). */
export function keepNode(n: Node, inputs: Value[], out: Emitter): Value {
  // Operands of the types n had give n's type again: no need to infer it (every pass copies most nodes). Equal
  // types are often distinct objects (a derived parameter's, inferred again in each copy of the graph).
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i].type;
    if (t !== n.inputs[i].type && !sameType(t, n.inputs[i].type)) return out.emit(n.op, inputs, n.attrs, n.loc);
  }
  return out.graph.appendNode(n.op, inputs, n.attrs, n.output.type, n.loc);
}

/** An empty graph declaring g's inputs, params (derived ones too) and state, and the map from g's to its values. */
export function copySignature(g: Graph): { out: Graph; map: Map<Value, Value> } {
  const out = new Graph(g.name);
  const map = new Map<Value, Value>();
  // g's declarations were checked as g was built: the copies go onto the lists as they are (every pass copies them).
  const copy = (list: Value[], v: Value) => {
    const c = new Value(v.kind, v.type, v.name);
    list.push(c);
    map.set(v, c);
    return c;
  };
  for (const v of g.inputs) copy(out.inputs, v);
  for (const v of g.params) {
    const c = copy(out.params, v);
    const d = g.derivations.get(v);
    if (d) out.derivations.set(c, { ...d, inputs: d.inputs.map((i) => map.get(i)!) });
  }
  for (const v of g.states) copy(out.states, v);
  return { out, map };
}

/** An emitter appending to `out`. */
export function emitterFor(out: Graph): Emitter {
  return { graph: out, emit: (op, inputs, attrs = {}, loc) => out.addNode(op, inputs, attrs, loc) };
}

/** A new graph with the same signature, params and state, built by `visit` from each node of `g` in order. */
export function rewriteGraph(g: Graph, visit: NodeVisitor): Graph {
  const { out, map } = copySignature(g);
  const emitter = emitterFor(out);
  const mapped = (v: Value) => {
    const m = map.get(v);
    if (!m) throw new Error(`rewrite of @${g.name} dropped a node that is still used`);
    return m;
  };
  for (const n of g.nodes) {
    // A node reading a dropped node's result is dead too (dce drops whole dead chains, not only their ends); had
    // it been used, the use that needs it fails below or in a later node's mapping.
    const ins: Value[] = [];
    for (const v of n.inputs) {
      const m = map.get(v);
      if (!m) break;
      ins.push(m);
    }
    if (ins.length < n.inputs.length) continue;
    const v = visit(n, ins, emitter);
    if (v) map.set(n.output, v);
  }
  out.outputs = g.outputs.map(mapped);
  out.outputNames = [...g.outputNames];
  for (const u of g.stateUpdates) out.setState(mapped(u.state), mapped(u.value));
  return out;
}

/**
 * The constant every element of a value holds: a scalar `const` node, or one broadcast by expand or reshape
 * (scalar(1).reshape(1, 1)); else undefined. Its shape is not the scalar's, so rules must check the result type.
 */
export function constValue(v: Value): number | undefined {
  const p = v.producer;
  if (p?.op === 'const') return p.attrs.value as number;
  return p?.op === 'expand' || p?.op === 'reshape' ? constValue(p.inputs[0]) : undefined;
}
