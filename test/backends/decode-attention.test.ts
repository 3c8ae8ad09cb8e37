// Decode attention (one query row) over a cache of 160 positions and of 1,034 (split into 11 chunks of 94), at
// positions at the start, inside and at the end of the cache, with random values past the position (as an earlier,
// longer sequence leaves there):
// - CUDA and the CPU run the loops over the keys only to the causal bound (backends/causal-bound.ts), and skip the
//   scores the mask hides; what lies past the bound must not change the result.
// - In the chunked form, a row-local array whose elements are each a reduction shared by a few threads ("sliced")
//   has a value after the reduction that reads the element's index: the threads combining the slices must know the
//   index too (the CUDA and WGSL printers once left it undefined, and such a cache length did not compile).
// Every device against the reference interpreter, fresh random inputs, f32 tolerance 1e-5 relative.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, trace, where } from '../../compiler/index.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { cudaCaps, DeviceCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { DType } from '../../ir/dtype.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const [H, D] = [4, 32];
const seed = Number(process.env.MASKED_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const randoms = (n: number) => Array.from({ length: n }, () => rng.normal());

function attentionOver(T: number) {
  const graph = trace('masked', [
    { name: 'q', dtype: DType.F32, shape: [H, 1, D] },
    { name: 'k', dtype: DType.F32, shape: [H, D, T] },
    { name: 'v', dtype: DType.F32, shape: [H, T, D] },
    { name: 'pos', dtype: DType.I32, shape: [] },
  ], (q, k, v, pos) => {
    const scores = where(arange(T).reshape(1, -1).le(pos.reshape(1, 1)), q.matmul(k).mul(0.125), -Infinity);
    return { y: scores.softmax(-1).matmul(v) };
  });
  const inputs = { q: randoms(H * D), k: randoms(H * D * T), v: randoms(H * T * D) };
  return { T, graph, compiled: compileModule({ graphs: [graph] }), reference: { graphs: [{ graph, kernels: [] }] }, inputs, positions: [0, 100, T - 1] };
}
const cases = [attentionOver(160), attentionOver(1034)];
type Case = (typeof cases)[number];

async function outputs(device: Device, c: Case, lowered: Case['compiled'] | Case['reference']): Promise<number[][]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  try {
    program.write('input:q', hostTensor(DType.F32, [H, 1, D], c.inputs.q));
    program.write('input:k', hostTensor(DType.F32, [H, D, c.T], c.inputs.k));
    program.write('input:v', hostTensor(DType.F32, [H, c.T, D], c.inputs.v));
    const out: number[][] = [];
    for (const pos of c.positions) {
      program.write('input:pos', hostTensor(DType.I32, [], [pos]));
      program.run('masked', {});
      out.push([...(await program.read(namedOutputKey(program.graph('masked'), 'y'), DType.F32, [H, 1, D])).data]);
    }
    return out;
  } finally {
    program.destroy();
  }
}

const shape = suite('decode attention schedules');
shape('loops over the keys run to the causal bound on CUDA and the CPU, not on WebGPU', () => {
  for (const c of cases) {
    const text = (device: DeviceCaps) => c.compiled.graphs[0].kernels.map((k) => formatSchedule(scheduleKernel(k, device))).join('');
    assert.match(text(cudaCaps(90)), 'max<max(min(', `${c.T}: a bounded max`);
    assert.match(text(cudaCaps(90)), 'sum<max(min(', `${c.T}: bounded sums`);
    assert.not.match(text(webgpuCaps({ subgroups: true })), 'max(min(', `${c.T}: WebGPU runs the whole cache`);
  }
});
shape('split into 11 chunks of 94, the scores are arrays of few long sums, sliced over threads', () => {
  for (const device of [cudaCaps(90), webgpuCaps({ subgroups: true })]) {
    const text = cases[1].compiled.graphs[0].kernels.map((k) => formatSchedule(scheduleKernel(k, device))).join('');
    assert.match(text, /array arr\d+\[94\] over j\d+: sliced x\d+/, text);
  }
});
shape.run();

for (const kind of kernelDevices) {
  const s = suite(`decode attention on ${kind}`);
  for (const c of cases) {
    let expected: number[][] | undefined;
    s(`${c.T} positions, at ${c.positions.join(', ')}: as the reference interpreter`, async () => {
      expected ??= await onDevice('reference', (ref) => outputs(ref, c, c.reference));
      await onDevice(kind, async (device) => {
        const got = await outputs(device, c, c.compiled);
        c.positions.forEach((pos, i) => {
          const err = relativeError(got[i], expected![i]);
          assert.ok(err < 1e-5, `${c.T} positions, at ${pos}: relative error ${err} (MASKED_SEED=${seed})`);
        });
      });
    });
  }
  s.run();
}
