// The CUDA backend on a real GPU (skipped where no CUDA driver opens): the generated kernels of random graphs
// against the reference interpreter, and the Llama-3.2-1B shape with synthetic bf16 weights through generate,
// timed with CUDA events, with the slowest decode kernels listed. The fixtures' end-to-end check is
// TSFUSE_BACKENDS=cuda npm test -- e2e.
//
//   CUDA_GPU_SEEDS=500 npm test -- cuda-gpu     more random graphs (default 100)
//   CUDA_GPU_1B=0 npm test -- cuda-gpu          skips the 1B-shape run (CUDA_GPU_CONFIG=llama-tiny: another shape)

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { DType } from '../../ir/dtype.ts';
import { printGraph } from '../../ir/printer.ts';
import { builtinConfig, expectedLlamaTensors } from '../../runtime/config.ts';
import { CudaDriver, CudaUnavailableError } from '../../runtime/cuda/driver.ts';
import { CudaExecutor } from '../../runtime/cuda/executor.ts';
import { CudaLlama } from '../../runtime/cuda/llama.ts';
import { HostTensor } from '../../ir/host-tensor.ts';
import { LoadedLlama } from '../../runtime/llama.ts';
import { encodeBf16, Tensor, TensorSource } from '../../runtime/safetensors.ts';
import { randomGraph } from '../backends/random-graph.ts';
import { mismatch } from '../backends/compare.ts';

function gpuPresent(): boolean {
  try {
    CudaDriver.open().destroy();
    return true;
  } catch (e) {
    if (e instanceof CudaUnavailableError) return false;
    throw e;
  }
}

const gpu = gpuPresent();
const skip = gpu ? '' : ' (skipped: no CUDA driver)';


const seeds = [...Array(Number(process.env.CUDA_GPU_SEEDS ?? 100)).keys()];

test(`random graphs: the CUDA kernels on the GPU match the reference interpreter (${seeds.length} seeds)${skip}`, () => {
  if (!gpu) return;
  const failures: string[] = [];
  for (const seed of seeds) {
    const c = randomGraph(seed);
    const g = c.graph;
    const copy = () => new Map([...c.states].map(([k, t]) => [k, { ...t, data: t.data.slice() }]));
    const wantStates = copy();
    const want = [...interpret(g, { inputs: c.inputs, param: (n) => c.params.get(n)!, states: wantStates }), ...wantStates.values()];
    let exec: CudaExecutor | undefined;
    try {
      exec = new CudaExecutor(compileModule({ graphs: [g] }), (n) => c.params.get(n)!);
      const gotStates = copy();
      const got = [...exec.run(g.name, c.inputs, gotStates), ...gotStates.values()];
      want.forEach((w, i) => {
        // The GPU's exp, sin and reductions differ from the host's in the last bits.
        const bad = mismatch(got[i], w, 1e-3, 1e-4);
        if (bad) failures.push(`seed ${seed}, ${i < g.outputs.length ? `output ${i}` : 'state'}: ${bad}\n${printGraph(g, { locations: false })}`);
      });
    } catch (e) {
      failures.push(`seed ${seed}: ${(e as Error).stack}\n${printGraph(g, { locations: false })}`);
    } finally {
      exec?.destroy();
    }
  }
  assert.ok(failures.length === 0, `${failures.length} of ${seeds.length} seeds fail; the first:\n${failures[0]}`);
});

/** Weights of the config's shapes: one block of small random bf16 values repeated, made in memory. */
function syntheticWeights(names: { name: string; shape: readonly number[] }[]): TensorSource {
  const block = encodeBf16(Float32Array.from({ length: 4099 }, (_, i) => Math.sin(i * 12.9898) * 0.04));
  const byName = new Map(names.map((t) => [t.name, t]));
  const tensor = (name: string): Tensor => {
    const t = byName.get(name)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bits = new Uint16Array(n);
    for (let i = 0; i < n; i += block.length) bits.set(block.subarray(0, Math.min(block.length, n - i)), i);
    // Norm weights near 1, as trained ones are.
    if (t.shape.length === 1) bits.fill(encodeBf16([1])[0]);
    return { dtype: DType.BF16, shape: [...t.shape], data: new Float32Array(0), raw: new Uint8Array(bits.buffer) };
  };
  return {
    location: 'synthetic',
    tensors: names.map((t) => ({ name: t.name, file: 'synthetic', dtype: DType.BF16, storedAs: 'BF16', shape: t.shape, byteOffset: 0, byteLength: 0 })),
    has: (name) => byName.has(name),
    info: (name) => ({ name, file: 'synthetic', dtype: DType.BF16, storedAs: 'BF16', shape: byName.get(name)!.shape, byteOffset: 0, byteLength: 0 }),
    tensor,
  };
}

test(`${process.env.CUDA_GPU_CONFIG ?? 'llama-3.2-1b'} shape, synthetic bf16 weights: 32-token prompt, 128 tokens, timed${skip}`, async () => {
  if (!gpu || process.env.CUDA_GPU_1B === '0') return;
  const cfg = builtinConfig(process.env.CUDA_GPU_CONFIG ?? 'llama-3.2-1b');
  const model: LoadedLlama = { cfg, weights: syntheticWeights(expectedLlamaTensors(cfg)), weightDType: DType.BF16 };
  const started = performance.now();
  const llama = await CudaLlama.create(model, 32 + 128);
  try {
    const ready = performance.now() - started;
    const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919) % cfg.vocabSize);
    const tokens = await llama.generate(prompt, 128);
    assert.is(tokens.length, 128);
    assert.ok(tokens.every((t) => Number.isInteger(t) && t >= 0 && t < cfg.vocabSize));
    const t = llama.lastTimings!;
    const steps = llama.decodeStepsTimed(100, { warmup: 5, startPos: 32 });
    const copy = llama.copyBandwidth();
    const weightBytes = 2 * expectedLlamaTensors(cfg).reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0);
    const profile = llama.profileDecode(32).sort((a, b) => b.ms - a.ms);
    const total = profile.reduce((n, k) => n + k.ms, 0);
    console.log([
      `\n${llama.deviceName()}: ready in ${(ready / 1000).toFixed(1)} s (compiled: ${[...llama.program.images.values()].filter((i) => !i.cached).length} modules)`,
      `generate: prefill ${t.prefillMs.toFixed(2)} ms, decode ${t.decodeMsPerToken.toFixed(3)} ms/token over ${t.decodeSteps} steps`,
      `decode steps back to back: ${steps.msPerToken.toFixed(3)} ms/token, ${steps.kernelsPerStep} kernels/step`,
      `copy bandwidth ${(copy / 1e12).toFixed(2)} TB/s; weights ${(weightBytes / 1e9).toFixed(2)} GB → floor ${(weightBytes / copy * 1000).toFixed(3)} ms/token, `
        + `${((weightBytes / copy * 1000) / steps.msPerToken * 100).toFixed(0)}% of it reached`,
      `slowest decode kernels (one by one, sum ${total.toFixed(3)} ms):`,
      ...profile.slice(0, 12).map((k) => `  ${k.kernel.padEnd(5)} ${k.ms.toFixed(4)} ms  ${(k.bytes / k.ms / 1e6).toFixed(0).padStart(5)} GB/s  rows ${k.rows}  ${k.last.slice(0, 70)}`),
    ].join('\n'));
  } finally {
    llama.destroy();
  }
});

test.run();
