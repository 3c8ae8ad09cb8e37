// Finds the line of the user's model code that is running, for node provenance and error messages.

import { findSourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const tsfuseRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Frames in these files are tsfuse's own tracing machinery, not model code. */
const internalDirs = ['compiler', 'ir'].map((d) => path.join(tsfuseRoot, d) + path.sep);
/** tsfuse's own tensor-API code (the next-token choice, the generation step): model code, shown in dumps. */
const modelFiles = ['generation.ts', 'next-token.ts'].map((f) => path.join(tsfuseRoot, 'compiler', f));

/** An absolute path as a stack frame prints it (no parentheses or colons in it). */
const framePath = /^\/[^():]+$/;

interface CallSite {
  getFileName(): string | null | undefined;
  getLineNumber(): number | null;
  getColumnNumber(): number | null;
}

/**
 * Each frame position seen (the generated file, then line and column as one number), mapped as Node prints it in a
 * stack trace (through the source map tsx registers) to the source file and line, or to null for tsfuse's own frames
 * and those outside any file. Tracing asks for the caller of every node it records: formatting whole stack traces
 * through source maps cost ~0.2 s per Llama-3.2-1B trace, these look-ups a few milliseconds (keyed by numbers: a
 * string key built for every frame cost another 8 ms).
 */
const positions = new Map<string, Map<number, { file: string; line: number } | null>>();

/** "examples/llama.ts:42": the innermost stack frame outside tsfuse's tracer, relative to the working directory. */
export function callerLocation(): string | undefined {
  // The model's frame is usually a few frames in: look there first, then as far as 30 frames.
  for (const depth of [8, 30]) {
    const sites = callSites(depth);
    for (const site of sites) {
      const at = sourcePosition(site);
      if (at) return `${displayPath(at.file)}:${at.line}`;
    }
    if (sites.length < depth) break;
  }
  return undefined;
}

/** V8's call sites as the stack itself (one function for every call: a new closure each time cost tracing ~20 ms). */
const sitesAsStack = (_e: Error, sites: CallSite[]) => sites;

/** The innermost `depth` frames of the stack (this function's own first), as V8's call sites. */
function callSites(depth: number): CallSite[] {
  const savedLimit = Error.stackTraceLimit;
  const savedPrepare = Error.prepareStackTrace;
  try {
    Error.stackTraceLimit = depth;
    Error.prepareStackTrace = sitesAsStack;
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, callSites);
    return holder.stack as CallSite[];
  } finally {
    Error.stackTraceLimit = savedLimit;
    Error.prepareStackTrace = savedPrepare;
  }
}

function sourcePosition(site: CallSite): { file: string; line: number } | null {
  const file = site.getFileName();
  const line = site.getLineNumber();
  const column = site.getColumnNumber();
  if (!file || line === null || column === null) return null;
  let inFile = positions.get(file);
  if (inFile === undefined) positions.set(file, (inFile = new Map()));
  // Exact below 2^27 lines and 2^26 columns (a minified bundle's line included).
  const key = line * 2 ** 26 + column;
  let at = inFile.get(key);
  if (at === undefined) {
    at = mapPosition(file, line, column);
    inFile.set(key, at);
  }
  return at;
}

/** As Node's stack traces show a frame: its source-mapped file and line if a map covers it, else the generated ones. */
function mapPosition(generated: string, line: number, column: number): { file: string; line: number } | null {
  let file = generated.startsWith('file://') ? generated.slice('file://'.length) : generated;
  try {
    const entry = findSourceMap(generated)?.findEntry(line - 1, column - 1) as
      { originalSource?: string; originalLine?: number; originalColumn?: number } | undefined;
    if (entry?.originalSource !== undefined && entry.originalLine !== undefined && entry.originalColumn !== undefined) {
      file = entry.originalSource.startsWith('file://') ? fileURLToPath(entry.originalSource) : entry.originalSource;
      line = entry.originalLine + 1;
    }
  } catch {
    // As in Node's own traces: a frame whose map cannot be read shows its generated position.
  }
  if (!framePath.test(file)) return null;
  const internal = internalDirs.some((d) => file.startsWith(d)) && !modelFiles.includes(file);
  if (internal || file.includes('/node_modules/')) return null;
  return { file, line };
}

export function displayPath(file: string): string {
  const cwd = process.cwd();
  if (cwd !== shownFrom) {
    shownFrom = cwd;
    shown.clear();
  }
  let text = shown.get(file);
  if (text === undefined) {
    const rel = path.relative(cwd, file);
    shown.set(file, (text = rel.startsWith('..') ? file : rel));
  }
  return text;
}

/** displayPath's answers for the working directory `shownFrom`. */
const shown = new Map<string, string>();
let shownFrom: string | undefined;
