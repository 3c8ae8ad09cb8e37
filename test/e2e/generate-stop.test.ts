// generate stops as Hugging Face's does: at the first of the model's eos_token_id (one id or a list, from
// config.json or generation_config.json, which wins), the EOS token itself returned last; --ignore-eos goes on; a
// request past max_position_embeddings is refused before anything is allocated, naming the limit. The Session does
// it for any stop tokens on every device (the GPU path reads the history asynchronously, a few steps behind).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openLlamaSession } from '../../compiler/open-session.ts';
import { DeviceKind } from '../../runtime/device.ts';
import { checkLength, loadLlama } from '../../runtime/llama.ts';
import { tsfuse as runTsfuse } from '../tsfuse-cli.ts';
import { fixture as fixtureDir } from '../fixtures-dir.ts';

const fixture = fixtureDir('tiny-llama');
const golden = JSON.parse(fs.readFileSync(path.join(fixture, 'golden.json'), 'utf8')) as { input_ids: number[]; greedy_new_tokens: number[] };
const prompt = golden.input_ids.slice(0, 8);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-stop-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The greedy continuation of `prompt` (the golden run's prompt is longer, so the session computes its own). */
let continuation: number[] = [];

/** tiny-llama's weights (linked) with other config.json / generation_config.json contents. */
function checkpointWith(name: string, config: Record<string, unknown>, generation?: Record<string, unknown>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.symlinkSync(path.join(fixture, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const json = { ...JSON.parse(fs.readFileSync(path.join(fixture, 'config.json'), 'utf8')), ...config };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
  if (generation) fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(generation));
  return dir;
}

/** `tsfuse ...args` in this process (test/tsfuse-cli.ts). */
const tsfuse = (...args: string[]) => runTsfuse(args);

test.before(async () => {
  const session = await openLlamaSession(loadLlama(fixture), { backend: 'cpu', cacheLength: prompt.length + 40 });
  try {
    continuation = await session.generate(prompt, 40);
  } finally {
    session.close();
  }
});

/** The index of the first token of the continuation that appears nowhere before it, at or after `from`. */
function firstNew(from: number): number {
  for (let i = from; i < continuation.length; i++) if (continuation.indexOf(continuation[i]) === i) return i;
  throw new Error('no fresh token in the continuation');
}

for (const backend of ['cpu', 'webgpu'] as DeviceKind[]) {
  test(`Session.generate on ${backend} ends at the first stop token, returning it last`, async () => {
    const model = loadLlama(fixture);
    // Reads every 2 steps on the GPU: the stop lands several reads in, with steps queued past it.
    let session;
    try {
      session = await openLlamaSession(model, { backend, cacheLength: prompt.length + 40, readEvery: 2 });
    } catch (e) {
      if (/Unavailable/.test((e as Error).name)) return;
      throw e;
    }
    try {
      for (const at of [0, firstNew(5), firstNew(23)]) {
        const heard: number[] = [];
        const stop = continuation[at];
        const got = await session.generate(prompt, 40, {}, (t) => heard.push(t), { stopTokens: [stop, 100000] });
        assert.equal(got, continuation.slice(0, at + 1), `stop token ${stop} at ${at}`);
        assert.equal(heard, got, 'onToken hears what generate returns');
      }
      // No stop tokens (or none that comes): all of them.
      assert.equal(await session.generate(prompt, 40, {}, undefined, { stopTokens: [] }), continuation);
      assert.equal(await session.generate(prompt, 40), continuation);
    } finally {
      session.close();
    }
  });
}

test('the CLI stops at eos_token_id from generation_config.json (a list), or from config.json; --ignore-eos goes on', async () => {
  const [a, b] = [firstNew(6), firstNew(12)];
  const ids = ['--ids', prompt.join(','), '--max-new-tokens', '30', '--json'];
  const tokens = (r: { code: number | null; stdout: string; stderr: string }) => {
    assert.is(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).tokens as number[];
  };
  const absent = [...Array(512).keys()].find((t) => !continuation.includes(t))!;
  const listed = checkpointWith('generation-list', { eos_token_id: continuation[a] }, { eos_token_id: [absent, continuation[b]] });
  assert.equal(tokens(await tsfuse('generate', '--model', listed, ...ids)), continuation.slice(0, b + 1), 'generation_config.json wins');
  const fromConfig = checkpointWith('config-eos', { eos_token_id: [continuation[a]] });
  assert.equal(tokens(await tsfuse('generate', '--model', fromConfig, ...ids)), continuation.slice(0, a + 1));
  assert.equal(tokens(await tsfuse('generate', '--model', fromConfig, ...ids, '--ignore-eos')), continuation.slice(0, 30));
});

test('past max_position_embeddings: refused before loading, the limit named', async () => {
  const r = await tsfuse('generate', '--model', fixture, '--ids', prompt.join(','), '--max-new-tokens', '505');
  assert.is(r.code, 1);
  assert.match(r.stderr, /8 prompt tokens \+ 505 new tokens = 513 positions exceed the model's max_position_embeddings 512/);
  assert.not.match(r.stderr, /internal error/);
  const model = loadLlama(fixture);
  assert.throws(() => checkLength(model.cfg, 513), /513 tokens exceed the model's max_position_embeddings 512/);
  checkLength(model.cfg, 8, 504);
});

test('eos ids outside the vocabulary are refused, naming the file', () => {
  const dir = checkpointWith('eos-outside', {}, { eos_token_id: [2, 600] });
  assert.throws(() => loadLlama(dir), (e: Error) => e.message.includes('generation_config.json: eos_token_id: 600 outside the vocabulary (0..511)'));
});

test.run();
