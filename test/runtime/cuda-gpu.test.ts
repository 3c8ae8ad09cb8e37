// The CUDA backend on a real GPU (skipped where no CUDA driver opens): the Llama-3.2-1B shape with synthetic bf16
// weights through the session's generate, timed with CUDA events, with the slowest decode kernels listed. Random
// graphs on the real driver run in devices.test.ts; the fixtures' end-to-end check is
// TSFUSE_BACKENDS=cuda npm test -- e2e.
//
//   CUDA_GPU_1B=0 npm test -- cuda-gpu          skips the 1B-shape run (CUDA_GPU_CONFIG=llama-tiny: another shape)

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { builtinConfig, expectedLlamaTensors } from '../../runtime/config.ts';
import { CudaDriver, CudaUnavailableError } from '../../runtime/cuda/driver.ts';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { CudaDevice, CudaProgram } from '../../runtime/devices/cuda.ts';
import { LoadedLlama } from '../../runtime/llama.ts';
import { encodeBf16, Tensor, TensorSource } from '../../runtime/safetensors.ts';

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
  const llama = await openLlamaSession(model, { backend: 'cuda', cacheLength: 32 + 128 });
  const program = llama.program as CudaProgram;
  try {
    const ready = performance.now() - started;
    const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919) % cfg.vocabSize);
    const tokens = await llama.generate(prompt, 128);
    assert.is(tokens.length, 128);
    assert.ok(tokens.every((t) => Number.isInteger(t) && t >= 0 && t < cfg.vocabSize));
    const t = (await llama.lastTimings())!;
    const steps = await llama.timeDecode(100, { warmup: 5, startPos: 32 });
    const copy = (llama.device as CudaDevice).copyBandwidth();
    const weightBytes = 2 * expectedLlamaTensors(cfg).reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0);
    const profile = (await llama.profileDecode(32)).sort((a, b) => b.us - a.us);
    const total = profile.reduce((n, k) => n + k.us, 0) / 1e3;
    console.log([
      `\n${llama.device.description}: ready in ${(ready / 1000).toFixed(1)} s (compiled: ${[...program.images.values()].filter((i) => !i.cached).length} NVRTC units)`,
      `generate: prefill ${t.prefillMs.toFixed(2)} ms, decode ${t.decodeMsPerToken.toFixed(3)} ms/token over ${t.decodeSteps} steps`,
      `decode steps back to back: ${steps.msPerToken.toFixed(3)} ms/token, ${steps.kernelsPerStep} kernels/step`,
      `copy bandwidth ${(copy / 1e12).toFixed(2)} TB/s; weights ${(weightBytes / 1e9).toFixed(2)} GB → floor ${(weightBytes / copy * 1000).toFixed(3)} ms/token, `
        + `${((weightBytes / copy * 1000) / steps.msPerToken * 100).toFixed(0)}% of it reached`,
      `slowest decode kernels (one by one, sum ${total.toFixed(3)} ms):`,
      ...profile.slice(0, 12).map((k) => `  ${k.kernel.padEnd(5)} ${(k.us / 1e3).toFixed(4)} ms  ${(k.bytes / k.us / 1e3).toFixed(0).padStart(5)} GB/s  ${k.last.slice(0, 70)}`),
    ].join('\n'));
  } finally {
    llama.close();
  }
});

test.run();
