// Model scripts for `tsfuse compile model.ts`: ts-morph reads the script to find its entry points (exported
// functions whose parameters are typed Tensor<dtype, shape>) and to reject control flow that depends on a tensor's
// value — which tracing cannot see, since `if (t)` on an object is always true — then the entry is imported and
// traced. Errors name the script's file, line and column.

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  Node, Project, SourceFile, SyntaxKind, ts, Type, type Expression, type ParameterDeclaration,
} from 'ts-morph';
import { DType, isDType } from '../ir/dtype.ts';
import { Dim } from '../ir/shape.ts';
import { ScriptError } from './script-error.ts';
import { defaultScriptLimits, probeScript, ScriptLimits } from './script-limits.ts';
import { displayPath } from './source-location.ts';
import { Tensor } from './tensor.ts';
import { InputSpec, trace, TraceError } from './trace.ts';
import { Graph, GraphError } from '../ir/graph.ts';

export { ScriptError };

export interface ScriptEntry {
  readonly name: string;
  readonly inputs: readonly InputSpec[];
  /** "examples/mlp.ts:12" */
  readonly loc: string;
}

/** An exported function that is not an entry point, and why. */
export interface NotAnEntry {
  readonly name: string;
  readonly reason: string;
}

export interface ScriptInfo {
  readonly file: string;
  readonly entries: readonly ScriptEntry[];
  readonly others: readonly NotAnEntry[];
  /** Data-dependent control flow found by the type checker, as "file:line:col: message". */
  readonly problems: readonly string[];
  /** The trimmed source text of a line of the script, for IR comments. */
  readonly lineText: (line: number) => string | undefined;
}

const tensorFile = path.resolve(path.dirname(new URL(import.meta.url).pathname), 'tensor.ts');
/** Run from the sources (a checkout), `import … from 'tsfuse'` in a script means these sources, not a built dist/. */
const sourcePaths: Record<string, string[]> = import.meta.url.endsWith('.ts')
  ? { tsfuse: [path.resolve(path.dirname(tensorFile), '../index.ts')] } : {};

/**
 * The project scripts are read in, one per process: the standard library, Node's types and tsfuse's own sources (what
 * `import … from 'tsfuse'` means) are parsed and bound once, and each script is type-checked against them (the
 * command line reads one script, the tests dozens; parsing those takes a couple of seconds).
 */
let shared: { readonly project: Project; readonly base: ReadonlySet<SourceFile> } | undefined;

function scriptProject(): { readonly project: Project; readonly base: ReadonlySet<SourceFile> } {
  if (shared) return shared;
  const project = new Project({
    compilerOptions: {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
      strict: true, noEmit: true, allowImportingTsExtensions: true, skipLibCheck: true, types: ['node'], paths: sourcePaths,
    },
    skipAddingFilesFromTsConfig: true,
  });
  const index = path.resolve(path.dirname(tensorFile), '..', import.meta.url.endsWith('.ts') ? 'index.ts' : 'index.d.ts');
  if (fs.existsSync(index)) project.addSourceFileAtPath(index);
  project.resolveSourceFileDependencies();
  shared = { project, base: new Set(project.getSourceFiles()) };
  return shared;
}

/** Reads a script with the type checker: its entry points and its data-dependent control flow. */
export function readScript(file: string): ScriptInfo {
  const abs = path.resolve(file);
  if (!fs.existsSync(abs)) throw new ScriptError(`${file}: no such file`);
  const { project, base } = scriptProject();
  const existing = project.getSourceFile(abs);
  existing?.refreshFromFileSystemSync();
  const sf = existing ?? project.addSourceFileAtPath(abs);
  project.resolveSourceFileDependencies();
  try {
    return readSourceFile(sf, abs);
  } finally {
    // The script and what it brought with it leave: the next script sees only the shared files.
    for (const f of project.getSourceFiles()) if (!base.has(f)) project.removeSourceFile(f);
  }
}

