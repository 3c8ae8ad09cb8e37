// Deep chains of ops (`for (…3000…) x = x.add(1)`, or of reductions) compile and run: fusion cuts them into kernels
// of a bounded depth (compiler/passes/fuse.ts, cutDeepChains) instead of overflowing the stack in the code generators
// or the generated code, and the kernels compute what the reference interpreter computes. Models are not cut.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { compile, DType, param, Tensor, tensor, trace } from '../../index.ts';
import { maxChainDepth } from '../../compiler/passes/fuse.ts';
import { Graph, Value } from '../../ir/graph.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Op } from '../../ir/ops.ts';
import { WebGpuUnavailableError } from '../../runtime/webgpu/errors.ts';
import { Rng } from '../backends/rng.ts';

const F = DType.F32;
const addChain = (n: number) => (x: Tensor) => {
  for (let i = 0; i < n; i++) x = x.add(1);
  return x;
};

/** The longest chain of ops since a matmul inside any one kernel of a fused graph. */
function longestKernelChain(g: Graph): number {
  let longest = 0;
  for (const k of g.kernels) {
    const depth = new Map<Value, number>();
    for (const n of k.nodes) {
      const d = n.op === Op.Matmul ? 0 : 1 + n.inputs.reduce((m, v) => Math.max(m, depth.get(v) ?? 0), 0);
      depth.set(n.output, d);
      longest = Math.max(longest, d);
    }
  }
  return longest;
}

function fuseWithExplanations(g: Graph): { fused: Graph; lines: string[] } {
  const lines: string[] = [];
  const ctx = { dims: new Map([['S', 4]]), explain: (pass: string, line: string) => lines.push(`[${pass}] ${line}`) };
  return { fused: compileModule({ graphs: [g] }, { ctx, verify: true }).graphs[0].graph, lines };
}

test('3,000 chained adds compile and run on cpu and on the reference backend', () => {
  for (const backend of ['cpu', 'reference'] as const) {
    const f = compile(addChain(3000), { backend });
    assert.equal([...(f(tensor([1, 2, 3])) as HostTensor).data], [3001, 3002, 3003], backend);
  }
});

test('no kernel holds a chain of more than twice the bound; each cut is explained at its source line', () => {
  const g = trace('deep', [{ name: 'x', dtype: F, shape: [3] }], addChain(3000));
  const { fused, lines } = fuseWithExplanations(g);
  const cuts = lines.filter((l) => l.startsWith('[fuse] cut: '));
  // One cut every maxChainDepth ops; the const each add reads is one op deep, so each cut's chain starts at two.
  assert.is(cuts.length, Math.floor((3000 - 1) / (maxChainDepth - 1)), cuts.join('\n'));
  assert.match(cuts[0], new RegExp(`^\\[fuse\\] cut: add f32\\[3\\] \\(test/compiler/deep-chains\\.test\\.ts:\\d+\\) is ${maxChainDepth + 1} ops deep: it starts a kernel of its own`));
  assert.is(fused.kernels.length, cuts.length);
  const longest = longestKernelChain(fused);
  assert.ok(longest > maxChainDepth && longest <= 2 * maxChainDepth + 1, `longest chain in a kernel: ${longest}`);
});

