// Model scripts: entry points and their inputs read with ts-morph, data-dependent control flow rejected statically,
// and `tsfuse compile MODEL.ts --out FILE` on both example scripts: the artifact type-checks, runs without
// tracing, and gives what the traced path gives. Errors name the model file and line, exit code 1, no stack. The
// command runs in this process (test/tsfuse-cli.ts), once as a child process.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compile } from '../../compiler/compile.ts';
import { readScript, traceScript } from '../../compiler/script.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Rng } from '../backends/rng.ts';
import { type CliRun, spawnTsfuse, tsfuse as runTsfuse } from '../tsfuse-cli.ts';
import { typeCheck } from '../type-check.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-script-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function lineOf(file: string, marker: string): number {
  return fs.readFileSync(path.join(root, file), 'utf8').split('\n').findIndex((l) => l.includes(marker)) + 1;
}

const tsfuse = (...args: string[]) => runTsfuse(args);

function failed(r: CliRun, args: string[], ...parts: string[]): string {
  assert.is(r.code, 1, `exit code of tsfuse ${args.join(' ')}\n${r.stderr}`);
  assert.ok(r.stderr.startsWith('tsfuse compile: '), r.stderr);
  for (const p of parts) assert.ok(r.stderr.includes(p), `stderr should mention ${JSON.stringify(p)}:\n${r.stderr}`);
  assert.not.ok(r.stderr.includes('    at '), `no stack trace:\n${r.stderr}`);
  assert.not.ok(r.stderr.includes('internal error'), r.stderr);
  return r.stderr;
}

const fails = async (args: string[], ...parts: string[]) => failed(await tsfuse(...args), args, ...parts);

// --- reading scripts ---------------------------------------------------------------------------------------------

test('entry points and their input types are read from the signatures', () => {
  const mlp = readScript(path.join(root, 'examples/mlp.ts'));
  assert.equal(mlp.entries.map((e) => [e.name, e.inputs]), [['mlp', [{ name: 'x', dtype: 'f32', shape: ['S', 64] }]]]);
  assert.equal(mlp.problems, []);
  const llama = readScript(path.join(root, 'examples/llama.ts'));
  assert.equal(llama.entries.map((e) => e.name), ['tinyPrefill', 'tinyDecode']);
  assert.equal(llama.entries[1].inputs, [{ name: 'tokens', dtype: 'i32', shape: [1] }, { name: 'pos', dtype: 'i32', shape: [] }]);
  assert.ok(llama.others.some((o) => o.name === 'rmsNorm' && /parameter x has no dtype/.test(o.reason)));
});

test('branches on tensor values are found by type, with file, line and column', () => {
  const file = 'test/scripts/branchy.ts';
  const { problems } = readScript(path.join(root, file));
  const lines = ['LINE-IF', 'LINE-TERNARY', 'LINE-AND', 'LINE-WHILE'].map((m) => lineOf(file, m));
  assert.equal(problems.map((p) => Number(/:(\d+):\d+: /.exec(p)![1])), lines);
  assert.match(problems[0], `${file}:${lines[0]}:7: if tests \`x.sum().gt(0)\`, a Tensor`);
  assert.match(problems[1], '?: tests `y`');
  assert.match(problems[2], '&& tests `x`');
  for (const p of problems) assert.match(p, 'where(cond, a, b)');
});

test('traceScript traces the entry with source lines of the script', async () => {
  const t = await traceScript(path.join(root, 'examples/mlp.ts'));
  assert.is(t.graph.name, 'mlp');
  assert.ok(t.single);
  const matmulLine = lineOf('examples/mlp.ts', "h.matmul(param('up.weight'");
  assert.ok(t.graph.nodes.some((n) => n.op === 'matmul' && n.loc === `examples/mlp.ts:${matmulLine}`),
    t.graph.nodes.map((n) => `${n.op} ${n.loc}`).join('\n'));
});

// --- the command -------------------------------------------------------------------------------------------------

test('errors: no entry point, a data-dependent branch, a shape error in the model — file and line, exit 1', async () => {
  await fails(['compile', 'test/scripts/no-entry.ts'], 'test/scripts/no-entry.ts: no exported entry point', 'double: parameter x has no dtype');
  const line = lineOf('test/scripts/branchy.ts', 'LINE-IF');
  await fails(['compile', 'test/scripts/branchy.ts'], 'test/scripts/branchy.ts is not traceable', `test/scripts/branchy.ts:${line}:7: if tests`);
  const mm = lineOf('test/scripts/bad-shape.ts', 'LINE-MATMUL');
  await fails(['compile', 'test/scripts/bad-shape.ts'], `test/scripts/bad-shape.ts:${mm}: `, 'matmul contraction sizes differ');
  await fails(['compile', 'examples/llama.ts'], 'several entry points, choose one with --entry (entry points: tinyPrefill, tinyDecode)');
  await fails(['compile', 'examples/llama.ts', '--entry', 'rmsNorm'], 'rmsNorm is not an entry point');
  // As a process: its exit status and its stderr.
  const nope = ['compile', 'examples/nope.ts'];
  failed(spawnTsfuse(nope), nope, 'examples/nope.ts: no such file');
  await fails(['compile', 'examples/mlp.ts', '--dump-ir=after:nope'], '--dump-ir=after:nope');
});