function readSourceFile(sf: SourceFile, abs: string): ScriptInfo {
  const shown = displayPath(abs);
  const at = (n: Node) => {
    const { line, column } = sf.getLineAndColumnAtPos(n.getStart());
    return `${shown}:${line}:${column}`;
  };
  const entries: ScriptEntry[] = [];
  const others: NotAnEntry[] = [];
  for (const [name, decls] of sf.getExportedDeclarations()) {
    const fn = decls.map(functionOf).find((f) => f !== undefined);
    if (!fn) continue;
    const params = fn.getParameters();
    const specs = params.map((p) => inputSpec(p));
    const bad = specs.find((s): s is string => typeof s === 'string');
    if (params.length === 0) others.push({ name, reason: 'it takes no tensor inputs' });
    else if (bad !== undefined) others.push({ name, reason: bad });
    else entries.push({ name, inputs: specs as InputSpec[], loc: `${shown}:${fn.getStartLineNumber()}` });
  }
  const lines = sf.getFullText().split('\n');
  // The script's own syntax and type errors come first: a script that does not type-check is not traced.
  const errors = typeErrors(sf, shown);
  return {
    file: abs, entries, others, problems: errors.length ? errors : controlFlowProblems(sf, at),
    lineText: (line) => lines[line - 1]?.trim() || undefined,
  };
}

/** Syntax and type errors of the script itself (not of what it imports), as "file:line:col: error TSn: message". */
function typeErrors(sf: SourceFile, shown: string): string[] {
  return sf.getPreEmitDiagnostics()
    .filter((d) => d.getCategory() === ts.DiagnosticCategory.Error && d.getSourceFile()?.getFilePath() === sf.getFilePath())
    .map((d) => {
      const { line, column } = sf.getLineAndColumnAtPos(d.getStart() ?? 0);
      const text = ts.flattenDiagnosticMessageText(d.compilerObject.messageText, '\n    ');
      return `${shown}:${line}:${column}: error TS${d.getCode()}: ${text}`;
    });
}

type FunctionLike = Node & { getParameters(): ParameterDeclaration[] };

function functionOf(d: Node): FunctionLike | undefined {
  if (Node.isFunctionDeclaration(d)) return d;
  if (Node.isVariableDeclaration(d)) {
    const init = d.getInitializer();
    if (init && (Node.isArrowFunction(init) || Node.isFunctionExpression(init))) return init;
  }
  return undefined;
}

function isTensorType(t: Type): boolean {
  const decl = (t.getSymbol() ?? t.getAliasSymbol())?.getDeclarations()[0];
  return decl !== undefined && Node.isClassDeclaration(decl) && decl.getName() === 'Tensor' &&
    // tensor.ts in a checkout; tensor.d.ts beside the compiled tensor.js in an installed package.
    path.resolve(decl.getSourceFile().getFilePath()).replace(/\.d\.ts$/, '.ts') === tensorFile;
}

/** The input a parameter declares with its type, Tensor<'f32', [4, 8]>; else why it is not one. */
function inputSpec(p: ParameterDeclaration): InputSpec | string {
  const name = p.getName();
  const t = p.getType();
  const want = `type it Tensor<dtype, shape>, e.g. ${name}: Tensor<'f32', ['S', 64]>`;
  if (!isTensorType(t)) return `parameter ${name} is not a tensor (${want})`;
  const [d, s] = t.getTypeArguments();
  const dtype = d?.isStringLiteral() ? String(d.getLiteralValue()) : undefined;
  if (dtype === undefined || !isDType(dtype)) return `parameter ${name} has no dtype in its type (${want})`;
  const dims = s?.isTuple() ? s.getTupleElements() : undefined;
  const shape: Dim[] = [];
  for (const e of dims ?? []) {
    const v = e.isNumberLiteral() || e.isStringLiteral() ? e.getLiteralValue() : undefined;
    if (typeof v !== 'number' && typeof v !== 'string') return `parameter ${name} has a size that is not a literal (${want})`;
    shape.push(v);
  }
  if (!dims) return `parameter ${name} has no shape in its type (${want})`;
  return { name, dtype: dtype as DType, shape };
}

const relational = new Set([
  SyntaxKind.LessThanToken, SyntaxKind.LessThanEqualsToken, SyntaxKind.GreaterThanToken, SyntaxKind.GreaterThanEqualsToken,
]);

