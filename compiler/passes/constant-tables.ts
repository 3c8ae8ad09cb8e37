// constant-tables: a small tensor computed from constants alone, through an op that costs more than a multiply-add
// (Llama's rotary frequencies: a power of the base over an arange, a reciprocal, llama3's smoothing of the long
// wavelengths), becomes a parameter derived at load time (Graph.derivations, as concatenated projections are), so
// a kernel reads a table of 32 floats rather than computing powers and divisions at every element it rotates.
//   The table's cone, every node it is computed from, becomes a chain of derived parameters, each one op of the
// ones before it (a derivation takes parameters only); nodes left unused are dropped by dce. Names come from what
// a node computes, so graphs of one module computing the same table share one parameter (one name, one type).
//   (ncu, H200: a 512-token prompt's attention kernel spent three tenths of its samples staging the query tile, the
// frequencies computed at each element; the KV-cache write did the same for every key.)

import { Graph, Node, Value } from '../../ir/graph.ts';
import { Attrs, isElementwise, Op } from '../../ir/ops.ts';
import { codeUnits, fnv1a } from '../fnv.ts';
import { keepNode, rewriteGraph } from './rewrite.ts';

/** The largest table made (a table is read where it is used; a large one would cost memory and bandwidth). */
const MAX_TABLE_ELEMENTS = 4096;

/** Ops worth computing once: powers, divisions, transcendental functions. */
const COSTLY = new Set<string>([Op.Pow, Op.Div, Op.Recip, Op.Exp, Op.Log, Op.Sqrt, Op.Rsqrt, Op.Sin, Op.Cos, Op.Tanh, Op.Sigmoid, Op.Silu]);

/** Ops through which a value computed from constants alone stays one (elementwise arithmetic and views). */
const carries = (op: string) => isElementwise(op) || op === Op.Reshape || op === Op.Expand;

const staticElements = (v: Value): number | undefined => {
  let n = 1;
  for (const d of v.type.shape) {
    if (typeof d !== 'number') return undefined;
    n *= d;
  }
  return n;
};

export function constantTables(g: Graph): Graph {
  // Values computed from constants alone (static shapes), and those of them with a costly op in their cone.
  const constant = new Set<Value>();
  const costly = new Set<Value>();
  for (const n of g.nodes) {
    const source = n.op === Op.Const || n.op === Op.Arange;
    if (!(source || (carries(n.op) && n.inputs.length > 0 && n.inputs.every((v) => constant.has(v))))) continue;
    if (staticElements(n.output) === undefined) continue;
    constant.add(n.output);
    if (COSTLY.has(n.op) || n.inputs.some((v) => costly.has(v))) costly.add(n.output);
  }
  // Tables: costly constant values of a few elements that a node computing something else reads (one returned or
  // stored as it is stays a node: outputs and state are what kernels write).
  const readOutside = new Set<Value>();
  for (const n of g.nodes) if (!constant.has(n.output)) for (const v of n.inputs) readOutside.add(v);
  const tables = new Set([...costly].filter((v) => {
    const n = staticElements(v)!;
    return readOutside.has(v) && n > 1 && n <= MAX_TABLE_ELEMENTS;
  }));
  if (tables.size === 0) return g;

  return rewriteGraph(g, (n, ins, out) => (tables.has(n.output) ? derivedFrom(n, out.graph, new Map()) : keepNode(n, ins, out)));
}

/** The derived parameter computing node `n` of the original graph in `out`, its cone's parameters declared first. */
function derivedFrom(n: Node, out: Graph, made: Map<Node, Value>): Value {
  const known = made.get(n);
  if (known) return known;
  const inputs = n.inputs.map((v) => derivedFrom(v.producer!, out, made));
  const key = `${n.op}(${inputs.map((v) => v.name).join(',')})${canonical(n.attrs)}`;
  // FNV-1a from two offset bases: the names' 64 bits.
  const name = `const.${fnv1a(codeUnits(key), 0x811c9dc5)}${fnv1a(codeUnits(key), 0x01000193)}`;
  const existing = out.params.find((p) => p.name === name);
  if (existing) {
    // The same name computes the same: a collision of the 64-bit hash would otherwise read another table.
    const d = out.derivations.get(existing);
    if (!d || `${d.op}(${d.inputs.map((v) => v.name).join(',')})${canonical(d.attrs)}` !== key) {
      throw new Error(`constant-tables: parameter %${name} of @${out.name} already computes something else`);
    }
  }
  const v = existing ?? out.addDerivedParam(name, n.op, inputs, n.attrs);
  made.set(n, v);
  return v;
}

/** Attributes as text that tells every value apart (NaN and ±Infinity included), keys in order. */
function canonical(a: Attrs): string {
  return Object.keys(a).sort().map((k) => `${k}=${Array.isArray(a[k]) ? `[${(a[k] as unknown[]).map(String).join(',')}]` : String(a[k])}`).join(';');
}
