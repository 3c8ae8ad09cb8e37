// The tsfuse command as users run it: generate, logits, trace, inspect and run against the tiny-llama fixture; its
// conventions (--version, per-command help with defaults, results on stdout and statistics on stderr, TSFUSE_LOGS);
// and every user error ending in exit code 1 with one readable message. The command runs in this process
// (test/tsfuse-cli.ts), and as a child process (node bin/tsfuse.mjs) where its start and exit status are the point.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readCheckpoint, readSafetensors, writeSafetensors, type TensorToWrite } from '../../runtime/safetensors.ts';
import { relativeError } from '../backends/compare.ts';
import { DType } from '../../ir/dtype.ts';
import { type CliRun, spawnTsfuse, tsfuse as runTsfuse } from '../tsfuse-cli.ts';
import { fixture } from '../fixtures-dir.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const model = fixture('tiny-llama');
const golden = JSON.parse(fs.readFileSync(path.join(model, 'golden.json'), 'utf8')) as {
  input_ids: number[]; greedy_new_tokens: number[];
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** `tsfuse ...args` in this process (test/tsfuse-cli.ts); spawnTsfuse runs it as a child process. */
function tsfuse(...args: string[]): Promise<CliRun> {
  return runTsfuse(args);
}

function tsfuseWith(env: Record<string, string>, ...args: string[]): Promise<CliRun> {
  return runTsfuse(args, { env });
}

async function succeeds(...args: string[]): Promise<string> {
  const r = await tsfuse(...args);
  assert.is(r.code, 0, `tsfuse ${args.join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

/** Expects exit code 1 and, on stderr only, a message naming every one of `parts` and no stack trace. */
function failed(r: CliRun, args: string[], ...parts: string[]): string {
  assert.is(r.code, 1, `exit code of tsfuse ${args.join(' ')}\n${r.stderr}`);
  assert.is(r.stdout, '', 'nothing on stdout');
  assert.ok(r.stderr.startsWith(`tsfuse ${args[0]}: `), `message starts with the command: ${r.stderr}`);
  for (const part of parts) assert.ok(r.stderr.includes(part), `stderr should mention ${JSON.stringify(part)}:\n${r.stderr}`);
  assert.not.ok(r.stderr.includes('    at '), `no stack trace:\n${r.stderr}`);
  assert.not.ok(r.stderr.includes('internal error'), r.stderr);
  return r.stderr;
}

async function fails(args: string[], ...parts: string[]): Promise<string> {
  return failed(await tsfuse(...args), args, ...parts);
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

test('generate --json prints the golden greedy tokens', async () => {
  const n = 8;
  const out = JSON.parse(await succeeds('generate', '--model', model, '--ids', ids(golden.input_ids),
    '--max-new-tokens', String(n), '--backend', 'cpu', '--json'));
  assert.equal(out.tokens, golden.greedy_new_tokens.slice(0, n));
});

test('logits --json prints one vocab-sized row per id, matching the golden logits', async () => {
  const prefix = golden.input_ids.slice(0, 6);
  const out = JSON.parse(await succeeds('logits', '--model', model, '--ids', ids(prefix), '--backend', 'cpu', '--json'));
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

test('trace --dump-ir, then inspect prints the file back byte-identical', async () => {
  const dump = await succeeds('trace', '--model', model, '--dump-ir');
  assert.ok(dump.startsWith('graph @prefill('), dump.slice(0, 80));
  assert.ok(dump.includes('\ngraph @decode('), 'both graphs');
  fs.writeFileSync(irFile, dump);
  assert.is(await succeeds('inspect', irFile), dump);
});

test('inspect --stats counts the nodes of each graph by op', async () => {
  const dump = fs.readFileSync(irFile, 'utf8');
  const nodeLines = (graph: string) => {
    const body = dump.slice(dump.indexOf(`graph @${graph}(`));
    return body.slice(0, body.indexOf('\n}')).split('\n').filter((l) => /^ {2}%\d+: /.test(l));
  };
  const stats = await succeeds('inspect', '--stats', irFile);
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

test('missing --model (as a process: its exit status and stderr)', () => {
  const args = ['generate', '--ids', '1,2'];
  failed(spawnTsfuse(args), args, '--model is required');
});

test('a model directory that does not exist', async () => {
  const dir = path.join(tmp, 'no-such-model');
  await fails(['logits', '--model', dir, '--ids', '1,2'], dir, 'no such directory');
});

test('a token id outside the vocabulary', async () => {
  await fails(['generate', '--model', model, '--ids', '1,512,3'], 'token id 512', 'position 1', 'vocabulary', '0..511');
});

test('malformed --ids', async () => {
  await fails(['logits', '--model', model, '--ids', '1,x,3'], '--ids', "'x'");
  await fails(['generate', '--model', model, '--ids', '1,,3'], '--ids', "''");
});

test('an IR file with a syntax error names line:column and shows a caret', async () => {
  const lines = fs.readFileSync(irFile, 'utf8').split('\n');
  const at = lines.findIndex((l) => / = add %\d+, %/.test(l));
  lines[at] = lines[at].replace(/(= add %\d+),/, '$1');
  const column = lines[at].indexOf('%', lines[at].indexOf('= add %') + 7) + 1; // the second operand
  const file = path.join(tmp, 'broken.ir');
  fs.writeFileSync(file, lines.join('\n'));
  const msg = await fails(['inspect', file], `${file}:${at + 1}:${column}: `, 'expected ","');
  const [, source, caret] = msg.trimEnd().split('\n');
  assert.is(source, lines[at]);
  assert.is(caret, ' '.repeat(column - 1) + '^');
});

test('a truncated model.safetensors', async () => {
  const bytes = fs.readFileSync(path.join(model, 'model.safetensors'));
  const dir = checkpoint('truncated', bytes.subarray(0, bytes.length >> 1));
  await fails(['generate', '--model', dir, '--ids', '1,2'], path.join(dir, 'model.safetensors'), 'truncated');
});

test('a checkpoint missing a tensor', async () => {
  const source = readCheckpoint(model);
  const left = 'model.layers.1.mlp.up_proj.weight';
  const tensors: Record<string, TensorToWrite> = {};
  for (const { name } of source.tensors) if (name !== left) tensors[name] = source.tensor(name);
  const dir = checkpoint('missing-tensor', tensors);
  await fails(['logits', '--model', dir, '--ids', '1,2'], 'missing tensor', `'${left}'`, '[352,128]');
});

test('an unknown command', async () => {
  await fails(['frobnicate', '--model', model], "unknown command 'frobnicate'", 'usage: tsfuse');
});

test('an unknown backend', async () => {
  await fails(['generate', '--model', model, '--ids', '1,2', '--backend', 'tpu'], "unknown backend 'tpu'", 'cpu');
});

// --- conventions ------------------------------------------------------------------------------------------------

test('--version prints the package version; --help lists every command', async () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
  // As a process: bin/tsfuse.mjs starts the command line.
  const version = spawnTsfuse(['--version']);
  assert.is(version.code, 0, version.stderr);
  assert.is(version.stdout.trim(), pkg.version);
  const help = await succeeds('--help');
  for (const c of ['generate', 'logits', 'compile', 'trace', 'inspect', 'run']) assert.ok(help.includes(`\n  ${c} `), `${c} in help:\n${help}`);
  assert.ok(help.includes('TSFUSE_LOGS'), 'the logging switch is documented');
});

test('tsfuse <command> --help shows its options with their defaults', async () => {
  const help = await succeeds('generate', '--help');
  assert.ok(help.startsWith('usage: tsfuse generate --model DIR'), help);
  assert.match(help, /--max-new-tokens N\s+.*\(default: 32\)/);
  assert.match(help, /--backend NAME\s+.*cpu, reference, webgpu, cuda \(default: cpu\)/);
  assert.match(await succeeds('compile', '--help'), /--dump-ir \[all\|after:PASS\]/);
  assert.match(await succeeds('run', '--help'), /--inputs SPEC/);
});

test('generate: token ids alone on stdout, the timing on stderr', async () => {
  const n = 4;
  const r = await tsfuse('generate', '--model', model, '--ids', ids(golden.input_ids), '--max-new-tokens', String(n));
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split(/\s+/).map(Number), golden.greedy_new_tokens.slice(0, n));
  assert.match(r.stderr, /^4 tokens in \d+ ms: prefill [\d.]+ ms \(\d+ prompt tokens\), [\d.]+ ms\/token/m);
});

test('compile --config prints a summary; --json alone prints it as JSON', async () => {
  assert.match(await succeeds('compile', '--config', 'llama-tiny'), /^builtin:llama-tiny: @prefill \d+ nodes → \d+ kernels, @prompt \d+ nodes → \d+ kernels, @decode \d+ nodes → \d+ kernels/);
  const json = JSON.parse(await succeeds('compile', '--config', 'llama-tiny', '--json'));
  assert.is(json.model, 'builtin:llama-tiny');
  assert.ok(json.graphs.decode.kernels > 0 && json.graphs.decode.kernels < json.graphs.decode.nodes, JSON.stringify(json));
});

test('compile --subgroup-matrix shows the WebGPU kernels as on an adapter with f16 subgroup matrices; other backends are refused', async () => {
  const gemms = (out: string) => out.split('\n').filter((l) => l.trimStart().startsWith('gemm '));
  const matrix = gemms(await succeeds('compile', '--config', 'llama-tiny', '--backend', 'webgpu', '--dump-schedule', '--subgroup-matrix'));
  const plain = gemms(await succeeds('compile', '--config', 'llama-tiny', '--backend', 'webgpu', '--dump-schedule'));
  assert.ok(matrix.length > 0 && matrix.length === plain.length, `${matrix.length} against ${plain.length} GEMMs`);
  for (const l of matrix) assert.match(l, 'f16 subgroup matrices (16 × 16 × 16, f32 results)');
  for (const l of plain) assert.match(l, 'f32 multiply-adds');
  await fails(['compile', '--config', 'llama-tiny', '--backend', 'cuda', '--dump-schedule', '--subgroup-matrix'], '--subgroup-matrix', '--backend webgpu');
  await fails(['compile', '--config', 'llama-tiny', '--backend', 'webgpu', '--subgroup-matrix'], '--subgroup-matrix', '--dump-kernels', '--dump-schedule');
});

test('--dump-ir after:fuse (a space) is read as the pass', async () => {
  const out = await succeeds('compile', '--config', 'llama-tiny', '--dump-ir', 'after:fuse');
  assert.ok(out.startsWith('# after fuse\ngraph @prefill('), out.slice(0, 80));
  await fails(['compile', '--config', 'llama-tiny', '--dump-ir', 'after:nope'], '--dump-ir=after:nope', 'fuse');
});

test('TSFUSE_LOGS=kernels,fusion prints the decisions on stderr, stdout unchanged', async () => {
  const r = await tsfuseWith({ TSFUSE_LOGS: 'kernels,fusion' }, 'compile', '--config', 'llama-tiny', '--json');
  assert.is(r.code, 0, r.stderr);
  JSON.parse(r.stdout);
  assert.match(r.stderr, /^\[tsfuse:kernels\] @decode: \d+ nodes in \d+ kernels$/m);
  assert.match(r.stderr, /^\[tsfuse:fusion\] \[fuse\] /m);
  const bad = await tsfuseWith({ TSFUSE_LOGS: 'kernals' }, 'compile', '--config', 'llama-tiny');
  assert.is(bad.code, 1);
  assert.ok(bad.stderr.includes("TSFUSE_LOGS: unknown topic 'kernals'"), bad.stderr);
});

test('options are validated with messages naming the option', async () => {
  await fails(['generate', '--model', model, '--ids', '1,2', '--bogus'], 'unknown option --bogus', 'tsfuse generate --help');
  await fails(['generate', '--model', model, '--ids', '1,2', '--temperature', 'hot'], '--temperature', "'hot'");
  await fails(['generate', '--model', model, '--ids', '1,2', '--top-p', '2'], '--top-p', 'between 0 and 1');
  await fails(['compile', path.join(root, 'examples/mlp.ts'), '--report'], '--report', 'model script');
  await fails(['compile', '--config', 'llama-tiny', '--cache-length', '4096'], '--cache-length 4096', "more than the model's max_position_embeddings 2048");
});

// --- run: dump, edit, run --------------------------------------------------------------------------------------

const smallIr = `graph @f(%x: f32[2,2], %w: f32[2]) -> (y: f32[2,2]) {
  param %b: f32[2]
  %0: f32[2,2] = mul %x, %w
  %1: f32[2,2] = add %0, %b
  return %1
}
`;

test('run executes an IR file on cpu and reference, params zero or from --weights', async () => {
  const file = path.join(tmp, 'small.ir');
  fs.writeFileSync(file, smallIr);
  for (const backend of ['cpu', 'reference']) {
    const r = await tsfuse('run', file, '--inputs', 'x=[[1,2],[3,4]]; w=[0.5,2]', '--backend', backend);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout, 'y: f32[2,2] = [[0.5, 4], [1.5, 8]]\n');
    assert.ok(r.stderr.includes('taken as zero: b'), r.stderr);
  }
  const weights = path.join(tmp, 'small.safetensors');
  writeSafetensors(weights, { b: { dtype: DType.F32, shape: [2], data: [10, 20] } });
  const json = JSON.parse(await succeeds('run', file, '--inputs', '{"x": [1, 2, 3, 4], "w": [1, 1]}', '--weights', weights, '--json'));
  assert.equal(json.outputs.y, { dtype: 'f32', shape: [2, 2], data: [11, 22, 13, 24] });
  // Edited: the add becomes a sub.
  fs.writeFileSync(file, smallIr.replace('= add %0, %b', '= sub %0, %b'));
  assert.is(await succeeds('run', file, '--inputs', 'x=[[1,2],[3,4]]; w=[1,1]', '--weights', weights), 'y: f32[2,2] = [[-9, -18], [-7, -16]]\n');
});

test('run: the traced Llama prefill with the checkpoint as --weights gives the golden logits', async () => {
  const prefix = golden.input_ids.slice(0, 4);
  const out = JSON.parse(await succeeds('run', irFile, '--graph', 'prefill', '--inputs', `tokens=[${prefix}]; pos=0`,
    '--weights', path.join(model, 'model.safetensors'), '--json'));
  const ref = readSafetensors(path.join(model, 'golden.safetensors')).tensor('logits');
  const vocab = ref.shape[1];
  assert.equal(out.outputs.logits.shape, [prefix.length, vocab]);
  const err = relativeError(out.outputs.logits.data, ref.data.subarray(0, prefix.length * vocab));
  assert.ok(err < 1e-4, `relative error ${err.toExponential(2)}`);
});

test('run: inputs that are missing, unknown or misshapen are named', async () => {
  const file = path.join(tmp, 'small2.ir');
  fs.writeFileSync(file, smallIr);
  await fails(['run', file, '--inputs', 'x=[[1,2],[3,4]]'], 'no value for w', 'f32[2]');
  await fails(['run', file, '--inputs', 'x=[1,2,3,4]; w=[1,1]; z=3'], "no input 'z'", 'x, w');
  await fails(['run', file, '--inputs', 'x=[1,2,3]; w=[1,1]'], '--inputs x', 'f32[2,2]');
  await fails(['run', file, '--inputs', 'x=[1,2,; w=[1,1]'], '--inputs x', 'not JSON');
  await fails(['run', file, '--inputs', 'x=[1,2,3,4]; w=[1,1]', '--graph', 'g'], '--graph g', 'have f');
});

test.run();
