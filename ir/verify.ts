// The verifier: rejects ill-formed graphs with a message naming the node (its printed form and source line).

import { Graph, GraphError, inferType, Module, Node, Value } from './graph.ts';
import { printAttrs } from './printer.ts';
import { formatType, sameType } from './shape.ts';

export class VerifyError extends Error {}

export function verifyModule(m: Module): void {
  const names = new Set<string>();
  // State is shared by the graphs of a module: one name, one type (and params the same).
  const shared = new Map<string, { type: string; graph: string }>();
  for (const g of m.graphs) {
    if (names.has(g.name)) throw new VerifyError(`module has two graphs named @${g.name}`);
    names.add(g.name);
    verifyGraph(g);
    for (const v of [...g.params, ...g.states]) {
      const key = `${v.kind} %${v.name}`;
      const seen = shared.get(key);
      if (seen && seen.type !== formatType(v.type)) {
        throw new VerifyError(`${key} is ${seen.type} in graph @${seen.graph} but ${formatType(v.type)} in graph @${g.name}`);
      }
      if (!seen) shared.set(key, { type: formatType(v.type), graph: g.name });
    }
  }
}

export function verifyGraph(g: Graph): void {
  const defined = new Set<Value>([...g.inputs, ...g.params, ...g.states]);
  const where = (n: Node, i: number) =>
    `graph @${g.name}, node %${i} (${n.op}${n.inputs.length ? ' ' : ''}${n.inputs.map((v) => formatType(v.type)).join(', ')}` +
    `${Object.keys(n.attrs).length ? ' ' + printAttrs(n.attrs) : ''})${n.loc ? ' at ' + n.loc : ''}`;
  // Params before nodes, as in the text, so a bad derived param is reported before the nodes it upsets.
  verifyDerivations(g);
  g.nodes.forEach((n, i) => {
    n.inputs.forEach((v, k) => {
      if (!defined.has(v)) throw new VerifyError(`${where(n, i)}: operand ${k} is used before it is defined`);
    });
    if (n.output.producer !== n) throw new VerifyError(`${where(n, i)}: result is not linked to its node`);
    let inferred;
    try {
      inferred = inferType(n.op, n.inputs.map((v) => v.type), n.attrs);
    } catch (e) {
      if (e instanceof GraphError) throw new VerifyError(`${where(n, i)}: ${e.message}`);
      throw e;
    }
    if (!sameType(inferred, n.output.type)) {
      throw new VerifyError(`${where(n, i)}: declared type ${formatType(n.output.type)} but the op gives ${formatType(inferred)}`);
    }
    if (defined.has(n.output)) throw new VerifyError(`${where(n, i)}: result is defined twice`);
    defined.add(n.output);
  });
  const seen = new Set<Value>();
  for (const u of g.stateUpdates) {
    const name = `%${u.state.name}`;
    if (!g.states.includes(u.state)) throw new VerifyError(`graph @${g.name}: state update of ${name}, which is not a state of this graph`);
    if (seen.has(u.state)) throw new VerifyError(`graph @${g.name}: state ${name} is updated twice`);
    seen.add(u.state);
    if (!defined.has(u.value)) throw new VerifyError(`graph @${g.name}: state ${name} is set to an undefined value`);
    if (!sameType(u.state.type, u.value.type)) {
      throw new VerifyError(`graph @${g.name}: state ${name}: ${formatType(u.state.type)} is set to a ${formatType(u.value.type)}`);
    }
  }
  g.outputs.forEach((v, k) => {
    if (!defined.has(v)) throw new VerifyError(`graph @${g.name}: output ${k} is not defined in the graph`);
  });
  if (g.outputs.length === 0) throw new VerifyError(`graph @${g.name} returns nothing`);
  verifyKernels(g);
}

function verifyDerivations(g: Graph): void {
  for (const [p, d] of g.derivations) {
    const where = `graph @${g.name}: derived param %${p.name}`;
    for (const v of d.inputs) {
      if (!g.params.includes(v) || g.params.indexOf(v) >= g.params.indexOf(p)) {
        throw new VerifyError(`${where}: operand %${v.name ?? '?'} is not a parameter declared before it`);
      }
    }
    let t;
    try {
      t = inferType(d.op, d.inputs.map((v) => v.type), d.attrs);
    } catch (e) {
      if (e instanceof GraphError) throw new VerifyError(`${where}: ${e.message}`);
      throw e;
    }
    if (!sameType(t, p.type)) throw new VerifyError(`${where}: declared ${formatType(p.type)} but ${d.op} gives ${formatType(t)}`);
  }
}

/** Fused graphs: the kernels cover the node list exactly, each a contiguous run, in order. */
function verifyKernels(g: Graph): void {
  if (g.kernels.length === 0) return;
  const names = new Set<string>();
  let i = 0;
  for (const k of g.kernels) {
    if (names.has(k.name)) throw new VerifyError(`graph @${g.name}: two kernels named @${k.name}`);
    names.add(k.name);
    if (k.nodes.length === 0) throw new VerifyError(`graph @${g.name}: kernel @${k.name} is empty`);
    for (const n of k.nodes) {
      if (g.nodes[i] !== n) throw new VerifyError(`graph @${g.name}: kernel @${k.name} does not match the node order at node %${i}`);
      i++;
    }
  }
  if (i !== g.nodes.length) throw new VerifyError(`graph @${g.name}: node %${i} is outside every kernel`);
}
