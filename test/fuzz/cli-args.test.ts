// Seeded, bounded fuzzing of the command line: argument vectors for generate, logits, compile, trace, inspect and
// run, made from valid ones by replacing values, dropping and repeating arguments and inserting options (known ones
// of every command, unknown ones, odd values and paths: folders, devices, files under files), run against the tiny
// fixture checkpoint. Each must succeed, or exit 1 with its error as one last line `tsfuse COMMAND: …` (an IR
// file's mistake followed by its source line and a caret); never an `internal error`, a stack trace, a signal or a
// hang (a case has CASE_TIMEOUT_MS). The command runs in this process (test/tsfuse-cli.ts): a crash ends the test
// process, which the runner counts as a failure.
//
//   FUZZ_SEED=7 FUZZ_SCALE=10 npm test -- fuzz      another seed, ten times the cases

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../backends/rng.ts';
import { tsfuse } from '../tsfuse-cli.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const fixtures = process.env.TSFUSE_FIXTURES ?? path.join(root, '../shared/fixtures');
const SEED = Number(process.env.FUZZ_SEED ?? 1);
const SCALE = Number(process.env.FUZZ_SCALE ?? 3);
const CASE_TIMEOUT_MS = 30_000;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-fuzz-cli-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const model = path.join(fixtures, 'tiny-llama');
// The CLI runs here: a mutated relative path (`--dump-kernels 0`) writes into the temporary folder, not the checkout.
const work = path.join(tmp, 'cwd');
fs.mkdirSync(work);
const file = path.join(tmp, 'a-file');
fs.writeFileSync(file, 'not a folder\n');
const folder = path.join(tmp, 'a-folder');
fs.mkdirSync(folder);
const ir = path.join(tmp, 'g.ir');
fs.writeFileSync(ir, 'graph @g(%x: f32[S]) -> (f32[S]) {\n  param %w: f32[1]\n  %0: f32[S] = mul %x, %w\n  %1: f32[S] = exp %0\n  return %1\n}\n');
const inputsJson = path.join(tmp, 'inputs.json');
fs.writeFileSync(inputsJson, '{"x": [1, 2]}\n');

/** Valid vectors of each command, the starting points of the mutations. */
const templates: Record<string, string[][]> = {
  generate: [['--model', model, '--ids', '5,9,13', '--max-new-tokens', '4'],
    ['--model', model, '--ids', '1', '--temperature', '0.8', '--top-p', '0.9', '--seed', '3', '--json']],
  logits: [['--model', model, '--ids', '1,2', '--json']],
  compile: [['--model', model], ['--config', 'llama-tiny', '--report', '--json'], ['--config', 'llama-tiny', '--explain-fusion'],
    ['--model', model, '--dump-ir', 'after:fuse'], ['--config', 'llama-tiny', '--dump-kernels', path.join(tmp, 'kernels')]],
  trace: [['--model', model, '--dump-ir'], ['--config', 'llama-tiny', '--cache-length', '16']],
  inspect: [[ir], [ir, '--stats']],
  run: [[ir, '--inputs', 'x=[1,2]'], [ir, '--inputs', `@${inputsJson}`, '--json', '--backend', 'reference']],
};

const values = [
  '0', '1', '2', '-1', '1.5', '1e3', '1000000000', '9007199254740993', 'NaN', 'Infinity', '', 'abc', '0x10', ' 3', '\u0663',
  ',', '1,,2', '511', '512', '5, 9', '99999999999',
  model, path.join(model, 'config.json'), '/nonexistent', '/dev/null', '/dev/zero', file, folder, path.join(file, 'x'), ir, inputsJson,
  'cpu', 'reference', 'webgpu', 'cuda', 'gpu', 'llama-tiny', 'constructor', '__proto__', 'after:nope', 'all', 'final',
  'x=[1]', 'x=[1,2,3]', 'x=NaN', 'y=[1,2]', '{}', '[', `@${file}`, '@/dev/zero', '@/nonexistent', 'x=[[1],[2]]', 'x=1e400', 'x=[1,2]; w=[3]',
];

const flags = [
  '--model', '--ids', '--prompt', '--max-new-tokens', '--backend', '--json', '--temperature', '--top-p', '--seed', '--ignore-eos',
  '--config', '--report', '--explain-fusion', '--dump-ir', '--dump-kernels', '--dump-schedule', '--subgroup-matrix', '--cache-length', '--prompt-length',
  '--entry', '--out', '--timeout', '--max-memory', '--stats', '--inputs', '--graph', '--weights', '--states',
  '--nope', '-x', '--', '-',
];

