// Tracing: running model code on symbolic tensors records an ir.Graph, each node tagged with its source line.

import { DType } from '../ir/dtype.ts';
import { Graph, GraphError, Value } from '../ir/graph.ts';
import { Attrs } from '../ir/ops.ts';
import { Shape, tensorType, TensorType } from '../ir/shape.ts';
import { callerLocation } from './source-location.ts';
import { Tensor } from './tensor.ts';

/** An error in traced model code, naming the model file and line. */
export class TraceError extends Error {
  constructor(message: string, readonly loc?: string) {
    super(loc ? `${loc}: ${message}` : message);
  }
}

let active: Graph | undefined;

export function activeGraph(what: string): Graph {
  if (!active) throw new TraceError(`${what} can only be called while tracing (inside trace())`, callerLocation());
  return active;
}

/** Records one op on the active graph; shape and dtype errors name the model line that caused them. */
export function record(op: string, inputs: Tensor[], attrs: Attrs = {}): Tensor {
  const g = activeGraph(op);
  const loc = callerLocation();
  try {
    return new Tensor(g.addNode(op, inputs.map((t) => t.value), attrs, loc));
  } catch (e) {
    if (e instanceof GraphError) throw new TraceError(e.message, loc);
    throw e;
  }
}

export interface InputSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: Shape;
}

/** What a traced function returns: one tensor, several, or named outputs (`{ logits, next }`, the model contract). */
export type TraceResult = Tensor | Tensor[] | Readonly<Record<string, Tensor>>;

/** Traces `fn` on symbolic inputs into a graph named `name`. */
export function trace(name: string, inputs: readonly InputSpec[], fn: (...args: Tensor[]) => TraceResult): Graph {
  if (active) throw new TraceError('trace() cannot be nested', callerLocation());
  const g = new Graph(name);
  active = g;
  try {
    const args = inputs.map((s) => new Tensor(g.addInput(s.name, tensorType(s.dtype, s.shape))));
    const result = fn(...args);
    const named = result instanceof Tensor || Array.isArray(result) ? undefined : Object.entries(result);
    const outs: [string, unknown][] = named ?? (Array.isArray(result) ? result : [result]).map((t) => ['', t]);
    for (const [outName, t] of outs) {
      if (!(t instanceof Tensor)) throw new TraceError(`@${name} must return tensors${outName ? ` (output '${outName}')` : ''}, got ${typeof t}`);
      g.outputs.push(t.value);
      g.outputNames.push(outName);
    }
    return g;
  } finally {
    active = undefined;
  }
}

/** Declares a parameter (a weight, read-only) of the graph being traced. */
export function param(name: string, dtype: DType, shape: Shape): Tensor {
  return new Tensor(declare('param', name, tensorType(dtype, shape)));
}

/** Declares mutable state (a KV cache): updated in place with Tensor.write. */
export function state(name: string, dtype: DType, shape: Shape): Tensor {
  return new Tensor(declare('state', name, tensorType(dtype, shape)));
}

function declare(kind: 'param' | 'state', name: string, type: TensorType): Value {
  const g = activeGraph(kind);
  try {
    return kind === 'param' ? g.addParam(name, type) : g.addState(name, type);
  } catch (e) {
    if (e instanceof GraphError) throw new TraceError(e.message, callerLocation());
    throw e;
  }
}

/** The graph input that carries the real size of dynamic dimension `symbol` (compile() pads it to a bucket). */
export function validLengthInput(symbol: string): string {
  return `${symbol}.valid`;
}

/**
 * The real size of dynamic dimension `symbol` before compile() padded it to its bucket: an i32 scalar input of the
 * graph, to mask padded positions with (`where(arange('S').lt(validLength('S')), x, 0)`).
 */
export function validLength(symbol: string): Tensor {
  const g = activeGraph('validLength');
  const name = validLengthInput(symbol);
  const have = g.inputs.find((v) => v.name === name);
  return new Tensor(have ?? g.addInput(name, tensorType(DType.I32, [])));
}
