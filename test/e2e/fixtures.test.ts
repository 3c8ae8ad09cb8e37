// End to end against ../shared/fixtures: on every backend, the logits at every prompt position, their argmax and
// 32 greedy tokens match what Hugging Face transformers computed for the same checkpoint.
// Run a subset of backends with TSFUSE_BACKENDS=cpu,reference npm test -- e2e.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { DeviceKind, isDeviceKind } from '../../runtime/device.ts';
import { Session } from '../../runtime/session.ts';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { relativeError } from '../backends/compare.ts';

// TSFUSE_FIXTURES points elsewhere on machines where ../shared is not beside the clone (the GPU machine).
const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const fixtureNames = ['tiny-llama', 'tiny-llama3', 'tiny-llama3-bf16'];
const greedyTokens = 32;

/** Largest allowed ‖ours − ref‖ / ‖ref‖ per position (fixtures/README.md: 1e-4 on the CPU, 1e-3 on a GPU). */
const tolerance: Record<DeviceKind, number> = { cpu: 1e-4, reference: 1e-4, webgpu: 1e-3, cuda: 1e-3 };
/**
 * CUDA's prompt GEMMs of 2 rows and more run on bf16 matrix units, the activations rounded to bf16 (README:
 * 1e-2 of float32, as the bf16 weights' own rounding): 3.1e-3 on the H200 for the bf16 fixture's 24 tokens.
 * WebGPU's on f16 subgroup matrices (the activations rounded to f16) are held to the same.
 */
const matrixUnitTolerance = 1e-2;

interface Golden {
  readonly inputIds: number[];
  readonly vocab: number;
  /** f32[inputIds.length, vocab], row-major. */
  readonly logits: Float32Array;
  readonly argmax: number[];
  readonly greedy: number[];
}

function readGolden(dir: string): Golden {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const file = readSafetensors(path.join(dir, 'golden.safetensors'));
  const ids = file.tensor('input_ids');
  const logits = file.tensor('logits');
  assert.equal(Array.from(ids.data), json.input_ids, 'golden.json and golden.safetensors hold the same input_ids');
  assert.equal(logits.shape[0], ids.shape[0], 'one logits row per input id');
  return {
    inputIds: json.input_ids, vocab: logits.shape[1], logits: logits.data as Float32Array,
    argmax: json.logits_argmax, greedy: json.greedy_new_tokens,
  };
}

const row = (data: Float32Array, vocab: number, i: number) => data.subarray(i * vocab, (i + 1) * vocab);


function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

// cuda needs an NVIDIA GPU, so it runs only when named: TSFUSE_BACKENDS=cuda npm test -- e2e.
const selected = process.env.TSFUSE_BACKENDS?.split(',') ?? Object.keys(tolerance).filter((b) => b !== 'cuda');

for (const name of selected) {
  if (!isDeviceKind(name)) throw new Error(`TSFUSE_BACKENDS: unknown backend '${name}' (known: ${Object.keys(tolerance).join(', ')})`);
  const backend = { tolerance: tolerance[name] };
  const s = suite(`e2e on ${name}`);

  for (const fixture of fixtureNames) {
    const dir = path.join(fixtures, fixture);
    const golden = readGolden(dir);
    // One session per fixture, its cache long enough for the prompt and the greedy tokens.
    let session: Promise<Session> | undefined;
    // A float32 KV cache (CUDA's default for 16-bit weights is theirs: test/e2e/kv-dtype.test.ts holds that to 1e-2).
    const open = () => (session ??= openLlamaSession(loadLlama(dir), { backend: name, cacheLength: golden.inputIds.length + greedyTokens, kvDType: DType.F32 }));
    let logits: Promise<Float32Array> | undefined;
    const ourLogits = () => (logits ??= open().then(async (r) => (await r.logits(golden.inputIds)).data as Float32Array));

    // Matrix units: CUDA's, and WebGPU's f16 subgroup matrices where Dawn offers them (the H200, not lavapipe).
    const bf16 = loadLlama(dir).weightDType === DType.BF16 && name !== 'cpu' && name !== 'reference';
    const onMatrixUnits = async () => name === 'cuda' || ((await open()).device as { subgroupMatrix?: boolean }).subgroupMatrix === true;
    s(`${fixture}: logits at every position within ${bf16 ? `${matrixUnitTolerance} on matrix units, else ` : ''}${backend.tolerance} relative error`, async () => {
      const ours = await ourLogits();
      const bound = bf16 && (await onMatrixUnits()) ? matrixUnitTolerance : backend.tolerance;
      assert.is(ours.length, golden.logits.length, 'logits size');
      golden.inputIds.forEach((_, i) => {
        const err = relativeError(row(ours, golden.vocab, i), row(golden.logits, golden.vocab, i));
        assert.ok(err < bound, `position ${i}: relative error ${err.toExponential(2)}`);
      });
    });

    s(`${fixture}: same argmax at every position`, async () => {
      const ours = await ourLogits();
      const positions = golden.inputIds.map((_, i) => i);
      assert.equal(positions.map((i) => argmax(row(ours, golden.vocab, i))), golden.argmax);
      assert.equal(positions.map((i) => argmax(row(golden.logits, golden.vocab, i))), golden.argmax, 'golden files agree');
    });

    s(`${fixture}: ${greedyTokens} greedy tokens`, async () => {
      const r = await open();
      assert.equal(await r.generate(golden.inputIds, greedyTokens), golden.greedy);
      r.close();
    });
  }

  s.run();
}
