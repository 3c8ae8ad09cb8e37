// `tsfuse compile MODEL.ts --out FILE` for each backend: the artifact imports only the tsfuse package, type-checks,
// runs with nothing traced or compiled, and agrees with the reference interpreter (relative error ‖got − want‖ /
// ‖want‖ at most 1e-5 on cpu, 1e-3 on GPUs), its state included. The cuda artifact runs on the CPU stand-in for
// libcuda (test/runtime/fake-cuda) and refuses with CudaUnavailableError where there is no driver. The installed
// package's side of this (plain Node, no tsx) is in `npm run test:package`. The command runs in this process
// (test/tsfuse-cli.ts), once as a child process.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compile } from '../../compiler/compile.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { DType } from '../../ir/dtype.ts';
import { CudaUnavailableError } from '../../runtime/artifact.ts';
import { Rng } from '../backends/rng.ts';
import { buildFakeCuda, fakeCudaEnabled, useFakeCuda } from '../runtime/fake-cuda/build.ts';
import { cachedMlp } from '../scripts/cached-mlp.ts';
import { spawnTsfuse, tsfuse as runTsfuse } from '../tsfuse-cli.ts';
import { typeCheck } from '../type-check.ts';

const script = 'test/scripts/cached-mlp.ts';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-artifact-'));
const s = suite('compiled artifacts');
s.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const tsfuse = (...args: string[]) => runTsfuse(args);

async function writeArtifact(backend: string, file: string): Promise<string> {
  const out = path.join(tmp, file);
  const r = await tsfuse('compile', script, '--backend', backend, '--out', out, '--json');
  assert.is(r.code, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).out, out);
  return out;
}

function random(shape: number[], seed: number, dtype = DType.F32): HostTensor {
  const rng = new Rng(seed);
  return hostTensor(dtype, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.next() * 2 - 1));
}

const params = { up: random([16, 32], 1, DType.BF16), down: random([32, 16], 2) };
/** Two calls sharing the state: 3 rows written at 0, then 2 rows at 3. */
const calls = [
  { x: random([3, 16], 3), pos: hostTensor(DType.I32, [], [0]) },
  { x: random([2, 16], 4), pos: hostTensor(DType.I32, [], [3]) },
];

function relativeError(got: HostTensor, want: HostTensor): number {
  assert.equal(got.shape, want.shape);
  let diff = 0;
  let norm = 0;
  want.data.forEach((w, i) => {
    diff += (got.data[i] - w) ** 2;
    norm += w ** 2;
  });
  return Math.sqrt(diff / norm);
}

interface Artifact {
  run(inputs: Record<string, HostTensor>, p: Record<string, HostTensor>, states?: Map<string, HostTensor>): HostTensor | Promise<HostTensor>;
  release?(): Promise<void>;
}

/** The artifact's outputs over `calls` and its final state, each against the reference interpreter's. */
async function compareWithReference(file: string, tolerance: number): Promise<void> {
  const ref = compile(cachedMlp, { backend: 'reference', params });
  const artifact = await import(pathToFileURL(file).href) as Artifact;
  const states = new Map<string, HostTensor>();
  try {
    for (const { x, pos } of calls) {
      const want = ref(x, pos) as HostTensor;
      const got = await artifact.run({ x, pos }, params, states);
      const err = relativeError(got, want);
      assert.ok(err <= tolerance, `${path.basename(file)}: output relative error ${err} > ${tolerance}`);
    }
    const err = relativeError(states.get('rows')!, ref.states.get('rows')!);
    assert.ok(err <= tolerance, `${path.basename(file)}: state relative error ${err} > ${tolerance}`);
  } finally {
    await artifact.release?.();
  }
}

const files: Record<string, string> = {};

s('cpu: a TypeScript artifact importing only tsfuse/runtime/artifact, and it agrees with the reference', async () => {
  files.cpu = await writeArtifact('cpu', 'cpu.ts');
  const text = fs.readFileSync(files.cpu, 'utf8');
  assert.equal([...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]), ['tsfuse/runtime/artifact']);
  assert.match(text, 'export function run(inputs: Inputs, params: Params, states: Map<string, HostTensor> = new Map()): Outputs');
  await compareWithReference(files.cpu, 1e-5);
});

s('cpu: FILE.js is JavaScript with FILE.d.ts beside it, and runs after being moved to another folder', async () => {
  const out = await writeArtifact('cpu', 'js/cpu.js');
  assert.ok(fs.existsSync(path.join(tmp, 'js/cpu.d.ts')), 'the declarations are written beside the module');
  assert.not.match(fs.readFileSync(out, 'utf8'), /: Inputs|interface /, 'the module is JavaScript');
  const moved = path.join(tmp, 'elsewhere/deeper');
  fs.mkdirSync(moved, { recursive: true });
  for (const f of ['cpu.js', 'cpu.d.ts']) fs.renameSync(path.join(tmp, 'js', f), path.join(moved, f));
  files.js = path.join(moved, 'cpu.js');
  await compareWithReference(files.js, 1e-5);
});

