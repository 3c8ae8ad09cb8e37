// Generated automatically by nearley, version 2.20.1
// http://github.com/Hardmath123/nearley
// Bypasses TS6133. Allow declared but unused functions.
// @ts-ignore
function id(d: any[]): any { return d[0]; }
declare var comment: any;
declare var nl: any;
declare var global: any;
declare var ident: any;
declare var bool: any;
declare var int: any;
declare var float: any;
declare var str: any;
declare var value: any;

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

interface NearleyToken {
  value: any;
  [key: string]: any;
};

interface NearleyLexer {
  reset: (chunk: string, info: any) => void;
  next: () => NearleyToken | undefined;
  save: () => any;
  formatError: (token: never) => string;
  has: (tokenType: string) => boolean;
};

interface NearleyRule {
  name: string;
  symbols: NearleySymbol[];
  postprocess?: (d: any[], loc?: number, reject?: {}) => any;
};

type NearleySymbol = string | { literal: any } | { test: (token: any) => boolean };

interface Grammar {
  Lexer: NearleyLexer | undefined;
  ParserRules: NearleyRule[];
  ParserStart: string;
};

const grammar: Grammar = {
  Lexer: lexer,
  ParserRules: [
    {"name": "module$ebnf$1", "symbols": []},
    {"name": "module$ebnf$1$subexpression$1", "symbols": ["eol", "graph"]},
    {"name": "module$ebnf$1", "symbols": ["module$ebnf$1", "module$ebnf$1$subexpression$1"], "postprocess": (d) => d[0].concat([d[1]])},
    {"name": "module$ebnf$2", "symbols": ["eol"], "postprocess": id},
    {"name": "module$ebnf$2", "symbols": [], "postprocess": () => null},
    {"name": "module$ebnf$3", "symbols": [(lexer.has("comment") ? {type: "comment"} : comment)], "postprocess": id},
    {"name": "module$ebnf$3", "symbols": [], "postprocess": () => null},
    {"name": "module", "symbols": ["lead", "graph", "module$ebnf$1", "module$ebnf$2", "module$ebnf$3"], "postprocess": ([, first, rest]) => [first, ...rest.map((p: any[]) => p[1])]},
    {"name": "lead", "symbols": []},
    {"name": "lead", "symbols": [(lexer.has("nl") ? {type: "nl"} : nl)]},
    {"name": "lead", "symbols": [(lexer.has("comment") ? {type: "comment"} : comment), (lexer.has("nl") ? {type: "nl"} : nl)]},
    {"name": "graph", "symbols": [{"literal":"graph"}, (lexer.has("global") ? {type: "global"} : global), {"literal":"("}, "decls", {"literal":")"}, {"literal":"->"}, {"literal":"("}, "outputs", {"literal":")"}, {"literal":"{"}, "eol", "stmts", {"literal":"return"}, "values", "eol", {"literal":"}"}], "postprocess": (d): GraphSyntax => ({ name: name(d[1]), inputs: unroll(d[3]), outputs: unroll(d[7]), body: unroll(d[11]), returns: unroll(d[13]), returnAt: pos(d[12]) })},
    {"name": "output", "symbols": ["type"], "postprocess": ([type]): OutputSyntax => ({ type })},
    {"name": "output", "symbols": [(lexer.has("ident") ? {type: "ident"} : ident), {"literal":":"}, "type"], "postprocess": ([n, , type]): OutputSyntax => ({ name: name(n), type })},
    {"name": "stmts", "symbols": [], "postprocess": () => null},
    {"name": "stmts", "symbols": ["stmts", "stmt"], "postprocess": ([before, last]): Chain<StmtSyntax> => ({ last, before })},
    {"name": "stmt$ebnf$1$subexpression$1", "symbols": [{"literal":"="}, "rhs"]},
    {"name": "stmt$ebnf$1", "symbols": ["stmt$ebnf$1$subexpression$1"], "postprocess": id},
    {"name": "stmt$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "stmt", "symbols": [{"literal":"param"}, "decl", "stmt$ebnf$1", "eol"], "postprocess": ([, decl, rhs]): StmtSyntax => ({ kind: 'param', ...decl, ...(rhs && { derived: finishRhs(rhs[1]) }) })},
    {"name": "stmt", "symbols": [{"literal":"state"}, "decl", "eol"], "postprocess": ([, decl]): StmtSyntax => ({ kind: 'state', ...decl })},
    {"name": "stmt", "symbols": [{"literal":"state"}, "value", {"literal":"<-"}, "value", "eol"], "postprocess": ([, state, , value]): StmtSyntax => ({ kind: 'update', state, value })},
    {"name": "stmt", "symbols": ["node"], "postprocess": id},
    {"name": "stmt$ebnf$2", "symbols": ["attrs"], "postprocess": id},
    {"name": "stmt$ebnf$2", "symbols": [], "postprocess": () => null},
    {"name": "stmt", "symbols": [{"literal":"kernel"}, (lexer.has("global") ? {type: "global"} : global), "stmt$ebnf$2", {"literal":"{"}, "eol", "nodes", {"literal":"}"}, "eol"], "postprocess": ([, k, attrs, , , body]): StmtSyntax => ({ kind: 'kernel', name: name(k), attrs: attrs ?? [], body: unroll(body) })},
    {"name": "nodes", "symbols": [], "postprocess": () => null},
    {"name": "nodes", "symbols": ["nodes", "node"], "postprocess": ([before, last]): Chain<NodeSyntax> => ({ last, before })},
    {"name": "node", "symbols": ["value", {"literal":":"}, "type", {"literal":"="}, "rhs", "eol"], "postprocess": ([result, , type, , rhs, loc]): NodeSyntax => ({ kind: 'node', result, type, ...finishRhs(rhs), loc })},
    {"name": "rhs$ebnf$1", "symbols": ["attrs"], "postprocess": id},
    {"name": "rhs$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "rhs", "symbols": [(lexer.has("ident") ? {type: "ident"} : ident), "values", "rhs$ebnf$1"], "postprocess": ([op, operands, attrs]) => ({ op: name(op), operands, attrs: attrs ?? [] })},
    {"name": "attrs", "symbols": [{"literal":"["}, "attrList", {"literal":"]"}], "postprocess": (d) => unroll(d[1])},
    {"name": "attr", "symbols": [(lexer.has("ident") ? {type: "ident"} : ident), {"literal":"="}, "attrValue"], "postprocess": ([key, , value]): AttrSyntax => ({ key: name(key), ...value })},
    {"name": "attrValue$subexpression$1", "symbols": ["item"]},
    {"name": "attrValue$subexpression$1", "symbols": [(lexer.has("bool") ? {type: "bool"} : bool)]},
    {"name": "attrValue", "symbols": ["attrValue$subexpression$1"], "postprocess": ([[t]]) => ({ value: literal(t), at: pos(t) })},
    {"name": "attrValue", "symbols": [{"literal":"["}, "itemList", {"literal":"]"}], "postprocess": ([open, xs]) => ({ value: unroll<moo.Token>(xs).map(literal), at: pos(open) })},
    {"name": "item$subexpression$1", "symbols": [(lexer.has("int") ? {type: "int"} : int)]},
    {"name": "item$subexpression$1", "symbols": [(lexer.has("float") ? {type: "float"} : float)]},
    {"name": "item$subexpression$1", "symbols": [(lexer.has("ident") ? {type: "ident"} : ident)]},
    {"name": "item$subexpression$1", "symbols": [(lexer.has("str") ? {type: "str"} : str)]},
    {"name": "item", "symbols": ["item$subexpression$1"], "postprocess": ([[t]]) => t},
    {"name": "decl", "symbols": ["value", {"literal":":"}, "type"], "postprocess": ([name, , type]): DeclSyntax => ({ name, type })},
    {"name": "type", "symbols": [(lexer.has("ident") ? {type: "ident"} : ident), {"literal":"["}, "dims", {"literal":"]"}], "postprocess": ([dtype, , dims]): TypeSyntax => ({ dtype: name(dtype), shape: unroll<moo.Token>(dims).map(literal) as Dim[], at: pos(dtype) })},
    {"name": "dim$subexpression$1", "symbols": [(lexer.has("int") ? {type: "int"} : int)]},
    {"name": "dim$subexpression$1", "symbols": [(lexer.has("ident") ? {type: "ident"} : ident)]},
    {"name": "dim", "symbols": ["dim$subexpression$1"], "postprocess": ([[t]]) => t},
    {"name": "value", "symbols": [(lexer.has("value") ? {type: "value"} : value)], "postprocess": ([t]) => name(t)},
    {"name": "eol$ebnf$1", "symbols": [(lexer.has("comment") ? {type: "comment"} : comment)], "postprocess": id},
    {"name": "eol$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "eol", "symbols": ["eol$ebnf$1", (lexer.has("nl") ? {type: "nl"} : nl)], "postprocess": ([c]) => c?.value || undefined},
    {"name": "decls$ebnf$1", "symbols": ["declChain"], "postprocess": id},
    {"name": "decls$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "decls", "symbols": ["decls$ebnf$1"], "postprocess": chain},
    {"name": "declChain", "symbols": ["decl"], "postprocess": first},
    {"name": "declChain", "symbols": ["declChain", {"literal":","}, "decl"], "postprocess": next},
    {"name": "outputs$ebnf$1", "symbols": ["outputChain"], "postprocess": id},
    {"name": "outputs$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "outputs", "symbols": ["outputs$ebnf$1"], "postprocess": chain},
    {"name": "outputChain", "symbols": ["output"], "postprocess": first},
    {"name": "outputChain", "symbols": ["outputChain", {"literal":","}, "output"], "postprocess": next},
    {"name": "values$ebnf$1", "symbols": ["valueChain"], "postprocess": id},
    {"name": "values$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "values", "symbols": ["values$ebnf$1"], "postprocess": chain},
    {"name": "valueChain", "symbols": ["value"], "postprocess": first},
    {"name": "valueChain", "symbols": ["valueChain", {"literal":","}, "value"], "postprocess": next},
    {"name": "attrList$ebnf$1", "symbols": ["attrChain"], "postprocess": id},
    {"name": "attrList$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "attrList", "symbols": ["attrList$ebnf$1"], "postprocess": chain},
    {"name": "attrChain", "symbols": ["attr"], "postprocess": first},
    {"name": "attrChain", "symbols": ["attrChain", {"literal":","}, "attr"], "postprocess": next},
    {"name": "itemList$ebnf$1", "symbols": ["itemChain"], "postprocess": id},
    {"name": "itemList$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "itemList", "symbols": ["itemList$ebnf$1"], "postprocess": chain},
    {"name": "itemChain", "symbols": ["item"], "postprocess": first},
    {"name": "itemChain", "symbols": ["itemChain", {"literal":","}, "item"], "postprocess": next},
    {"name": "dims$ebnf$1", "symbols": ["dimChain"], "postprocess": id},
    {"name": "dims$ebnf$1", "symbols": [], "postprocess": () => null},
    {"name": "dims", "symbols": ["dims$ebnf$1"], "postprocess": chain},
    {"name": "dimChain", "symbols": ["dim"], "postprocess": first},
    {"name": "dimChain", "symbols": ["dimChain", {"literal":","}, "dim"], "postprocess": next}
  ],
  ParserStart: "module",
};

export default grammar;