/**
 * Every place the script branches on a tensor, found by type: `if (t)`, `while (t)`, `for (…; t; …)`, `t ? a : b`,
 * `!t`, `t && x`, `t || x`, and `t < u`. A tensor has no value while tracing; an object in a condition is always
 * true, so the runtime cannot catch these.
 */
function controlFlowProblems(sf: SourceFile, at: (n: Node) => string): string[] {
  const problems: string[] = [];
  const flagged = new Set<Node>();
  const flag = (n: Node, what: string) => {
    if (flagged.has(n)) return;
    flagged.add(n);
    problems.push(`${at(n)}: ${what} tests \`${snippet(n)}\`, a Tensor, whose value is not known while tracing (an ` +
      'object in a condition is always true). Select data-dependently with where(cond, a, b), or make the choice a ' +
      'static option of the model.');
  };
  const flagAny = (n: Node, what: string) => {
    if (flagged.has(n)) return;
    flagged.add(n);
    problems.push(`${at(n)}: ${what} tests \`${snippet(n)}\`, typed any: if it holds a Tensor its value is not known while ` +
      'tracing. Give it a type (a Tensor is selected with where(cond, a, b)).');
  };
  /** A condition: tensors in it, through !, &&, || and parentheses. */
  const condition = (e: Expression | undefined, what: string) => {
    if (!e) return;
    if (Node.isParenthesizedExpression(e)) return condition(e.getExpression(), what);
    if (Node.isPrefixUnaryExpression(e) && e.getOperatorToken() === SyntaxKind.ExclamationToken) return condition(e.getOperand(), what);
    if (Node.isBinaryExpression(e)) {
      const op = e.getOperatorToken().getKind();
      if (op === SyntaxKind.AmpersandAmpersandToken || op === SyntaxKind.BarBarToken) {
        condition(e.getLeft(), what);
        condition(e.getRight(), what);
        return;
      }
    }
    if (isTensorType(e.getType())) flag(e, what);
    else if (e.getType().isAny()) flagAny(e, what);
  };
  sf.forEachDescendant((n) => {
    if (Node.isIfStatement(n)) condition(n.getExpression(), 'if');
    else if (Node.isWhileStatement(n)) condition(n.getExpression(), 'while');
    else if (Node.isDoStatement(n)) condition(n.getExpression(), 'do … while');
    else if (Node.isForStatement(n)) condition(n.getCondition(), 'for');
    else if (Node.isConditionalExpression(n)) condition(n.getCondition(), '?:');
    else if (Node.isPrefixUnaryExpression(n) && n.getOperatorToken() === SyntaxKind.ExclamationToken) condition(n.getOperand(), '!');
    else if (Node.isSwitchStatement(n)) condition(n.getExpression(), 'switch');
    else if (Node.isCallExpression(n) && n.getExpression().getText() === 'Boolean') condition(n.getArguments()[0] as Expression | undefined, 'Boolean()');
    else if (Node.isBinaryExpression(n)) {
      const op = n.getOperatorToken().getKind();
      if (op === SyntaxKind.AmpersandAmpersandToken || op === SyntaxKind.BarBarToken) {
        condition(n.getLeft(), op === SyntaxKind.AmpersandAmpersandToken ? '&&' : '||');
      } else if (relational.has(op)) {
        for (const side of [n.getLeft(), n.getRight()]) {
          if (isTensorType(side.getType()) && !flagged.has(side)) {
            flagged.add(side);
            problems.push(`${at(side)}: \`${snippet(n)}\` compares a Tensor with ${n.getOperatorToken().getText()}, ` +
              'which has no value while tracing. Compare with t.lt(u), t.le(u), t.gt(u), t.ge(u) and select with where(cond, a, b).');
          }
        }
      }
    }
  });
  return problems.sort((a, b) => lineCol(a) - lineCol(b));
}

function lineCol(problem: string): number {
  const m = /:(\d+):(\d+): /.exec(problem);
  return m ? Number(m[1]) * 1e4 + Number(m[2]) : 0;
}

