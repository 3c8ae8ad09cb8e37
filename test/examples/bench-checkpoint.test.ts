// The CUDA benchmark's parts that need no GPU: the random checkpoint it writes for tsfuse and Hugging Face to share
// (read back, and run on the CPU, it gives what the in-memory weights give), its reuse rules, and the report's math.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  BenchError, argmaxAgreement, leadingEqual, maxAbsDifference, parseCompare, prepareCheckpoint, relativeDifference, report,
  tokensFingerprint, type CudaBenchOptions, type PeerResult, type TsfuseResult, withoutWaitsLabel,
} from '../../examples/bench-cuda.ts';
import { randomBf16Weights } from '../../examples/random-checkpoint.ts';
import { DType } from '../../ir/dtype.ts';
import { builtinConfig } from '../../runtime/config.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { forwardLogits } from '../../compiler/open-session.ts';
import { writeSafetensors } from '../../runtime/safetensors.ts';

const cfg = builtinConfig('llama-tiny');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-bench-test-'));
const options = (dir: string): CudaBenchOptions => ({
  config: 'llama-tiny', promptLength: 4, newTokens: 3, runs: 1, seed: 7, checkpointDir: dir, python: 'python3',
  hfTimeoutS: 1, profile: false, command: 'npm run bench -- --backend cuda --config llama-tiny',
});

test('the written checkpoint reads back as the same config and bytes, and computes the same logits', async () => {
  const dir = prepareCheckpoint(cfg, options(path.join(tmp, 'a')));
  const loaded = loadLlama(dir);
  const memory = randomBf16Weights(cfg, 7);
  assert.is(loaded.weightDType, DType.BF16);
  assert.equal({ ...loaded.cfg, source: '' }, { ...cfg, source: '' });
  assert.equal(loaded.weights.tensors.map((t) => t.name), memory.tensors.map((t) => t.name));
  for (const t of memory.tensors) assert.ok(Buffer.from(loaded.weights.tensor(t.name).raw).equals(memory.tensor(t.name).raw), t.name);
  const ids = [1, 2, 3, 4];
  const a = (await forwardLogits(loaded, ids)).data;
  const b = (await forwardLogits({ cfg, weights: memory, weightDType: DType.BF16 }, ids)).data;
  assert.is(relativeDifference(a, b), 0);
});

test('a checkpoint this benchmark wrote is reused; a foreign one is never overwritten', () => {
  const dir = path.join(tmp, 'a');
  const before = fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs;
  prepareCheckpoint(cfg, options(dir));
  assert.is(fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs, before);

  const foreign = path.join(tmp, 'foreign');
  fs.mkdirSync(foreign);
  fs.writeFileSync(path.join(foreign, 'config.json'), '{}');
  writeSafetensors(path.join(foreign, 'model.safetensors'), { x: { dtype: DType.F32, shape: [1], data: [1] } });
  assert.throws(() => prepareCheckpoint(cfg, options(foreign)), (e: unknown) => e instanceof BenchError && /did not write/.test(e.message));
});

test('agreement measures', () => {
  assert.is(relativeDifference([3, 4], [3, 4]), 0);
  assert.ok(Math.abs(relativeDifference([3, 5], [3, 4]) - 0.2) < 1e-12);
  assert.is(argmaxAgreement(Float32Array.from([0, 1, 5, 2]), Float32Array.from([0, 2, 1, 3]), 2), 1);
  assert.is(leadingEqual([1, 2, 3], [1, 2, 4]), 2);
  assert.is(leadingEqual([1, 2], [1, 2]), 2);
  assert.is(maxAbsDifference([1, -2, 3], [1, 2, 2.5]), 4);
});

test('the tokens\' fingerprint: FNV-1a of every byte of the ids, so any changed token changes it', () => {
  assert.is(tokensFingerprint([68823, 36298]), '0e5f463e'); // computed apart, ids past one byte
  assert.is(tokensFingerprint([]), '811c9dc5');
  const tokens = Array.from({ length: 128 }, (_, i) => (i * 7919 + 13) % 128256);
  assert.is(tokensFingerprint(tokens), tokensFingerprint([...tokens]));
  for (const at of [0, 64, 127]) {
    const changed = tokens.slice();
    changed[at] += 65536; // a change in the id's third byte alone
    assert.is.not(tokensFingerprint(changed), tokensFingerprint(tokens), `token ${at}`);
  }
});

test('--compare takes hf, torch or both, in the order given', () => {
  assert.equal(parseCompare(undefined), []);
  assert.equal(parseCompare('hf'), ['hf']);
  assert.equal(parseCompare('torch,hf'), ['torch', 'hf']);
  for (const [bad, message] of [['foo', "unknown peer 'foo' (known: hf, torch"], ['hf,', "unknown peer ''"], ['hf,hf', 'a peer named twice']]) {
    assert.throws(() => parseCompare(bad), (e: unknown) => e instanceof BenchError && e.message.includes(message), bad);
  }
});

