// The IR text format, parsing side: runs the grammar (ir/grammar.ne) and builds Graphs from its syntax tree, so that
// printModule(parseModule(text)) === text for anything the printer printed. Every error is an IrParseError that
// names file:line:column and shows the source line with a caret under the column.

import nearley from 'nearley';
import { DType, isDType } from './dtype.ts';
import grammar, { AttrSyntax, GraphSyntax, Name, NodeSyntax, Pos, RhsSyntax, TypeSyntax } from './grammar.ts';
import { Graph, GraphError, isKernelKind, Kernel, KernelAttrs, kernelKinds, Module, Node, ParamDerivation, Value } from './graph.ts';
import { AttrKind, AttrValue, OpDef, opDef } from './ops.ts';
import { printAttrValue } from './printer.ts';
import { formatType, sameType, TensorType } from './shape.ts';
import { VerifyError, verifyModule } from './verify.ts';

export class IrParseError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    /** What is wrong, without the location and source excerpt. */
    readonly reason: string,
    sourceLine: string,
  ) {
    // Tabs stay tabs in the caret line so the caret lines up under the column in any terminal.
    const caret = sourceLine.slice(0, column - 1).replace(/[^\t]/g, ' ') + '^';
    super(`${file}:${line}:${column}: ${reason}\n${sourceLine}\n${caret}`);
  }
}

export function parseModule(text: string, file = '<input>'): Module {
  const src = new Source(text, file);
  return build(src, parseSyntax(src));
}

/** Parses text holding exactly one graph. */
export function parseGraph(text: string, file = '<input>'): Graph {
  const src = new Source(text, file);
  const syntax = parseSyntax(src);
  if (syntax.length > 1) src.fail(syntax[1].name.at, `expected one graph, found ${syntax.length}`);
  return build(src, syntax).graphs[0];
}

class Source {
  private readonly lines: string[];
  constructor(readonly text: string, readonly file: string) {
    this.lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  }

  fail(at: Pos, reason: string): never {
    throw new IrParseError(this.file, at.line, at.col, reason, this.lines[at.line - 1] ?? '');
  }

  /** Just past the last non-blank character, where a truncated text stops. */
  end(): Pos {
    const body = this.text.trimEnd();
    const lastLine = body.slice(body.lastIndexOf('\n') + 1);
    return { line: body.split('\n').length, col: lastLine.length + 1 };
  }
}

// ---- syntax: run nearley, turn its failures into readable errors ----

/** A state of nearley's Earley chart; not in its typings, but its own error reporter reads the chart the same way. */
interface ChartState {
  rule: nearley.Rule;
  dot: number;
  wantedBy: ChartState[];
}

function parseSyntax(src: Source): GraphSyntax[] {
  const parser = new nearley.Parser(nearley.Grammar.fromCompiled(grammar));
  try {
    parser.feed(src.text);
  } catch (e) {
    const token = (e as { token?: { type?: string; text: string; line: number; col: number } }).token;
    if (!token) throw e;
    src.fail(token, `${unexpected(token)} — expected ${expected(parser)}`);
  }
  const results = parser.results as GraphSyntax[][];
  if (results.length === 0) src.fail(src.end(), `unexpected end of input — expected ${expected(parser)}`);
  if (results.length > 1) src.fail({ line: 1, col: 1 }, `ambiguous grammar: ${results.length} parses (a bug in ir/grammar.ne)`);
  return results[0];
}

function unexpected(token: { type?: string; text: string }): string {
  switch (token.type) {
    case 'nl': return 'unexpected end of line';
    case 'comment': return 'unexpected comment';
    // moo's error token holds the rest of the input; only its first character is to blame.
    case 'error': return token.text[0] === '"' ? 'unterminated string or bad escape' : `unexpected character ${JSON.stringify(token.text[0])}`;
    default: return `unexpected ${JSON.stringify(token.text)}`;
  }
}

/** Rules worth naming as a whole when a token could only start one of them. */
const ruleNames: Record<string, string> = {
  module: '"graph"',
  type: 'a type such as f32[4,8]',
  dim: 'a dimension (integer or name)',
  value: 'a value name such as %x',
  rhs: 'an op name such as matmul',
  attrValue: 'an attribute value',
  eol: 'end of line',
};

const tokenNames: Record<string, string> = {
  int: 'an integer',
  float: 'a number',
  bool: 'true or false',
  ident: 'a name',
  str: 'a string',
  value: 'a value name such as %x',
  global: 'a graph name such as @main',
  nl: 'end of line',
};

