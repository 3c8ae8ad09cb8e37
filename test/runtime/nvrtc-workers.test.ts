// Compiling several CUDA modules at once (compileCudaAll in runtime/cuda/nvrtc.ts): each module not in the disk
// cache compiles in a worker thread of its own, all at the same time (the workers having loaded the compiler one
// after another); results come back in order (the images' bytes moved from the workers), cached ones without any
// worker; a failure rejects with its own error class and message, once the modules other workers are compiling
// are done (a worker stopped inside NVRTC can abort the process).
// Checked with a stand-in compiler (no NVRTC needed), then with the CPU fake of NVRTC where g++ is there.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CudaCompileError } from '../../runtime/cuda/errors.ts';
import { compileCuda, compileCudaAll, defaultCacheDir } from '../../runtime/cuda/nvrtc.ts';
import { buildFakeCuda, fakeCudaEnabled, useFakeCuda } from './fake-cuda/build.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-nvrtc-workers-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const stub = new URL('./nvrtc-workers/stub-compiler.ts', import.meta.url);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test('modules not in the cache compile at once, one worker each; the results come back in order, then from the cache', async () => {
  const dir = path.join(tmp, 'stub');
  const sources = ['prefill', 'prompt', 'decode'].map((name) => ({ name: `${name}.cu`, source: `// ${name}, expected 3\n` }));
  const images = await compileCudaAll(sources, 90, dir, { compiler: stub, workers: 3 });
  assert.equal(images.map((i) => text(i.image)), sources.map((s) => `${s.name} compiled for sm_90, 3 running`), 'all three ran at the same time');
  assert.ok(images.every((i) => !i.cached && i.kind === 'cubin' && fs.existsSync(i.file)));
  // The second time every image is in the cache: read back in order, no worker asked (the stand-in would mark it).
  for (const f of fs.readdirSync(dir)) if (f.startsWith('started-')) fs.rmSync(path.join(dir, f));
  const again = await compileCudaAll(sources, 90, dir, { compiler: stub, workers: 3 });
  assert.equal(again.map((i) => text(i.image)), images.map((i) => text(i.image)));
  assert.ok(again.every((i) => i.cached));
  assert.equal(fs.readdirSync(dir).filter((f) => f.startsWith('started-')), [], 'nothing compiled');
});

test('workers load the compiler module one after another (koffi loading in two threads at once can abort the process)', async () => {
  const dir = path.join(tmp, 'loads');
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(dir, 'loads.txt');
  process.env.TSFUSE_STUB_LOADS = log;
  try {
    const sources = ['a', 'b', 'c'].map((name) => ({ name: `${name}.cu`, source: `// ${name}\n` }));
    await compileCudaAll(sources, 90, dir, { compiler: stub, workers: 3 });
  } finally {
    delete process.env.TSFUSE_STUB_LOADS;
  }
  const loads = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ').map(Number)).sort((x, y) => x[0] - y[0]);
  assert.is(loads.length, 3, 'three workers loaded it');
  for (let i = 1; i < loads.length; i++) assert.ok(loads[i][0] >= loads[i - 1][1], `load ${i} began at ${loads[i][0]}, before load ${i - 1} ended at ${loads[i - 1][1]}`);
});

test('the longest modules are compiled first (the last workers to start get the shortest); results come back in order', async () => {
  const dir = path.join(tmp, 'order');
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(dir, 'order.txt');
  process.env.TSFUSE_STUB_ORDER = log;
  const sources = [['short', 1], ['long', 300], ['middle', 50]].map(([name, n]) => ({ name: `${name}.cu`, source: `// ${name}\n${'x'.repeat(n as number)}\n` }));
  try {
    const images = await compileCudaAll(sources, 90, dir, { compiler: stub, workers: 1 });
    assert.equal(images.map((i) => text(i.image).split(',')[0]), sources.map((s) => `${s.name} compiled for sm_90`));
  } finally {
    delete process.env.TSFUSE_STUB_ORDER;
  }
  assert.equal(fs.readFileSync(log, 'utf8').trim().split('\n'), ['long.cu', 'middle.cu', 'short.cu']);
});

