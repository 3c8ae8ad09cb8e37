// The CUDA backend end to end without a GPU: test/runtime/fake-cuda builds a stand-in libcuda + NVRTC whose
// kernels are the generated CUDA C compiled for the CPU (threads as fibers, barriers and shuffles honoured).
// Everything but the silicon runs as on the GPU machine: rendering, the FFI, buffers, launches, the captured
// decode step, the device-side token feedback and the asynchronous read-back. (Random graphs on the CUDA device run
// in devices.test.ts, with every other device.)
//
//   TSFUSE_FAKE_CUDA=0 npm test                   skips (it needs g++ and takes a while)

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { CudaProgram } from '../../runtime/devices/cuda.ts';
import { CudaDriver } from '../../runtime/cuda/driver.ts';
import { compileCuda } from '../../runtime/cuda/nvrtc.ts';
import { cudaPrelude } from '../../backends/cuda/prelude.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { fakeCudaEnabled as enabled, onFakeCuda } from './fake-cuda/build.ts';
import { relativeError } from '../backends/compare.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const s = suite('CUDA backend on the CPU fake');

const fake = onFakeCuda(s);

interface Golden { ids: number[]; logits: Float32Array; vocab: number; greedy: number[] }

function golden(dir: string): Golden {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const logits = readSafetensors(path.join(dir, 'golden.safetensors')).tensor('logits');
  return { ids: json.input_ids, logits: logits.data as Float32Array, vocab: logits.shape[1], greedy: json.greedy_new_tokens };
}

function worstRelativeError(ours: Float32Array, ref: Float32Array, vocab: number): number {
  let worst = 0;
  for (let r = 0; r * vocab < ref.length; r++) {
    worst = Math.max(worst, relativeError(ours.subarray(r * vocab, (r + 1) * vocab), ref.subarray(r * vocab, (r + 1) * vocab)));
  }
  return worst;
}

/** The row-wise argmax of [rows, vocab] logits. */
function argmaxRows(x: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r * vocab < x.length; r++) {
    let best = r * vocab;
    for (let j = best; j < (r + 1) * vocab; j++) if (x[j] > x[best]) best = j;
    out.push(best - r * vocab);
  }
  return out;
}

// A bf16 checkpoint's prefill projections run on bf16 matrix units: their left operand (the f32 activations) is
// rounded to bf16 (8 bits of mantissa) as tiles load, so its logits are held to 1e-2 of Hugging Face's float32
// ones, with the same argmax at every position; f32 checkpoints run f32 tiles, to 1e-3.
for (const [fixture, tolerance] of [['tiny-llama', 1e-3], ['tiny-llama3-bf16', 1e-2]] as const) {
  s(`${fixture}: logits within ${tolerance} and the same argmax, 32 greedy tokens as Hugging Face's, heard in order as the read-backs land`, async () => {
    if (!enabled) return;
    const dir = path.join(fixtures, fixture);
    const gold = golden(dir);
    const llama = await openLlamaSession(loadLlama(dir), { backend: 'cuda', cacheLength: gold.ids.length + 32, cacheDir: fake.cacheDir, readEvery: 5 });
    try {
      const logits = await llama.logits(gold.ids);
      assert.equal(logits.shape, [gold.ids.length, gold.vocab]);
      const err = worstRelativeError(logits.data as Float32Array, gold.logits, gold.vocab);
      assert.ok(err < tolerance, `relative error ${err}`);
      assert.equal(argmaxRows(logits.data as Float32Array, gold.vocab), argmaxRows(gold.logits, gold.vocab));
      const heard: number[] = [];
      const tokens = await llama.generate(gold.ids, 32, {}, (t) => heard.push(t));
      assert.equal(tokens, gold.greedy);
      assert.equal(heard, tokens);
      const t = (await llama.lastTimings())!;
      assert.is(t.decodeSteps, 31);
      assert.ok(t.decodeMsPerToken > 0 && t.prefillMs > 0);
    } finally {
      llama.close();
    }
  });
}

s('a second session compiles nothing; sampling draws the tokens the cpu draws; steps can be timed', async () => {
  if (!enabled) return;
  const dir = path.join(fixtures, 'tiny-llama');
  const gold = golden(dir);
  // The cache length of the fixture test above: the same kernels, so nothing to compile.
  const llama = await openLlamaSession(loadLlama(dir), { backend: 'cuda', cacheLength: gold.ids.length + 32, cacheDir: fake.cacheDir });
  try {
    assert.ok([...(llama.program as CudaProgram).images.values()].every((i) => i.cached), 'every module from the disk cache');
    const prompt = gold.ids.slice(0, 6);
    assert.equal(await llama.generate(prompt, 8), await llama.generate(prompt, 8), 'greedy repeats');
    assert.equal((await llama.generate([gold.ids[0]], 3)).length, 3, 'a one-token prompt runs the decode graph first');
    const timed = await llama.timeDecode(4, { warmup: 1 });
    assert.is(timed.kernelsPerStep, llama.decodeKernels());
    assert.ok(Number.isFinite(timed.msPerToken) && timed.msPerToken > 0);
    const tooLong = await llama.timeDecode(gold.ids.length + 32).then(() => undefined, (e: Error) => e);
    assert.match(tooLong?.message ?? 'no error', /do not fit a KV cache/);
    const profile = await llama.profileDecode();
    assert.is(profile.length, llama.decodeKernels());
    assert.ok(profile.every((k) => k.us >= 0 && k.bytes > 0 && k.last.startsWith('%')));
  } finally {
    llama.close();
  }
  const sampling = { temperature: 0.8, topP: 0.9, seed: 7 };
  const draw = async (backend: 'cuda' | 'cpu') => {
    const session = await openLlamaSession(loadLlama(dir), { backend, cacheLength: 16, cacheDir: fake.cacheDir, sampling: true });
    try {
      return await session.generate(gold.ids.slice(0, 6), 8, sampling);
    } finally {
      session.close();
    }
  };
  const a = await draw('cuda');
  assert.equal(await draw('cuda'), a, 'same seed, same tokens');
  assert.equal(a, await draw('cpu'), 'the tokens the cpu kernels draw');
});

