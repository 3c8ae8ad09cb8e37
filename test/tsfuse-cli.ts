// The tsfuse command line for tests. tsfuse() runs it in this process: main() of compiler/cli-main.ts with stdout
// and stderr captured (as pipes, not terminals), and the environment and working directory swapped for the call, one
// call at a time. That is the command as users run it less what a process adds: Node's start-up and tsx's loading of
// the compiler (about half a second a call) and, for a model script, ts-morph's parsing of the standard library,
// Node's types and tsfuse (a couple of seconds, which calls in one process share). spawnTsfuse() runs bin/tsfuse.mjs
// as a child process, for what only a process shows: how it starts, its exit status, its module loader.

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../compiler/cli-main.ts';

export const root = fileURLToPath(new URL('../', import.meta.url));

export interface CliRun {
  /** The exit code (null: the child process was killed by a signal or timed out). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CliOptions {
  /** Variables to set for the call; undefined removes one. TSFUSE_DEBUG and TSFUSE_LOGS are removed unless given. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The working directory (default: the checkout). */
  readonly cwd?: string;
  /**
   * Milliseconds the call may take; past them it counts as killed (code null; in this process that stops waiting
   * for a command that awaits forever, but a synchronous loop holds the whole process until the runner's limit).
   */
  readonly timeoutMs?: number;
}

/** The environment of a call: the test's, without the switches that would print on purpose, plus `env`. */
function callEnv(env: CliOptions['env'] = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  delete out.TSFUSE_DEBUG;
  delete out.TSFUSE_LOGS;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

let queue: Promise<unknown> = Promise.resolve();

/** `tsfuse ...args` in this process. */
export function tsfuse(args: readonly string[], opts: CliOptions = {}): Promise<CliRun> {
  const run = queue.then(() => runHere(args, opts));
  queue = run.catch(() => undefined);
  return run;
}

async function runHere(args: readonly string[], opts: CliOptions): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const capture = (append: (s: string) => void) => (chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
    append(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const done = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    if (done) process.nextTick(done);
    return true;
  };
  const saved = {
    out: process.stdout.write, err: process.stderr.write, outTTY: process.stdout.isTTY, errTTY: process.stderr.isTTY,
    env: { ...process.env }, cwd: process.cwd(),
  };
  const env = callEnv(opts.env);
  for (const k of Object.keys(process.env)) if (!(k in env)) delete process.env[k];
  Object.assign(process.env, env);
  process.chdir(opts.cwd ?? root);
  process.stdout.write = capture((s) => { stdout += s; }) as typeof process.stdout.write;
  process.stderr.write = capture((s) => { stderr += s; }) as typeof process.stderr.write;
  process.stdout.isTTY = false;
  process.stderr.isTTY = false;
  let code: number | null;
  let timer: NodeJS.Timeout | undefined;
  try {
    const limit = opts.timeoutMs === undefined ? undefined
      : new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), opts.timeoutMs); });
    code = await (limit ? Promise.race([main([...args]), limit]) : main([...args]));
  } catch (e) {
    // As a process would end: a stack on stderr, exit code 1 (what the tests' "no stack" checks look for).
    stderr += `${(e as Error)?.stack ?? String(e)}\n`;
    code = 1;
  } finally {
    clearTimeout(timer);
    process.stdout.write = saved.out;
    process.stderr.write = saved.err;
    process.stdout.isTTY = saved.outTTY;
    process.stderr.isTTY = saved.errTTY;
    process.chdir(saved.cwd);
    for (const k of Object.keys(process.env)) if (!(k in saved.env)) delete process.env[k];
    Object.assign(process.env, saved.env);
  }
  return { code, stdout, stderr };
}

/** `tsfuse ...args` as a child process (node bin/tsfuse.mjs), as users run it. */
export function spawnTsfuse(args: readonly string[], opts: CliOptions = {}): CliRun {
  const env = callEnv(opts.env);
  // With NO_COLOR also set, Node warns on stderr about FORCE_COLOR (which uvu sets).
  delete env.FORCE_COLOR;
  const r = spawnSync(process.execPath, [path.join(root, 'bin/tsfuse.mjs'), ...args],
    { cwd: opts.cwd ?? root, env, encoding: 'utf8', timeout: opts.timeoutMs });
  if (r.error && !opts.timeoutMs) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
