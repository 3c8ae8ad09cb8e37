// The graph IR: SSA values, nodes with attributes, graphs with inputs, parameters, mutable state and outputs.

import { Attrs, opDef, OpError } from './ops.ts';
import { formatType, TensorType } from './shape.ts';

/** Where a value comes from: a graph input, a parameter (weight), mutable state (KV cache), or a node. */
export type ValueKind = 'input' | 'param' | 'state' | 'node';

export class Value {
  /** The node that computes this value; undefined for inputs, params and state. */
  producer: Node | undefined = undefined;
  constructor(
    readonly kind: ValueKind,
    public type: TensorType,
    /** Name of an input, param or state; node results are numbered when printed. */
    readonly name?: string,
  ) {}
}

export interface Node {
  readonly op: string;
  inputs: Value[];
  readonly attrs: Attrs;
  readonly output: Value;
  /** Source line of the model code that created the node, e.g. "examples/llama.ts:42". */
  readonly loc?: string;
}

/** A state tensor's new value at the end of the graph (written back in place by the runtime). */
export interface StateUpdate {
  readonly state: Value;
  readonly value: Value;
}

/**
 * What fusion built a kernel around, which decides how lowering splits it into rows: an elementwise chain, a
 * reduction (with what reads the same rows), a contraction (matmuls with their prologue and epilogue), attention
 * (scores, softmax and probs·v), or KV-cache writes. A closed set: each `switch` over it ends in `satisfies never`,
 * so a new kind breaks the build wherever it is not handled.
 */
export const kernelKinds = ['elementwise', 'reduce', 'contraction', 'attention', 'state-write'] as const;
export type KernelKind = typeof kernelKinds[number];

export const isKernelKind = (s: unknown): s is KernelKind => kernelKinds.includes(s as KernelKind);

/** A kernel's attributes: its kind, and whatever else passes recorded (memory slots). */
export interface KernelAttrs extends Attrs {
  readonly kind: KernelKind;
}

/**
 * A fused kernel: a contiguous run of the graph's nodes that runs as one launch. Values it defines and that are
 * used after it are written to memory; all others live in registers.
 */
export interface Kernel {
  readonly name: string;
  readonly nodes: Node[];
  readonly attrs: KernelAttrs;
}

/** Any run of nodes treated as one launch: a fused kernel, or one node alone (the compile report's unfused baseline). */
export type NodeGroup = Pick<Kernel, 'nodes'>;

/** A parameter computed once at load time from other parameters (concatenated projection weights). */
export interface ParamDerivation {
  readonly op: string;
  readonly inputs: Value[];
  readonly attrs: Attrs;
}

export class Graph {
  readonly inputs: Value[] = [];
  readonly params: Value[] = [];
  readonly states: Value[] = [];
  nodes: Node[] = [];
  outputs: Value[] = [];
  /** The outputs' names (the model contract: `logits`, `next`), '' where an output has none. */
  outputNames: string[] = [];
  stateUpdates: StateUpdate[] = [];
  /** Set by fusion: every node belongs to exactly one kernel. Empty for an unfused graph. */
  kernels: Kernel[] = [];
  readonly derivations = new Map<Value, ParamDerivation>();
  private declared = new Set<string | undefined>();
  private declaredCount = 0;

  constructor(readonly name: string) {}

  addInput(name: string, type: TensorType): Value {
    return this.declare(this.inputs, new Value('input', type, name));
  }

  addParam(name: string, type: TensorType): Value {
    return this.declare(this.params, new Value('param', type, name));
  }

  /** Declares a parameter computed at load time by `op` from earlier parameters. */
  addDerivedParam(name: string, op: string, inputs: Value[], attrs: Attrs): Value {
    for (const v of inputs) {
      if (v.kind !== 'param') throw new GraphError(`derived parameter %${name} must be computed from parameters only`);
    }
    const v = this.addParam(name, inferType(op, inputs.map((i) => i.type), attrs));
    this.derivations.set(v, { op, inputs, attrs });
    return v;
  }

