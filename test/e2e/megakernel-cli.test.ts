// --megakernel-blocks N on compile, generate and the benchmark: the blocks each multiprocessor runs, checked before
// anything compiles (a positive integer, only with --megakernel), refused by name where the device holds fewer;
// --megakernel-stream: the projections' weights streamed through the ring's pages, only with --megakernel;
// `tsfuse compile --megakernel` prints the megakernel it would run (no GPU needed: it renders, it does not launch).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tsfuse } from '../tsfuse-cli.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-megakernel-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const compile = (...args: string[]) => tsfuse(['compile', '--config', 'llama-tiny', '--backend', 'cuda', ...args]);

test('compile --megakernel renders 2 blocks a multiprocessor by default, N with --megakernel-blocks N', async () => {
  for (const [blocks, args] of [[2, []], [4, ['--megakernel-blocks', '4']]] as const) {
    const dir = path.join(tmp, `mk${blocks}`);
    const r = await compile('--megakernel', '--dump-kernels', dir, '--cache-length', '600', ...args);
    assert.is(r.code, 0, r.stderr);
    // The CLI's CUDA target (sm_90) has 132 multiprocessors.
    assert.match(r.stdout, new RegExp(`^megakernel: \\d+ kernels, \\d+ tasks on ${132 * blocks} blocks;`, 'm'));
    const source = fs.readFileSync(path.join(dir, 'decode.megakernel.cu'), 'utf8');
    assert.ok(source.includes(`__launch_bounds__(TF_BLOCK, ${blocks}) decode_megakernel(`));
    // Attention over 600 positions in chunks: under 4 blocks' 64 registers a thread, 4 keys' loads in flight, not 8;
    // the decode kernels dumped beside it are scheduled as it runs them (bisecting launches those).
    const keys = blocks === 4 ? 'tf_kr[4]' : 'tf_kr[8]';
    assert.ok(source.includes(`uint4 ${keys}`), `the megakernel's attention keeps ${keys}`);
    const attention = fs.readdirSync(dir).filter((f) => /^decode\.k\d+\.cu$/.test(f) && fs.readFileSync(path.join(dir, f), 'utf8').includes('uint4 tf_kr['));
    assert.ok(attention.length > 0, 'a decode attention kernel dumped');
    for (const f of attention) assert.ok(fs.readFileSync(path.join(dir, f), 'utf8').includes(`uint4 ${keys}`), f);
  }
});

test('compile --megakernel --megakernel-stream: every projection streams its rows\' weights through the ring, whose pages the source declares', async () => {
  const dir = path.join(tmp, 'stream');
  const r = await compile('--megakernel', '--megakernel-stream', '--dump-kernels', dir);
  assert.is(r.code, 0, r.stderr);
  const tasks = fs.readFileSync(path.join(dir, 'decode.megakernel.tasks'), 'utf8');
  const kernels = tasks.split('\n').filter((l) => /^ {2}kernel \d+ /.test(l));
  const streaming = kernels.filter((l) => /, streaming b\d+( b\d+)* \(\d+ bytes a row\)$/.test(l));
  assert.ok(streaming.length > 0 && streaming.length < kernels.length, `${streaming.length} of ${kernels.length} kernels stream`);
  const source = fs.readFileSync(path.join(dir, 'decode.megakernel.cu'), 'utf8');
  assert.match(source, /#define TF_RING_PAGES [2-9]\b/);
  const plain = await compile('--megakernel', '--dump-kernels', path.join(tmp, 'plain'));
  assert.is(plain.code, 0, plain.stderr);
  assert.not.match(fs.readFileSync(path.join(tmp, 'plain', 'decode.megakernel.tasks'), 'utf8'), /streaming/);
});

test('a bad --megakernel-blocks is one line naming it, before anything runs', async () => {
  for (const [args, message] of [
    [['--megakernel', '--megakernel-blocks', '0'], "tsfuse compile: --megakernel-blocks must be a positive integer, got '0'"],
    [['--megakernel', '--megakernel-blocks', 'two'], "tsfuse compile: --megakernel-blocks must be a positive integer, got 'two'"],
    [['--megakernel-blocks', '2'], 'tsfuse compile: --megakernel-blocks needs --megakernel'],
    [['--megakernel-stream'], 'tsfuse compile: --megakernel-stream needs --megakernel'],
    [['--megakernel', '--megakernel-blocks', '9'], 'tsfuse compile: --megakernel-blocks 9: cuda sm_90 holds 1 to 8 blocks a multiprocessor'],
  ] as const) {
    const r = await compile(...args);
    assert.is(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.is(r.stderr.trim(), message, args.join(' '));
  }
  const g = await tsfuse(['generate', '--model', '/nonexistent', '--ids', '1', '--backend', 'cuda', '--megakernel-blocks', '3']);
  assert.is(g.code, 1, g.stderr);
  assert.is(g.stderr.trim(), 'tsfuse generate: --megakernel-blocks needs --megakernel');
});

test.run();
