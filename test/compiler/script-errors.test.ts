// A model script's own mistakes are the user's: syntax and type errors (the type checker runs), a method that does
// not exist at run time, a `throw`, a data-dependent branch the old checks missed (Boolean(t), switch (t), a
// condition typed any), and a script where `tsfuse` does not resolve. Each is a ScriptError at the script's
// file:line:column, and the CLI exits 1 with that one message, no "internal error" and no stack; so does an --out
// that cannot be written (the command runs in this process, test/tsfuse-cli.ts).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ScriptError, traceScript } from '../../compiler/script.ts';
import { spawnTsfuse, tsfuse } from '../tsfuse-cli.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-script-errors-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Writes a script importing the checkout's tsfuse; returns its path and the line of the marker. */
function script(name: string, body: string): { file: string; line: number } {
  const text = `import { type Tensor } from ${JSON.stringify(path.join(root, 'index.ts'))};\n${body}`;
  const file = path.join(tmp, `${name}.ts`);
  fs.writeFileSync(file, text);
  return { file, line: text.split('\n').findIndex((l) => l.includes('// HERE')) + 1 };
}

async function reports(name: string, body: string, ...parts: string[]): Promise<string> {
  const { file, line } = script(name, body);
  try {
    await traceScript(file);
  } catch (e) {
    assert.instance(e, ScriptError, `${name}: ${(e as Error).stack}`);
    const msg = (e as Error).message;
    assert.ok(msg.includes(`${file}:${line}:`) || msg.includes(`${name}.ts:${line}:`), `${name}: at line ${line}: ${msg}`);
    for (const p of parts) assert.ok(msg.includes(p), `${name}: should mention ${JSON.stringify(p)}: ${msg}`);
    return msg;
  }
  throw new Error(`${name}: traced without an error`);
}

const entry = (body: string) => `export function f(x: Tensor<'f32', [4]>): Tensor {\n${body}\n}\n`;

test('syntax and type errors, with line and column, before anything runs', async () => {
  await reports('syntax', entry('  return x.add(1; // HERE'), "error TS1005: ')' expected");
  await reports('typo', entry('  return x.addd(1); // HERE'), "error TS2551: Property 'addd' does not exist on type 'Tensor");
  await reports('wrong-arg', entry("  return x.add('one'); // HERE"), 'error TS2345');
});

test('errors the script raises while it is traced, at its line', async () => {
  // Nothing thrown but null has no stack: the entry point's line.
  await reports('throw-null', "export function f(x: Tensor<'f32', [4]>): Tensor { // HERE\n  if (x.rank > 0) throw null;\n  return x;\n}\n",
    'tracing f failed', 'it threw null');
  await reports('hidden', entry('  const y = x as unknown as { mull(v: number): Tensor };\n  return y.mull(2); // HERE'),
    'tracing f failed', 'TypeError', 'mull is not a function');
  await reports('throws-string', "export function f(x: Tensor<'f32', [4]>): Tensor { // HERE\n  if (x.rank > 0) throw 'no';\n  return x;\n}\n", 'it threw "no"');
});

test('branches the checks used to miss: Boolean(t), switch (t), a condition typed any', async () => {
  await reports('boolean', entry('  return Boolean(x.sum()) ? x : x.neg(); // HERE'), 'Boolean() tests `x.sum()`, a Tensor');
  await reports('switch', entry('  switch (x.sum()) { // HERE\n    default: return x;\n  }'), 'switch tests `x.sum()`, a Tensor');
  await reports('any', entry('  const v: any = x.sum();\n  if (v) return x; // HERE\n  return x.neg();'), 'if tests `v`, typed any');
});

test('the CLI: one message at the script line, exit 1, no internal error', async () => {
  const { file, line } = script('cli-typo', entry('  return x.addd(1); // HERE'));
  const r = await tsfuse(['compile', file]);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, `cli-typo.ts:${line}:`);
  assert.match(r.stderr, "Property 'addd' does not exist");
  assert.not.match(r.stderr, /internal error|    at /);
  // Outside any folder where `tsfuse` resolves: the script cannot load, and says so. A child process: what resolves
  // is the process's module loader's doing (this one is the test's, which maps `tsfuse` everywhere).
  const lost = path.join(tmp, 'lost.ts');
  fs.writeFileSync(lost, "import { type Tensor } from 'tsfuse';\nexport function f(x: Tensor<'f32', [4]>): Tensor { return x; }\n");
  const r2 = spawnTsfuse(['compile', lost]);
  assert.is(r2.code, 1, r2.stderr);
  assert.match(r2.stderr, 'lost.ts');
  assert.not.match(r2.stderr, /internal error|is not a tensor|    at /);
});

test('--out never overwrites the script itself, nor writes onto a folder', async () => {
  const { file } = script('keep-me', entry('  return x.neg();'));
  const before = fs.readFileSync(file, 'utf8');
  const run = (out: string) => tsfuse(['compile', file, '--out', out]);
  const self = await run(file);
  assert.is(self.code, 1, self.stderr);
  assert.match(self.stderr, 'is the model script itself');
  assert.is(fs.readFileSync(file, 'utf8'), before, 'the script is untouched');
  const folder = await run(tmp);
  assert.is(folder.code, 1, folder.stderr);
  assert.match(folder.stderr, 'is a folder');
  assert.not.match(self.stderr + folder.stderr, /internal error|    at /);
});

// The command line's other file-system errors are in e2e/cli-files.test.ts.
test('--out of a model script under a file, and onto a full disk: one line naming the path', async () => {
  const file = path.join(tmp, 'a-file');
  fs.writeFileSync(file, 'not a folder\n');
  const failsWith = async (args: string[], line: string) => {
    const r = await tsfuse(args);
    assert.is(r.code, 1, `tsfuse ${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stderr, `${line}\n`);
  };
  await failsWith(['compile', 'examples/mlp.ts', '--out', path.join(file, 'mlp.ts')],
    `tsfuse compile: --out ${file}/mlp.ts: cannot write the artifact: ${file} is a file, expected a folder`);
  if (fs.existsSync('/dev/full')) {
    const out = path.join(tmp, 'full.ts');
    fs.symlinkSync('/dev/full', out);
    await failsWith(['compile', 'examples/mlp.ts', '--out', out], `tsfuse compile: --out ${out}: cannot write the artifact: ${out}: no space left on the device`);
  }
});

test.run();
