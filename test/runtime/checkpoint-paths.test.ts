// Paths a checkpoint names stay inside its folder, and what is not a regular file is refused by name before it is
// opened: a shard name such as `../x.safetensors` or `/etc/passwd` in model.safetensors.index.json, a FIFO (which
// would block forever) or a directory as model.safetensors, config.json or a shard.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { ConfigError, readLlamaConfig } from '../../runtime/config.ts';
import { readCheckpoint, WeightsError, writeSafetensors } from '../../runtime/safetensors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-paths-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function folder(): string {
  const dir = path.join(tmp, `ckpt${n++}`);
  fs.mkdirSync(dir);
  return dir;
}

function index(dir: string, weightMap: Record<string, string>): void {
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
}

function refuses(fn: () => unknown, kind: typeof WeightsError | typeof ConfigError, ...parts: string[]): string {
  try {
    fn();
  } catch (e) {
    assert.instance(e, kind);
    const msg = (e as Error).message;
    for (const p of parts) assert.ok(msg.includes(p), `should mention ${JSON.stringify(p)}: ${msg}`);
    return msg;
  }
  throw new Error('expected an error');
}

const mkfifo = (p: string) => execFileSync('mkfifo', [p]);

test('shard names outside the checkpoint folder are refused, and never opened', () => {
  const dir = folder();
  // A real safetensors file just outside the folder: it would load if the name were followed.
  writeSafetensors(path.join(tmp, 'outside.safetensors'), { w: { dtype: DType.F32, shape: [1], data: [1] } });
  index(dir, { w: '../outside.safetensors' });
  refuses(() => readCheckpoint(dir), WeightsError, "tensor 'w'", '"../outside.safetensors"', 'outside the checkpoint folder');
  index(dir, { w: '/etc/passwd' });
  const msg = refuses(() => readCheckpoint(dir), WeightsError, '"/etc/passwd"', 'outside the checkpoint folder');
  assert.not.match(msg, /root:/);
  index(dir, { w: 'sub/../../outside.safetensors' });
  refuses(() => readCheckpoint(dir), WeightsError, 'outside the checkpoint folder');
  // Inside, even in a subfolder, is fine.
  fs.mkdirSync(path.join(dir, 'sub'));
  writeSafetensors(path.join(dir, 'sub', 'a.safetensors'), { w: { dtype: DType.F32, shape: [1], data: [2] } });
  index(dir, { w: 'sub/a.safetensors' });
  assert.equal([...readCheckpoint(dir).tensor('w').data], [2]);
});

test('a FIFO, a directory or a missing file as weights or config is refused by name, at once', () => {
  const fifo = folder();
  mkfifo(path.join(fifo, 'model.safetensors'));
  refuses(() => readCheckpoint(fifo), WeightsError, path.join(fifo, 'model.safetensors'), 'a FIFO (named pipe)', 'expected a safetensors file');
  const dirAsFile = folder();
  fs.mkdirSync(path.join(dirAsFile, 'model.safetensors'));
  refuses(() => readCheckpoint(dirAsFile), WeightsError, 'is a directory', 'expected a safetensors file');
  const shardFifo = folder();
  index(shardFifo, { w: 'a.safetensors' });
  mkfifo(path.join(shardFifo, 'a.safetensors'));
  refuses(() => readCheckpoint(shardFifo), WeightsError, 'a.safetensors is a FIFO', 'shard');
  const missingShard = folder();
  index(missingShard, { w: 'gone.safetensors' });
  refuses(() => readCheckpoint(missingShard), WeightsError, 'gone.safetensors: cannot open: no such file');
  const config = folder();
  mkfifo(path.join(config, 'config.json'));
  refuses(() => readLlamaConfig(config), ConfigError, 'config.json is a FIFO');
  refuses(() => readLlamaConfig('/dev/null'), ConfigError, '/dev/null is a device');
});

test.run();
