// Every kind of fused kernel rendered as WGSL and run through Dawn (lavapipe without a GPU) against the reference
// interpreter: random graphs from the differential test's generator, and kernels of the Llama kinds at sizes that
// are not multiples of the workgroup size. Copies, dispatched in the compute pass, over several bindings.
//
//   SEED=12 npm test -- webgpu-vs     reruns one random graph

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { int } from '../../backends/kernel-ir.ts';
import { interpret } from '../../backends/reference/interpreter.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { arange, param, Tensor, trace, where } from '../../compiler/index.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { DType } from '../../ir/dtype.ts';
import { Graph } from '../../ir/graph.ts';
import { printGraph } from '../../ir/printer.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Device } from '../../runtime/device.ts';
import { openWebGpu } from '../../runtime/devices/webgpu.ts';
import { bindSizes, runOnce } from '../../runtime/executor.ts';
import { ParamStore } from '../../runtime/params.ts';
import { mismatch } from './compare.ts';
import { randomGraph, RandomCase } from './random-graph.ts';
import { Rng } from './rng.ts';

const seeds = process.env.SEED !== undefined ? process.env.SEED.split(',').map(Number) : [...Array(40).keys()];
/** GPU math (exp, sin, inverseSqrt...) is not correctly rounded: a looser f32 tolerance than the CPU's. */
const RTOL_GPU = 2e-4;

let device: Device | undefined;
const gpu = async () => (device ??= await openWebGpu());

/** Runs a case on WebGPU and on the reference; what went wrong, or undefined. */
async function check(c: RandomCase): Promise<string | undefined> {
  const g = c.graph;
  const param = (name: string) => c.params.get(name)!;
  const copy = () => new Map([...c.states].map(([name, t]) => [name, { ...t, data: t.data.slice() }]));
  const wantStates = copy();
  const want = [...interpret(g, { inputs: c.inputs, param, states: wantStates }), ...wantStates.values()];
  const compiled = compileModule({ graphs: [g] });
  const gotStates = copy();
  let outputs;
  try {
    const program = await (await gpu()).load(compiled, new ParamStore(param), { maxSizes: bindSizes(g, c.inputs) });
    try {
      outputs = await runOnce(program, g.name, c.inputs, gotStates);
    } finally {
      program.destroy();
    }
  } catch (e) {
    return (e as Error).stack;
  }
  const got = [...outputs, ...gotStates.values()];
  for (let i = 0; i < want.length; i++) {
    const bad = mismatch(got[i], want[i], RTOL_GPU);
    if (bad) return `${i < g.outputs.length ? `output ${i}` : 'state'}: ${bad}\n--- fused ---\n${printGraph(compiled.graphs[0].graph, { locations: false })}`;
  }
  return undefined;
}

test(`WGSL kernels match the reference on ${seeds.length} random graphs`, async () => {
  const failed: string[] = [];
  for (const seed of seeds) {
    const c = randomGraph(seed);
    const bad = await check(c);
    if (bad) failed.push(`seed ${seed} (SEED=${seed} npm test -- webgpu-vs): ${bad}\n--- source ---\n${printGraph(c.graph, { locations: false })}`);
  }
  assert.ok(failed.length === 0, `${failed.length} of ${seeds.length} seeds fail:\n${failed[0]}`);
});

