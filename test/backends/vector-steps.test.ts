// A sum read 16 bytes at a time (a decode projection's weight row) whose range gives every lane the same count of
// steps: the scheduler says so ("8 steps a lane", VectorPlan.steps) and CUDA loops that constant count, with no
// bound to check, so that a lane's loads issue together; a range that does not divide among the lanes keeps the
// strided loop. Both forms against the reference interpreter on every device (CUDA: the GPU, or the CPU fake),
// fresh random inputs, f32 sums of bf16 weights: 1e-5 relative.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { trace } from '../../compiler/index.ts';
import { cudaCaps } from '../../backends/device-caps.ts';
import { renderCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { DType } from '../../ir/dtype.ts';
import { roundBf16 } from '../../ir/half.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const seed = Number(process.env.STEPS_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);

/**
 * y = x · wᵀ for one row x of `depth` and `outputs` rows of bf16 weights, x first normalised (RMS) if `norm`, then
 * scaled by a bf16 gain if `gain`; a residual row r added to the result if `residual`.
 */
function matvec(depth: number, outputs: number, norm: boolean, gain = false, residual = false) {
  const graph = trace('decode', [
    { name: 'x', dtype: DType.F32, shape: [1, depth] },
    { name: 'w', dtype: DType.BF16, shape: [outputs, depth] },
    { name: 'g', dtype: DType.BF16, shape: [depth] },
    { name: 'r', dtype: DType.F32, shape: [1, outputs] },
  ], (x, w, g, r) => {
    const normed = norm ? x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt()) : x;
    const left = gain ? normed.mul(g.cast(DType.F32)) : normed;
    const y = left.matmul(w.cast(DType.F32).transpose());
    return { y: residual ? y.add(r) : y };
  });
  const inputs = {
    x: Array.from({ length: depth }, () => rng.normal()),
    w: Array.from({ length: outputs * depth }, () => roundBf16(rng.normal())),
    g: Array.from({ length: depth }, () => roundBf16(1 + 0.5 * rng.normal())),
    r: Array.from({ length: outputs }, () => 8 * rng.normal()),
  };
  return { depth, outputs, norm, gain, residual, graph, compiled: compileModule({ graphs: [graph] }), reference: { graphs: [{ graph, kernels: [] }] }, inputs };
}
// 2,048 deep: 256 runs of 8. Normalised first, 8 outputs a row, one to a warp: 8 steps for each of its 32 lanes
// (and the norm's sum 1 step for each of 256 threads); plain, 2 outputs a row, 4 warps each: 2 steps a lane.
// 2,056 deep: 257 runs, which no lane count divides. Normalised and scaled by a gain: the normalised row's array
// reads the row and the gain in runs of 8 neighbours a thread, 16 bytes a load. Plain with a residual added, as
// the output and down projections are.
const CASES = [matvec(2048, 64, true), matvec(2048, 64, false), matvec(2056, 64, true), matvec(2048, 64, true, true), matvec(2048, 64, false, false, true)];
type Case = (typeof CASES)[number];
const contraction = (c: Case) => c.compiled.graphs[0].kernels.find((k) => k.kind === 'contraction')!;

