// The CUDA backend end to end without a GPU: test/runtime/fake-cuda builds a stand-in libcuda + NVRTC whose
// kernels are the generated CUDA C compiled for the CPU (threads as fibers, barriers and shuffles honoured).
// Everything but the silicon runs as on the GPU machine: rendering, the FFI, buffers, launches, the captured
// decode step, the device-side token feedback and the asynchronous read-back.
//
//   CUDA_FAKE_SEEDS=100 npm test -- cuda-fake    more random graphs (default 16)
//   TSFUSE_FAKE_CUDA=0 npm test                   skips (it needs g++ and takes a while)

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { printGraph } from '../../ir/printer.ts';
import { CudaExecutor } from '../../runtime/cuda/executor.ts';
import { CudaLlama } from '../../runtime/cuda/llama.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { randomGraph } from '../backends/random-graph.ts';
import { mismatch } from '../backends/compare.ts';

const here = fileURLToPath(new URL('./fake-cuda/', import.meta.url));
const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const s = suite('CUDA backend on the CPU fake');

function hasGxx(): boolean {
  try {
    execFileSync('g++', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const enabled = process.env.TSFUSE_FAKE_CUDA !== '0' && process.platform === 'linux' && process.arch === 'x64' && hasGxx();

/** Builds the fake once per version of its sources; compiled kernels are cached beside it. */
function buildFake(): { lib: string; cacheDir: string } {
  const sources = ['fake-cuda.cpp', 'kernel-shim.h'].map((f) => fs.readFileSync(path.join(here, f), 'utf8')).join('\0');
  const dir = path.join(os.tmpdir(), `tsfuse-fake-cuda-${crypto.createHash('sha256').update(sources).digest('hex').slice(0, 16)}`);
  const lib = path.join(dir, 'libfakecuda.so');
  if (!fs.existsSync(lib)) {
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('g++', ['-std=c++17', '-O2', '-shared', '-fPIC', '-o', `${lib}.tmp`, path.join(here, 'fake-cuda.cpp'), '-ldl']);
    fs.renameSync(`${lib}.tmp`, lib);
  }
  return { lib, cacheDir: path.join(dir, 'kernels') };
}

const saved = { cuda: process.env.TSFUSE_LIBCUDA, nvrtc: process.env.TSFUSE_LIBNVRTC, shim: process.env.FAKE_CUDA_SHIM };
let cacheDir = '';

s.before(() => {
  if (!enabled) return;
  const fake = buildFake();
  cacheDir = fake.cacheDir;
  process.env.TSFUSE_LIBCUDA = fake.lib;
  process.env.TSFUSE_LIBNVRTC = fake.lib;
  process.env.FAKE_CUDA_SHIM = path.join(here, 'kernel-shim.h');
});

s.after(() => {
  const restore = (k: string, v: string | undefined) => (v === undefined ? delete process.env[k] : (process.env[k] = v));
  restore('TSFUSE_LIBCUDA', saved.cuda);
  restore('TSFUSE_LIBNVRTC', saved.nvrtc);
  restore('FAKE_CUDA_SHIM', saved.shim);
});



const seeds = [...Array(Number(process.env.CUDA_FAKE_SEEDS ?? 16)).keys()];

s(`random graphs: the CUDA kernels match the reference interpreter (${seeds.length} seeds)`, () => {
  if (!enabled) return;
  const failures: string[] = [];
  for (const seed of seeds) {
    const c = randomGraph(seed);
    const g = c.graph;
    const copy = () => new Map([...c.states].map(([k, t]) => [k, { ...t, data: t.data.slice() }]));
    const wantStates = copy();
    const want = [...interpret(g, { inputs: c.inputs, param: (n) => c.params.get(n)!, states: wantStates }), ...wantStates.values()];
    const exec = new CudaExecutor(compileModule({ graphs: [g] }), (n) => c.params.get(n)!, { cacheDir });
    try {
      const gotStates = copy();
      const got = [...exec.run(g.name, c.inputs, gotStates), ...gotStates.values()];
      want.forEach((w, i) => {
        const bad = mismatch(got[i], w);
        if (bad) failures.push(`seed ${seed}, ${i < g.outputs.length ? `output ${i}` : 'state'}: ${bad}\n${printGraph(g, { locations: false })}`);
      });
    } finally {
      exec.destroy();
    }
  }
  assert.equal(failures, []);
});

interface Golden { ids: number[]; logits: Float32Array; vocab: number; greedy: number[] }

function golden(dir: string): Golden {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const logits = readSafetensors(path.join(dir, 'golden.safetensors')).tensor('logits');
  return { ids: json.input_ids, logits: logits.data as Float32Array, vocab: logits.shape[1], greedy: json.greedy_new_tokens };
}

function worstRelativeError(ours: Float32Array, ref: Float32Array, vocab: number): number {
  let worst = 0;
  for (let r = 0; r * vocab < ref.length; r++) {
    let diff = 0;
    let norm = 0;
    for (let j = r * vocab; j < (r + 1) * vocab; j++) {
      diff += (ours[j] - ref[j]) ** 2;
      norm += ref[j] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(diff / norm));
  }
  return worst;
}

for (const fixture of ['tiny-llama', 'tiny-llama3-bf16']) {
  s(`${fixture}: logits within 1e-3, 32 greedy tokens as Hugging Face's, heard in order as the read-backs land`, async () => {
    if (!enabled) return;
    const dir = path.join(fixtures, fixture);
    const gold = golden(dir);
    const llama = await CudaLlama.create(loadLlama(dir), gold.ids.length + 32, { cacheDir, readbackEvery: 5 });
    try {
      const logits = await llama.logits(gold.ids);
      assert.equal(logits.shape, [gold.ids.length, gold.vocab]);
      const err = worstRelativeError(logits.data as Float32Array, gold.logits, gold.vocab);
      assert.ok(err < 1e-3, `relative error ${err}`);
      const heard: number[] = [];
      const tokens = await llama.generate(gold.ids, 32, {}, (t) => heard.push(t));
      assert.equal(tokens, gold.greedy);
      assert.equal(heard, tokens);
      const t = llama.lastTimings!;
      assert.is(t.decodeSteps, 31);
      assert.ok(t.decodeMsPerToken > 0 && t.prefillMs > 0);
    } finally {
      llama.destroy();
    }
  });
}

s('a second session compiles nothing; sampling is seeded and repeatable; steps can be timed', async () => {
  if (!enabled) return;
  const dir = path.join(fixtures, 'tiny-llama');
  const gold = golden(dir);
  // The cache length of the fixture test above: the same kernels, so nothing to compile.
  const llama = await CudaLlama.create(loadLlama(dir), gold.ids.length + 32, { cacheDir });
  try {
    assert.ok([...llama.program.images.values()].every((i) => i.cached), 'every module from the disk cache');
    const prompt = gold.ids.slice(0, 6);
    const sampling = { temperature: 0.8, topP: 0.9, seed: 7 };
    const a = await llama.generate(prompt, 8, sampling);
    const b = await llama.generate(prompt, 8, sampling);
    assert.equal(a, b, 'same seed, same tokens');
    assert.ok(a.every((t) => Number.isInteger(t) && t >= 0 && t < gold.vocab), `tokens in the vocabulary: ${a}`);
    assert.equal(await llama.generate(prompt, 8), await llama.generate(prompt, 8), 'greedy repeats');
    assert.equal((await llama.generate([gold.ids[0]], 3)).length, 3, 'a one-token prompt runs the decode graph first');
    const timed = llama.decodeStepsTimed(4, { warmup: 1 });
    assert.is(timed.kernelsPerStep, llama.decodeKernels());
    assert.ok(Number.isFinite(timed.msPerToken) && timed.msPerToken > 0);
    assert.throws(() => llama.decodeStepsTimed(gold.ids.length + 32), /do not fit a KV cache/);
    const profile = llama.profileDecode();
    assert.is(profile.length, llama.decodeKernels() - 1);
    assert.ok(profile.every((k) => k.ms >= 0 && k.bytes > 0 && k.rows > 0 && k.last.startsWith('%')));
  } finally {
    llama.destroy();
  }
});

s.run();