  addState(name: string, type: TensorType): Value {
    return this.declare(this.states, new Value('state', type, name));
  }

  /** Appends a node, inferring its result type from the op registry; throws GraphError on a bad op or operands. */
  addNode(op: string, inputs: Value[], attrs: Attrs = {}, loc?: string): Value {
    const type = inferType(op, inputs.map((v) => v.type), attrs);
    return this.appendNode(op, inputs, attrs, type, loc);
  }

  /** Appends a node whose type is already known (the parser, which checks it against inference in the verifier). */
  appendNode(op: string, inputs: Value[], attrs: Attrs, type: TensorType, loc?: string): Value {
    const output = new Value('node', type);
    const node: Node = { op, inputs, attrs, output, loc };
    output.producer = node;
    this.nodes.push(node);
    return output;
  }

  /** The output called `name`, or undefined. */
  output(name: string): Value | undefined {
    const i = this.outputNames.indexOf(name);
    return i >= 0 ? this.outputs[i] : undefined;
  }

  setState(state: Value, value: Value): void {
    if (state.kind !== 'state') throw new GraphError(`${state.name ?? 'value'} is not a state tensor`);
    if (this.stateUpdates.some((u) => u.state === state)) this.stateUpdates = this.stateUpdates.filter((u) => u.state !== state);
    this.stateUpdates.push({ state, value });
  }

  private declare(list: Value[], v: Value): Value {
    checkDeclaration(this.name, v);
    // The names declared so far, rebuilt if values were pushed onto the lists directly.
    const count = this.inputs.length + this.params.length + this.states.length;
    if (count !== this.declaredCount) this.declared = new Set([...this.inputs, ...this.params, ...this.states].map((u) => u.name));
    if (this.declared.has(v.name)) throw new GraphError(`graph @${this.name} already declares %${v.name}`);
    list.push(v);
    this.declared.add(v.name);
    this.declaredCount = count + 1;
    return v;
  }
}

/**
 * A declared name prints as `%name` and must read back as the same value: letters, digits, `_` and `.` (as the IR
 * text's lexer reads them), and not digits alone, which are the printer's numbers for node results. Sizes must be
 * whole numbers that print exactly (below 2^53) or names.
 */
function checkDeclaration(graph: string, v: Value): void {
  const name = v.name ?? '';
  if (!/^[A-Za-z0-9_.]+$/.test(name) || /^\d+$/.test(name)) {
    throw new GraphError(`graph @${graph}: %${name} cannot be declared: a name is letters, digits, '_' and '.', and not a number (node results are numbered)`);
  }
  for (const d of v.type.shape) {
    const ok = typeof d === 'number' ? Number.isSafeInteger(d) && d >= 0 : /^[A-Za-z_][A-Za-z0-9_.]*$/.test(d);
    if (!ok) throw new GraphError(`graph @${graph}: %${name} has a bad dimension ${JSON.stringify(d)} (a whole number below 2^53, or a name)`);
  }
}

/** Several graphs over the same parameters and state (Llama: prefill and decode). */
export interface Module {
  graphs: Graph[];
}

export class GraphError extends Error {}

export function inferType(op: string, inputs: readonly TensorType[], attrs: Attrs): TensorType {
  const d = opDef(op);
  if (!d) throw new GraphError(`unknown op '${op}'`);
  if (d.arity === 'variadic' ? inputs.length < 1 : inputs.length !== d.arity) {
    throw new GraphError(`${op} takes ${d.arity === 'variadic' ? 'one or more' : d.arity} operands, got ${inputs.length}`);
  }
  for (const k in d.attrs) {
    if (!(k in attrs)) throw new GraphError(`${op} needs attribute ${k} (${d.attrs[k]})`);
  }
  for (const k in attrs) {
    if (!(k in d.attrs)) throw new GraphError(`${op} has no attribute ${k}`);
  }
  try {
    return d.infer(inputs, attrs);
  } catch (e) {
    if (e instanceof OpError) {
      throw new GraphError(`${op}(${inputs.map(formatType).join(', ')}): ${e.message}`);
    }
    throw e;
  }
}