test('the report: one table without --compare; with peers, a column pair each and a row of agreement per reference', () => {
  const vocab = cfg.vocabSize;
  const ts: TsfuseResult = {
    device: 'GPU (sm_90)', setupMs: 1000, modulesCompiled: 2, decodeEventMs: 1, decodeWallMs: 1.1, replayMs: 0.9,
    prefillEventMs: 2, prefillWallMs: 3, kernelsPerToken: 50, copyBandwidth: 4e12, weightBytes: 2e9,
    tokens: [5, 6, 7], logits: new Float32Array(4 * vocab).fill(1), deterministic: true, cacheLength: 2048, kvDType: 'bf16',
  };
  const alone = report(ts, [], options(tmp), tmp);
  assert.match(alone, '| decode ms per token, CUDA events');
  assert.match(alone, '- tsfuse: KV cache of 2048 positions in bf16');
  assert.match(alone, '50.0 %'); // 2 GB per ms is 2 TB/s, half the copy bandwidth
  assert.not.match(alone, 'tsfuse against');
  assert.is(alone.split('\n').find((l) => l.startsWith('| decode ms per token, CUDA events'))!.split('|').length, 4, 'two columns');
  // The megakernel's step without waits: a row only where it was timed (--megakernel).
  assert.not.match(alone, 'no task waiting');
  // The generated tokens' fingerprint, always (FNV-1a of 5, 6, 7 as little-endian 32-bit ids, computed apart).
  assert.ok(alone.split('\n').includes("tsfuse's 3 generated tokens: fingerprint 5fe93131 (equal tokens give equal fingerprints: "
    + "compare the megakernel's with the launched step's, or two builds)"));
  const floorRow = report({ ...ts, withoutWaitsMs: 0.625 }, [], options(tmp), tmp).split('\n').find((l) => l.includes('no task waiting'));
  assert.equal(floorRow?.split('|').map((c) => c.trim()).slice(1, 3), ["the megakernel's step with no task waiting (timing only)", '0.625']);
  // --megakernel-without-waits: a row naming the kernels asked for and how many more share their code.
  const someRow = report({ ...ts, withoutWaitsOf: { kernels: [7], alike: [2, 7, 12, 17], ms: 0.81 } }, [], options(tmp), tmp).split('\n').find((l) => l.includes('not waiting'));
  assert.equal(someRow?.split('|').map((c) => c.trim()).slice(1, 3), ["the megakernel's step with kernel 7 and the 3 alike not waiting (timing only)", '0.810']);
  assert.is(withoutWaitsLabel({ kernels: [2, 4], alike: [2, 4], ms: 1 }), "the megakernel's step with kernels 2, 4 not waiting (timing only)");

  const peer = (decodeMs: number, tokens: number[], logit: number, f32?: boolean): PeerResult => ({
    versions: { torch: '2.11', transformers: '5.17', gpu: 'GPU', cuda: '13.0' }, load_s: 1, warmup_s: [40, 1],
    decode_ms_per_token_wall: decodeMs, decode_ms_per_token_event: decodeMs, prefill_wall_ms: 6, prefill_event_ms: 6,
    tokens, logitsBf16: new Float32Array(4 * vocab).fill(logit),
    ...(f32 ? { tokens_f32: [5, 6, 7], logitsF32: new Float32Array(4 * vocab).fill(1) } : {}),
  });
  const both = report(ts, [{ peer: 'hf', result: peer(2, [5, 6, 8], 1) }, { peer: 'torch', result: peer(1.25, [9, 6, 7], 1.5, true) }], options(tmp), tmp);
  const decodeRow = both.split('\n').find((l) => l.startsWith('| decode ms per token, CUDA events'))!;
  assert.equal(decodeRow.split('|').map((c) => c.trim()).slice(2, 7), ['1.000', '2.000', '2.00×', '1.250', '1.25×']);
  const head = both.split('\n').find((l) => l.startsWith('|  '))!.split('|').map((c) => c.trim());
  assert.equal(head.slice(2, 7), ['tsfuse (CUDA)', 'HF + torch.compile', 'HF / tsfuse', 'lean torch.compile', 'torch / tsfuse']);
  assert.match(both, 'torch.compile(mode="reduce-overhead")');
  const agreement = (label: string) => both.split('\n').find((l) => l.startsWith(`| ${label}`))!.split('|').map((c) => c.trim()).slice(2, 6);
  assert.equal(agreement('HF bf16'), ['0.00e+0', '0.00e+0', '4 / 4', '2 / 3']);
  assert.equal(agreement('torch bf16'), ['3.33e-1', '5.00e-1', '4 / 4', '0 / 3']);
  assert.equal(agreement('torch float32'), ['0.00e+0', '0.00e+0', '4 / 4', '3 / 3']);
  assert.not.match(both, '| HF float32');
  // Markdown tables: every row has as many cells as its header (no stray | inside a cell).
  for (const block of both.split('\n\n').filter((b) => b.startsWith('|'))) {
    const cells = block.split('\n').map((l) => l.split('|').length);
    assert.ok(cells.every((n) => n === cells[0]), block);
  }
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
