// `tsfuse bisect` as users run it: exit code 0 and the report when everything agrees (a checkpoint's prefill, a
// decode step some tokens in, an IR file), 1 with the report and a one-line verdict when a kernel differs (a model
// script whose custom op is lowered wrongly), and usage errors. The command runs in this process
// (test/tsfuse-cli.ts), and as a child process (node bin/tsfuse.mjs) for a usage error's exit status.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BisectReport } from '../../compiler/bisect.ts';
import { fixtures } from './plant.ts';
import { type CliRun, spawnTsfuse, tsfuse as runTsfuse } from '../tsfuse-cli.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const model = path.join(fixtures, 'tiny-llama');
const script = 'test/bisect/scripts/bad-op.ts';
const opLine = fs.readFileSync(path.join(root, script), 'utf8').split('\n').findIndex((l) => l.includes('LINE-OP')) + 1;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-bisect-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** `tsfuse bisect ...args` in this process. */
function tsfuse(...args: string[]): Promise<CliRun> {
  return runTsfuse(['bisect', ...args]);
}

test('a clean checkpoint: exit 0, every kernel agrees, and so do the passes', async () => {
  const r = await tsfuse('--model', model, '--ids', '5,9,13,200,7');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stderr, '');
  const lines = r.stdout.split('\n');
  assert.match(lines[0], /^bisect @prefill \(a prompt of 5 tokens, S=5\) on cpu \(.*\) against the reference interpreter, tolerance 1e-4$/);
  assert.match(lines[1], /^every kernel agrees: \d+ kernels, \d+ values compared; largest relative error \d\.\d+e-\d+, %\d+ f32\[/);
  assert.match(lines[2], /^the compiled graph agrees with the traced graph \(logits [\d.e+-]+, next 0, /);
});

test('--decode-at 2 --json: the decode step 2 tokens in, as data', async () => {
  const r = await tsfuse('--model', model, '--ids', '5,9,13', '--decode-at', '2', '--json');
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as BisectReport;
  assert.is(report.graph, 'decode');
  assert.is(report.step, 'decode step 2 after a prompt of 3 tokens, at position 4');
  assert.ok(report.agrees);
  assert.is(report.kernelsChecked, report.kernels);
  assert.is(report.against, 'reference');
  assert.ok(report.passes?.agrees);
});

test('an IR file: compiled and bisected on random inputs', async () => {
  const file = path.join(tmp, 'f.ir');
  fs.writeFileSync(file, [
    'graph @f(%x: f32[S,8]) -> (f32[S,8]) {',
    '  %0: f32[S,8] = silu %x',
    '  %1: f32[S,1] = sum %0 [axes=[1], keepdims=true]',
    '  %2: f32[S,8] = mul %0, %1',
    '  return %2',
    '}',
    '',
  ].join('\n'));
  const r = await tsfuse(file, '--dims', 'S=6');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^bisect @f \(S=6\) on cpu/);
  assert.match(r.stdout, /every kernel agrees/);
});

test('a custom op lowered wrongly: exit 1, the kernel, its node and line, the source, and one line on stderr', async () => {
  const out = path.join(tmp, 'src');
  const r = await tsfuse(script, '--out', out);
  assert.is(r.code, 1);
  assert.match(r.stdout, /^bisect @block \(S=8\) on cpu/);
  const kernel = /^kernel (k\d+) \(contraction\), the \d+\w\w of \d+ to run, differs:$/m.exec(r.stdout);
  assert.ok(kernel, r.stdout);
  assert.match(r.stdout, /every value it reads agrees: the difference starts in this kernel/);
  assert.match(r.stdout, new RegExp(`suspect  %\\d+: f32\\[S,32\\] = bisect_softsign %\\d+   # ${script}:${opLine}$`, 'm'));
  assert.match(r.stdout, /the first value it writes that differs: relative error 2e\+0/);
  const source = new RegExp(`^  source   (${out}/block\\.${kernel![1]}\\.js)$`, 'm').exec(r.stdout);
  assert.ok(source, 'the source file is named');
  assert.match(fs.readFileSync(source![1], 'utf8'), /bisect_softsign/);
  const err = r.stderr.trim().split('\n');
  assert.is(err.length, 1);
  assert.match(err[0], new RegExp(`^tsfuse bisect: kernel ${kernel![1]} \\(contraction\\) of @block differs from the reference interpreter: relative error 2\\.00e\\+0 in %\\d+; suspect %\\d+ = bisect_softsign at ${script}:${opLine}$`));
});

test('--inside --json: the report as data names the node inside the kernel', async () => {
  const r = await tsfuse(script, '--inside', '--json', '--out', path.join(tmp, 'json'));
  assert.is(r.code, 1);
  const report = JSON.parse(r.stdout) as BisectReport;
  assert.not.ok(report.agrees);
  const c = report.culprit!;
  assert.is(c.suspect.op, 'bisect_softsign');
  assert.is(c.suspect.found, 'inside');
  assert.is(c.suspect.loc, `${script}:${opLine}`);
  assert.ok(c.inside?.reproduced);
  assert.ok(c.inside!.checks.some((v) => v.op === 'matmul' && v.agrees), 'the matmul before it agrees');
  assert.is(c.nodes.length, c.inside!.checks.length);
});

test('--backend webgpu --against cpu: both print the same wrong lowering, so they agree (exit 0)', async () => {
  const r = await tsfuse(script, '--backend', 'webgpu', '--against', 'cpu');
  if (r.code === 1 && /no WebGPU adapter|needs the optional package webgpu/.test(r.stderr)) return;
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^bisect @block \(S=8\) on webgpu \(.*\) against cpu, tolerance 1e-3$/m);
  assert.match(r.stdout, /every kernel agrees/);
});

test('usage errors: exit 1 and one line', async () => {
  const cases: [string[], RegExp][] = [
    [[], /give one of --model DIR, --config NAME, a model script or an IR file/],
    [['--model', model, '--ids', '1,2', '--backend', 'reference'], /--backend reference has no kernels to bisect/],
    [['--model', model, '--ids', '1,2', '--step', 'sideways'], /--step must be prefill or decode, got 'sideways'/],
    [['--model', model, '--ids', '1,2', '--tolerance', 'tight'], /--tolerance must be a non-negative number, got 'tight'/],
    [['--model', model, '--ids', '1,2', '--against', 'abacus'], /unknown backend 'abacus'/],
    [[script, '--decode-at', '2'], /--step and --decode-at are for Llama models/],
    [['--config', 'llama-9000'], /unknown built-in config 'llama-9000'/],
  ];
  for (const [i, [args, message]] of cases.entries()) {
    // The first as a process: its exit status and its stderr.
    const r = i === 0 ? spawnTsfuse(['bisect', ...args]) : await tsfuse(...args);
    assert.is(r.code, 1, `bisect ${args.join(' ')}`);
    assert.is(r.stdout, '');
    assert.match(r.stderr, /^tsfuse bisect: /);
    assert.match(r.stderr, message);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test.run();