/** Values used by each value's consumers, in node order. */
export function usersOf(g: Graph): Map<Value, Node[]> {
  const users = new Map<Value, Node[]>();
  for (const n of g.nodes) {
    for (const v of n.inputs) {
      const list = users.get(v);
      if (list) list.push(n);
      else users.set(v, [n]);
    }
  }
  return users;
}

/**
 * What a kernel reads from memory (values defined outside it) and writes (values it defines that are used after
 * it: by another kernel, as a graph output, or as a state's new value), each in first-use order.
 */
export function kernelIO(g: Graph, k: NodeGroup, kernels: readonly NodeGroup[] = g.kernels): { reads: Value[]; writes: Value[] } {
  const inside = new Set(k.nodes.map((n) => n.output));
  const reads: Value[] = [];
  for (const n of k.nodes) for (const v of n.inputs) if (!inside.has(v) && !reads.includes(v)) reads.push(v);
  const usedOutside = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  for (const other of kernels) {
    if (other !== k) for (const n of other.nodes) for (const v of n.inputs) usedOutside.add(v);
  }
  const writes = k.nodes.map((n) => n.output).filter((v) => usedOutside.has(v));
  return { reads, writes };
}

/** What a kernel reads from memory and writes to it (kernelIO). */
export interface KernelIO {
  readonly reads: Value[];
  readonly writes: Value[];
}

/**
 * The kernelIOs of each graph's own kernels, with the kernels' node lists, outputs and state updates they were
 * found from: memory planning, lowering and printing each ask for them of the same graph.
 */
const ioMemo = new WeakMap<Graph, { readonly nodes: readonly Node[][]; readonly outputs: Value[]; readonly stateUpdates: StateUpdate[]; readonly ios: readonly KernelIO[] }>();

/**
 * kernelIO of every kernel at once, in one walk over the graph (kernelIO per kernel walks all kernels each time).
 * The lists are shared by every caller asking about the same kernels: read them, never change them.
 */
export function kernelIOs(g: Graph, kernels: readonly NodeGroup[] = g.kernels): KernelIO[] {
  if (kernels !== g.kernels) return findKernelIOs(g, kernels);
  const hit = ioMemo.get(g);
  if (hit && hit.outputs === g.outputs && hit.stateUpdates === g.stateUpdates && hit.nodes.length === kernels.length &&
    kernels.every((k, i) => k.nodes === hit.nodes[i])) return [...hit.ios];
  const ios = findKernelIOs(g, kernels);
  ioMemo.set(g, { nodes: kernels.map((k) => k.nodes), outputs: g.outputs, stateUpdates: g.stateUpdates, ios });
  return [...ios];
}

function findKernelIOs(g: Graph, kernels: readonly NodeGroup[]): KernelIO[] {
  const sinks = new Set<Value>([...g.outputs, ...g.stateUpdates.map((u) => u.value)]);
  /** The one kernel reading each value, or null when several do. */
  const reader = new Map<Value, NodeGroup | null>();
  for (const k of kernels) {
    for (const n of k.nodes) {
      for (const v of n.inputs) {
        const r = reader.get(v);
        if (r === undefined) reader.set(v, k);
        else if (r !== k) reader.set(v, null);
      }
    }
  }
  return kernels.map((k) => {
    const inside = new Set(k.nodes.map((n) => n.output));
    const seen = new Set<Value>();
    const reads: Value[] = [];
    for (const n of k.nodes) {
      for (const v of n.inputs) {
        if (inside.has(v) || seen.has(v)) continue;
        seen.add(v);
        reads.push(v);
      }
    }
    const writes = k.nodes.map((n) => n.output).filter((v) => {
      const r = reader.get(v);
      return sinks.has(v) || r === null || (r !== undefined && r !== k);
    });
    return { reads, writes };
  });
}
