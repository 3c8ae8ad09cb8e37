// Differential test of the whole compiler: random graphs (test/backends/random-graph.ts, one per seed) compiled with
// the default pipeline and run as fused JavaScript kernels on the CPU backend must give what the reference
// interpreter gives running the unoptimised graph op by op: outputs and the states' new values, floats within
// float32 tolerance, ints and bools exactly.
//
//   SEED=123 npm test -- fused     reruns one seed; a failure prints its graph, the fused graph and the mismatch
//   SEEDS=5000 npm test -- fused   runs more seeds than CI's 1500

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { interpret } from '../../backends/reference/interpreter.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { DType } from '../../ir/dtype.ts';
import { parseGraph } from '../../ir/parser.ts';
import { printGraph } from '../../ir/printer.ts';
import { runOnCpu } from './run-cpu.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { randomGraph, RandomCase } from './random-graph.ts';
import { mismatch } from './compare.ts';
import { Rng } from './rng.ts';
import { arange, concat, param, Tensor, trace, where } from '../../compiler/index.ts';

const seeds = process.env.SEED !== undefined
  ? process.env.SEED.split(',').map(Number)
  : [...Array(Number(process.env.SEEDS ?? 1500)).keys()];

/** Runs one case both ways; returns what went wrong, or undefined. */
function check(c: RandomCase): string | undefined {
  const g = c.graph;
  const source = printGraph(g, { locations: false });
  const param = (name: string) => c.params.get(name)!;
  const freshStates = () => new Map([...c.states].map(([name, t]) => [name, { ...t, data: t.data.slice() }]));
  const wantStates = freshStates();
  const want = [...interpret(g, { inputs: c.inputs, param, states: wantStates }), ...wantStates.values()];
  let fused = '';
  try {
    const compiled = compileModule({ graphs: [g] }, { verify: true });
    const out = compiled.graphs[0].graph;
    fused = printGraph(out, { locations: false });
    if (printGraph(g, { locations: false }) !== source) return 'compiling changed the source graph';
    const reparsed = printGraph(parseGraph(fused), { locations: false });
    if (reparsed !== fused) return `the fused graph does not print back the same after parsing:\n${reparsed}`;
    const gotStates = freshStates();
    const got = [...runOnCpu(compiled, g.name, c.inputs, param, gotStates), ...gotStates.values()];
    for (let i = 0; i < want.length; i++) {
      const what = i < g.outputs.length ? `output ${i}` : `state %${[...gotStates.keys()][i - g.outputs.length]}`;
      const bad = mismatch(got[i], want[i]);
      if (bad) return `${what}: ${bad}\n--- fused ---\n${fused}`;
    }
    return undefined;
  } catch (e) {
    return `${(e as Error).stack ?? e}${fused ? `\n--- fused ---\n${fused}` : ''}`;
  }
}

test(`fused CPU kernels match the reference on ${seeds.length} random graphs`, () => {
  const failed: number[] = [];
  let first = '';
  for (const seed of seeds) {
    const c = randomGraph(seed);
    const bad = check(c);
    if (!bad) continue;
    failed.push(seed);
    if (!first) {
      first = `seed ${seed} (rerun: SEED=${seed} npm test -- fused): ${bad}\n--- source ---\n${printGraph(c.graph, { locations: false })}`;
    }
  }
  assert.ok(failed.length === 0, `${failed.length} of ${seeds.length} seeds fail: ${failed.join(', ')}\n${first}`);
});

/** Model-shaped functions of x: f32[S, 8] with a symbolic row count S, as the prefill graph has it. */
const symbolic: Record<string, (x: Tensor) => Tensor | Tensor[]> = {
  'rmsnorm': (x) => x.mul(x.pow(2).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).mul(param('w', DType.BF16, [8]).cast(DType.F32)),
  'softmax over columns': (x) => x.softmax(-1),
  'softmax over the rows': (x) => x.softmax(0),
  'sums over the rows': (x) => [x.sum(0), x.mean(0, { keepdims: true }), x.max([0, 1])],
  'residual projection': (x) => x.add(x.matmul(param('o', DType.F32, [8, 8]).transpose())),
  'swiglu': (x) => x.matmul(param('g', DType.F32, [6, 8]).transpose()).silu().mul(x.matmul(param('u', DType.F32, [6, 8]).transpose())),
  'heads': (x) => x.reshape(x.dim(0), 2, 4).permute(1, 0, 2).matmul(param('b', DType.F32, [2, 4, 3])),
  'causal attention': (x) => {
    const [q, k, v] = ['q', 'k', 'v'].map((w) => x.matmul(param(w, DType.F32, [4, 8]).transpose()));
    const seq = x.dim(0);
    const visible = arange(seq).reshape(1, -1).le(arange(seq).reshape(-1, 1));
    return where(visible, q.matmul(k.transpose()).mul(0.5), -Infinity).softmax(-1).matmul(v);
  },
  'rotary': (x) => {
    const angles = arange(x.dim(0), DType.F32).reshape(-1, 1).mul(arange(4, DType.F32).reshape(1, 4).mul(0.1));
    const both = concat([angles, angles], 1);
    const rotated = concat([x.slice(1, 4).neg(), x.slice(1, 0, 4)], 1);
    return x.mul(both.cos()).add(rotated.mul(both.sin()));
  },
};

test('model-shaped graphs with a symbolic row count match the reference for several sizes', () => {
  const rng = new Rng(99);
  for (const [name, fn] of Object.entries(symbolic)) {
    const g = trace(name.replace(/ /g, '_'), [{ name: 'x', dtype: DType.F32, shape: ['S', 8] }], fn);
    const params = new Map(g.params.map((p) => {
      const shape = p.type.shape as number[];
      return [p.name!, hostTensor(p.type.dtype, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * 0.5))];
    }));
    for (const rows of [1, 2, 5]) {
      const inputs = { x: hostTensor(DType.F32, [rows, 8], Array.from({ length: rows * 8 }, () => rng.normal())) };
      const bad = check({ graph: g, inputs, params, states: new Map() });
      assert.ok(!bad, `${name} at S=${rows}: ${bad}\n--- source ---\n${printGraph(g, { locations: false })}`);
    }
  }
});

test('the generator is deterministic and varied', () => {
  const a = printGraph(randomGraph(7).graph);
  assert.is(printGraph(randomGraph(7).graph), a, 'one seed, one graph');
  const ops = new Set(seeds.slice(0, 300).flatMap((s) => randomGraph(s).graph.nodes.map((n) => n.op)));
  for (const op of ['matmul', 'softmax', 'concat', 'permute', 'reshape', 'expand', 'slice', 'where', 'cast', 'gather', 'mean', 'argmax']) {
    if (seeds.length >= 300) assert.ok(ops.has(op), `some graph uses ${op}`);
  }
});

test.run();
