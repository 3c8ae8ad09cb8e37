// `npm run bench -- --help` lists every option with its default; a bad option is one line on stderr (exit code 2),
// never a stack trace. Nothing is measured: each case exits before a device opens.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('../../', import.meta.url));

function bench(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/bench.ts', ...args], { cwd: root, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help lists the options with their defaults', () => {
  const r = bench('--help');
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stdout.startsWith('usage: npm run bench -- [options]\n'), r.stdout);
  for (const line of ['--backend VALUE', '(default: webgpu)', '--config VALUE', '(default: llama-3.2-1b)', '--prompt VALUE',
    '(default: 32)', '--new-tokens VALUE', '(default: 128)', '--runs VALUE', '(default: 3)', '--profile', '--trace VALUE', '--compare VALUE', 'hf,torch',
    '--checkpoint-dir VALUE', '--seed VALUE', '--python VALUE', '(default: python3)', '--hf-timeout VALUE', '(default: 420)']) {
    assert.ok(r.stdout.includes(line), `--help should show ${line}:\n${r.stdout}`);
  }
  assert.is(r.stderr, '');
});

test('a bad option or value is one line naming it', () => {
  for (const [args, message] of [
    [['--bogus'], "bench: Unknown option '--bogus' (see npm run bench -- --help)"],
    [['--runs'], "bench: Option '--runs <value>' argument missing (see npm run bench -- --help)"],
    [['--prompt', 'abc'], 'bench: --prompt abc: expected a whole number (see npm run bench -- --help)'],
    [['--backend', 'cpu'], 'bench: --backend cpu: the benchmark runs on webgpu or cuda'],
    [['--config', 'nope'], "bench: unknown built-in config 'nope'"],
    [['--compare', 'foo'], "bench: --compare foo: unknown peer 'foo' (known: hf, torch; several as hf,torch)"],
    [['--backend', 'cuda', '--compare', 'hf,torch,hf'], 'bench: --compare hf,torch,hf: a peer named twice'],
    [['--compare', 'torch'], 'bench: --compare needs --backend cuda'],
    [['--cache-length', '0'], 'bench: --cache-length 0: expected a whole number of positions'],
    [['--backend', 'cuda', '--kv-dtype', 'i8'], 'bench: --kv-dtype i8: expected f32, bf16 or f16'],
    [['--backend', 'cuda', '--megakernel', '--megakernel-blocks', '0'], 'bench: --megakernel-blocks 0: expected a whole number of blocks, 1 or more'],
    [['--backend', 'cuda', '--megakernel-blocks', '2'], 'bench: --megakernel-blocks needs --megakernel'],
    [['--backend', 'cuda', '--megakernel', '--megakernel-without-waits', '7,x'], "bench: --megakernel-without-waits 7,x: expected kernel numbers separated by commas (as --profile's table has them)"],
    [['--backend', 'cuda', '--megakernel-without-waits', '7'], 'bench: --megakernel-without-waits needs --megakernel'],
    [['--trace', '/nonexistent-tsfuse/t.json'], 'bench: --trace /nonexistent-tsfuse/t.json: cannot write the trace: /nonexistent-tsfuse: no such file or folder'],
    [['--trace', root], `bench: --trace ${root}: cannot write the trace: ${root} is a folder, expected a file`],
    [['--backend', 'cuda', '--trace', `${root}package.json/t.json`], `bench: --trace ${root}package.json/t.json: cannot write the trace: ${root}package.json is a file, expected a folder`],
  ] as const) {
    const r = bench(...args);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.startsWith(message), `${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.is(r.stdout, '');
  }
});

test('examples/bench-prefill.ts: --help is its usage; a bad option or value is a line naming it, then the usage', () => {
  const prefill = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'examples/bench-prefill.ts', ...args], { cwd: root, encoding: 'utf8' });
  const help = prefill('--help');
  assert.is(help.status, 0, help.stderr);
  assert.ok(help.stdout.startsWith('usage: node --import tsx examples/bench-prefill.ts [--backend cpu|webgpu|cuda]'), help.stdout);
  for (const [args, message] of [
    [['--bogus'], "bench-prefill: Unknown option '--bogus'"],
    [['--config', 'nope'], "bench-prefill: --config: unknown built-in config 'nope'"],
    [['--backend', 'nope'], 'bench-prefill: --backend nope: expected cpu, reference, webgpu, cuda'],
    [['--lengths', '8,x'], 'bench-prefill: --lengths 8,x: expected prompt lengths'],
    [['--runs', '0'], 'bench-prefill: --runs 0: expected a whole number from 1'],
    [['--kv-dtype', 'i8'], 'bench-prefill: --kv-dtype i8: expected f32, bf16 or f16'],
    [['--warmup', 'soon'], 'bench-prefill: --warmup soon: expected seconds, a number from 0'],
    [['--lengths', '5000'], "bench-prefill: 5001 tokens exceed the model's max_position_embeddings 2048"],
  ] as const) {
    const r = prefill(...args);
    assert.is(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.startsWith(message), `${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stderr.trim().split('\n').length, 2, `the message and the usage: ${r.stderr}`);
    assert.is(r.stdout, '');
  }
});

test.run();