/** A template with one to three mutations. */
function vector(r: Rng): string[] {
  const command = r.pick(Object.keys(templates));
  const args = [...r.pick(templates[command])];
  for (let k = r.int(1, 3); k > 0; k--) {
    const at = r.int(0, args.length);
    switch (r.int(0, 5)) {
      case 0: { // another value in place of one
        const spots = args.map((a, i) => (a.startsWith('--') ? -1 : i)).filter((i) => i >= 0);
        if (spots.length) args[r.pick(spots)] = r.pick(values);
        break;
      }
      case 1: args.splice(r.int(0, Math.max(0, args.length - 1)), 1); break; // a missing argument
      case 2: args.splice(at, 0, ...(r.chance(0.6) ? [r.pick(flags), r.pick(values)] : [r.pick(flags)])); break;
      case 3: { // an option given twice
        const opts = args.map((a, i) => (a.startsWith('--') && i + 1 < args.length ? i : -1)).filter((i) => i >= 0);
        if (opts.length) {
          const i = r.pick(opts);
          args.push(args[i], r.pick(values));
        }
        break;
      }
      case 4: { // --flag=value
        const i = args.findIndex((a, j) => a.startsWith('--') && j + 1 < args.length && !args[j + 1].startsWith('--'));
        if (i >= 0) args.splice(i, 2, `${args[i]}=${args[i + 1]}`);
        break;
      }
      default: args.splice(at, 0, r.pick(values)); // a stray positional
    }
  }
  return [command, ...args];
}

interface Outcome { readonly code: number | null; readonly signal: string | null; readonly stderr: string; readonly ms: number }

async function runCli(argv: string[]): Promise<Outcome> {
  const env = { TSFUSE_CACHE_DIR: path.join(tmp, 'cache') };
  const t0 = Date.now();
  const r = await tsfuse(argv, { cwd: work, env, timeoutMs: CASE_TIMEOUT_MS });
  const ms = Date.now() - t0;
  return { code: r.code, signal: r.code === null || ms >= CASE_TIMEOUT_MS ? 'timeout' : null, stderr: r.stderr, ms };
}

/** What is wrong with an outcome, or undefined. */
function problem(argv: string[], o: Outcome): string | undefined {
  if (o.signal) return o.ms >= CASE_TIMEOUT_MS ? `no answer in ${CASE_TIMEOUT_MS / 1000} s` : `killed by ${o.signal}`;
  if (/internal error/.test(o.stderr)) return 'internal error';
  if (/^\s+at .+:\d+:\d+\)?$/m.test(o.stderr)) return 'a stack trace';
  if (o.code === 0) return undefined;
  if (o.code !== 1) return `exit code ${o.code}`;
  // The error's line comes last, or before the source line and caret of an IR file's mistake.
  const lines = o.stderr.trimEnd().split('\n');
  const at = lines.findLastIndex((l) => l.startsWith(`tsfuse ${argv[0]}: `) && l.length > `tsfuse ${argv[0]}: `.length);
  const rest = lines.slice(at + 1);
  return at >= 0 && (rest.length === 0 || (rest.length === 2 && /^\s*\^/.test(rest[1]))) ? undefined : 'no one-line error last';
}

test('CLI argument vectors: success, or exit 1 with one line naming the problem; no internal error, stack or hang', async () => {
  const r = new Rng(SEED + 10);
  // Each command's first template as it is (it must succeed), then mutated vectors.
  const valid = Object.entries(templates).map(([command, ts]) => [command, ...ts[0]]);
  const cases = [...valid, ...Array.from({ length: 6 * SCALE }, () => vector(r))];
  const failures: string[] = [];
  let failed = 0;
  for (const [i, argv] of cases.entries()) {
    const o = await runCli(argv);
    const why = i < valid.length && o.code !== 0 ? 'a valid vector failed' : problem(argv, o);
    if (why) failures.push(`${why}: tsfuse ${argv.map((a) => JSON.stringify(a)).join(' ')}\n${o.stderr.trimEnd()}`);
    else if (o.code === 1) failed++;
  }
  assert.equal(failures, [], `${failures.length} of ${cases.length} cases:\n\n${failures.join('\n\n')}`);
  assert.ok(failed > 0, 'some mutated vectors are refused');
});

test.run();
