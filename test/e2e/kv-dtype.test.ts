// A KV cache in 16 bits (keys and values rounded to bf16 or f16 as they are written, widened to f32 where attention
// reads them): against what Hugging Face computed in float32 for the bf16 fixture, the logits at every prompt
// position within 1e-2 relative (the same bound as bf16 matrix units), the same argmax at every position, and the
// greedy tokens the same for as long as the float32 argmax margins allow (all 32 on this fixture). The CPU runs it
// when asked; CUDA (the fake one here, the GPU where there is one) and WebGPU (lavapipe here) do it by default for
// 16-bit weights; WebGPU in f16 when asked.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { kvCacheDType, KvDTypeError, openLlamaSession } from '../../compiler/open-session.ts';
import { DType } from '../../ir/dtype.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { relativeError } from '../backends/compare.ts';
import { fakeCudaEnabled, openCudaOrFake, restoreCudaOrFake } from '../runtime/fake-cuda/build.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const dir = path.join(fixtures, 'tiny-llama3-bf16');
const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
const goldenLogits = readSafetensors(path.join(dir, 'golden.safetensors')).tensor('logits');
const vocab = goldenLogits.shape[1];
const ids: number[] = golden.input_ids;
const TOLERANCE = 1e-2;

function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

async function check(backend: 'cpu' | 'cuda' | 'webgpu', kvDType?: DType): Promise<void> {
  const session = await openLlamaSession(loadLlama(dir), { backend, cacheLength: ids.length + 32, kvDType });
  try {
    const cache = session.program.graph('decode').states.find((v) => v.name === 'cache.k.0');
    const want = kvDType ?? DType.BF16;
    assert.is(cache?.type.dtype, want, `the cache is ${want}`);
    const logits = (await session.logits(ids)).data as Float32Array;
    ids.forEach((_, i) => {
      const [ours, ref] = [logits.subarray(i * vocab, (i + 1) * vocab), (goldenLogits.data as Float32Array).subarray(i * vocab, (i + 1) * vocab)];
      const err = relativeError(ours, ref);
      assert.ok(err < TOLERANCE, `position ${i}: relative error ${err.toExponential(2)}`);
      assert.is(argmax(ours), golden.logits_argmax[i], `position ${i}: argmax`);
    });
    assert.equal(await session.generate(ids, 32), golden.greedy_new_tokens);
  } finally {
    session.close();
  }
}

const choice = suite('KV-cache dtype');
choice('16-bit by default on the GPUs for 16-bit weights, f32 elsewhere; asked for, as asked', () => {
  assert.is(kvCacheDType('cuda', DType.BF16), DType.BF16);
  assert.is(kvCacheDType('cuda', DType.F16), DType.F16);
  assert.is(kvCacheDType('cuda', DType.F32), DType.F32);
  assert.is(kvCacheDType('webgpu', DType.BF16), DType.BF16);
  assert.is(kvCacheDType('webgpu', DType.F16), DType.F16);
  assert.is(kvCacheDType('webgpu', DType.F32), DType.F32);
  assert.is(kvCacheDType('cpu', DType.BF16), DType.F32);
  assert.is(kvCacheDType('cuda', DType.BF16, DType.F32), DType.F32, '--kv-dtype f32 keeps f32');
  assert.is(kvCacheDType('webgpu', DType.BF16, DType.F16), DType.F16);
  assert.is(kvCacheDType('cpu', DType.F32, DType.F16), DType.F16);
  assert.throws(() => kvCacheDType('cpu', DType.BF16, DType.I32), (e: Error) => e instanceof KvDTypeError && /--kv-dtype i32: expected f32, bf16 or f16/.test(e.message));
});
choice('generate --kv-dtype: an unknown dtype refused by name', () => {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const run = (...args: string[]) => spawnSync(process.execPath, [path.join(root, 'bin/tsfuse.mjs'), 'generate', '--model', dir, '--ids', '5,9', '--max-new-tokens', '2', ...args], { encoding: 'utf8' });
  const unknown = run('--backend', 'cpu', '--kv-dtype', 'q8');
  assert.is(unknown.status, 1);
  assert.is(unknown.stderr.trim(), "tsfuse generate: --kv-dtype must be f32, bf16 or f16, got 'q8'");
});
choice.run();

const cpu = suite('bf16 KV cache on the cpu');
cpu(`tiny-llama3-bf16: logits within ${TOLERANCE} of float32, same argmax, 32 greedy tokens`, () => check('cpu', DType.BF16));
cpu.run();

const webgpu = suite('16-bit KV caches on webgpu (bf16 its default for bf16 weights)');
webgpu(`tiny-llama3-bf16, bf16 cache: logits within ${TOLERANCE} of float32, same argmax, 32 greedy tokens`, () => check('webgpu'));
webgpu(`tiny-llama3-bf16, f16 cache: logits within ${TOLERANCE} of float32, same argmax, 32 greedy tokens`, () => check('webgpu', DType.F16));
webgpu.run();

if (fakeCudaEnabled) {
  const cuda = suite('bf16 KV cache on cuda (its default for bf16 weights)');
  cuda(`tiny-llama3-bf16: logits within ${TOLERANCE} of float32, same argmax, 32 greedy tokens`, async () => {
    const opened = await openCudaOrFake();
    if (typeof opened === 'string') return;
    opened.destroy();
    try {
      await check('cuda');
    } finally {
      restoreCudaOrFake();
    }
  });
  cuda.run();
}
