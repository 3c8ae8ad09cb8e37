// A prompt longer than the session's prompt chunk runs as several steps that append to the KV cache: its logits
// and its greedy and sampled tokens are those of the prompt run in one step (the fixture's Hugging Face tokens
// too), on the CPU and on WebGPU (lavapipe) where there is an adapter.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { DeviceKind } from '../../runtime/device.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { unavailable } from './fake-cuda/build.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const dir = path.join(fixtures, 'tiny-llama');
const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8')) as { input_ids: number[]; greedy_new_tokens: number[] };

for (const backend of ['cpu', 'webgpu'] as DeviceKind[]) {
  const s = suite(`prompts in chunks on ${backend}`);
  s('a prompt in chunks of 5 gives the logits and tokens of the prompt in one step', async () => {
    const model = loadLlama(dir);
    const cacheLength = gold.input_ids.length + gold.greedy_new_tokens.length;
    const open = (promptChunk?: number) => openLlamaSession(model, { backend, cacheLength, promptChunk, sampling: true });
    let whole;
    try {
      whole = await open();
    } catch (e) {
      const why = unavailable(e);
      if (!why) throw e;
      console.log(`  ${backend}: skipped (${why})`);
      return;
    }
    const chunked = await open(5);
    try {
      assert.ok(gold.input_ids.length > 10, 'the prompt spans three chunks');
      const [a, b] = [await whole.logits(gold.input_ids), await chunked.logits(gold.input_ids)];
      assert.equal(b.shape, a.shape);
      let worst = 0;
      for (let i = 0; i < a.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
      assert.ok(worst < 1e-4, `largest difference ${worst}`);
      const n = gold.greedy_new_tokens.length;
      assert.equal(await chunked.generate(gold.input_ids, n), gold.greedy_new_tokens);
      const sampling = { temperature: 0.8, topP: 0.9, seed: 11 };
      assert.equal(await chunked.generate(gold.input_ids, 8, sampling), await whole.generate(gold.input_ids, 8, sampling));
    } finally {
      whole.close();
      chunked.close();
    }
  });
  s.run();
}
