// Decode attention (one query row) over a cache of 160 positions and of 1,034 (split into 11 chunks of 94), at
// positions at the start, on both sides of a chunk's end, inside and at the end of the cache, with random values
// past the position (as an earlier, longer sequence leaves there):
// - Every device runs the loops over the keys only to the causal bound (backends/causal-bound.ts); CUDA and the CPU
//   also skip the scores the mask hides, WebGPU computes them with 16-byte loads over the whole row. The devices
//   run with NaN keys and values past the position (a loop over the values running past the bound would sum 0 · NaN):
//   their outputs must match the reference's with finite values there. WebGPU runs with subgroups and without.
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
import { openWebGpu } from '../../runtime/devices/webgpu.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice, unavailable } from '../runtime/fake-cuda/build.ts';
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
  const positions = [0, 1, 93, 94, T >> 1, T - 2, T - 1].sort((a, b) => a - b);
  return { T, graph, compiled: compileModule({ graphs: [graph] }), reference: { graphs: [{ graph, kernels: [] }] }, inputs, positions };
}
const cases = [attentionOver(160), attentionOver(1034)];
type Case = (typeof cases)[number];

/**
 * The keys and values for position `pos`; with `nanPast`, NaN at every position past it: a loop over the values
 * that ran past the bound would sum 0 · NaN, and a key's NaN score must stay masked.
 */
function cache(c: Case, pos: number, nanPast: boolean) {
  const past = (t: number, x: number) => (nanPast && t > pos ? NaN : x);
  return { k: c.inputs.k.map((x, i) => past(i % c.T, x)), v: c.inputs.v.map((x, i) => past(Math.floor(i / D) % c.T, x)) };
}

/** The output at each of the case's positions. */
async function outputs(device: Device, c: Case, lowered: Case['compiled'] | Case['reference'], nanPast = false): Promise<number[][]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  try {
    program.write('input:q', hostTensor(DType.F32, [H, 1, D], c.inputs.q));
    const out: number[][] = [];
    for (const pos of c.positions) {
      const { k, v } = cache(c, pos, nanPast);
      program.write('input:k', hostTensor(DType.F32, [H, D, c.T], k));
      program.write('input:v', hostTensor(DType.F32, [H, c.T, D], v));
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
shape('loops over the keys run to the causal bound on every device; WebGPU keeps the scores\' wide loads', () => {
  for (const c of cases) {
    const text = (device: DeviceCaps) => c.compiled.graphs[0].kernels.map((k) => formatSchedule(scheduleKernel(k, device))).join('');
    for (const device of [cudaCaps(90), webgpuCaps({ subgroups: true }), webgpuCaps({ subgroups: false })]) {
      assert.match(text(device), 'max<max(min(', `${c.T} on ${device.name}: a bounded max`);
      assert.match(text(device), / sum<max\(min\(.* by slices/, `${c.T} on ${device.name}: a bounded sum over the values`);
    }
    assert.match(text(cudaCaps(90)), /sum<\(j\d+ < .*\? \d+ : 0\)/, `${c.T}: CUDA skips the masked scores`);
    const scores = /array arr\d+\[\d+\] over j\d+: thread-per-element \| k\d+ sum<\d+ by thread, vec16B/;
    assert.match(text(webgpuCaps({ subgroups: true })), scores, `${c.T}: WebGPU reads every score's keys 16 bytes at a time`);
  }
});
shape('split into 11 chunks of 94, the scores are arrays of few long sums, sliced over threads', () => {
  for (const device of [cudaCaps(90), webgpuCaps({ subgroups: true })]) {
    const text = cases[1].compiled.graphs[0].kernels.map((k) => formatSchedule(scheduleKernel(k, device))).join('');
    assert.match(text, /array arr\d+\[94\] over j\d+: sliced x\d+/, text);
  }
});
shape.run();

const expected = new Map<Case, Promise<number[][] | undefined>>();
/** The device's outputs against the reference interpreter's. */
async function check(device: Device, c: Case): Promise<void> {
  if (!expected.has(c)) expected.set(c, onDevice('reference', (ref) => outputs(ref, c, c.reference)));
  const want = (await expected.get(c))!;
  const got = await outputs(device, c, c.compiled, true);
  c.positions.forEach((pos, i) => {
    const err = relativeError(got[i], want[i]);
    assert.ok(err < 1e-5, `${c.T} positions, at ${pos}: relative error ${err} (MASKED_SEED=${seed})`);
  });
}

const title = (c: Case) => `${c.T} positions, at ${c.positions.join(', ')}: as the reference interpreter`;
for (const kind of kernelDevices) {
  const s = suite(`decode attention on ${kind}`);
  for (const c of cases) s(title(c), () => onDevice(kind, (device) => check(device, c)));
  s.run();
}

const noSubgroups = suite('decode attention on webgpu without subgroups');
for (const c of cases) {
  noSubgroups(title(c), async () => {
    const device = await openWebGpu({ subgroups: false }).catch((e) => unavailable(e) ?? Promise.reject(e));
    if (typeof device === 'string') return console.log(`  webgpu: skipped (${device})`);
    try {
      await check(device, c);
    } finally {
      device.destroy();
    }
  });
}
noSubgroups.run();
