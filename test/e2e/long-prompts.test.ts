// Prompts of 1, 7, 64, 600 and 1,100 tokens (past the fixtures' 512 positions, past a flash tile, past the length
// at which decode splits attention) on a small random Llama with 2,048 positions: the logits of every position on
// the CPU backend (GEMM rows, flash attention) against the reference interpreter's, to 1e-4 relative; on WebGPU
// (lavapipe) the shorter prompts, to keep the suite quick there (on f16 subgroup matrices, the H200's, to 1e-2). Fresh random bf16 weights each run
// (LONG_PROMPT_SEED repeats one).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { DType } from '../../ir/dtype.ts';
import { builtinConfig, LlamaConfig } from '../../runtime/config.ts';
import { DeviceKind } from '../../runtime/device.ts';
import { LoadedLlama } from '../../runtime/llama.ts';
import { randomBf16Weights } from '../../examples/random-checkpoint.ts';
import { relativeError } from '../backends/compare.ts';
import { Rng } from '../backends/rng.ts';
import { unavailable } from '../runtime/fake-cuda/build.ts';

const cfg: LlamaConfig = {
  ...builtinConfig('llama-tiny'),
  source: 'test: small random Llama',
  vocabSize: 256, hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 16,
};
const seed = Number(process.env.LONG_PROMPT_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);

const model: LoadedLlama = { cfg, weights: randomBf16Weights(cfg, seed), weightDType: DType.BF16 };
const LENGTHS = [1, 7, 64, 600, 1100];
const prompts = LENGTHS.map((n) => Array.from({ length: n }, () => rng.int(0, cfg.vocabSize - 1)));

/** Logits of each prompt up to `upTo` tokens, and whether the GEMMs ran on matrix units (WebGPU's f16 subgroup matrices). */
async function logitsOn(backend: DeviceKind, upTo: number): Promise<{ logits: Float32Array[]; matrixUnits: boolean } | string> {
  let session;
  try {
    session = await openLlamaSession(model, { backend, cacheLength: upTo, kvDType: DType.F32 });
  } catch (e) {
    const why = unavailable(e);
    if (why) return why;
    throw e;
  }
  try {
    const out: Float32Array[] = [];
    for (const p of prompts) if (p.length <= upTo) out.push((await session.logits(p)).data as Float32Array);
    return { logits: out, matrixUnits: (session.device as { subgroupMatrix?: boolean }).subgroupMatrix === true };
  } finally {
    session.close();
  }
}

let reference: Float32Array[] | undefined;
for (const [backend, upTo] of [['cpu', 1100], ['webgpu', 64]] as [DeviceKind, number][]) {
  const s = suite(`long prompts on ${backend}`);
  s(`prompts of ${LENGTHS.filter((n) => n <= upTo).join(', ')} tokens: logits as the reference interpreter's`, async () => {
    reference ??= ((await logitsOn('reference', 1100)) as { logits: Float32Array[] }).logits;
    const got = await logitsOn(backend, upTo);
    if (typeof got === 'string') {
      console.log(`  ${backend}: skipped (${got})`);
      return;
    }
    // f16 subgroup matrices round the GEMMs' left operands to f16: held to 1e-2, as test/e2e/fixtures.test.ts does.
    const bound = got.matrixUnits ? 1e-2 : 1e-4;
    got.logits.forEach((ours, i) => {
      const ref = reference![i];
      const err = relativeError(ours, ref);
      assert.ok(err < bound, `${LENGTHS[i]} tokens: relative error ${err} (LONG_PROMPT_SEED=${seed})`);
    });
  });
  s.run();
}