/** What the parser could have accepted next, summarised: '"," or "]"' rather than nearley's derivation dump. */
function expected(parser: nearley.Parser): string {
  const chart = (parser as unknown as { table: { states: ChartState[] }[] }).table;
  const found = new Set<string>();
  for (const s of chart[parser.current].states) {
    const next = s.rule.symbols[s.dot] as { type?: string; literal?: string } | string | undefined;
    // Skip states that are complete or expect a nonterminal (their own states follow), and comments, never required.
    if (next === undefined || typeof next === 'string' || next.type === 'comment') continue;
    const token = next.type ? tokenNames[next.type] ?? next.type : JSON.stringify(next.literal);
    for (const d of describe(s, token, new Set())) found.add(d);
  }
  const all = [...found];
  return all.length <= 1 ? all[0] ?? 'nothing' : `${all.slice(0, -1).join(', ')} or ${all[all.length - 1]}`;
}

/** Climbs from a state expecting `token` to the innermost named rule that the token would start. */
function describe(s: ChartState, token: string, seen: Set<ChartState>): string[] {
  if (s.dot !== 0) return [token];
  const name = ruleNames[s.rule.name];
  if (name) return [name];
  if (seen.has(s) || s.wantedBy.length === 0) return [token];
  seen.add(s);
  return s.wantedBy.flatMap((p) => describe(p, token, seen));
}

// ---- semantics: names, types, ops and attributes, then the verifier ----

function build(src: Source, syntax: GraphSyntax[]): Module {
  const module: Module = { graphs: [] };
  const nodeAt = new Map<Node, Pos>();
  const graphAt = new Map<string, GraphSyntax>();
  for (const gs of syntax) {
    const first = graphAt.get(gs.name.text);
    if (first) src.fail(gs.name.at, `graph @${gs.name.text} is defined twice (first at line ${first.name.at.line})`);
    graphAt.set(gs.name.text, gs);
    module.graphs.push(buildGraph(src, gs, nodeAt));
  }
  try {
    verifyModule(module);
  } catch (e) {
    if (!(e instanceof VerifyError)) throw e;
    src.fail(locate(e.message, module, graphAt, nodeAt), e.message);
  }
  return module;
}

