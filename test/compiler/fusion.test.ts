// Fusion as kernel counts: the patterns the compiler exists for, traced as model code and compiled with the default
// pipeline, must come out as the kernels below; and the Llama 3.2 1B decode step must stay within its budget of
// kernels and bytes (compiler/report.ts). test/passes/fuse.test.ts pins the same patterns as golden IR.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { DType, param, Tensor, trace } from '../../compiler/index.ts';
import { defaultContext } from '../../compiler/passes/context.ts';
import { prefusionPasses, runPipeline } from '../../compiler/passes/pipeline.ts';
import { stepReport } from '../../compiler/report.ts';
import { traceLlama } from '../../examples/llama.ts';
import { Graph, Kernel, kernelIO } from '../../ir/graph.ts';
import { printGraph } from '../../ir/printer.ts';
import { Shape } from '../../ir/shape.ts';
import { builtinConfig } from '../../runtime/config.ts';

const F = DType.F32;

function fused(g: Graph): Graph {
  return compileModule({ graphs: [g] }, { verify: true }).graphs[0].graph;
}

/** Compiles a traced function of f32 inputs of the given shapes and returns its kernels and fused IR. */
function kernelsOf(shape: Shape, fn: (x: Tensor, ...more: Tensor[]) => Tensor | Tensor[], more: Shape[] = []): { kernels: Kernel[]; ir: string; g: Graph } {
  const inputs = [shape, ...more].map((s, i) => ({ name: i === 0 ? 'x' : `y${i}`, dtype: F, shape: s }));
  const g = fused(trace('t', inputs, fn));
  return { kernels: g.kernels, ir: printGraph(g, { locations: false }), g };
}

function assertKernels(name: string, got: { kernels: Kernel[]; ir: string }, n: number): void {
  assert.is(got.kernels.length, n, `${name}: ${n} kernel(s), got ${got.kernels.length}:\n${got.ir}`);
}

const rmsNorm = (x: Tensor, w: Tensor) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).mul(w.cast(F));

test('an elementwise chain of five ops with a broadcast and a cast is one kernel', () => {
  const r = kernelsOf([4, 8], (x, b) => x.add(b).mul(3).cast(DType.I32).cast(F).neg(), [[8]]);
  assertKernels('chain', r, 1);
});

test('an elementwise chain that also returns an intermediate is one kernel writing both', () => {
  const r = kernelsOf([4, 8], (x) => {
    const y = x.add(1).exp();
    return [y, y.sqrt().mul(2)];
  });
  assertKernels('chain with two outputs', r, 1);
  assert.is(kernelIO(r.g, r.kernels[0]).writes.length, 2);
});

test('RMSNorm is one kernel', () => {
  assertKernels('rmsnorm', kernelsOf(['S', 8], (x) => rmsNorm(x, param('w', DType.BF16, [8]))), 1);
});

test('softmax is one kernel, along the last axis or another', () => {
  assertKernels('softmax', kernelsOf([4, 8], (x) => x.softmax(-1)), 1);
  assertKernels('softmax over axis 0', kernelsOf([4, 8], (x) => x.softmax(0)), 1);
});

test('a matmul with a residual add is one kernel (the add is its epilogue)', () => {
  const r = kernelsOf(['S', 8], (x) => x.add(x.matmul(param('o', F, [8, 8]).transpose())));
  assertKernels('residual', r, 1);
  assert.is(r.kernels[0].attrs.kind, 'contraction');
});

test('RMSNorm feeding a projection of one row is one kernel (the norm is its prologue)', () => {
  const r = kernelsOf([1, 8], (x) => rmsNorm(x, param('w', F, [8])).matmul(param('p', F, [16, 8]).transpose()));
  assertKernels('norm + projection', r, 1);
});

test('RMSNorm feeding a projection of many rows is a norm kernel, then tiles (GEMM) reading the normalised rows', () => {
  for (const rows of ['S', 4] as const) {
    const r = kernelsOf([rows, 8], (x) => rmsNorm(x, param('w', F, [8])).matmul(param('p', F, [16, 8]).transpose()));
    assertKernels(`norm + projection of ${rows} rows`, r, 2);
    assert.equal(r.kernels.map((k) => k.attrs.kind), ['reduce', 'contraction']);
  }
});

