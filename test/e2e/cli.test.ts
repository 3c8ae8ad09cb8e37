// The tsfuse command as users run it (node bin/tsfuse.mjs, a child process): generate, logits, trace and inspect
// against the tiny-llama fixture, and every user error ending in exit code 1 with one readable message, no stack.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readCheckpoint, readSafetensors, writeSafetensors, type TensorToWrite } from '../../runtime/safetensors.ts';
import { relativeError } from '../backends/compare.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const model = fileURLToPath(new URL('../../../shared/fixtures/tiny-llama', import.meta.url));
const golden = JSON.parse(fs.readFileSync(path.join(model, 'golden.json'), 'utf8')) as {
  input_ids: number[]; greedy_new_tokens: number[];
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Run { code: number | null; stdout: string; stderr: string }

function tsfuse(...args: string[]): Run {
  const env = { ...process.env };
  delete env.TSFUSE_DEBUG; // it would print stacks on purpose
  const r = spawnSync(process.execPath, ['bin/tsfuse.mjs', ...args], { cwd: root, env, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function succeeds(...args: string[]): string {
  const r = tsfuse(...args);
  assert.is(r.code, 0, `tsfuse ${args.join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

/** Expects exit code 1 and, on stderr only, a message naming every one of `parts` and no stack trace. */
function fails(args: string[], ...parts: string[]): string {
  const r = tsfuse(...args);
  assert.is(r.code, 1, `exit code of tsfuse ${args.join(' ')}\n${r.stderr}`);
  assert.is(r.stdout, '', 'nothing on stdout');
  assert.ok(r.stderr.startsWith(`tsfuse ${args[0]}: `), `message starts with the command: ${r.stderr}`);
  for (const part of parts) assert.ok(r.stderr.includes(part), `stderr should mention ${JSON.stringify(part)}:\n${r.stderr}`);
  assert.not.ok(r.stderr.includes('    at '), `no stack trace:\n${r.stderr}`);
  assert.not.ok(r.stderr.includes('internal error'), r.stderr);
  return r.stderr;
}

const ids = (xs: readonly number[]) => xs.join(',');


/** A checkpoint folder in tmp: tiny-llama's config.json and the given model.safetensors bytes or tensors. */
function checkpoint(name: string, weights: Buffer | Record<string, TensorToWrite>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(model, 'config.json'), path.join(dir, 'config.json'));
  const file = path.join(dir, 'model.safetensors');
  if (Buffer.isBuffer(weights)) fs.writeFileSync(file, weights);
  else writeSafetensors(file, weights);
  return dir;
}

// --- commands that work -----------------------------------------------------------------------------------------

test('generate --json prints the golden greedy tokens', () => {
  const n = 8;
  const out = JSON.parse(succeeds('generate', '--model', model, '--ids', ids(golden.input_ids),
    '--max-new-tokens', String(n), '--backend', 'cpu', '--json'));
  assert.equal(out.tokens, golden.greedy_new_tokens.slice(0, n));
});

test('logits --json prints one vocab-sized row per id, matching the golden logits', () => {
  const prefix = golden.input_ids.slice(0, 6);
  const out = JSON.parse(succeeds('logits', '--model', model, '--ids', ids(prefix), '--backend', 'cpu', '--json'));
  const ref = readSafetensors(path.join(model, 'golden.safetensors')).tensor('logits');
  const vocab = ref.shape[1];
  assert.is(out.logits.length, prefix.length, 'rows');
  (out.logits as number[][]).forEach((row, i) => {
    assert.is(row.length, vocab, `row ${i} length`);
    const err = relativeError(row, ref.data.subarray(i * vocab, (i + 1) * vocab));
    assert.ok(err < 1e-4, `position ${i}: relative error ${err.toExponential(2)}`);
  });
});

const irFile = path.join(tmp, 'tiny-llama.ir');

test('trace --dump-ir, then inspect prints the file back byte-identical', () => {
  const dump = succeeds('trace', '--model', model, '--dump-ir');
  assert.ok(dump.startsWith('graph @prefill('), dump.slice(0, 80));
  assert.ok(dump.includes('\ngraph @decode('), 'both graphs');
  fs.writeFileSync(irFile, dump);
  assert.is(succeeds('inspect', irFile), dump);
});

test('inspect --stats counts the nodes of each graph by op', () => {
  const dump = fs.readFileSync(irFile, 'utf8');
  const nodeLines = (graph: string) => {
    const body = dump.slice(dump.indexOf(`graph @${graph}(`));
    return body.slice(0, body.indexOf('\n}')).split('\n').filter((l) => /^ {2}%\d+: /.test(l));
  };
  const stats = succeeds('inspect', '--stats', irFile);
  for (const graph of ['prefill', 'decode']) {
    const nodes = nodeLines(graph);
    const section = stats.slice(stats.indexOf(`@${graph}: `)).split('\n');
    assert.is(section[0], `@${graph}: ${nodes.length} nodes`);
    const end = section.findIndex((l, i) => i > 0 && !l.startsWith('  '));
    const counts = section.slice(1, end).map((l) => l.trim().split(/\s+/));
    const matmuls = nodes.filter((l) => / = matmul /.test(l)).length;
    assert.equal(counts.find(([op]) => op === 'matmul'), ['matmul', String(matmuls)]);
    assert.is(counts.reduce((sum, [, n]) => sum + Number(n), 0), nodes.length, 'op counts add up');
  }
});

// --- user errors: exit code 1, one message naming the problem, no stack ----------------------------------------

test('missing --model', () => {
  fails(['generate', '--ids', '1,2'], '--model is required');
});

test('a model directory that does not exist', () => {
  const dir = path.join(tmp, 'no-such-model');
  fails(['logits', '--model', dir, '--ids', '1,2'], dir, 'no such directory');
});

test('a token id outside the vocabulary', () => {
  fails(['generate', '--model', model, '--ids', '1,512,3'], 'token id 512', 'position 1', 'vocabulary', '0..511');
});

test('malformed --ids', () => {
  fails(['logits', '--model', model, '--ids', '1,x,3'], '--ids', "'x'");
  fails(['generate', '--model', model, '--ids', '1,,3'], '--ids', "''");
});

test('an IR file with a syntax error names line:column and shows a caret', () => {
  const lines = fs.readFileSync(irFile, 'utf8').split('\n');
  const at = lines.findIndex((l) => / = add %\d+, %/.test(l));
  lines[at] = lines[at].replace(/(= add %\d+),/, '$1');
  const column = lines[at].indexOf('%', lines[at].indexOf('= add %') + 7) + 1; // the second operand
  const file = path.join(tmp, 'broken.ir');
  fs.writeFileSync(file, lines.join('\n'));
  const msg = fails(['inspect', file], `${file}:${at + 1}:${column}: `, 'expected ","');
  const [, source, caret] = msg.trimEnd().split('\n');
  assert.is(source, lines[at]);
  assert.is(caret, ' '.repeat(column - 1) + '^');
});

test('a truncated model.safetensors', () => {
  const bytes = fs.readFileSync(path.join(model, 'model.safetensors'));
  const dir = checkpoint('truncated', bytes.subarray(0, bytes.length >> 1));
  fails(['generate', '--model', dir, '--ids', '1,2'], path.join(dir, 'model.safetensors'), 'truncated');
});

test('a checkpoint missing a tensor', () => {
  const source = readCheckpoint(model);
  const left = 'model.layers.1.mlp.up_proj.weight';
  const tensors: Record<string, TensorToWrite> = {};
  for (const { name } of source.tensors) if (name !== left) tensors[name] = source.tensor(name);
  const dir = checkpoint('missing-tensor', tensors);
  fails(['logits', '--model', dir, '--ids', '1,2'], 'missing tensor', `'${left}'`, '[352,128]');
});

test('an unknown command', () => {
  fails(['frobnicate', '--model', model], "unknown command 'frobnicate'", 'usage: tsfuse');
});

test('an unknown backend', () => {
  fails(['generate', '--model', model, '--ids', '1,2', '--backend', 'tpu'], "unknown backend 'tpu'", 'cpu');
});

test.run();