function buildGraph(src: Source, gs: GraphSyntax, nodeAt: Map<Node, Pos>): Graph {
  const g = new Graph(gs.name.text);
  const scope = new Map<string, { value: Value; at: Pos }>();
  const fresh = (n: Name) => {
    const prev = scope.get(n.text);
    if (prev) src.fail(n.at, `%${n.text} is already defined at line ${prev.at.line}:${prev.at.col}`);
  };
  const bind = (n: Name, value: Value) => scope.set(n.text, { value, at: n.at });
  const use = (n: Name): Value => scope.get(n.text)?.value ?? src.fail(n.at, `undefined value %${n.text}`);
  const typeOf = (t: TypeSyntax) => tensorTypeOf(src, t);
  // A name the graph refuses (one that would not print back) is reported where it is written.
  const declare = (n: Name, add: () => Value): Value => {
    try {
      return add();
    } catch (e) {
      if (e instanceof GraphError) src.fail(n.at, e.message);
      throw e;
    }
  };

  for (const { name, type } of gs.inputs) {
    fresh(name);
    bind(name, declare(name, () => g.addInput(name.text, typeOf(type))));
  }
  const declared = gs.outputs.map((o) => typeOf(o.type));
  const updated = new Set<Value>();
  // Checked left to right, so the first error reported is the first one on the line.
  const node = (s: NodeSyntax): Node => {
    fresh(s.result);
    const type = typeOf(s.type);
    const def = opDef(s.op.text) ?? src.fail(s.op.at, `unknown op '${s.op.text}'`);
    const inputs = s.operands.map(use);
    const out = g.appendNode(def.name, inputs, attrsOf(src, def, s.attrs), type, s.loc);
    nodeAt.set(out.producer!, s.result.at);
    bind(s.result, out);
    return out.producer!;
  };
  // The printer never mixes them: a fused graph has all its nodes in kernels, an unfused one none.
  let looseNode: Name | undefined;
  const kernelAt = new Map<string, Name>();
  for (const s of gs.body) {
    switch (s.kind) {
      case 'param': {
        fresh(s.name);
        const p = declare(s.name, () => g.addParam(s.name.text, typeOf(s.type)));
        // Its declared type stays as written; the verifier checks it against what the op gives.
        if (s.derived) g.derivations.set(p, derivation(src, s.derived, use));
        bind(s.name, p);
        break;
      }
      case 'state':
        fresh(s.name);
        bind(s.name, declare(s.name, () => g.addState(s.name.text, typeOf(s.type))));
        break;
      case 'node': {
        const first = kernelAt.values().next().value;
        if (first) {
          src.fail(s.result.at, `%${s.result.text} is outside every kernel, but this graph has kernels (@${first.text} at line ${first.at.line}); a fused graph has all its nodes in kernels`);
        }
        looseNode ??= s.result;
        node(s);
        break;
      }
      case 'kernel': {
        const first = kernelAt.get(s.name.text);
        if (first) src.fail(s.name.at, `kernel @${s.name.text} is defined twice (first at line ${first.at.line})`);
        if (looseNode) {
          src.fail(s.name.at, `kernel @${s.name.text} in a graph with nodes outside kernels (%${looseNode.text} at line ${looseNode.at.line}); a fused graph has all its nodes in kernels`);
        }
        if (s.body.length === 0) src.fail(s.name.at, `kernel @${s.name.text} is empty`);
        kernelAt.set(s.name.text, s.name);
        const kernel: Kernel = { name: s.name.text, attrs: kernelAttrsOf(src, s.name, s.attrs), nodes: s.body.map(node) };
        g.kernels.push(kernel);
        break;
      }
      case 'update': {
        const state = use(s.state);
        if (state.kind !== 'state') src.fail(s.state.at, `%${s.state.text} is not a state (it is ${describeKind(state)})`);
        if (updated.has(state)) src.fail(s.state.at, `state %${s.state.text} is updated twice`);
        updated.add(state);
        g.setState(state, use(s.value));
        break;
      }
      default:
        s satisfies never;
    }
  }
  g.outputs = gs.returns.map(use);
  g.outputNames = gs.outputs.map((o) => o.name?.text ?? '');
  const named = new Map<string, Name>();
  for (const o of gs.outputs) {
    if (!o.name) continue;
    const first = named.get(o.name.text);
    if (first) src.fail(o.name.at, `output '${o.name.text}' is named twice (first at line ${first.at.line}:${first.at.col})`);
    named.set(o.name.text, o.name);
  }
  // The header repeats the output types; a mismatch would not survive printing, so it is an error here.
  if (declared.length !== g.outputs.length) {
    src.fail(gs.returnAt, `return gives ${g.outputs.length} values but the header declares ${declared.length}`);
  }
  g.outputs.forEach((v, i) => {
    if (!sameType(v.type, declared[i])) {
      src.fail(gs.returns[i].at, `%${gs.returns[i].text} is ${formatType(v.type)} but the header declares ${formatType(declared[i])}`);
    }
  });
  return g;
}

/** A derived param's computation: a known op with valid attributes, over parameters declared before it. */
function derivation(src: Source, rhs: RhsSyntax, use: (n: Name) => Value): ParamDerivation {
  const def = opDef(rhs.op.text) ?? src.fail(rhs.op.at, `unknown op '${rhs.op.text}'`);
  const inputs = rhs.operands.map((n) => {
    const v = use(n);
    if (v.kind !== 'param') src.fail(n.at, `a derived param is computed from params only, and %${n.text} is ${describeKind(v)}`);
    return v;
  });
  return { op: def.name, inputs, attrs: attrsOf(src, def, rhs.attrs) };
}

const kindNames: Record<Value['kind'], string> = { input: 'an input', param: 'a param', state: 'a state', node: 'a node result' };
const describeKind = (v: Value) => kindNames[v.kind];

function tensorTypeOf(src: Source, t: TypeSyntax): TensorType {
  const dtype = t.dtype.text;
  if (!isDType(dtype)) src.fail(t.dtype.at, `unknown dtype '${dtype}' — expected one of ${Object.values(DType).join(', ')}`);
  const negative = t.shape.find((d) => typeof d === 'number' && d < 0);
  if (negative !== undefined) src.fail(t.at, `dimension ${negative} of ${dtype}[${t.shape.join(',')}] is negative`);
  const huge = t.shape.find((d) => typeof d === 'number' && !Number.isSafeInteger(d));
  if (huge !== undefined) src.fail(t.at, `dimension ${printAttrValue(huge)} of ${dtype} is not exact (at most 2^53 − 1)`);
  return { dtype, shape: t.shape };
}

