// A row-local array whose elements are each a reduction shared by a few threads ("sliced": few elements, long
// sums) and whose value after the reduction reads the element's index: the masked scores of one query over a
// chunk of keys, as split attention makes them where the cache's length splits into short chunks (1,034 positions:
// 11 chunks of 94). The threads combining the slices must know the index too (the CUDA and WGSL printers once left
// it undefined there, and such a cache length did not compile). Every device against the reference interpreter,
// fresh random inputs, f32 tolerance 1e-5 relative.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, trace, where } from '../../compiler/index.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { DType } from '../../ir/dtype.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const [H, D, T] = [4, 32, 1034];
const graph = trace('masked', [
  { name: 'q', dtype: DType.F32, shape: [H, 1, D] },
  { name: 'k', dtype: DType.F32, shape: [H, D, T] },
  { name: 'v', dtype: DType.F32, shape: [H, T, D] },
  { name: 'pos', dtype: DType.I32, shape: [] },
], (q, k, v, pos) => {
  const scores = where(arange(T).reshape(1, -1).le(pos.reshape(1, 1)), q.matmul(k).mul(0.125), -Infinity);
  return { y: scores.softmax(-1).matmul(v) };
});
const compiled = compileModule({ graphs: [graph] });
const reference = { graphs: [{ graph, kernels: [] }] };

const seed = Number(process.env.MASKED_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const randoms = (n: number) => Array.from({ length: n }, () => rng.normal());
const inputs = { q: randoms(H * D), k: randoms(H * D * T), v: randoms(H * T * D) };
const POSITIONS = [0, 500, T - 1];

async function outputs(device: Device, lowered: typeof compiled | typeof reference): Promise<number[][]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  try {
    program.write('input:q', hostTensor(DType.F32, [H, 1, D], inputs.q));
    program.write('input:k', hostTensor(DType.F32, [H, D, T], inputs.k));
    program.write('input:v', hostTensor(DType.F32, [H, T, D], inputs.v));
    const out: number[][] = [];
    for (const pos of POSITIONS) {
      program.write('input:pos', hostTensor(DType.I32, [], [pos]));
      program.run('masked', {});
      out.push([...(await program.read(namedOutputKey(program.graph('masked'), 'y'), DType.F32, [H, 1, D])).data]);
    }
    return out;
  } finally {
    program.destroy();
  }
}

const shape = suite('masked sliced arrays');
shape('the scores are an array of few long sums, sliced over threads on CUDA and WebGPU', () => {
  const kernels = compiled.graphs[0].kernels;
  for (const device of [cudaCaps(90), webgpuCaps({ subgroups: true })]) {
    const text = kernels.map((k) => formatSchedule(scheduleKernel(k, device))).join('');
    assert.match(text, /array arr\d+\[94\] over j\d+: sliced x\d+/, text);
  }
});
shape.run();

let expected: number[][] | undefined;
for (const kind of kernelDevices) {
  const s = suite(`masked sliced arrays on ${kind}`);
  s(`positions ${POSITIONS.join(', ')} match the reference interpreter`, async () => {
    expected ??= await onDevice('reference', (ref) => outputs(ref, reference));
    await onDevice(kind, async (device) => {
      const got = await outputs(device, compiled);
      POSITIONS.forEach((pos, i) => {
        const err = relativeError(got[i], expected![i]);
        assert.ok(err < 1e-5, `position ${pos}: relative error ${err} (MASKED_SEED=${seed})`);
      });
    });
  });
  s.run();
}
