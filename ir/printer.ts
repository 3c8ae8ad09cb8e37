// The IR text format, printing side: one node per line, a type on every value, sorted attributes, the model's
// source line as a trailing comment. Node results are renumbered in print order so dumps are deterministic.
// ir/parser.ts reads the same text back; print → parse → print is byte-identical.

import { Graph, Kernel, kernelIOs, Module, Node, Value } from './graph.ts';
import { AttrValue, Attrs } from './ops.ts';
import { formatType } from './shape.ts';

export interface PrintOptions {
  /** Print the source-line comments (golden tests leave them out). Default true. */
  locations?: boolean;
  /** The source text of a location, shown after it (`# examples/mlp.ts:18  h.matmul(w)`; read back as part of it). */
  source?: (loc: string) => string | undefined;
}

/** Column at which source-line comments start, so they line up in a dump. */
const LOC_COLUMN = 72;

export function printModule(m: Module, opts: PrintOptions = {}): string {
  return m.graphs.map((g) => printGraph(g, opts)).join('\n');
}

/** How each value of the graph is printed: declared names, and node results numbered in order. */
function valueNames(g: Graph): ValueNames {
  const names = new Map<Value, string>();
  for (const v of [...g.inputs, ...g.params, ...g.states]) names.set(v, `%${v.name}`);
  g.nodes.forEach((n, i) => names.set(n.output, `%${i}`));
  return names;
}

type ValueNames = ReadonlyMap<Value, string>;

/** A value as printed (a map rather than a closure per graph: printNode runs for every node of every kernel). */
function ref(names: ValueNames, v: Value): string {
  return names.get(v) ?? `%<undefined ${formatType(v.type)}>`;
}

/** The nodes of one kernel as they print in the whole graph's dump (for generated kernels' header comments). */
export function kernelNodeLines(g: Graph, k: Kernel): string[] {
  return kernelsNodeLines(g, [k])[0];
}

/** kernelNodeLines of several kernels of one graph (numbering the graph's values once). */
export function kernelsNodeLines(g: Graph, kernels: readonly Kernel[] = g.kernels): string[][] {
  const names = valueNames(g);
  return kernels.map((k) => k.nodes.map((n) => printNode(n, names)));
}

export function printGraph(g: Graph, opts: PrintOptions = {}): string {
  const names = valueNames(g);
  const r = (v: Value) => ref(names, v);

  const lines: string[] = [];
  const ins = g.inputs.map((v) => `${r(v)}: ${formatType(v.type)}`).join(', ');
  const outs = g.outputs.map((v, i) => (g.outputNames[i] ? `${g.outputNames[i]}: ` : '') + formatType(v.type)).join(', ');
  lines.push(`graph @${g.name}(${ins}) -> (${outs}) {`);
  for (const p of g.params) {
    const d = g.derivations.get(p);
    const rhs = d ? ` = ${printRhs(d.op, d.inputs, d.attrs, names)}` : '';
    lines.push(`  param ${r(p)}: ${formatType(p.type)}${rhs}`);
  }
  for (const s of g.states) lines.push(`  state ${r(s)}: ${formatType(s.type)}`);
  // Source text is shown once for a run of nodes from the same line.
  let lastLoc: string | undefined;
  const nodeLine = (n: Node, indent: string) => {
    const source = n.loc !== lastLoc ? opts.source : undefined;
    lastLoc = n.loc;
    return withLoc(`${indent}${printNode(n, names)}`, opts.locations === false ? undefined : n.loc, source);
  };
  if (g.kernels.length === 0) {
    for (const n of g.nodes) lines.push(nodeLine(n, '  '));
  } else {
    const ios = kernelIOs(g);
    g.kernels.forEach((k, i) => {
      const attrs = printAttrs(k.attrs);
      lines.push(`  kernel @${k.name}${attrs ? ' ' + attrs : ''} {${kernelSummary(ios[i], r)}`);
      for (const n of k.nodes) lines.push(nodeLine(n, '    '));
      lines.push('  }');
    });
  }
  for (const u of g.stateUpdates) lines.push(`  state ${r(u.state)} <- ${r(u.value)}`);
  lines.push(`  return ${g.outputs.map(r).join(', ')}`);
  lines.push('}');
  return lines.join('\n') + '\n';
}

function printNode(n: Node, names: ValueNames): string {
  return `${ref(names, n.output)}: ${formatType(n.output.type)} = ${printRhs(n.op, n.inputs, n.attrs, names)}`;
}

function printRhs(op: string, inputs: readonly Value[], attrs: Attrs, names: ValueNames): string {
  let text = op;
  for (let i = 0; i < inputs.length; i++) text += `${i ? ', ' : ' '}${ref(names, inputs[i])}`;
  const a = printAttrs(attrs);
  return a ? `${text} ${a}` : text;
}

/** A comment after a kernel's brace naming what it reads from and writes to memory (derived, so it round-trips). */
function kernelSummary(io: { readonly reads: readonly Value[]; readonly writes: readonly Value[] }, r: (v: Value) => string): string {
  return `  # reads ${io.reads.map(r).join(', ') || 'nothing'}; writes ${io.writes.map(r).join(', ')}`;
}

function withLoc(line: string, loc: string | undefined, source?: (loc: string) => string | undefined): string {
  if (!loc) return line;
  const text = source?.(loc);
  return `${line.padEnd(Math.max(LOC_COLUMN, line.length + 2))}# ${loc}${text ? `  ${text}` : ''}`;
}

export function printAttrs(attrs: Attrs): string {
  let text = printedAttrs.get(attrs);
  if (text === undefined) printedAttrs.set(attrs, (text = attrsText(attrs)));
  return text;
}

/**
 * Each attributes object as printed. Attributes are never changed, and passes keep a node's object: CSE keys,
 * each kernel's fused lines and lowering's kernel keys print the same few thousand again and again.
 */
const printedAttrs = new WeakMap<Attrs, string>();

function attrsText(attrs: Attrs): string {
  const keys = Object.keys(attrs);
  if (keys.length === 0) return '';
  keys.sort();
  return `[${keys.map((k) => `${k}=${printAttrValue(attrs[k])}`).join(', ')}]`;
}

export function printAttrValue(v: AttrValue): string {
  if (Array.isArray(v)) return `[${v.map((d) => printAttrValue(d)).join(',')}]`;
  if (typeof v === 'number') return printNumber(v);
  if (typeof v === 'boolean') return String(v);
  return /^[A-Za-z_][A-Za-z0-9_.]*$/.test(v) && v !== 'true' && v !== 'false' && v !== 'inf' && v !== 'nan'
    ? v
    : JSON.stringify(v);
}

/** Shortest text that reads back to the same number; inf and nan spelled as in the grammar. */
export function printNumber(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (Object.is(x, -0)) return '-0';
  return String(x);
}
