// The WebGPU queue's submissions: after the queue was waited on (the GPU may be idle) the next run is submitted in
// parts as it is encoded, 4 kernels, then 8, then 16 (or the rest), so that the GPU starts on the first kernels while the
// host encodes the others; a run later in the same batch is not split. Results against the reference interpreter
// (lavapipe without a GPU).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { namedOutputKey } from '../../runtime/device.ts';
import { openDevice } from '../../runtime/devices/open.ts';
import { ParamStore } from '../../runtime/params.ts';
import { mismatch } from '../backends/compare.ts';
import { Rng } from '../backends/rng.ts';
import { unavailable } from './fake-cuda/build.ts';

const [N, LAYERS] = [16, 20];
/** A chain of 20 projections: a kernel each. */
const chain = trace('chain', [{ name: 'x', dtype: DType.F32, shape: [2, N] }], (x) => {
  let h = x;
  for (let i = 0; i < LAYERS; i++) h = h.matmul(param(`w${i}`, DType.F32, [N, N]).transpose()).tanh();
  return { y: h };
});

test('after a read, a run of 20 kernels is submitted as 4, 8 and the last 8; a run right after it is not split', async () => {
  const device = await openDevice('webgpu', { timestamps: false }).catch((e) => unavailable(e) ?? Promise.reject(e));
  if (typeof device === 'string') return void console.log(`  webgpu: skipped (${device})`);
  try {
    const rng = new Rng(Date.now() % 1e9);
    const weights = new Map(Array.from({ length: LAYERS }, (_, i) => [`w${i}`, hostTensor(DType.F32, [N, N], Array.from({ length: N * N }, () => rng.normal() * 0.3))]));
    const module = compileModule({ graphs: [chain] });
    const program = await device.load(module, new ParamStore((n) => weights.get(n)!), { maxSizes: {} });
    try {
      assert.is(program.kernelCount('chain'), LAYERS);
      const x = hostTensor(DType.F32, [2, N], Array.from({ length: 2 * N }, () => rng.normal()));
      const [want] = interpret(chain, { inputs: { x }, param: (n) => weights.get(n)!, states: new Map() });
      const queue = program as unknown as { submissions: number };
      const key = namedOutputKey(program.graph('chain'), 'y');
      program.write('input:x', x);
      await program.read(key, DType.F32, [2, N]);
      const before = queue.submissions;
      program.run('chain', {});
      assert.is(queue.submissions - before, 3, 'the first run in parts of 4, 8 and the last 8 (its batch ends with it)');
      program.run('chain', {});
      assert.is(queue.submissions - before, 3, 'the second run, the next batch\'s first of two, not split');
      const got = await program.read(key, DType.F32, [2, N]);
      assert.is(queue.submissions - before, 4, 'the second run with the read');
      // Twice through the chain from the same input: the same result each time.
      const miss = mismatch(got, want, 2e-4);
      assert.is(miss, undefined, miss);
    } finally {
      program.destroy();
    }
  } finally {
    device.destroy();
  }
});

test.run();
