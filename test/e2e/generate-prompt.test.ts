// `tsfuse generate --prompt TEXT` on the tiny-llama fixture with a byte-level BPE tokenizer.json built in the test:
// the text is encoded with @huggingface/tokenizers (offline, from the file), the tokens equal greedy decoding of
// those ids, the decoded text streams to stdout, and the timing goes to stderr. Progress appears on a terminal
// only: piped runs and --json keep stderr empty.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadLlama } from '../../runtime/llama.ts';
import { generateGreedy } from '../../compiler/open-session.ts';
import { loadTokenizer, TextStream } from '../../runtime/tokenizer.ts';
import { byteBpeTokenizer } from '../fixtures/byte-bpe-tokenizer.ts';
import { tsfuse as runTsfuse } from '../tsfuse-cli.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixtures = process.env.TSFUSE_FIXTURES ?? fileURLToPath(new URL('../../../shared/fixtures/', import.meta.url));
const source = path.join(fixtures, 'tiny-llama');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-prompt-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** tiny-llama with a tokenizer.json of its vocabulary size. */
const dir = path.join(tmp, 'tiny-llama-text');
fs.mkdirSync(dir);
for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(source, f), path.join(dir, f));
fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(byteBpeTokenizer(512)));

/** `tsfuse ...args` in this process (test/tsfuse-cli.ts), its stdout and stderr pipes. */
const tsfuse = (...args: string[]) => runTsfuse(args);

const prompt = 'hello the world, café!';

test('the prompt is encoded with the checkpoint tokenizer and decoding runs greedily from it', async () => {
  const tok = loadTokenizer(dir)!;
  const ids = tok.encode(prompt);
  assert.is(tok.decode(ids), prompt);
  const r = await tsfuse('generate', '--model', dir, '--prompt', prompt, '--max-new-tokens', '6', '--json');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stderr, '', 'no progress when piped');
  const out = JSON.parse(r.stdout);
  const want = await generateGreedy(loadLlama(dir), ids, 6);
  assert.equal(out.tokens, want);
  assert.is(out.text, tok.decode(want));
  assert.is(out.promptTokens, ids.length);
  for (const k of ['prefillMs', 'msPerToken', 'tokensPerSecond']) assert.ok(out[k] > 0, `${k}: ${out[k]}`);
});

test('text streams to stdout and the timing goes to stderr', async () => {
  const tok = loadTokenizer(dir)!;
  const r = await tsfuse('generate', '--model', dir, '--prompt', prompt, '--max-new-tokens', '5');
  assert.is(r.code, 0, r.stderr);
  const want = tok.decode(await generateGreedy(loadLlama(dir), tok.encode(prompt), 5));
  assert.ok(r.stdout.startsWith(want), JSON.stringify(r.stdout));
  assert.not.match(r.stdout, /tokens in \d+ ms/);
  assert.match(r.stderr, /(^|\n)5 tokens in \d+ ms: prefill [\d.]+ ms \(16 prompt tokens\), [\d.]+ ms\/token, [\d.]+ tokens\/s\n$/);
});

test('streamed pieces add up to the text; a character split over tokens waits for its last byte', () => {
  const tok = loadTokenizer(dir)!;
  const ids = tok.encode(prompt);
  const s = new TextStream(tok);
  const pieces = ids.map((id) => s.push(id));
  assert.is(pieces.join(''), prompt);
  const e = pieces.indexOf('é');
  assert.ok(e > 0 && pieces[e - 1] === '', JSON.stringify(pieces)); // 'é' is two byte tokens
});

test('--prompt without a tokenizer.json, and both or neither of --ids/--prompt, are usage errors', async () => {
  let r = await tsfuse('generate', '--model', source, '--prompt', 'hi');
  assert.is(r.code, 1);
  assert.match(r.stderr, `--prompt needs a tokenizer.json in ${source}`);
  r = await tsfuse('generate', '--model', dir, '--prompt', 'hi', '--ids', '1');
  assert.match(r.stderr, 'give one of --ids 5,9,13 or --prompt TEXT');
});

test('on a terminal, reading weights shows progress on stderr', () => {
  const which = spawnSync('script', ['--version'], { encoding: 'utf8' });
  if (which.status !== 0) return; // no `script` to give the command a terminal
  const cmd = `${process.execPath} bin/tsfuse.mjs generate --model ${dir} --ids 1,2,3 --max-new-tokens 2`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: root, encoding: 'utf8' });
  assert.is(r.status, 0, r.stdout);
  assert.match(r.stdout, /reading weights \[[^\]]*\] \d+\/\d+/);
});

test.run();