test('fewer workers than modules: each worker takes the next module', async () => {
  const dir = path.join(tmp, 'two');
  const sources = Array.from({ length: 5 }, (_, i) => ({ name: `m${i}.cu`, source: `// module ${i}, expected 2\n` }));
  const images = await compileCudaAll(sources, 80, dir, { compiler: stub, workers: 2 });
  assert.equal(images.map((i) => text(i.image).split(',')[0]), sources.map((s) => `${s.name} compiled for sm_80`));
});

test('a module that fails rejects with its error, class and message kept', async () => {
  const dir = path.join(tmp, 'broken');
  const sources = [{ name: 'good.cu', source: '// good\n' }, { name: 'bad.cu', source: '// BROKEN\n' }];
  try {
    await compileCudaAll(sources, 90, dir, { compiler: stub });
    assert.unreachable('compiled a broken module');
  } catch (e) {
    assert.instance(e, CudaCompileError);
    assert.match((e as Error).message, /^NVRTC could not compile bad\.cu for sm_90: NVRTC_ERROR_COMPILATION\nbad\.cu\(1\): error: BROKEN/);
  }
});

test('after a module fails, the module another worker is compiling finishes before the rejection (no worker is stopped inside NVRTC)', async () => {
  const dir = path.join(tmp, 'fails-while-busy');
  // The longer source goes first, to the first worker; the second worker, started once the first has loaded,
  // fails at once while the first is still compiling.
  const sources = [{ name: 'slow.cu', source: `// SLOW 600 ${'x'.repeat(100)}\n` }, { name: 'bad.cu', source: '// BROKEN\n' }];
  const error = await compileCudaAll(sources, 90, dir, { compiler: stub, workers: 2 }).then(() => undefined, (e: Error) => e);
  assert.instance(error, CudaCompileError);
  assert.match(error!.message, 'bad.cu');
  assert.ok(fs.existsSync(path.join(dir, 'finished-slow.cu')), 'the slow module was stopped halfway');
});

test('a compiler module that does not load rejects naming it', async () => {
  const missing = new URL('./nvrtc-workers/no-such-compiler.ts', import.meta.url);
  await compileCudaAll([{ name: 'a.cu', source: '// a' }], 90, path.join(tmp, 'missing'), { compiler: missing }).then(
    () => assert.unreachable('compiled without a compiler'),
    (e: Error) => assert.match(e.message, 'no-such-compiler'),
  );
});

test('TSFUSE_CACHE_DIR puts compiled images in its cuda folder', () => {
  const saved = process.env.TSFUSE_CACHE_DIR;
  try {
    process.env.TSFUSE_CACHE_DIR = path.join(tmp, 'env');
    assert.is(defaultCacheDir(), path.join(tmp, 'env', 'cuda'));
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_CACHE_DIR;
    else process.env.TSFUSE_CACHE_DIR = saved;
  }
});

test('with the CPU fake of NVRTC: two modules compiled in workers are what compiling them in turn caches', async () => {
  if (!fakeCudaEnabled) return;
  const restore = useFakeCuda(buildFakeCuda());
  try {
    const dir = path.join(tmp, 'fake');
    const sources = [1, 2].map((k) => ({
      name: `k${k}.cu`,
      source: `extern "C" __global__ void k${k}(float* x) { x[threadIdx.x] = ${k}.0f * x[threadIdx.x]; }\n`,
    }));
    const images = await compileCudaAll(sources, 90, dir);
    assert.ok(images.every((i) => !i.cached && i.image.byteLength > 16));
    sources.forEach((s, i) => {
      const cached = compileCuda(s.source, 90, s.name, dir);
      assert.ok(cached.cached, `${s.name} in the cache`);
      assert.ok(Buffer.from(cached.image).equals(Buffer.from(images[i].image)), `${s.name}: the bytes the worker gave`);
    });
  } finally {
    restore();
  }
});

test.run();
