// The bench's --trace: a path it cannot write is refused before anything runs; the trace it writes is JSON that
// reads back as the slices of the profile it was given.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkTraceFile, writeTrace } from '../../examples/bench-cuda.ts';
import type { KernelTime } from '../../runtime/device.ts';
import type { ChromeTrace } from '../../runtime/trace.ts';

const kernel = (name: string, startUs: number, us: number): KernelTime =>
  ({ kernel: name, kind: 'contraction', startUs, us, bytes: 4000, fused: ['%0: f32[4] = mul %x, %x'], last: '%0: f32[4] = mul %x, %x' });

test('the bench writes the trace as JSON, and refuses a path it cannot write before running', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-trace-'));
  try {
    const file = path.join(dir, 'step.json');
    checkTraceFile(file);
    assert.not.ok(fs.existsSync(file), 'the check writes nothing');
    writeTrace(file, { device: 'd', queue: 'q', kernels: [kernel('k0', 0, 1), kernel('k1', 1.5, 2)], copyBandwidth: 8e9 }, { command: 'x' });
    const read = JSON.parse(fs.readFileSync(file, 'utf8')) as ChromeTrace;
    const slices = read.traceEvents.filter((e) => e.ph === 'X');
    assert.equal(slices.map((e) => [e.name, e.ts, e.dur, e.args!['% of copy bandwidth']]), [['k0 contraction', 0, 1, 50], ['k1 contraction', 1.5, 2, 25]]);
    assert.is(read.otherData.command, 'x');
    assert.throws(() => checkTraceFile(dir), /cannot write the trace: .* is a folder, expected a file/);
    assert.throws(() => checkTraceFile(path.join(file, 'x.json')), /step\.json is a file, expected a folder/);
    assert.throws(() => checkTraceFile(path.join(dir, 'no', 'x.json')), /no such file or folder/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
