// A model script is loaded and traced first in a worker thread under a time and a memory limit
// (compiler/script-limits.ts): a script that loops forever, at its top or in its entry, or that exhausts memory, or
// that calls process.exit, ends in a ScriptError naming the script, the entry and the limit, never in a hang.
// A script that behaves is traced as before, and what it prints is printed once. The command runs in this process
// (test/tsfuse-cli.ts), the script's probe in its worker thread as always.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ScriptError, traceScript } from '../../compiler/script.ts';
import { tsfuse as runTsfuse } from '../tsfuse-cli.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-script-limits-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
// ES modules, as a project's scripts are (the command line loads TypeScript as ES modules only).
fs.writeFileSync(path.join(tmp, 'package.json'), '{ "type": "module" }\n');

function script(name: string, body: string): string {
  const file = path.join(tmp, `${name}.ts`);
  fs.writeFileSync(file, `import { type Tensor } from ${JSON.stringify(path.join(root, 'index.ts'))};\n${body}`);
  return file;
}

const limits = { timeoutSeconds: 1, maxMemoryMb: 64 };

async function stopped(name: string, body: string, ...parts: string[]): Promise<void> {
  return stoppedWithin(limits, name, body, ...parts);
}

async function stoppedWithin(within: typeof limits, name: string, body: string, ...parts: string[]): Promise<void> {
  const file = script(name, body);
  const t0 = Date.now();
  try {
    await traceScript(file, undefined, within);
  } catch (e) {
    assert.instance(e, ScriptError, `${name}: ${(e as Error).stack}`);
    for (const p of [`loading ${file} and tracing f`, ...parts]) assert.ok((e as Error).message.includes(p), `${name}: should mention ${JSON.stringify(p)}: ${(e as Error).message}`);
    assert.ok(Date.now() - t0 < 30_000, `${name}: stopped after ${Date.now() - t0} ms`);
    return;
  }
  throw new Error(`${name}: traced without an error`);
}

test('a loop that never ends, in the entry or at the top of the script, is stopped at --timeout', async () => {
  await stopped('entry-loop', "export function f(x: Tensor<'f32', [4]>): Tensor {\n  for (;;) {}\n  return x;\n}\n",
    'took longer than the limit of 1 s (--timeout)');
  await stopped('top-loop', "while (Date.now() > 0) {}\nexport function f(x: Tensor<'f32', [4]>): Tensor { return x; }\n",
    'took longer than the limit of 1 s (--timeout)');
});

test('a script that exhausts the heap is stopped at --max-memory', async () => {
  // Time enough to fill 64 MB on a loaded machine (with 1 s, a CI machine running other work had timed out first).
  await stoppedWithin({ ...limits, timeoutSeconds: 20 }, 'hog', "export function f(x: Tensor<'f32', [4]>): Tensor {\n  const a: number[][] = [];\n  for (;;) a.push(new Array(1e5).fill(1.5));\n  return x;\n}\n",
    'used more than the limit of 64 MB of memory (--max-memory)');
});

test('process.exit in a script is an error, not the end of tsfuse', async () => {
  await stopped('exits', "export function f(x: Tensor<'f32', [4]>): Tensor {\n  process.exit(3);\n  return x;\n}\n", 'process.exit(3)');
});

test('a script within the limits is traced as before', async () => {
  const fine = script('fine', "export function f(x: Tensor<'f32', [4]>): Tensor { return x.add(1).exp(); }\n");
  const t = await traceScript(fine, undefined, { timeoutSeconds: 30, maxMemoryMb: 256 });
  assert.equal(t.graph.nodes.map((n) => n.op), ['const', 'add', 'exp']);
});

test('the CLI: --timeout and --max-memory in --help with their defaults; one line, exit 1; output printed once', async () => {
  const tsfuse = (...args: string[]) => runTsfuse(args);
  const help = (await tsfuse('compile', '--help')).stdout;
  assert.match(help, /--timeout SECONDS .*\(default: 10\)/);
  assert.match(help, /--max-memory MB .*\(default: 2048\)/);
  const hang = script('cli-hang', "export function f(x: Tensor<'f32', [4]>): Tensor {\n  for (;;) {}\n  return x;\n}\n");
  const r = await tsfuse('compile', hang, '--timeout', '0.5');
  assert.is(r.code, 1, r.stderr);
  assert.is(r.stderr, `tsfuse compile: loading ${hang} and tracing f took longer than the limit of 0.5 s (--timeout): does it loop forever?\n`);
  assert.match((await tsfuse('compile', hang, '--timeout', 'soon')).stderr, /^tsfuse compile: --timeout must be a number of seconds, more than 0 .*, got 'soon'\n$/);
  const chatty = script('cli-chatty', "console.log('loaded');\nexport function f(x: Tensor<'f32', [4]>): Tensor { return x.neg(); }\n");
  const ok = await tsfuse('compile', chatty, '--json');
  assert.is(ok.code, 0, ok.stderr);
  assert.is(ok.stdout.split('\n').filter((l) => l === 'loaded').length, 1, ok.stdout);
});

test.run();
