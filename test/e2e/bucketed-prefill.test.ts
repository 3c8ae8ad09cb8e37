// The Llama prefill through compile() with the sequence length padded to power-of-two buckets: logits equal an
// unpadded run for prompts of several lengths, one compilation per bucket, and decoding after a padded prefill
// equals decoding after an unpadded one (the padded positions' KV-cache entries are overwritten before use).

import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HostTensor } from '../../ir/host-tensor.ts';
import { BucketedLlama } from '../../examples/llama-bucketed.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { forwardLogits } from '../../compiler/open-session.ts';
import { relativeError as relativeErrorOf } from '../backends/compare.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const model = loadLlama(path.join(fixtures, 'tiny-llama'));
const vocab = model.cfg.vocabSize;

/** ‖ours − ref‖ / ‖ref‖ of two tensors' data. */
const relativeError = (ours: HostTensor, ref: HostTensor): number => relativeErrorOf(ours.data, ref.data);

const prompt = (n: number, seed = 1) => Array.from({ length: n }, (_, i) => (i * 37 + seed * 11 + 5) % vocab);

test('prompts of 1, 7, 8, 9, 31 and 33 tokens: logits equal an unpadded run, one compilation per bucket', async () => {
  const llama = new BucketedLlama(model, 64);
  for (const n of [1, 7, 8, 9, 31, 33]) {
    const ids = prompt(n);
    const { logits } = llama.step(ids, 0);
    const ref = await forwardLogits(model, ids);
    assert.equal(logits.shape, [n, vocab]);
    const err = relativeError(logits, ref);
    assert.ok(err < 1e-5, `n=${n}: relative error ${err}`);
  }
  const s = llama.prefill.stats;
  assert.is(s.compilations, 5, [...llama.prefill.cache.keys()].join('\n'));
  assert.is(s.cacheHits, 1); // 8 shares 7's bucket
  assert.equal([...llama.prefill.cache.keys()].map((k) => /S≤(\d+)/.exec(k)![1]), ['1', '8', '16', '32', '64']);
});

test('a second prompt in a bucket compiles nothing; its logits are still exact', async () => {
  const llama = new BucketedLlama(model, 32);
  llama.step(prompt(9, 2), 0);
  const ids = prompt(13, 3);
  const { logits } = llama.step(ids, 0);
  assert.is(llama.prefill.stats.compilations, 1);
  assert.ok(relativeError(logits, await forwardLogits(model, ids)) < 1e-5);
});

test('decoding after a padded prefill equals decoding after an unpadded one', () => {
  // 9 tokens run padded to 16: positions 9..15 of the cache hold the padding's keys and values until the decode
  // steps at those positions overwrite them.
  const ids = prompt(9, 4);
  const padded = new BucketedLlama(model, 24);
  const plain = new BucketedLlama(model, 24, { buckets: (n) => n });
  let a = padded.step(ids, 0);
  let b = plain.step(ids, 0);
  for (let pos = ids.length; pos < ids.length + 8; pos++) {
    const token = b.next.data[b.next.data.length - 1];
    assert.is(a.next.data[a.next.data.length - 1], token, `greedy token at position ${pos}`);
    a = padded.step([token], pos);
    b = plain.step([token], pos);
    assert.ok(relativeError(a.logits, b.logits) < 1e-5, `decode logits at position ${pos}`);
  }
  assert.is(padded.decode.stats.compilations, 1);
  assert.is(padded.decode.stats.cacheHits, 7);
});

test('a prefill whose bucket does not fit the KV cache is refused', () => {
  const llama = new BucketedLlama(model, 12);
  assert.throws(() => llama.step(prompt(9), 0), /runs padded to 16; positions up to 16 do not fit a KV cache of 12/);
});

test.run();
