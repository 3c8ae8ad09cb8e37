// The reference side of bisect: every value of a graph on the interpreter, and the check of the pass pipeline.
// Kernels are compared with the compiled graph interpreted op by op; a rewrite that changed what the program
// computes leaves the kernels agreeing with a wrong graph. So the compiled graph's outputs and new state are also
// compared with the traced graph's, and where they differ the pipeline is run again, the graph after each pass
// interpreted, and the first pass whose graph differs from the traced one is named.

import { interpret } from '../backends/reference/interpreter.ts';
import { HostTensor } from '../ir/host-tensor.ts';
import { Graph, Module, usersOf, Value } from '../ir/graph.ts';
import { kernelNodeLines } from '../ir/printer.ts';
import { sameType } from '../ir/shape.ts';
import { ParamStore } from '../runtime/params.ts';
import { compareTensors, Difference, Tolerance, toleranceFor } from './bisect-compare.ts';
import { defaultContext, PassContext } from './passes/context.ts';
import { defaultPasses, Pass, runPipeline } from './passes/pipeline.ts';

/** An output or a state's new value, compared between two graphs of one step. */
export interface ResultCheck extends Difference {
  /** `logits`, `output 0`, `state history`. */
  readonly name: string;
  readonly type: string;
}

export interface PassReport {
  /** Whether the compiled graph's outputs and new state agree with the traced graph's, both on the interpreter. */
  readonly agrees: boolean;
  /** Every output and state, compiled graph against traced graph. */
  readonly checks: readonly ResultCheck[];
  /** The first pass after which the graph's results differ from the traced graph's. */
  readonly pass?: string;
  /** The first result that differs after it. */
  readonly result?: ResultCheck;
  /**
   * A node of that pass's result, computing a value that no node of the pass's input at the same model line holds,
   * that leads to the difference through such values only: most likely where the rewrite went wrong.
   */
  readonly suspect?: { readonly value: string; readonly op: string; readonly text: string; readonly loc?: string };
}

/** `g` with extra outputs (named `names`, else unnamed); everything else shared with `g`. */
export function withOutputs(g: Graph, extra: readonly Value[], names: readonly string[] = []): Graph {
  const out = new Graph(g.name);
  out.inputs.push(...g.inputs);
  out.params.push(...g.params);
  out.states.push(...g.states);
  for (const [v, d] of g.derivations) out.derivations.set(v, d);
  out.nodes = g.nodes;
  out.kernels = g.kernels;
  out.stateUpdates = g.stateUpdates;
  out.outputs = [...g.outputs, ...extra];
  out.outputNames = [...g.outputNames, ...extra.map((_, i) => names[i] ?? '')];
  return out;
}

/** Every value of `g` on the reference interpreter: inputs and state as given, and each node's result. */
export function interpretAll(g: Graph, inputs: Readonly<Record<string, HostTensor>>, states: ReadonlyMap<string, HostTensor>,
  params: ParamStore): Map<Value, HostTensor> {
  const all = withOutputs(g, g.nodes.map((n) => n.output));
  const outs = interpret(all, { inputs, param: (name) => params.tensor(g, name), states: new Map(states) });
  const values = new Map<Value, HostTensor>();
  for (const v of g.inputs) values.set(v, inputs[v.name!]);
  for (const v of g.states) values.set(v, states.get(v.name!)!);
  all.outputs.forEach((v, i) => values.set(v, outs[i]));
  return values;
}

/** A step's results by name: its outputs, then each state's value at the end. */
function results(g: Graph): { name: string; value: Value }[] {
  return [
    ...g.outputs.map((value, i) => ({ name: g.outputNames[i] || `output ${i}`, value })),
    ...g.states.map((s) => ({ name: `state ${s.name}`, value: g.stateUpdates.find((u) => u.state === s)?.value ?? s })),
  ];
}

export interface PassCheckRequest {
  readonly module: Module;
  readonly passes?: readonly Pass[];
  readonly ctx?: PassContext;
  /** The compiled graph and its values on the interpreter. */
  readonly compiled: Graph;
  readonly reference: ReadonlyMap<Value, HostTensor>;
  readonly inputs: Readonly<Record<string, HostTensor>>;
  readonly states: ReadonlyMap<string, HostTensor>;
  readonly params: ParamStore;
  readonly tolerance: Tolerance;
}