test('gate and up projections combined by silu·mul are one kernel', () => {
  const r = kernelsOf(['S', 8], (x) =>
    x.matmul(param('gate', F, [16, 8]).transpose()).silu().mul(x.matmul(param('up', F, [16, 8]).transpose())));
  assertKernels('swiglu', r, 1);
  assert.is(r.kernels[0].nodes.filter((n) => n.op === 'matmul').length, 2);
});

test('Q, K and V projections of one input are one matmul over concatenated weights, then one attention kernel', () => {
  const r = kernelsOf(['S', 8], (x) => {
    const [q, k, v] = ['q', 'k', 'v'].map((w) => x.matmul(param(`${w}_proj.weight`, F, [4, 8]).transpose()));
    return q.matmul(k.transpose()).softmax(-1).matmul(v);
  });
  assert.is(r.g.derivations.size, 1, r.ir);
  assertKernels('qkv + attention', r, 2);
  assert.equal(r.kernels.map((k) => k.attrs.kind), ['contraction', 'attention'], r.ir);
});

test('projections returned as they are stay apart, and share one kernel', () => {
  const r = kernelsOf(['S', 8], (x) => ['q', 'k', 'v'].map((w) => x.matmul(param(`${w}_proj.weight`, F, [8, 8]).transpose())));
  assert.is(r.g.derivations.size, 0, r.ir);
  assertKernels('returned projections', r, 1);
});

test('a view between two matmuls is folded into the second one\'s indexing', () => {
  const r = kernelsOf([4, 8], (x) => x.matmul(param('a', F, [8, 8])).reshape(4, 2, 4).permute(1, 0, 2).matmul(param('b', F, [2, 4, 3])));
  assertKernels('matmul, view, matmul', r, 2);
  const [first, second] = r.kernels;
  assert.equal(first.nodes.map((n) => n.op), ['matmul'], r.ir);
  assert.equal(second.nodes.map((n) => n.op), ['reshape', 'permute', 'matmul'], r.ir);
  assert.is(kernelIO(r.g, first).writes[0].type.shape.join(), '4,8', 'the first writes its result unpermuted');
});

test('Llama 3.2 1B decode: at most 8 kernels per layer, 5 outside, no elementwise kernels, weights read once', () => {
  const cfg = builtinConfig('llama-3.2-1b');
  const traced = traceLlama(cfg, { weightDType: DType.BF16, cacheLength: 256 });
  const decode = { graphs: [traced.graphs.find((g) => g.name === 'decode')!] };
  const [compiled] = compileModule(decode).graphs;
  const [unfused] = runPipeline(decode, { passes: prefusionPasses }).graphs;
  const r = stepReport(compiled.graph, unfused, compiled.plan.peakBytes, defaultContext.dims);
  const perLayer = new Map<number, number>();
  for (const k of r.kernelList) if (k.layer !== null) perLayer.set(k.layer, (perLayer.get(k.layer) ?? 0) + 1);
  assert.is(perLayer.size, cfg.numLayers, 'every layer has kernels');
  for (const [layer, n] of perLayer) assert.ok(n <= 8, `layer ${layer}: ${n} kernels`);
  assert.ok(r.kernelsPerLayer <= 8, `${r.kernelsPerLayer} kernels per layer`);
  // Final norm + LM head, the argmax's three kernels, and one writing the history and the next position.
  assert.ok(r.kernelsOutsideLayers <= 5, `${r.kernelsOutsideLayers} kernels outside the layers`);
  assert.is(r.elementwiseKernels, 0, 'elementwise-only kernels');
  const extra = Math.abs(r.weightBytesRead - r.weightBytes) / r.weightBytes;
  assert.ok(extra <= 1e-4, `weight bytes read ${r.weightBytesRead} vs ${r.weightBytes} (${(extra * 100).toFixed(4)}% apart)`);
  assert.ok(r.intermediateBytes * 100 < r.unfused.intermediateBytes,
    `intermediate bytes ${r.intermediateBytes} fused vs ${r.unfused.intermediateBytes} unfused`);
  assert.ok(r.peakIntermediateBytes * 100 < r.unfused.peakIntermediateBytes, 'peak intermediate memory');
});

test.run();