/** Integers read exactly: one past 2^53 would silently become another (and print back differently). */
const isInt = (v: AttrValue) => typeof v === 'number' && Number.isSafeInteger(v);
const isDim = (v: AttrValue) => isInt(v) || typeof v === 'string';

/** The values each attribute kind accepts, and how to say so in an error. */
const attrKinds: Record<AttrKind, { ok: (v: AttrValue) => boolean; what: string }> = {
  int: { ok: isInt, what: 'an integer below 2^53' },
  float: { ok: (v) => typeof v === 'number', what: 'a number' },
  bool: { ok: (v) => typeof v === 'boolean', what: 'true or false' },
  dtype: { ok: (v) => typeof v === 'string' && isDType(v), what: `a dtype (${Object.values(DType).join(', ')})` },
  ints: { ok: (v) => Array.isArray(v) && v.every(isInt), what: 'a list of integers' },
  dim: { ok: isDim, what: 'an integer or a symbolic dimension' },
  dims: { ok: (v) => Array.isArray(v) && v.every(isDim), what: 'a list of dimensions' },
  string: { ok: (v) => typeof v === 'string', what: 'a string' },
};

function attrsOf(src: Source, def: OpDef, attrs: AttrSyntax[]): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const { key, value, at } of attrs) {
    if (key.text in out) src.fail(key.at, `attribute ${key.text} is given twice`);
    const kind = def.attrs[key.text];
    if (!kind) {
      const known = Object.keys(def.attrs);
      src.fail(key.at, `${def.name} has no attribute ${key.text}${known.length ? ` (it has ${known.join(', ')})` : ''}`);
    }
    if (!attrKinds[kind].ok(value)) {
      src.fail(at, `${def.name} attribute ${key.text} must be ${attrKinds[kind].what}, got ${printAttrValue(value)}`);
    }
    out[key.text] = value;
  }
  return out;
}

/**
 * A kernel's attributes: a kind from the closed set lowering handles, and whatever else passes recorded
 * (free-form, so only repeated keys are errors there).
 */
function kernelAttrsOf(src: Source, kernel: Name, attrs: AttrSyntax[]): KernelAttrs {
  const out: Record<string, AttrValue> = {};
  for (const { key, value, at } of attrs) {
    if (key.text in out) src.fail(key.at, `attribute ${key.text} is given twice`);
    if (key.text === 'kind' && !isKernelKind(value)) {
      src.fail(at, `kernel @${kernel.text}: unknown kind ${printAttrValue(value)} (expected ${kernelKinds.join(', ')})`);
    }
    out[key.text] = value;
  }
  const kind = out.kind;
  if (!isKernelKind(kind)) src.fail(kernel.at, `kernel @${kernel.text} has no kind (expected [kind=...], one of ${kernelKinds.join(', ')})`);
  return { ...out, kind };
}

/**
 * Where a verifier message points. VerifyError carries only text, so this reads the graph and node it names:
 * "graph @g, node %3 (...)" is that node's line, "graph @g: state %k ..." that state's update, "graph @g: derived
 * param %w ..." that param's declaration, else the return.
 */
function locate(message: string, m: Module, graphAt: Map<string, GraphSyntax>, nodeAt: Map<Node, Pos>): Pos {
  const gs = graphAt.get(/^graph @([A-Za-z0-9_.]+)/.exec(message)?.[1] ?? '');
  const g = m.graphs.find((x) => x.name === gs?.name.text);
  if (!gs || !g) return { line: 1, col: 1 };
  const node = /^graph @[^,:]+, node %(\d+)/.exec(message);
  if (node) return nodeAt.get(g.nodes[Number(node[1])]) ?? gs.name.at;
  const state = /^graph @[^,:]+: state (?:update of )?%([A-Za-z0-9_.]+)/.exec(message);
  if (state) {
    const update = gs.body.find((s) => s.kind === 'update' && s.state.text === state[1]);
    if (update?.kind === 'update') return update.state.at;
  }
  const derived = /^graph @[^,:]+: derived param %([A-Za-z0-9_.]+)/.exec(message);
  if (derived) {
    const decl = gs.body.find((s) => s.kind === 'param' && s.name.text === derived[1]);
    if (decl?.kind === 'param') return decl.name.at;
  }
  return gs.returnAt;
}
