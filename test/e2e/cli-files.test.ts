// File-system errors of the command line's writes (--dump-kernels; --out of a model script is in
// compiler/script-errors.test.ts) and reads (IR files, --inputs @FILE, --weights): each is one line naming the option,
// the path and what was expected there, exit code 1, never `internal error`; a FIFO or a device given as a file is
// refused before it is read (it would block or stream forever). Permission errors need a user other than root to provoke; as root only their wording is checked. The
// command runs in this process (test/tsfuse-cli.ts), except where a regression would block or read forever: there it
// is a child process with a time limit.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeFileError } from '../../compiler/cli-files.ts';
import { type CliRun, spawnTsfuse, tsfuse } from '../tsfuse-cli.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-cli-files-'));
test.after(() => {
  fs.chmodSync(tmp, 0o700);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const file = path.join(tmp, 'a-file');
fs.writeFileSync(file, 'not a folder\n');
const ir = path.join(tmp, 'g.ir');
fs.writeFileSync(ir, 'graph @g(%x: f32[2]) -> (f32[2]) {\n  %0: f32[2] = add %x, %x\n  return %0\n}\n');
const full = fs.existsSync('/dev/full');

const env = { TSFUSE_CACHE_DIR: path.join(tmp, 'cache') };

/** The command fails with exactly this one line. */
function failedWith(r: CliRun, args: string[], line: string): void {
  assert.is(r.code, 1, `tsfuse ${args.join(' ')}: ${r.stderr}`);
  assert.is(r.stderr, `${line}\n`);
}

const failsWith = async (args: string[], line: string) => failedWith(await tsfuse(args, { env }), args, line);

/** The same, as a child process stopped after a minute: reading a device or a FIFO would not end. */
const processFailsWith = (args: string[], line: string) => failedWith(spawnTsfuse(args, { env, timeoutMs: 60_000 }), args, line);

test('--dump-kernels onto a file, under a file, over a folder where a kernel goes, onto a full disk', async () => {
  const dump = (dir: string) => ['compile', '--config', 'llama-tiny', '--dump-kernels', dir];
  await failsWith(dump(file), `tsfuse compile: --dump-kernels ${file}: cannot write the kernels: ${file} is a file, expected a folder`);
  await failsWith(dump(path.join(file, 'sub')), `tsfuse compile: --dump-kernels ${file}/sub: cannot write the kernels: ${file} is a file, expected a folder`);
  const taken = path.join(tmp, 'taken');
  fs.mkdirSync(path.join(taken, 'prefill.k0.js'), { recursive: true });
  await failsWith(dump(taken), `tsfuse compile: --dump-kernels ${taken}: cannot write the kernels: ${taken}/prefill.k0.js is a folder, expected a file`);
  if (full) {
    const disk = path.join(tmp, 'full-disk');
    fs.mkdirSync(disk);
    fs.symlinkSync('/dev/full', path.join(disk, 'prefill.k0.js'));
    await failsWith(dump(disk), `tsfuse compile: --dump-kernels ${disk}: cannot write the kernels: ${disk}: no space left on the device`);
  }
});

test('a folder, a device or a FIFO given to read is refused by name, without reading it', async () => {
  await failsWith(['inspect', tmp], `tsfuse inspect: ${tmp} is a directory, expected an IR file`);
  processFailsWith(['inspect', '/dev/zero'], 'tsfuse inspect: /dev/zero is a device, expected an IR file');
  processFailsWith(['run', ir, '--inputs', '@/dev/zero'], 'tsfuse run: /dev/zero is a device, expected a JSON file of inputs');
  await failsWith(['run', ir, '--inputs', 'x=[1,2]', '--weights', tmp], `tsfuse run: ${tmp} is a directory, expected a safetensors file`);
  const fifo = path.join(tmp, 'fifo.ir');
  if (spawnSync('mkfifo', [fifo]).status === 0) processFailsWith(['inspect', fifo], `tsfuse inspect: ${fifo} is a FIFO (named pipe), expected an IR file`);
});

test('permission denied: provoked where the tests do not run as root, else its wording', async () => {
  if (process.getuid?.() !== 0) {
    const locked = path.join(tmp, 'locked');
    fs.mkdirSync(locked, { mode: 0o500 });
    await failsWith(['compile', '--config', 'llama-tiny', '--dump-kernels', path.join(locked, 'k')],
      `tsfuse compile: --dump-kernels ${locked}/k: cannot write the kernels: ${locked}/k: permission denied`);
  }
  const error = (code: string, syscall: string, p?: string) => Object.assign(new Error(code), { code, syscall, path: p });
  assert.is(describeFileError(error('EACCES', 'open', 'out/m.ts')), 'out/m.ts: permission denied');
  assert.is(describeFileError(error('EROFS', 'mkdir', '/ro/k')), '/ro/k: a read-only file system');
  assert.is(describeFileError(error('EEXIST', 'open', 'out/m.ts')), 'out/m.ts already exists');
  assert.is(describeFileError(error('ENOSPC', 'write'), 'out/m.ts'), 'out/m.ts: no space left on the device');
});

test.run();