// The driver groups a grid into clusters only where they all run at once (the fake runs clusters of 16 blocks in all at once): a kernel
// reading its cluster's size sees 4 in a grid of 4 clusters, 1 in one of 8, whose blocks launched alone.
s('a grid launches in clusters only where its clusters all run at once, else as blocks alone', () => {
  if (!enabled) return;
  const cuda = CudaDriver.open([process.env.TSFUSE_LIBCUDA!]);
  try {
    const source = `${cudaPrelude}\nextern "C" __global__ void tf_probe(unsigned* out) { if (threadIdx.x == 0) out[blockIdx.x] = tf_cluster_blocks(); }\n`;
    const fn = cuda.getFunction(cuda.loadModule(compileCuda(source, 90, 'probe.cu', fake.cacheDir).image), 'tf_probe', 0);
    const clusterSizes = (grid: number) => {
      const out = cuda.alloc(4 * grid);
      try {
        cuda.launch(fn, grid, 256, cuda.kernelArgs([out]), 0, false, 4);
        const got = new Uint32Array(grid);
        cuda.download(got, out);
        return [...got];
      } finally {
        cuda.free(out);
      }
    };
    assert.equal(clusterSizes(16), new Array(16).fill(4));
    assert.equal(clusterSizes(32), new Array(32).fill(1));
    assert.throws(() => clusterSizes(6), /a grid of 6 blocks does not divide into clusters of 4/);
  } finally {
    cuda.destroy();
  }
});

// Static shared memory is each block's own, as on the device: 16 blocks at once in clusters of 4 store their index in
// static arrays (one aligned, one sized by an expression) and a static scalar, yield to the other blocks at a
// cluster barrier, then read back their own values and their cluster neighbour's through a cluster read. (The fake
// once gave every block one copy of each static array.)
s('each block has its own static shared memory, which its cluster reads', () => {
  if (!enabled) return;
  const cuda = CudaDriver.open([process.env.TSFUSE_LIBCUDA!]);
  try {
    const source = `${cudaPrelude}
extern "C" __global__ void tf_statics(float* out) {
  __shared__ __align__(16) float mine[256];
  __shared__ float few[TF_WARPS + 1];
  __shared__ unsigned long long scalar;
  mine[threadIdx.x] = blockIdx.x * 1000.0f + threadIdx.x;
  if (threadIdx.x < TF_WARPS + 1) few[threadIdx.x] = -1.0f - blockIdx.x;
  if (threadIdx.x == 0) scalar = 7ull * blockIdx.x;
  tf_cluster_sync();
  const unsigned next = (blockIdx.x % tf_cluster_blocks() + 1) % tf_cluster_blocks();
  out[4 * (blockIdx.x * 256 + threadIdx.x) + 0] = mine[threadIdx.x];
  out[4 * (blockIdx.x * 256 + threadIdx.x) + 1] = tf_cluster_load(&mine[threadIdx.x], next);
  out[4 * (blockIdx.x * 256 + threadIdx.x) + 2] = few[threadIdx.x % (TF_WARPS + 1)];
  out[4 * (blockIdx.x * 256 + threadIdx.x) + 3] = (float)scalar;
  tf_cluster_sync();
}
`;
    const fn = cuda.getFunction(cuda.loadModule(compileCuda(source, 90, 'statics.cu', fake.cacheDir).image), 'tf_statics', 0);
    const [grid, threads] = [16, 256];
    const out = cuda.alloc(16 * grid * threads);
    try {
      cuda.launch(fn, grid, threads, cuda.kernelArgs([out]), 0, false, 4);
      const got = new Float32Array(4 * grid * threads);
      cuda.download(got, out);
      for (let b = 0; b < grid; b++) {
        const next = b - (b % 4) + ((b % 4) + 1) % 4;
        for (const t of [0, 1, 8, 255]) {
          const at = 4 * (b * threads + t);
          assert.equal([...got.subarray(at, at + 4)], [b * 1000 + t, next * 1000 + t, -1 - b, 7 * b], `block ${b}, thread ${t}`);
        }
      }
    } finally {
      cuda.free(out);
    }
  } finally {
    cuda.destroy();
  }
});

s.run();