/** Llama's kernel kinds at awkward sizes: rows and reductions that do not divide the workgroup of 256. */
const kinds: Record<string, { shape: number[]; fn: (x: Tensor) => Tensor | Tensor[] }> = {
  'rmsnorm over 777': { shape: [3, 777], fn: (x) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).mul(param('w', DType.BF16, [777]).cast(DType.F32)) },
  // 4,104 outputs of the same norm: 513 rows of 8, two a workgroup sharing the norm (Grid.sharedStatements), the
  // last workgroup one row.
  'norm + bf16 projection 300 → 4104': { shape: [1, 300], fn: (x) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).matmul(param('p', DType.BF16, [4104, 300]).transpose()) },
  'norm + bf16 projection 300 → 37': { shape: [1, 300], fn: (x) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).matmul(param('p', DType.BF16, [37, 300]).transpose()) },
  'f32 projection + residual 520 → 520': { shape: [2, 520], fn: (x) => x.add(x.matmul(param('o', DType.F32, [520, 520]).transpose())) },
  'swiglu 264 → 300': { shape: [1, 264], fn: (x) => x.matmul(param('g', DType.BF16, [300, 264]).transpose()).silu().mul(x.matmul(param('u', DType.BF16, [300, 264]).transpose())) },
  'softmax over 513': { shape: [4, 513], fn: (x) => x.softmax(-1) },
  'argmax over 20000 (two-level)': { shape: [1, 20000], fn: (x) => x.argmax(-1) },
  'decode attention over a 2048-position cache (split in chunks)': {
    shape: [1, 32],
    fn: (x) => {
      const q = x.reshape(4, 1, 8);
      const keys = param('keys', DType.F32, [4, 8, 2048]);
      const values = param('values', DType.F32, [4, 2048, 8]);
      // Positions past 1500 are masked, so whole chunks are empty: their statistics must not turn into NaN.
      return where(arange(2048).reshape(1, -1).le(1500), q.matmul(keys).mul(0.3), -Infinity).softmax(-1).matmul(values);
    },
  },
  'causal attention over 300 keys': {
    shape: [300, 16],
    fn: (x) => {
      const [q, k, v] = ['q', 'k', 'v'].map((w) => x.matmul(param(w, DType.F32, [8, 16]).transpose()));
      const visible = arange(300).reshape(1, -1).le(arange(300).reshape(-1, 1));
      return where(visible, q.matmul(k.transpose()).mul(0.3), -Infinity).softmax(-1).matmul(v);
    },
  },
};

test('each Llama kernel kind matches the reference at sizes that are not multiples of the workgroup', async () => {
  const rng = new Rng(5);
  const random = (dtype: DType, shape: number[]): HostTensor =>
    hostTensor(dtype, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * 0.5));
  for (const [name, k] of Object.entries(kinds)) {
    const g: Graph = trace(name.replace(/[^a-z0-9]+/gi, '_'), [{ name: 'x', dtype: DType.F32, shape: k.shape }], k.fn);
    const params = new Map(g.params.map((p) => [p.name!, random(p.type.dtype, p.type.shape as number[])]));
    const bad = await check({ graph: g, inputs: { x: random(DType.F32, k.shape) }, params, states: new Map() });
    assert.ok(bad === undefined, `${name}: ${bad}`);
  }
});

test('a norm before a projection of many rows is computed once for two rows of a workgroup, where 256 workgroups remain', () => {
  const g = trace('wide', [{ name: 'x', dtype: DType.F32, shape: [1, 300] }], kinds['norm + bf16 projection 300 → 4104'].fn);
  const [k] = compileModule({ graphs: [g] }).graphs[0].kernels;
  const grid = scheduleKernel(k, webgpuCaps({ subgroups: true })).grid;
  assert.equal([k.rows, grid.rows, grid.rowsPerWorkgroup, grid.sharedStatements], [int(513), int(257), 2, 2]);
  assert.is(scheduleKernel(k, cudaCaps(90)).grid.rowsPerWorkgroup, 1, 'CUDA keeps a row a workgroup');
  // 3,072 outputs (a 1B model's QKV projection): 384 rows, one a workgroup.
  const qkv = trace('qkv', [{ name: 'x', dtype: DType.F32, shape: [1, 300] }], (x) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).matmul(param('p', DType.BF16, [3072, 300]).transpose()));
  const [q] = compileModule({ graphs: [qkv] }).graphs[0].kernels;
  assert.equal([q.rows, scheduleKernel(q, webgpuCaps({ subgroups: true })).grid.rowsPerWorkgroup ?? 1], [int(384), 1]);
});

test('a copy larger than a binding goes as a dispatch per chunk, in order with the runs around it', async () => {
  const split = await openWebGpu({ maxBindingBytes: 256 });
  try {
    const g = trace('double', [{ name: 'x', dtype: DType.F32, shape: [300] }], (x) => ({ y: x.mul(2) }));
    const p = await split.load(compileModule({ graphs: [g] }), new ParamStore(() => { throw new Error('no params'); }), { maxSizes: {} });
    const x = Array.from({ length: 300 }, (_, i) => i - 150);
    const step = () => {
      p.run('double', {});
      p.copy('output:double:y', 'input:x', DType.F32, 300);
    };
    p.write('input:x', hostTensor(DType.F32, [300], x));
    step();
    p.replay(p.record(step));
    p.run('double', {});
    assert.equal([...(await p.read('output:double:y', DType.F32, [300])).data], x.map((v) => 8 * v));
  } finally {
    split.destroy();
  }
});

test.after(() => device?.destroy());
test.run();