export function checkPasses(req: PassCheckRequest): PassReport {
  const traced = req.module.graphs.find((g) => g.name === req.compiled.name);
  if (!traced) throw new Error(`bisect: the traced module has no graph @${req.compiled.name}`);
  const run = (g: Graph) => interpretAll(g, req.inputs, req.states, req.params);
  const want = run(traced);
  const wantResults = results(traced);
  const compare = (g: Graph, values: ReadonlyMap<Value, HostTensor>): ResultCheck[] => results(g).map((r, i) => {
    const [a, b] = [values.get(r.value)!, want.get(wantResults[i].value)!];
    return { name: r.name, type: `${b.dtype}[${b.shape.join(',')}]`, ...compareTensors(a, b, toleranceFor(b.dtype, req.tolerance)) };
  });
  const checks = compare(req.compiled, req.reference);
  if (checks.every((c) => c.agrees)) return { agrees: true, checks };

  // The pipeline again, the graph after each pass kept (passes build new graphs: the traced one is left as it was).
  const after: { pass: string; graph: Graph }[] = [];
  const ctx: PassContext = { dims: (req.ctx ?? defaultContext).dims };
  runPipeline({ graphs: [traced] }, {
    passes: req.passes ?? defaultPasses, ctx, after: (pass, m) => after.push({ pass, graph: m.graphs[0] }),
  });
  let before: { graph: Graph; values: ReadonlyMap<Value, HostTensor> } = { graph: traced, values: want };
  for (const { pass, graph } of after) {
    const values = run(graph);
    const found = compare(graph, values);
    const result = found.find((c) => !c.agrees);
    if (result) return { agrees: false, checks, pass, result, suspect: suspectNode(before, { graph, values }, req.tolerance) };
    before = { graph, values };
  }
  // The pipeline run here agrees with the traced graph: the compiled graph was not what these passes make.
  return { agrees: false, checks };
}

/**
 * The first node of `after` (in order) whose value matches no node of `before` at the same model line and type,
 * from which a chain of such unmatched values reaches a result that differs from `before`'s. Nodes a correct
 * rewrite adds (a decomposition's parts) feed values that match again, so they are passed over.
 */
function suspectNode(before: { graph: Graph; values: ReadonlyMap<Value, HostTensor> },
  after: { graph: Graph; values: ReadonlyMap<Value, HostTensor> }, tolerance: Tolerance): PassReport['suspect'] {
  const byLoc = new Map<string, Value[]>();
  for (const n of before.graph.nodes) {
    const list = byLoc.get(n.loc ?? '') ?? [];
    list.push(n.output);
    byLoc.set(n.loc ?? '', list);
  }
  const g = after.graph;
  const unmatched = new Set<Value>();
  for (const n of g.nodes) {
    const t = after.values.get(n.output)!;
    const tol = toleranceFor(n.output.type.dtype, tolerance);
    const twin = (byLoc.get(n.loc ?? '') ?? []).some((m) => sameType(m.type, n.output.type) &&
      compareTensors(t, before.values.get(m)!, tol).agrees);
    if (!twin) unmatched.add(n.output);
  }
  const beforeResults = results(before.graph);
  const bad = new Set(results(g).filter((r, i) => {
    const [a, b] = [after.values.get(r.value)!, before.values.get(beforeResults[i].value)!];
    return !compareTensors(a, b, toleranceFor(b.dtype, tolerance)).agrees;
  }).map((r) => r.value));
  const users = usersOf(g);
  const leads = new Map<Value, boolean>();
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const v = g.nodes[i].output;
    leads.set(v, unmatched.has(v) && (bad.has(v) || (users.get(v) ?? []).some((u) => leads.get(u.output))));
  }
  const index = g.nodes.findIndex((n) => leads.get(n.output));
  if (index < 0) return undefined;
  const n = g.nodes[index];
  const text = kernelNodeLines(g, { name: '', nodes: [n], attrs: { kind: 'elementwise' } })[0];
  return { value: `%${index}`, op: n.op, text, loc: n.loc };
}
