# The IR text format's grammar: a moo lexer and nearley rules for exactly what ir/printer.ts prints.
# `npm run build:grammar` compiles it to ir/grammar.ts, which is committed so users need no build step.

@preprocessor typescript

@{%
// The IR text format's syntax: compiled from ir/grammar.ne by `npm run build:grammar`; edit that file, not this one.
// The rules only build a syntax tree with positions; ir/parser.ts turns it into Graphs and reports semantic errors.

import moo from 'moo';
import type { AttrValue } from './ops.ts';
import type { Dim } from './shape.ts';

/** 1-based line and column, as moo counts them. */
export interface Pos { line: number; col: number }
/** A name as written, without its sigil (% or @). */
export interface Name { text: string; at: Pos }
export interface TypeSyntax { dtype: Name; shape: Dim[]; at: Pos }
export interface DeclSyntax { name: Name; type: TypeSyntax }
/** `at` is where the value starts, for errors about the value rather than the key. */
export interface AttrSyntax { key: Name; value: AttrValue; at: Pos }
/** What a node or a derived parameter computes: `op %a, %b [k=v]`. */
export interface RhsSyntax { op: Name; operands: Name[]; attrs: AttrSyntax[] }
export type NodeSyntax = { kind: 'node'; result: Name; type: TypeSyntax; loc?: string } & RhsSyntax;
export type StmtSyntax =
  | ({ kind: 'param'; derived?: RhsSyntax } & DeclSyntax)
  | ({ kind: 'state' } & DeclSyntax)
  | NodeSyntax
  | { kind: 'kernel'; name: Name; attrs: AttrSyntax[]; body: NodeSyntax[] }
  | { kind: 'update'; state: Name; value: Name };
/** A declared output: its type, and its name in the model contract when it has one. */
export interface OutputSyntax {
  name?: Name;
  type: TypeSyntax;
}

export interface GraphSyntax {
  name: Name;
  inputs: DeclSyntax[];
  outputs: OutputSyntax[];
  body: StmtSyntax[];
  returns: Name[];
  returnAt: Pos;
}

const specialWords: Record<string, string> = { true: 'bool', false: 'bool', inf: 'float', nan: 'float' };

const lexer = moo.compile({
  ws: /[ \t\r]+/,
  // A line break swallows the blank and comment-only lines after it, so the rules see a single end of line.
  nl: { match: /\n(?:[ \t\r]*(?:#[^\n]*)?\n)*/, lineBreaks: true },
  comment: { match: /#[^\r\n]*/, value: (s) => s.replace(/^# ?/, '') },
  value: { match: /%[A-Za-z0-9_.]+/, value: (s) => s.slice(1) },
  global: { match: /@[A-Za-z0-9_.]+/, value: (s) => s.slice(1) },
  // `inf` only as a whole word: an identifier such as `information` is a name, not inf followed by `ormation`.
  number: { match: /-?(?:inf(?![A-Za-z0-9_.])|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/, type: (s) => (/^-?\d+$/.test(s) ? 'int' : 'float') },
  ident: { match: /[A-Za-z_][A-Za-z0-9_.]*/, type: (s) => specialWords[s] },
  str: { match: /"(?:[^"\\\n]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/, value: (s) => JSON.parse(s) },
  punct: ['->', '<-', '(', ')', '[', ']', '{', '}', ',', ':', '='],
  // Anything else becomes one token that no rule accepts, so the parser reports it with what it expected.
  error: moo.error,
});

// Whitespace separates tokens and is otherwise meaningless; line breaks are tokens of their own.
const nextToken = lexer.next.bind(lexer);
lexer.next = () => {
  let t = nextToken();
  while (t?.type === 'ws') t = nextToken();
  return t;
};

const pos = (t: moo.Token): Pos => ({ line: t.line, col: t.col });
const name = (t: moo.Token): Name => ({ text: t.value, at: pos(t) });
const specialFloats: Record<string, number> = { inf: Infinity, '-inf': -Infinity, nan: NaN };

function literal(t: moo.Token): number | boolean | string {
  switch (t.type) {
    case 'int': return Number(t.text);
    case 'float': return specialFloats[t.text] ?? Number(t.text);
    case 'bool': return t.text === 'true';
    default: return t.value; // identifiers as written, strings JSON-decoded by the lexer
  }
}

/** Statements or a kernel's nodes, collected back to front; see the `stmts` rule. */
interface Chain<T> { last: T; before: Chain<T> | null }

function unroll<T>(list: Chain<T> | null): T[] {
  const out: T[] = [];
  for (let s = list; s; s = s.before) out.push(s.last);
  return out.reverse();
}

/** A node's or derived param's right-hand side with its operands unrolled. */
function finishRhs(r: { op: Name; operands: Chain<Name> | null; attrs: AttrSyntax[] }): RhsSyntax {
  return { ...r, operands: unroll(r.operands) };
}

/** The first item of a comma-separated list, and each one after it: a chain, as for statements. */
const first = (d: any[]): Chain<unknown> => ({ last: d[0], before: null });
const next = (d: any[]): Chain<unknown> => ({ last: d[2], before: d[0] });
/** An optional chain as it is: nearley runs a rule's postprocessor at every completion, so a list is unrolled only
 *  by a rule that completes once (at its closing bracket or line end), never at each item. */
const chain = (d: any[]): Chain<any> | null => d[0];
%}

@lexer lexer


module -> lead graph (eol graph):* eol:? %comment:?  {% ([, first, rest]) => [first, ...rest.map((p: any[]) => p[1])] %}

# Blank and comment-only lines before the first graph (later ones are inside the nl token).
lead -> null | %nl | %comment %nl

graph -> "graph" %global "(" decls ")" "->" "(" outputs ")" "{" eol stmts "return" values eol "}"
  {% (d): GraphSyntax => ({ name: name(d[1]), inputs: unroll(d[3]), outputs: unroll(d[7]), body: unroll(d[11]), returns: unroll(d[13]), returnAt: pos(d[12]) }) %}

output -> type  {% ([type]): OutputSyntax => ({ type }) %}
  | %ident ":" type  {% ([n, , type]): OutputSyntax => ({ name: name(n), type }) %}

# A linked list, not `stmt:*`: nearley's `:*` copies the array at every statement, quadratic on a Llama-sized graph.
stmts -> null  {% () => null %}
  | stmts stmt  {% ([before, last]): Chain<StmtSyntax> => ({ last, before }) %}

# A derived param's comment and a kernel's comment after its "{" are ignored: the printer derives them from the graph.
stmt ->
    "param" decl ("=" rhs):? eol  {% ([, decl, rhs]): StmtSyntax => ({ kind: 'param', ...decl, ...(rhs && { derived: finishRhs(rhs[1]) }) }) %}
  | "state" decl eol              {% ([, decl]): StmtSyntax => ({ kind: 'state', ...decl }) %}
  | "state" value "<-" value eol  {% ([, state, , value]): StmtSyntax => ({ kind: 'update', state, value }) %}
  | node                          {% id %}
  | "kernel" %global attrs:? "{" eol nodes "}" eol
    {% ([, k, attrs, , , body]): StmtSyntax => ({ kind: 'kernel', name: name(k), attrs: attrs ?? [], body: unroll(body) }) %}

# A kernel's body: nodes only (no declarations, no nested kernels); empty is left to ir/parser.ts to report.
nodes -> null  {% () => null %}
  | nodes node  {% ([before, last]): Chain<NodeSyntax> => ({ last, before }) %}

node -> value ":" type "=" rhs eol  {% ([result, , type, , rhs, loc]): NodeSyntax => ({ kind: 'node', result, type, ...finishRhs(rhs), loc }) %}

# The operands stay a chain until the line ends (see `chain`).
rhs -> %ident values attrs:?  {% ([op, operands, attrs]) => ({ op: name(op), operands, attrs: attrs ?? [] }) %}

attrs -> "[" attrList "]"  {% (d) => unroll(d[1]) %}
attr -> %ident "=" attrValue  {% ([key, , value]): AttrSyntax => ({ key: name(key), ...value }) %}
attrValue ->
    (item | %bool)            {% ([[t]]) => ({ value: literal(t), at: pos(t) }) %}
  | "[" itemList "]"          {% ([open, xs]) => ({ value: unroll<moo.Token>(xs).map(literal), at: pos(open) }) %}
item -> (%int | %float | %ident | %str)  {% ([[t]]) => t %}

decl -> value ":" type  {% ([name, , type]): DeclSyntax => ({ name, type }) %}
type -> %ident "[" dims "]"  {% ([dtype, , dims]): TypeSyntax => ({ dtype: name(dtype), shape: unroll<moo.Token>(dims).map(literal) as Dim[], at: pos(dtype) }) %}
dim -> (%int | %ident)  {% ([[t]]) => t %}
value -> %value  {% ([t]) => name(t) %}

# The end of a line; the text of its comment (a node's source location) if it has one.
eol -> %comment:? %nl  {% ([c]) => c?.value || undefined %}

# Comma-separated lists (`x, y, z` or nothing), one pair of rules per item kind, each a linked list built left to
# right: nearley's `("," x):*` copies the array at every item, quadratic in a 20,000-operand concat.
decls -> declChain:?  {% chain %}
declChain -> decl  {% first %} | declChain "," decl  {% next %}
outputs -> outputChain:?  {% chain %}
outputChain -> output  {% first %} | outputChain "," output  {% next %}
values -> valueChain:?  {% chain %}
valueChain -> value  {% first %} | valueChain "," value  {% next %}
attrList -> attrChain:?  {% chain %}
attrChain -> attr  {% first %} | attrChain "," attr  {% next %}
itemList -> itemChain:?  {% chain %}
itemChain -> item  {% first %} | itemChain "," item  {% next %}
dims -> dimChain:?  {% chain %}
dimChain -> dim  {% first %} | dimChain "," dim  {% next %}
