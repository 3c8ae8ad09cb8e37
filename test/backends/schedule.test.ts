// The scheduler as text: each kernel kind's IR in, its schedule out, on WebGPU with and without subgroups and on
// CUDA (golden text: what a renderer will print, decided before any renderer runs). Then reductions over other
// than the last axis: they must spread over at least 64 workgroups and match the reference interpreter on fresh
// random inputs, run as printed JavaScript and as WGSL on a WebGPU device (skipped without an adapter).
//
//   SEED=123 npm test -- schedule     reruns the numeric checks on one input seed

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { printCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { cpuCaps, cudaCaps, DeviceCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { interpret } from '../../backends/reference/interpreter.ts';
import { scheduleKernel, ScheduledKernel, workgroupCount } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { formatSchedules, writeKernels } from '../../compiler/cli-compile.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { trace } from '../../compiler/index.ts';
import { Tensor } from '../../compiler/tensor.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { parseGraph } from '../../ir/parser.ts';
import { openDevice, WebGpuUnavailableError } from '../../runtime/webgpu/device.ts';
import { mismatch } from './compare.ts';
import { runOnJs, runOnWebGpu } from './kernel-runner.ts';
import { Rng } from './rng.ts';

const devices: readonly DeviceCaps[] = [webgpuCaps({ subgroups: true }), webgpuCaps({ subgroups: false }), cudaCaps(90)];

/** Every kernel of the compiled graph, scheduled for each device, as text. */
function schedules(ir: string): string {
  const { kernels } = compileModule({ graphs: [parseGraph(ir)] }).graphs[0];
  return devices.map((d) => kernels.map((k) => formatSchedule(scheduleKernel(k, d))).join('')).join('');
}

const cases: Record<string, string> = {
  elementwise: `graph @silu_mul(%x: f32[4,8], %y: f32[4,8]) -> (f32[4,8]) {
  %0: f32[4,8] = silu %x
  %1: f32[4,8] = mul %0, %y
  return %1
}
`,
  'reduce over the last axis': `graph @softmax_rows(%x: f32[4,4096]) -> (f32[4,4096]) {
  %0: f32[4,4096] = softmax %x [axis=1]
  return %0
}
`,
  'reduce over the first axis': `graph @softmax_columns(%x: f32[4096,512]) -> (f32[4096,512]) {
  %0: f32[4096,512] = softmax %x [axis=0]
  return %0
}
`,
  'contraction with a norm prologue': `graph @norm_projection(%x: f32[1,2048]) -> (f32[1,512]) {
  param %w: bf16[512,2048]
  %0: f32[] = const [dtype=f32, value=2]
  %1: f32[1,2048] = pow %x, %0
  %2: f32[1,1] = mean %1 [axes=[1], keepdims=true]
  %3: f32[] = const [dtype=f32, value=0.00001]
  %4: f32[1,1] = add %2, %3
  %5: f32[1,1] = rsqrt %4
  %6: f32[1,2048] = mul %x, %5
  %7: bf16[2048,512] = permute %w [perm=[1,0]]
  %8: f32[1,512] = matmul %6, %7
  return %8
}
`,
  'narrow contraction': `graph @narrow_projection(%x: f32[1,2048]) -> (f32[1,64]) {
  param %w: bf16[64,2048]
  %0: bf16[2048,64] = permute %w [perm=[1,0]]
  %1: f32[1,64] = matmul %x, %0
  return %1
}
`,
  attention: `graph @decode_attention(%q: f32[4,1,64]) -> (f32[4,1,64]) {
  param %k: f32[4,64,128]
  param %v: f32[4,128,64]
  %0: f32[4,1,128] = matmul %q, %k
  %1: f32[] = const [dtype=f32, value=0.125]
  %2: f32[4,1,128] = mul %0, %1
  %3: f32[4,1,128] = softmax %2 [axis=2]
  %4: f32[4,1,64] = matmul %3, %v
  return %4
}
`,
  'state-write': `graph @cache_write(%x: f32[1,64], %pos: i32[]) -> (f32[1,64]) {
  state %cache: f32[16,64]
  %0: f32[16,64] = update_slice %cache, %x, %pos [axis=0]
  %1: f32[1,64] = neg %x
  state %cache <- %0
  return %1
}
`,
};

const golden: Record<string, string> = {
  elementwise: `kernel k0 (elementwise) on webgpu with subgroups: 4 rows, a workgroup of 256 threads each
  store b2 over i0<8: thread-per-element
kernel k0 (elementwise) on webgpu: 4 rows, a workgroup of 256 threads each
  store b2 over i0<8: thread-per-element
kernel k0 (elementwise) on cuda sm_90: 4 rows, a workgroup of 256 threads each (striding over rows past the grid)
  store b2 over i0<8: thread-per-element
  starts while the previous kernel finishes, then waits for its writes
`,
  'reduce over the last axis': `kernel k0 (reduce) on webgpu with subgroups: 4 rows, a workgroup of 256 threads each, subgroups
  coop acc2: workgroup | k1 max<4096 by workgroup, combine subgroup, unroll 4
  coop acc4: workgroup | k3 sum<4096 by workgroup, combine subgroup, unroll 4
  store b1 over i0<4096: thread-per-element
kernel k0 (reduce) on webgpu: 4 rows, a workgroup of 256 threads each
  coop acc2: workgroup | k1 max<4096 by workgroup, combine tree, unroll 4
  coop acc4: workgroup | k3 sum<4096 by workgroup, combine tree, unroll 4
  store b1 over i0<4096: thread-per-element
kernel k0 (reduce) on cuda sm_90: 4 rows, a workgroup of 256 threads each (striding over rows past the grid), subgroups
  coop acc2: workgroup | k1 max<4096 by workgroup, combine subgroup
  coop acc4: workgroup | k3 sum<4096 by workgroup, combine subgroup, vec16B(b0) x8 checked, 2 steps a lane unroll 2
  store b1 over i0<4096: thread-per-element
  starts while the previous kernel finishes, then waits for its writes
`,
  'reduce over the first axis': `kernel k0 (reduce) on webgpu with subgroups: 64 rows, a workgroup of 256 threads each
  let c0: uniform
  array arr2[8] over j3: sliced x32 | k4 max<4096 by slices, unroll 4
  array arr5[8] over j6: sliced x32 | k7 sum<4096 by slices, unroll 4
  store b1 over i1<32768: thread-per-element
kernel k0 (reduce) on webgpu: 64 rows, a workgroup of 256 threads each
  let c0: uniform
  array arr2[8] over j3: sliced x32 | k4 max<4096 by slices, unroll 4
  array arr5[8] over j6: sliced x32 | k7 sum<4096 by slices, unroll 4
  store b1 over i1<32768: thread-per-element
kernel k0 (reduce) on cuda sm_90: 64 rows, a workgroup of 256 threads each (striding over rows past the grid)
  let c0: uniform
  array arr2[8] over j3: sliced x32 | k4 max<4096 by slices, unroll 8
  array arr5[8] over j6: sliced x32 | k7 sum<4096 by slices, unroll 8
  store b1 over i1<32768: thread-per-element
  starts while the previous kernel finishes, then waits for its writes
`,
  'contraction with a norm prologue': `kernel k0 (contraction) on webgpu with subgroups: 64 rows, a workgroup of 256 threads each, subgroups
  arrays: arr1 as vec4
  coop acc4: workgroup | k3 sum<2048 by workgroup, combine subgroup, unroll 4
  array arr1[2048] over j2: thread-per-element, 8 each unrolled
  store b2 over i0<8: subgroup-per-element | k5 sum<2048 by subgroup, combine subgroup, vec16B(b1, arr1) x8 proved unroll 8
kernel k0 (contraction) on webgpu: 64 rows, a workgroup of 256 threads each
  coop acc4: workgroup | k3 sum<2048 by workgroup, combine tree, unroll 4
  array arr1[2048] over j2: thread-per-element, 8 each unrolled
  store b2 over i0<8: thread-per-element
kernel k0 (contraction) on cuda sm_90: 64 rows, a workgroup of 256 threads each (striding over rows past the grid), subgroups
  coop acc4: workgroup | k3 sum<2048 by workgroup, combine subgroup, vec16B(b0) x8 checked, 1 step a lane
  array arr1[2048] over j2: thread-per-element, 8 each in runs of 8, vec16B(b0)
  store b2 over i0<8: subgroup-per-element | k5 sum<2048 by subgroup, combine subgroup, vec16B(arr1, b1 once) x8 checked, 8 steps a lane unroll 4
  starts while the previous kernel finishes, then waits for its writes
`,
  'narrow contraction': `kernel k0 (contraction) on webgpu with subgroups: 32 rows, a workgroup of 256 threads each, subgroups
  store b2 over i0<2: split-subgroups between 2 | k1 sum<2048 by split-subgroups, combine subgroup, vec16B(b1, b0) x8 proved unroll 8
kernel k0 (contraction) on webgpu: 32 rows, a workgroup of 256 threads each
  store b2 over i0<2: thread-per-element
kernel k0 (contraction) on cuda sm_90: 32 rows, a workgroup of 256 threads each (striding over rows past the grid), subgroups
  store b2 over i0<2: split-subgroups between 2 | k1 sum<2048 by split-subgroups, combine subgroup, vec16B(b0, b1 once) x8 checked, 2 steps a lane unroll 2
  starts while the previous kernel finishes, then waits for its writes
`,
  attention: `kernel k0 (attention) on webgpu with subgroups: 4 rows, a workgroup of 256 threads each, subgroups
  array arr10[128] over j11: thread-per-element | k12 sum<64 by thread, vec16B(b0) x4 proved unroll 8
  coop acc14: workgroup | k13 max<128 by workgroup, combine subgroup, unroll 4
  coop acc16: workgroup | k15 sum<128 by workgroup, combine subgroup, unroll 4
  array arr8[128] over j9: thread-per-element
  array arr17[64] over j18: sliced x4 | k19 sum<128 by slices, unroll 4
  store b3 over i7<64: thread-per-element
kernel k0 (attention) on webgpu: 4 rows, a workgroup of 256 threads each
  array arr10[128] over j11: thread-per-element | k12 sum<64 by thread, vec16B(b0) x4 proved unroll 8
  coop acc14: workgroup | k13 max<128 by workgroup, combine tree, unroll 4
  coop acc16: workgroup | k15 sum<128 by workgroup, combine tree, unroll 4
  array arr8[128] over j9: thread-per-element
  array arr17[64] over j18: sliced x4 | k19 sum<128 by slices, unroll 4
  store b3 over i7<64: thread-per-element
kernel k0 (attention) on cuda sm_90: 4 rows, a workgroup of 256 threads each (striding over rows past the grid), subgroups
  array arr10[128] over j11: sliced x2 | k12 sum<64 by slices, unroll 8
  coop acc14: workgroup | k13 max<128 by workgroup, combine subgroup
  coop acc16: workgroup | k15 sum<128 by workgroup, combine subgroup, vec16B(arr10) x8 checked unroll 4
  array arr8[128] over j9: thread-per-element
  array arr17[64] over j18: sliced x4 | k19 sum<128 by slices, unroll 8
  store b3 over i7<64: thread-per-element
  starts while the previous kernel finishes, then waits for its writes
`,
  'state-write': `kernel k0 (state-write) on webgpu with subgroups: 1 row, a workgroup of 256 threads each
  store b2 over i0<64: thread-per-element
kernel k1 (elementwise) on webgpu with subgroups: 1 row, a workgroup of 256 threads each
  store b1 over i0<64: thread-per-element
kernel k0 (state-write) on webgpu: 1 row, a workgroup of 256 threads each
  store b2 over i0<64: thread-per-element
kernel k1 (elementwise) on webgpu: 1 row, a workgroup of 256 threads each
  store b1 over i0<64: thread-per-element
kernel k0 (state-write) on cuda sm_90: 1 row, a workgroup of 256 threads each (striding over rows past the grid)
  store b2 over i0<64: thread-per-element
  starts while the previous kernel finishes, then waits for its writes
kernel k1 (elementwise) on cuda sm_90: 1 row, a workgroup of 256 threads each (striding over rows past the grid)
  store b1 over i0<64: thread-per-element
  starts while the previous kernel finishes, then waits for its writes
`,
};

for (const [kind, ir] of Object.entries(cases)) {
  test(`schedule of ${kind} kernels on ${devices.map((d) => d.name).join(', ')}`, () => {
    assert.fixture(schedules(ir), golden[kind]);
  });
}

test('the CPU schedule runs every statement serially, row after row', () => {
  const { kernels } = compileModule({ graphs: [parseGraph(cases['contraction with a norm prologue'])] }).graphs[0];
  assert.fixture(formatSchedule(scheduleKernel(kernels[0], cpuCaps)), [
    'kernel k0 (contraction) on cpu: 64 rows, one after another',
    '  coop acc4: serial',
    '  array arr1[2048] over j2: serial',
    '  store b2 over i0<8: serial',
    '',
  ].join('\n'));
});

test('renderers print what the schedule says: a store moved from subgroups to threads loses its subgroup code', () => {
  const { kernels } = compileModule({ graphs: [parseGraph(cases['narrow contraction'])] }).graphs[0];
  for (const [caps, print, subgroupCode] of [
    [webgpuCaps({ subgroups: true }), (s: ScheduledKernel) => printWgsl(s).code, 'subgroupAdd('],
    [cudaCaps(90), (s: ScheduledKernel) => printCudaFunction(s).code, 'tf_warp_sum('],
  ] as const) {
    const scheduled = scheduleKernel(kernels[0], caps);
    assert.match(print(scheduled), subgroupCode);
    const threads: ScheduledKernel = { ...scheduled, subgroups: false, stmts: scheduled.stmts.map(() => ({ mapping: { kind: 'thread-per-element' }, reductions: new Map() })) };
    assert.not.match(print(threads), subgroupCode, `${caps.name}: the printer kept a subgroup mapping the schedule dropped`);
  }
});

test('workgroups per launch: WebGPU continues past 65535 along y, CUDA blocks stride over the rows', () => {
  const { kernels } = compileModule({ graphs: [parseGraph(cases.elementwise)] }).graphs[0];
  assert.equal(workgroupCount(scheduleKernel(kernels[0], webgpuCaps({ subgroups: false })).grid, 200000), [65535, 4]);
  assert.equal(workgroupCount(scheduleKernel(kernels[0], cudaCaps()).grid, 200000), [200000, 1]);
  assert.equal(workgroupCount(scheduleKernel(kernels[0], cpuCaps).grid, 200000), [1, 1]);
});

test('--dump-kernels writes each kernel next to its schedule; --dump-schedule prints the schedules', () => {
  const { kernels } = compileModule({ graphs: [parseGraph(cases['narrow contraction'])] }).graphs[0];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsfuse-schedule-'));
  try {
    writeKernels(dir, 'webgpu', [{ name: 'g', kernels }]);
    assert.equal(fs.readdirSync(dir).sort(), ['g.k0.schedule', 'g.k0.wgsl']);
    const text = formatSchedule(scheduleKernel(kernels[0], webgpuCaps({ subgroups: true })));
    assert.is(fs.readFileSync(path.join(dir, 'g.k0.schedule'), 'utf8'), text);
    assert.match(fs.readFileSync(path.join(dir, 'g.k0.wgsl'), 'utf8'), 'subgroupAdd(');
    assert.is(formatSchedules('webgpu', [{ name: 'g', kernels }]), `# graph @g\n${text}`);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

// ---- reductions over other than the last axis: parallel, and right ----

const seed = Number(process.env.SEED ?? Math.floor(Math.random() * 1e9));
/** GPU math is not correctly rounded and sums in f32 in another order: a looser tolerance than the CPU's. */
const RTOL = { cpu: 1e-4, gpu: 2e-4 };
/**
 * Compared relatively (a near-zero absolute tolerance): softmax over 4096 rows gives values near 1/4096, and sums
 * run over positive inputs, so that no result is a cancellation that f32 summation order could swing.
 */
const ATOL = 1e-9;

interface Case {
  readonly shape: number[];
  readonly fn: (x: Tensor) => Tensor;
  /** Input values: positive ones keep sums away from cancellation; `ties` draws from a few levels, so columns have many equal maxima. */
  readonly data: 'positive' | 'normal' | 'ties';
  /** Workgroups at least (on WebGPU and CUDA). */
  readonly rows: number;
}

const axisCases: Record<string, Case> = {
  'sum over axis 0 of [4096, 512]': { shape: [4096, 512], fn: (x) => x.sum(0), data: 'positive', rows: 64 },
  'mean over axis 0 of [4096, 512], kept': { shape: [4096, 512], fn: (x) => x.mean(0, { keepdims: true }), data: 'positive', rows: 64 },
  'max over axis 0 of [4096, 512]': { shape: [4096, 512], fn: (x) => x.max(0), data: 'normal', rows: 64 },
  'argmax over axis 0 of [4096, 512]': { shape: [4096, 512], fn: (x) => x.argmax(0), data: 'normal', rows: 64 },
  'argmax over axis 0 of [4096, 512], with ties (the first index wins)': { shape: [4096, 512], fn: (x) => x.argmax(0), data: 'ties', rows: 64 },
  'softmax over axis 0 of [4096, 512]': { shape: [4096, 512], fn: (x) => x.softmax(0), data: 'normal', rows: 64 },
  'mean over the middle axis of [16, 256, 512]': { shape: [16, 256, 512], fn: (x) => x.mean(1), data: 'positive', rows: 1024 },
  'max over the middle axis of [16, 256, 512], with ties': { shape: [16, 256, 512], fn: (x) => x.max(1), data: 'ties', rows: 1024 },
  'sum over 8 chunks of [8, 4, 8, 1, 64] (flash-decoding combination)': { shape: [8, 4, 8, 1, 64], fn: (x) => x.sum(2), data: 'positive', rows: 64 },
};

function input(c: Case, rng: Rng): HostTensor {
  const n = c.shape.reduce((a, b) => a * b, 1);
  const draw = { positive: () => 0.5 + rng.next(), normal: () => rng.normal(), ties: () => rng.int(-3, 3) / 2 }[c.data];
  return hostTensor(DType.F32, c.shape, Array.from({ length: n }, draw));
}

function compiled(name: string, c: Case): { graph: Graph; kernels: readonly KernelIR[] } {
  const graph = trace(name.replace(/[^a-z0-9]+/gi, '_'), [{ name: 'x', dtype: DType.F32, shape: c.shape }], c.fn);
  return { graph, kernels: compileModule({ graphs: [graph] }).graphs[0].kernels };
}

test('reductions over other than the last axis run on many workgroups', () => {
  for (const [name, c] of Object.entries(axisCases)) {
    const { kernels } = compiled(name, c);
    for (const d of [webgpuCaps({ subgroups: true }), cudaCaps()]) {
      for (const k of kernels) {
        const rows = evalSize(scheduleKernel(k, d).grid.rows, {});
        assert.ok(rows >= c.rows, `${name} on ${d.name}: kernel ${k.name} runs on ${rows} workgroups, want at least ${c.rows}`);
      }
    }
  }
});

test(`reductions over other than the last axis match the reference, as printed JavaScript (seed ${seed})`, () => {
  const rng = new Rng(seed);
  for (const [name, c] of Object.entries(axisCases)) {
    const { graph, kernels } = compiled(name, c);
    const x = input(c, rng);
    const [want] = interpret(graph, { inputs: { x }, param: () => { throw new Error('no params'); }, states: new Map() });
    const [got] = runOnJs(graph, kernels, cpuCaps, { x });
    const bad = mismatch(got, want, RTOL.cpu, ATOL);
    assert.ok(!bad, `${name} (SEED=${seed}): ${bad}`);
  }
});

let gpu: GPUDevice | undefined | null;
async function webgpu(): Promise<GPUDevice | null> {
  if (gpu === undefined) {
    try {
      gpu = await openDevice();
    } catch (e) {
      if (!(e instanceof WebGpuUnavailableError)) throw e;
      gpu = null;
    }
  }
  return gpu;
}

test(`reductions over other than the last axis match the reference as WGSL on WebGPU, with and without subgroups (seed ${seed}; skipped without an adapter)`, async () => {
  const device = await webgpu();
  if (!device) {
    console.log('  schedule.test: no WebGPU adapter, WGSL numerics skipped');
    return;
  }
  const rng = new Rng(seed + 1);
  const variants = [webgpuCaps({ subgroups: false }), ...(device.features.has('subgroups') ? [webgpuCaps({ subgroups: true })] : [])];
  for (const [name, c] of Object.entries(axisCases)) {
    const { graph, kernels } = compiled(name, c);
    const x = input(c, rng);
    const [want] = interpret(graph, { inputs: { x }, param: () => { throw new Error('no params'); }, states: new Map() });
    for (const caps of variants) {
      const [got] = await runOnWebGpu(device, caps, graph, kernels, { x });
      const bad = mismatch(got, want, RTOL.gpu, ATOL);
      assert.ok(!bad, `${name} on ${caps.name} (SEED=${seed}): ${bad}`);
    }
  }
});

test.after(() => gpu?.destroy());
test.run();