test('a deep chain of mixed ops, a broadcast, a reduction and a matmul epilogue: cpu kernels equal the interpreter', () => {
  const specs = [{ name: 'x', dtype: F, shape: [4, 8] }, { name: 'b', dtype: F, shape: [8] }];
  const fn = (x: Tensor, b: Tensor) => {
    let y = x;
    for (let i = 0; i < 1500; i++) y = i % 5 === 0 ? y.tanh() : i % 5 === 1 ? y.mul(b).add(x) : y.mul(0.5).sub(0.25);
    let z = y.matmul(param('w', F, [8, 8]));
    for (let i = 0; i < 1200; i++) z = z.mul(0.999).add(y);
    return [y.sum(-1), z];
  };
  const r = new Rng(5);
  const data = (n: number) => Array.from({ length: n }, () => r.normal());
  const inputs = { x: hostTensor(F, [4, 8], data(32)), b: hostTensor(F, [8], data(8)) };
  const w = hostTensor(F, [8, 8], data(64));
  const g = trace('mixed', specs, fn);
  const want = interpret(g, { inputs, param: () => w, states: new Map() });
  assert.ok(fuseWithExplanations(g).fused.kernels.length > 3, 'the chains are cut');
  const f = compile(fn, { params: { w: tensor(w.data, w.shape) } });
  const got = f(tensor(inputs.x.data, inputs.x.shape), tensor(inputs.b.data, inputs.b.shape)) as HostTensor[];
  got.forEach((t, o) => t.data.forEach((v, i) => {
    const ref = want[o].data[i];
    assert.ok(Math.abs(v - ref) <= 1e-4 * (1 + Math.abs(ref)), `output ${o}[${i}]: cpu ${v}, reference ${ref}`);
  }));
});

test('600 steps of a reduction over columns (1,800 ops; the reductions would merge into one kernel) are cut too', () => {
  const fn = (x: Tensor) => {
    for (let i = 0; i < 600; i++) x = x.sub(x.sum(0, { keepdims: true }).mul(0.1));
    return x;
  };
  const x = hostTensor(F, [2, 3], [1, 2, 3, 4, 5, 6]);
  const want = interpret(trace('columns', [{ name: 'x', dtype: F, shape: [2, 3] }], fn), { inputs: { x }, param: () => x, states: new Map() });
  const got = compile(fn)(tensor(x.data, x.shape)) as HostTensor;
  got.data.forEach((v, i) => assert.ok(Math.abs(v - want[0].data[i]) <= 1e-5 * (1 + Math.abs(want[0].data[i])), `[${i}]: cpu ${v}, reference ${want[0].data[i]}`));
});

test('a value read twice at every step (x = x + x·0.5, 30 steps: 2^30 ops inlined) is cut, compiles at once and matches', () => {
  const fn = (x: Tensor) => {
    for (let i = 0; i < 30; i++) x = x.add(x.mul(0.5));
    return x;
  };
  const { lines } = fuseWithExplanations(trace('reuse', [{ name: 'x', dtype: F, shape: [4] }], fn));
  assert.ok(lines.some((l) => /^\[fuse\] cut: .* inlines more than \d+ ops/.test(l)), lines.join('\n'));
  const x = hostTensor(F, [4], [1, -2, 0.5, 3]);
  const want = interpret(trace('reuse', [{ name: 'x', dtype: F, shape: [4] }], fn), { inputs: { x }, param: () => x, states: new Map() });
  const got = compile(fn)(tensor(x.data, x.shape)) as HostTensor;
  got.data.forEach((v, i) => assert.ok(Math.abs(v - want[0].data[i]) <= 1e-5 * Math.abs(want[0].data[i]), `[${i}]: cpu ${v}, reference ${want[0].data[i]}`));
});

test('a matmul restarts the count: 250 layers with two residual adds each (500 ops deep) are not cut', () => {
  const g = trace('stack', [{ name: 'x', dtype: F, shape: [2, 4] }], (x: Tensor) => {
    for (let i = 0; i < 250; i++) {
      x = x.add(x.matmul(param(`a${i}`, F, [4, 4])).tanh());
      x = x.add(x.matmul(param(`b${i}`, F, [4, 4])));
    }
    return x;
  });
  const { fused, lines } = fuseWithExplanations(g);
  assert.equal(lines.filter((l) => l.startsWith('[fuse] cut: ')), []);
  assert.is(fused.kernels.length, 500, 'one kernel per projection, the adds its epilogues');
});

test('3,000 chained adds on WebGPU (where a device is available)', async () => {
  const f = compile(addChain(3000), { backend: 'webgpu' });
  let out: HostTensor;
  try {
    out = await f(tensor([1, 2, 3])) as HostTensor;
  } catch (e) {
    if (e instanceof WebGpuUnavailableError) return;
    throw e;
  }
  assert.equal([...out.data], [3001, 3002, 3003]);
});

test.run();
