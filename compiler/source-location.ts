// Finds the line of the user's model code that is running, for node provenance and error messages.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

const tsfuseRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Frames in these files are tsfuse's own tracing machinery, not model code. */
const internalDirs = ['compiler', 'ir'].map((d) => path.join(tsfuseRoot, d) + path.sep);
/** tsfuse's own tensor-API code (the next-token choice, the generation step): model code, shown in dumps. */
const modelFiles = ['generation.ts', 'next-token.ts'].map((f) => path.join(tsfuseRoot, 'compiler', f));

const framePattern = /\(?(?:file:\/\/)?(\/[^():]+):(\d+):\d+\)?$/;

/** "examples/llama.ts:42": the innermost stack frame outside tsfuse's tracer, relative to the working directory. */
export function callerLocation(): string | undefined {
  const saved = Error.stackTraceLimit;
  Error.stackTraceLimit = 30;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = saved;
  for (const line of stack.split('\n').slice(1)) {
    const m = framePattern.exec(line.trim());
    if (!m) continue;
    const file = m[1];
    const internal = internalDirs.some((d) => file.startsWith(d)) && !modelFiles.includes(file);
    if (internal || file.includes('/node_modules/')) continue;
    return `${displayPath(file)}:${m[2]}`;
  }
  return undefined;
}

export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel.startsWith('..') ? file : rel;
}
