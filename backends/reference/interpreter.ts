// The reference interpreter: executes a graph op by op on the CPU, dispatching on the op to its rule in ir/semantics.ts.

import { Graph, Node, Value } from '../../ir/graph.ts';
import { printAttrs } from '../../ir/printer.ts';
import { DimBindings, formatShape, formatType, resolveShape, TensorType } from '../../ir/shape.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { evalRule } from '../../ir/semantics.ts';

export interface GraphEnv {
  /** Graph inputs by name. */
  readonly inputs: Readonly<Record<string, HostTensor>>;
  /** Parameter lookup by name (weights). */
  readonly param: (name: string) => HostTensor;
  /** State tensors by name; updated (replaced) with their new values after the run. */
  readonly states: Map<string, HostTensor>;
}

export class InterpretError extends Error {}

/** Runs `g` and returns its outputs; state updates are written back into env.states. */
export function interpret(g: Graph, env: GraphEnv): HostTensor[] {
  const bindings = new Map<string, number>();
  const vals = new Map<Value, HostTensor>();
  for (const v of g.inputs) {
    const t = env.inputs[v.name!];
    if (!t) throw new InterpretError(`graph @${g.name}: no value given for input %${v.name}`);
    vals.set(v, checkBinding(g, v, t, bindings));
  }
  for (const v of g.params) vals.set(v, checkBinding(g, v, env.param(v.name!), bindings));
  for (const v of g.states) {
    const t = env.states.get(v.name!);
    if (!t) throw new InterpretError(`graph @${g.name}: state %${v.name} has no tensor`);
    vals.set(v, checkBinding(g, v, t, bindings));
  }
  g.nodes.forEach((n, i) => vals.set(n.output, evalNode(g, n, i, vals, bindings)));
  for (const u of g.stateUpdates) env.states.set(u.state.name!, vals.get(u.value)!);
  return g.outputs.map((v) => vals.get(v)!);
}

function evalNode(g: Graph, n: Node, i: number, vals: Map<Value, HostTensor>, bindings: DimBindings): HostTensor {
  const rule = evalRule(n.op);
  if (!rule) throw new InterpretError(`graph @${g.name}, node %${i}: op '${n.op}' has no reference rule`);
  try {
    const out = { dtype: n.output.type.dtype, shape: resolveShape(n.output.type.shape, bindings) };
    return rule(n.inputs.map((v) => vals.get(v)!), n.attrs, out);
  } catch (e) {
    // Name the node and the model line, as torch.fx does, instead of a frame deep inside a rule.
    const at = n.loc ? ` (${n.loc})` : '';
    throw new InterpretError(
      `graph @${g.name}, node %${i} = ${n.op} ${printAttrs(n.attrs)}${at}: ${(e as Error).message}`, { cause: e });
  }
}

/** Checks a tensor against its declared type, binding symbolic dims on first sight. */
function checkBinding(g: Graph, v: Value, t: HostTensor, bindings: Map<string, number>): HostTensor {
  const want: TensorType = v.type;
  const bad = () => new InterpretError(
    `graph @${g.name}: %${v.name} must be ${formatType(want)}, got ${t.dtype}${formatShape(t.shape)}`);
  if (t.dtype !== want.dtype || t.shape.length !== want.shape.length) throw bad();
  want.shape.forEach((d, i) => {
    if (typeof d === 'number') {
      if (d !== t.shape[i]) throw bad();
    } else if (bindings.has(d)) {
      if (bindings.get(d) !== t.shape[i]) throw bad();
    } else {
      bindings.set(d, t.shape[i]);
    }
  });
  return t;
}
