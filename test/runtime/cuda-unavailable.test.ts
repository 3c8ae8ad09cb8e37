// The CUDA backend where there is no CUDA: a clear CudaUnavailableError from the driver, the session and NVRTC,
// one line from the CLI with no stack; and a compile cache hit needs no NVRTC at all.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CudaDriver, CudaUnavailableError, loadFirst } from '../../runtime/cuda/driver.ts';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { cacheKey, compileCuda } from '../../runtime/cuda/nvrtc.ts';
import { loadLlama } from '../../runtime/llama.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixtures = process.env.TSFUSE_FIXTURES ?? path.join(root, '../shared/fixtures/');
const bogus = '/nonexistent/libcuda.so.1';

test('a driver library that does not load is CudaUnavailableError, naming what was tried', () => {
  try {
    CudaDriver.open([bogus]);
    assert.unreachable('opened a driver');
  } catch (e) {
    assert.instance(e, CudaUnavailableError);
    assert.match((e as Error).message, `no CUDA driver: cannot load ${bogus} (`);
    assert.match((e as Error).message, 'NVIDIA GPU');
    assert.not.match((e as Error).message, '\n');
  }
});

test('opening a Llama session without a driver rejects with CudaUnavailableError', async () => {
  const model = loadLlama(path.join(fixtures, 'tiny-llama'));
  try {
    await openLlamaSession(model, { backend: 'cuda', cacheLength: 8, libraries: [bogus] });
    assert.unreachable('opened a session');
  } catch (e) {
    assert.instance(e, CudaUnavailableError);
  }
});

test('no NVRTC is CudaUnavailableError too', () => {
  assert.throws(() => loadFirst(['/nonexistent/libnvrtc.so.13', '/nonexistent/libnvrtc.so.12'], 'NVRTC'),
    (e: Error) => e instanceof CudaUnavailableError && /cannot load NVRTC .*libnvrtc\.so\.13.*libnvrtc\.so\.12/.test(e.message));
});

test('a cached module is read from disk without loading NVRTC', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-cuda-cache-'));
  const source = 'extern "C" __global__ void k() {}\n';
  const saved = process.env.TSFUSE_LIBNVRTC;
  process.env.TSFUSE_LIBNVRTC = '/nonexistent/libnvrtc.so';
  fs.writeFileSync(path.join(dir, `${cacheKey(source, 90)}.cubin`), 'CUBIN');
  try {
    const image = compileCuda(source, 90, 'k.cu', dir);
    assert.ok(image.cached);
    assert.is(image.kind, 'cubin');
    assert.is(new TextDecoder().decode(image.image), 'CUBIN');
    // Another architecture is another entry: that one would need NVRTC, which is not there.
    assert.throws(() => compileCuda(source, 80, 'k.cu', dir), (e: Error) => e instanceof CudaUnavailableError);
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_LIBNVRTC;
    else process.env.TSFUSE_LIBNVRTC = saved;
    fs.rmSync(dir, { recursive: true });
  }
});

test('another NVRTC (TSFUSE_LIBNVRTC) keeps cache entries of its own: the CPU fake\'s images never meet a real driver', () => {
  const saved = process.env.TSFUSE_LIBNVRTC;
  const source = 'extern "C" __global__ void k() {}\n';
  try {
    process.env.TSFUSE_LIBNVRTC = '/opt/one/libnvrtc.so';
    const one = cacheKey(source, 90);
    assert.is(cacheKey(source, 90), one, 'the same compiler, the same entry');
    process.env.TSFUSE_LIBNVRTC = '/opt/other/libnvrtc.so';
    assert.is.not(cacheKey(source, 90), one);
    delete process.env.TSFUSE_LIBNVRTC;
    assert.is.not(cacheKey(source, 90), one, 'nor the usual places');
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_LIBNVRTC;
    else process.env.TSFUSE_LIBNVRTC = saved;
  }
});

test('the CLI with --backend cuda and no driver exits 1 with one line and no stack', () => {
  for (const command of ['generate', 'logits']) {
    const r = spawnSync(process.execPath, [path.join(root, 'bin/tsfuse.mjs'), command, '--model', path.join(fixtures, 'tiny-llama'), '--ids', '1,2,3', '--backend', 'cuda'],
      { encoding: 'utf8', env: { ...process.env, TSFUSE_LIBCUDA: bogus, TSFUSE_DEBUG: '' } });
    assert.is(r.status, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.is(lines.length, 1, r.stderr);
    assert.match(lines[0], `tsfuse ${command}: no CUDA driver: cannot load ${bogus}`);
    assert.not.match(r.stderr, /\bat \w/);
  }
});

test.run();
