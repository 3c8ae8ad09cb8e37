// A prompt's last step is recorded the second time its length comes and replayed from then on (Session.promptStep):
// the tokens, greedy and sampled, are those of the step run as it is, on the CPU, on WebGPU (lavapipe) where there
// is an adapter, and on CUDA (the fake where there is no GPU); a length seen once is not recorded, and a session
// keeps at most PROMPT_RECORDINGS of them.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { loadLlama } from '../../runtime/llama.ts';
import { PROMPT_RECORDINGS } from '../../runtime/session.ts';
import { kernelDevices, openOrFake } from './fake-cuda/build.ts';

const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const dir = path.join(fixtures, 'tiny-llama');
const gold = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8')) as { input_ids: number[]; greedy_new_tokens: number[] };

for (const backend of kernelDevices) {
  const s = suite(`recorded prompts on ${backend}`);
  s('the second prompt of a length replays a recording and gives the same tokens', async () => {
    const model = loadLlama(dir);
    const cacheLength = gold.input_ids.length + gold.greedy_new_tokens.length;
    const open = (cacheDir?: string) => openLlamaSession(model, { backend, cacheLength, sampling: true, ...(cacheDir ? { cacheDir } : {}) });
    // CUDA: the GPU where a driver opens, else the CPU fake.
    const got = await openOrFake(backend, open);
    if (typeof got === 'string') return void console.log(`  ${backend}: skipped (${got})`);
    const { opened: session, restore } = got;
    try {
      const n = gold.greedy_new_tokens.length;
      assert.equal(await session.generate(gold.input_ids, n), gold.greedy_new_tokens);
      assert.is(session.recordedPromptLengths, 0, 'a length seen once runs as it is');
      assert.equal(await session.generate(gold.input_ids, n), gold.greedy_new_tokens);
      assert.is(session.recordedPromptLengths, 1);
      assert.equal(await session.generate(gold.input_ids, n), gold.greedy_new_tokens, 'replayed again');
      assert.is(session.recordedPromptLengths, 1);
      // Sampled: the sampling inputs are written before the recorded step, so a replay reads this call's.
      const sampling = { temperature: 0.8, topP: 0.9, seed: 11 };
      const shorter = gold.input_ids.slice(0, 7);
      const eager = await session.generate(shorter, 6, sampling);
      assert.equal(await session.generate(shorter, 6, sampling), eager);
      // (Seed 12 samples other tokens than seed 11 from this prompt, run as it is.)
      assert.not.equal(await session.generate(shorter, 6, { ...sampling, seed: 12 }), eager, 'a replay reads this call\'s seed');
      assert.is(session.recordedPromptLengths, 2);
      // Past the cap, lengths run as they are.
      for (let len = 2; len < 2 + PROMPT_RECORDINGS; len++) {
        for (let i = 0; i < 2; i++) await session.generate(gold.input_ids.slice(0, len), 1);
      }
      assert.is(session.recordedPromptLengths, PROMPT_RECORDINGS);
      // A replay after prompts of other lengths binds its own sizes again.
      assert.equal(await session.generate(gold.input_ids, n), gold.greedy_new_tokens, 'replayed after other lengths');
    } finally {
      session.close();
      restore?.();
    }
  });
  s.run();
}
