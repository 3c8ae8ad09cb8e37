// The command line's start (node bin/tsfuse.mjs, a child process): generate and compile go through the compile cache
// in TSFUSE_CACHE_DIR — the first run compiles and stores, the next reads it back (warm) without writing again,
// another option misses, --no-cache and TSFUSE_NO_CACHE=1 neither read nor write — and generate reports where the
// start went (compile cold or warm, weights read, device open, upload, first token) on stderr and in --json.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fixture } from '../fixtures-dir.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const model = fixture('tiny-llama');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-start-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function tsfuse(cacheDir: string, args: string[], env: Record<string, string> = {}) {
  const full: Record<string, string | undefined> = { ...process.env, TSFUSE_CACHE_DIR: cacheDir, ...env };
  for (const k of ['TSFUSE_DEBUG', 'TSFUSE_LOGS', 'TSFUSE_NO_CACHE']) if (!(k in env)) delete full[k];
  const r = spawnSync(process.execPath, ['bin/tsfuse.mjs', ...args], { cwd: root, env: full, encoding: 'utf8' });
  assert.is(r.status, 0, `tsfuse ${args.join(' ')}:\n${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** The compile cache's entries in `cacheDir`, with when each was last written. */
function entries(cacheDir: string): Record<string, number> {
  const dir = path.join(cacheDir, 'compile');
  if (!fs.existsSync(dir)) return {};
  return Object.fromEntries(fs.readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => [f, fs.statSync(path.join(dir, f)).mtimeMs]));
}

const generate = (cacheDir: string, extra: string[] = [], env: Record<string, string> = {}) => {
  const { stdout } = tsfuse(cacheDir, ['generate', '--model', model, '--ids', '5,9,13', '--max-new-tokens', '4', '--json', ...extra], env);
  return JSON.parse(stdout) as { tokens: number[]; start: Record<string, number | string> };
};

test('generate: cold, then warm from TSFUSE_CACHE_DIR; the start\'s parts in --json', () => {
  const cache = path.join(tmp, 'generate');
  const cold = generate(cache);
  const stored = entries(cache);
  assert.is(Object.keys(stored).length, 1, 'one entry in TSFUSE_CACHE_DIR/compile');
  const warm = generate(cache);
  assert.is(cold.start.compileCache, 'miss');
  assert.is(warm.start.compileCache, 'hit');
  assert.equal(entries(cache), stored, 'a warm start writes nothing');
  assert.equal(warm.tokens, cold.tokens);
  for (const r of [cold, warm]) {
    for (const k of ['compileMs', 'readMs', 'openMs', 'uploadMs', 'readyMs', 'firstTokenMs', 'totalMs']) {
      assert.type(r.start[k], 'number', `${k} in ${JSON.stringify(r.start)}`);
      assert.ok((r.start[k] as number) >= 0, k);
    }
    assert.ok((r.start.totalMs as number) >= (r.start.readyMs as number), 'the first token comes after the session is ready');
  }
  const sampled = generate(cache, ['--temperature', '0.5']);
  assert.is(sampled.start.compileCache, 'miss', 'a sampling session is another module');
  assert.is(Object.keys(entries(cache)).length, 2);
});

test('generate: --no-cache and TSFUSE_NO_CACHE=1 neither read nor write the cache', () => {
  const cache = path.join(tmp, 'off');
  assert.is(generate(cache, ['--no-cache']).start.compileCache, 'off');
  assert.is(generate(cache, [], { TSFUSE_NO_CACHE: '1' }).start.compileCache, 'off');
  assert.equal(entries(cache), {});
});

test('generate prints where the start went on stderr, one line', () => {
  const cache = path.join(tmp, 'line');
  tsfuse(cache, ['generate', '--model', model, '--ids', '5,9,13', '--max-new-tokens', '2']);
  const { stderr } = tsfuse(cache, ['generate', '--model', model, '--ids', '5,9,13', '--max-new-tokens', '2']);
  const line = stderr.split('\n').find((l) => l.startsWith('start: '));
  assert.ok(line, stderr);
  assert.match(line!, /^start: compile \d+ ms \(warm: from the compile cache\), weights read \d+ ms, device open \d+ ms, upload \d+ ms \(weights, kernels\); ready in \d+ ms; first token [\d.]+ ms later, \d+ ms from the start$/);
});

test('compile --config: stored once, read back warm, another option misses, --no-cache writes nothing', () => {
  const cache = path.join(tmp, 'compile');
  const compile = (...extra: string[]) => tsfuse(cache, ['compile', '--config', 'llama-tiny', '--json', ...extra]).stdout;
  const cold = compile();
  const stored = entries(cache);
  assert.is(Object.keys(stored).length, 1);
  assert.is(compile(), cold, 'the same summary from the cache');
  assert.equal(entries(cache), stored, 'read, not written again');
  compile('--cache-length', '64');
  assert.is(Object.keys(entries(cache)).length, 2, 'another KV-cache length is another entry');
  compile('--no-cache', '--cache-length', '96');
  assert.is(Object.keys(entries(cache)).length, 2, '--no-cache writes nothing');
});

test.run();