test('--dump-ir=after:fuse shows kernels with the script\'s source text', async () => {
  const r = await tsfuse('compile', 'examples/mlp.ts', '--dump-ir=after:fuse');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, '# after fuse');
  // The RMSNorm of S rows is a kernel of its own; the projections run as GEMM tiles after it.
  assert.match(r.stdout, /kernel @k0 \[kind=reduce\]/);
  assert.match(r.stdout, /kernel @k1 \[kind=contraction\]/);
  assert.match(r.stdout, /# examples\/mlp\.ts:\d+ {2}const up = h\.matmul/);
});

test('--dump-kernels writes the rendered kernels', async () => {
  const dir = path.join(tmp, 'kernels');
  const r = await tsfuse('compile', 'examples/mlp.ts', '--dump-kernels', dir, '--json');
  assert.is(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout), { script: 'examples/mlp.ts', entry: 'mlp', inputs: ['x: f32[S,64]'], nodes: 12, kernels: 3 });
  assert.equal(fs.readdirSync(dir).sort(), ['mlp.k0.js', 'mlp.k0.schedule', 'mlp.k1.js', 'mlp.k1.schedule', 'mlp.k2.js', 'mlp.k2.schedule']);
});

// --- the artifact ------------------------------------------------------------------------------------------------

function random(shape: number[], dtype: 'f32' | 'i32', seed: number, max = 1): HostTensor {
  const rng = new Rng(seed);
  const rnd = () => rng.next();
  const n = shape.reduce((a, b) => a * b, 1);
  const values = Array.from({ length: n }, () => (dtype === 'i32' ? Math.floor(rnd() * max) : (rnd() * 2 - 1) * max));
  return hostTensor(dtype as never, shape, values);
}

async function writeArtifact(script: string, entry: string, name: string): Promise<string> {
  const out = path.join(tmp, `${name}.ts`);
  const r = await tsfuse('compile', script, '--entry', entry, '--out', out, '--json');
  assert.is(r.code, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).out, out);
  return out;
}

interface Artifact {
  run(inputs: Record<string, HostTensor>, params: Record<string, HostTensor>, states?: Map<string, HostTensor>): HostTensor | HostTensor[];
  plan: { params: { name: string; dtype: string; shape: number[]; derived?: unknown }[] };
}

const artifacts = {
  mlp: () => writeArtifact('examples/mlp.ts', 'mlp', 'mlp'),
  prefill: () => writeArtifact('examples/llama.ts', 'tinyPrefill', 'llama-prefill'),
};

test('the artifacts of both example scripts type-check and equal the traced path', async () => {
  const files = { mlp: await artifacts.mlp(), prefill: await artifacts.prefill() };
  typeCheck(tmp, 'script-artifacts', Object.values(files));

  // The MLP, at two row counts (S is symbolic in the artifact).
  const mlp = await import(pathToFileURL(files.mlp).href) as Artifact;
  const mlpParams = Object.fromEntries(mlp.plan.params.map((p, i) => [p.name, random(p.shape, 'f32', 10 + i, 0.2)]));
  const { mlp: fn } = await import('../../examples/mlp.ts');
  const traced = compile(fn, { params: mlpParams });
  for (const rows of [3, 5]) {
    const x = random([rows, 64], 'f32', rows);
    const ours = mlp.run({ x }, mlpParams) as HostTensor;
    assert.equal(ours.shape, [rows, 64]);
    assert.equal(Array.from(ours.data), Array.from((traced(x) as HostTensor).data));
  }

  // Llama prefill on the built-in llama-tiny config with random weights; the KV cache is the artifact's state.
  const llama = await import(pathToFileURL(files.prefill).href) as Artifact;
  const weights = Object.fromEntries(llama.plan.params.filter((p) => !p.derived)
    .map((p, i) => [p.name, random(p.shape, 'f32', 100 + i, 0.08)]));
  const { tinyPrefill } = await import('../../examples/llama.ts');
  const ref = compile(tinyPrefill, { params: weights });
  const tokens = random([7], 'i32', 5, 4096);
  const pos = hostTensor('i32' as never, [], [0]);
  const states = new Map<string, HostTensor>();
  // The entry returns one tensor, so the artifact's run does too.
  const logits = llama.run({ tokens, pos }, weights, states) as unknown as HostTensor;
  const refLogits = ref(tokens, pos);
  assert.equal(logits.shape, [7, 4096]);
  assert.equal(Array.from(logits.data), Array.from(refLogits.data));
  assert.equal([...states.keys()].sort(), [...ref.states.keys()].sort());
});

test.run();