s('webgpu: the WGSL shaders embedded, a promise from run(), and it agrees with the reference', async () => {
  files.webgpu = await writeArtifact('webgpu', 'webgpu.ts');
  const text = fs.readFileSync(files.webgpu, 'utf8');
  assert.match(text, 'export async function run(inputs: Inputs, params: Params, states: Map<string, HostTensor> = new Map()): Promise<Outputs>');
  assert.match(text, '@compute @workgroup_size(');
  try {
    await compareWithReference(files.webgpu, 1e-3);
  } catch (e) {
    if ((e as Error).name !== 'WebGpuUnavailableError') throw e;
    console.log(`  (the webgpu artifact did not run: ${(e as Error).message})`);
  }
});

s('cuda: the CUDA C embedded; without a driver run() rejects with CudaUnavailableError', async () => {
  files.cuda = await writeArtifact('cuda', 'cuda.ts');
  const text = fs.readFileSync(files.cuda, 'utf8');
  assert.match(text, 'extern "C" __global__ void __launch_bounds__(TF_BLOCK) cachedMlp_k0(');
  const saved = process.env.TSFUSE_LIBCUDA;
  process.env.TSFUSE_LIBCUDA = '/nonexistent/libcuda.so.1';
  try {
    const artifact = await import(pathToFileURL(files.cuda).href) as Artifact;
    await artifact.run(calls[0], params);
    assert.unreachable('ran without a driver');
  } catch (e) {
    assert.instance(e, CudaUnavailableError);
    assert.match((e as Error).message, 'no CUDA driver: cannot load /nonexistent/libcuda.so.1');
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_LIBCUDA;
    else process.env.TSFUSE_LIBCUDA = saved;
  }
});

s('cuda: on the CPU stand-in for libcuda and NVRTC it agrees with the reference', async () => {
  if (!fakeCudaEnabled) {
    console.log('  (skipped: the CPU stand-in for CUDA needs g++ on x64 Linux)');
    return;
  }
  const fake = buildFakeCuda();
  const restore = useFakeCuda(fake);
  const savedCache = process.env.TSFUSE_CACHE_DIR;
  process.env.TSFUSE_CACHE_DIR = fake.cacheDir;
  try {
    // A copy: the module that failed to open a driver above keeps no device, but a fresh one reads cleaner.
    const copy = path.join(tmp, 'cuda-fake.ts');
    fs.copyFileSync(files.cuda, copy);
    await compareWithReference(copy, 1e-3);
  } finally {
    restore();
    if (savedCache === undefined) delete process.env.TSFUSE_CACHE_DIR;
    else process.env.TSFUSE_CACHE_DIR = savedCache;
  }
});

s('the artifacts type-check in a strict project, the JavaScript one through its declarations', () => {
  const consumer = path.join(tmp, 'consumer.ts');
  fs.writeFileSync(consumer, [
    `import { run, type Inputs } from './elsewhere/deeper/cpu.js';`,
    `import { run as runOnGpu, release } from './webgpu.ts';`,
    `declare const inputs: Inputs;`,
    `declare const params: Parameters<typeof run>[1];`,
    `const rows: number = run(inputs, params).shape[0];`,
    `const later: Promise<number> = runOnGpu(inputs, params).then((t) => t.shape[0]).finally(release);`,
    `export { rows, later };`,
  ].join('\n'));
  typeCheck(tmp, 'artifacts', [files.cpu, files.webgpu, files.cuda, consumer]);
});

s('--out refuses a file that is not a module, and the reference backend, before compiling', async () => {
  const cases = [
    [['--out', path.join(tmp, 'model.txt')], 'name the artifact FILE.ts or FILE.mts (TypeScript), or FILE.js or FILE.mjs'],
    [['--out', path.join(tmp, 'model.d.ts')], 'name the artifact FILE.ts'],
    [['--backend', 'reference', '--out', path.join(tmp, 'model.ts')], 'the reference backend has none: use --backend cpu, webgpu or cuda'],
  ] as const;
  for (const [i, [args, message]] of cases.entries()) {
    // The first as a process: its exit status and its stderr.
    const r = i === 0 ? spawnTsfuse(['compile', script, ...args]) : await tsfuse('compile', script, ...args);
    assert.is(r.code, 1, r.stderr);
    assert.ok(r.stderr.startsWith('tsfuse compile: ') && r.stderr.includes(message), r.stderr);
    assert.not.ok(r.stderr.includes('    at '), r.stderr);
  }
  assert.not.ok(fs.existsSync(path.join(tmp, 'model.ts')));
});

s.run();