const form = suite('vector steps: the schedule and the CUDA loop');
form('2,048 deep: each lane takes a constant count of steps, looped with no bound, at most 4 in flight; 2,056 deep strides', () => {
  const [normed, plain, odd] = CASES.map(contraction);
  const normedSchedule = formatSchedule(scheduleKernel(normed, cudaCaps(90)));
  assert.match(normedSchedule, 'k3 sum<2048 by workgroup, combine subgroup, vec16B(b0) x8 checked, 1 step a lane');
  assert.match(normedSchedule, 'subgroup-per-element | k5 sum<2048 by subgroup, combine subgroup, vec16B(arr1, b1) x8 checked, 8 steps a lane unroll 4');
  assert.match(formatSchedule(scheduleKernel(plain, cudaCaps(90))), 'split-subgroups between 2 | k1 sum<2048 by split-subgroups, combine subgroup, vec16B(b0, b1) x8 checked, 2 steps a lane unroll 2');
  // Under a register cap of 128 (the megakernel at 2 blocks a multiprocessor) a lane's 8 steps are in flight at once;
  // under 64 (4 blocks) 4 at a time, as launched.
  for (const [registersPerThread, unroll] of [[128, 8], [64, 4]]) {
    assert.match(formatSchedule(scheduleKernel(normed, cudaCaps(90), { registersPerThread })), `vec16B(arr1, b1) x8 checked, 8 steps a lane unroll ${unroll}`);
  }
  const loops = (code: string) => [...code.matchAll(/#pragma unroll (\d+)\n\s*for \(int (\w+)_s = 0; \2_s < (\d+); \2_s\+\+\) \{\n\s*const int \2_kv = (.+) \+ \2_s \* (\w+);/g)]
    .map((m) => ({ unroll: m[1], acc: m[2], steps: m[3], lane: m[4], stride: m[5] }));
  const normedCode = renderCudaFunction(normed).code;
  const [norm, dot] = loops(normedCode);
  assert.equal([norm.unroll, norm.steps, norm.lane, norm.stride], ['1', '1', 'tf_tid', 'TF_BLOCK'], normedCode);
  assert.equal([dot.unroll, dot.steps, dot.lane, dot.stride], ['4', '8', 'tf_lane', '32'], normedCode);
  const plainCode = renderCudaFunction(plain).code;
  const [split] = loops(plainCode);
  assert.equal([split.unroll, split.steps, split.lane, split.stride], ['2', '2', '((tf_warp / 2) * 32 + tf_lane)', '128'], plainCode);
  for (const { acc } of [norm, dot]) assert.not.match(normedCode, `${acc}_kv < `, 'no bound to check in the vector loop');
  assert.not.match(formatSchedule(scheduleKernel(odd, cudaCaps(90))), 'a lane');
  const oddCode = renderCudaFunction(odd).code;
  assert.is(loops(oddCode).length, 0, oddCode);
  assert.match(oddCode, /for \(int (\w+)_kv = tf_lane; \1_kv < \1_nv; \1_kv \+= 32\)/);
});
form('a normalised row scaled by a gain: its array in runs of 8 neighbours a thread, 16-byte loads and stores', () => {
  const scaled = contraction(CASES[3]);
  const schedule = formatSchedule(scheduleKernel(scaled, cudaCaps(90)));
  assert.match(schedule, /array arr\d+\[2048\] over \w+: thread-per-element, 8 each in runs of 8, vec16B\(b0, b1\)/, schedule);
  const code = renderCudaFunction(scaled).code;
  assert.match(code, /tf_ld8_f32\(b0 \+ 0 \+ arr\d+_at, arr\d+_r0\);/, code);
  assert.match(code, /tf_ld8_bf16\(b1 \+ 0 \+ arr\d+_at, arr\d+_r1\);/, code);
  assert.match(code, /tf_st8_smem\(arr\d+ \+ arr\d+_at, arr\d+_run\);/, code);
  // 2,056 deep gives no thread the same count: the strided loop, as before.
  assert.not.match(formatSchedule(scheduleKernel(contraction(CASES[2]), cudaCaps(90))), 'runs of 8');
});
form('a narrow projection\'s residual is loaded before its sums, the result after them reading no memory', () => {
  const code = renderCudaFunction(contraction(CASES[4])).code;
  assert.match(formatSchedule(scheduleKernel(contraction(CASES[4]), cudaCaps(90))), 'split-subgroups between 2');
  const residual = contraction(CASES[4]).buffers.findIndex((b) => b.binding.kind === 'input' && b.binding.name === 'r');
  const load = code.search(new RegExp(`= b${residual}\\[`));
  assert.ok(load > 0 && load < code.indexOf('#pragma unroll'), `the residual b${residual} read before the sums' loop:\n${code}`);
  const result = code.slice(code.indexOf('if (tf_warp < 2 && tf_lane == 0) {'));
  const reads = result.slice(0, result.indexOf('\n      }')).match(/\bb\d+\[[^\]]*\](?! =)/g);
  assert.is(reads, null, `the result reads no buffer:\n${result}`);
});
form.run();

async function output(device: Device, c: Case, lowered: Case['compiled'] | Case['reference']): Promise<number[]> {
  const program = await device.load(lowered, new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
  try {
    program.write('input:x', hostTensor(DType.F32, [1, c.depth], c.inputs.x));
    program.write('input:w', hostTensor(DType.BF16, [c.outputs, c.depth], c.inputs.w));
    program.write('input:g', hostTensor(DType.BF16, [c.depth], c.inputs.g));
    program.write('input:r', hostTensor(DType.F32, [1, c.outputs], c.inputs.r));
    program.run('decode', {});
    return [...(await program.read(namedOutputKey(program.graph('decode'), 'y'), DType.F32, [1, c.outputs])).data];
  } finally {
    program.destroy();
  }
}

for (const c of CASES) {
  let expected: number[] | undefined;
  for (const kind of kernelDevices) {
    const what = `${c.depth} deep${c.norm ? ', normalised' : ''}${c.gain ? ', scaled by a gain' : ''}${c.residual ? ', a residual added' : ''}`;
    const s = suite(`vector steps, ${what}, on ${kind}`);
    s(`${c.outputs} outputs: as the reference interpreter`, async () => {
      expected ??= await onDevice('reference', (ref) => output(ref, c, c.reference));
      await onDevice(kind, async (device) => {
        const err = relativeError(await output(device, c, c.compiled), expected!);
        assert.ok(err < 1e-5, `relative error ${err} (STEPS_SEED=${seed})`);
      });
    });
    s.run();
  }
}