function snippet(n: Node): string {
  const text = n.getText().replace(/\s+/g, ' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

export interface TracedScript {
  readonly info: ScriptInfo;
  readonly entry: ScriptEntry;
  readonly graph: Graph;
  /** The entry returned one tensor, not an array. */
  readonly single: boolean;
  /** The function itself, as the script exports it. */
  readonly fn: (...args: Tensor[]) => Tensor | Tensor[];
}

/** Picks the entry: the one named, else the script's only one. */
export function pickEntry(info: ScriptInfo, name?: string): ScriptEntry {
  const shown = displayPath(info.file);
  const list = () => (info.entries.length ? `entry points: ${info.entries.map((e) => e.name).join(', ')}` : 'it has none');
  if (name !== undefined) {
    const e = info.entries.find((x) => x.name === name);
    if (e) return e;
    const other = info.others.find((x) => x.name === name);
    if (other) throw new ScriptError(`${shown}: ${name} is not an entry point: ${other.reason}`);
    throw new ScriptError(`${shown}: no exported function ${name} (${list()})`);
  }
  if (info.entries.length === 1) return info.entries[0];
  if (info.entries.length === 0) {
    const why = info.others.map((o) => `\n  ${o.name}: ${o.reason}`).join('');
    throw new ScriptError(`${shown}: no exported entry point: export a function whose parameters are typed ` +
      `Tensor<dtype, shape>, e.g. export function forward(x: Tensor<'f32', ['S', 64]>) { … }${why}`);
  }
  throw new ScriptError(`${shown}: several entry points, choose one with --entry (${list()})`);
}

/**
 * Reads, checks, imports and traces one entry of a script: first in a worker thread under `limits` (a script that
 * loops forever or exhausts memory is stopped there, see script-limits.ts), then here.
 */
export async function traceScript(file: string, entryName?: string, limits: ScriptLimits = defaultScriptLimits): Promise<TracedScript> {
  const info = readScript(file);
  if (info.problems.length) {
    throw new ScriptError(`${displayPath(info.file)} is not traceable:\n  ${info.problems.join('\n  ')}`);
  }
  const entry = pickEntry(info, entryName);
  await probeScript(info.file, entry.name, entry.inputs, limits);
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(info.file).href) as Record<string, unknown>;
  } catch (e) {
    throw fromScript(e, info.file, 'loading it failed');
  }
  const fn = mod[entry.name] as (...args: Tensor[]) => Tensor | Tensor[];
  let single = false;
  let graph: Graph;
  try {
    graph = trace(entry.name, entry.inputs, (...args) => {
      const r = fn(...args);
      single = !Array.isArray(r);
      return r;
    });
  } catch (e) {
    throw fromScript(e, info.file, `tracing ${entry.name} failed`, entry.loc);
  }
  return { info, entry, graph, single, fn };
}

/**
 * An error the script's own code raised (a misspelled method, a `throw`), as a ScriptError at the script's line
 * and column where its stack shows one (else at `fallback`); tsfuse's own errors about the model (shapes, dtypes)
 * name the line already.
 */
function fromScript(e: unknown, file: string, doing: string, fallback = displayPath(file)): Error {
  if (e instanceof TraceError || e instanceof GraphError || e instanceof ScriptError) return e;
  const shown = displayPath(file);
  const stack = e instanceof Error ? e.stack ?? '' : '';
  const url = pathToFileURL(file).href;
  // Without a stack (`throw null`), the entry point's line.
  let where = fallback;
  for (const line of stack.split('\n').slice(1)) {
    const at = line.indexOf(url) >= 0 ? line.slice(line.indexOf(url) + url.length) : line.indexOf(file) >= 0 ? line.slice(line.indexOf(file) + file.length) : undefined;
    const m = at === undefined ? null : /^:(\d+):(\d+)/.exec(at);
    if (m) {
      where = `${shown}:${m[1]}:${m[2]}`;
      break;
    }
  }
  const what = e instanceof Error ? `${e.name}: ${e.message}` : `it threw ${typeof e === 'string' ? JSON.stringify(e) : String(e)}`;
  return new ScriptError(`${where}: ${doing}: ${what}`, { cause: e });
}

/** "file:line" of the script → the line's source text. */
export function sourceTextOf(info: ScriptInfo): (loc: string) => string | undefined {
  const shown = displayPath(info.file);
  return (loc) => {
    const m = /^(.*):(\d+)$/.exec(loc);
    return m && m[1] === shown ? info.lineText(Number(m[2])) : undefined;
  };
}
