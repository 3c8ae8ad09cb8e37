// compile(): compilations counted across dtype, static-shape, bucket and backend changes; the reason each
// recompilation names; padding masked and sliced; a custom op that fuses with its neighbours; a pass of your own.

import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  arange, compile, defaultPasses, DType, insertPass, param, printGraph, registerOp, scalar, state, tensor, Tensor,
  validLength, where, type HostTensor, type Pass,
} from '../../index.ts';

const values = (t: HostTensor) => Array.from(t.data);
const close = (a: readonly number[], b: readonly number[], tol = 1e-5) =>
  a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) <= tol * Math.max(1, Math.abs(b[i])));

test('a second call with the same dtypes and shapes is a cache hit; new shapes and dtypes compile again', () => {
  const f = compile((x: Tensor, y: Tensor) => x.add(y).mul(2));
  assert.equal(values(f(tensor([[1, 2], [3, 4]]), tensor([1, 1]))), [4, 6, 8, 10]);
  assert.equal(values(f(tensor([[0, 0], [1, 1]]), tensor([1, 2]))), [2, 4, 4, 6]);
  assert.is(f.stats.compilations, 1);
  assert.is(f.stats.cacheHits, 1);

  f(tensor([[1, 2, 3]]), tensor([0, 0, 0]));
  f(tensor([[1, 2]], undefined, 'f16'), tensor([1, 1], undefined, 'f16'));
  f(tensor([[1, 2], [3, 4]]), tensor([1, 1])); // the first graph again: still cached
  const s = f.stats;
  assert.equal([s.calls, s.compilations, s.cacheHits], [5, 3, 2]);
  assert.is(s.compiles[0].failed, undefined);
  assert.equal(s.compiles[1].failed, { guard: 'shape', input: 'x', axis: 0, old: 2, new: 1, message: 'input x: axis 0 size 2 → 1' });
  assert.equal(s.compiles[2].failed, { guard: 'dtype', input: 'x', old: 'f32', new: 'f16', message: 'input x: dtype f32 → f16' });
  assert.equal(f.inputNames, ['x', 'y']);
});

test('changing the backend is a guard: the reference backend compiles once and agrees', () => {
  const f = compile((x: Tensor) => x.exp().sum(-1));
  const cpu = values(f(tensor([[0, 1], [2, 3]])));
  f.backend = 'reference';
  const ref = values(f(tensor([[0, 1], [2, 3]])));
  f(tensor([[5, 6], [7, 8]]));
  assert.ok(close(cpu, ref), `${cpu} vs ${ref}`);
  assert.is(f.stats.compilations, 2);
  assert.is(f.stats.compiles[1].failed?.guard, 'backend');
  assert.is(f.stats.compiles[1].failed?.message, 'backend cpu → reference');
});

test('a dynamic axis compiles once per bucket; the outputs are sliced to the real length', () => {
  const f = compile((x: Tensor) => x.mul(3).add(1), { dynamic: { x: { 0: 'S' } } });
  const lengths = [1, 2, 3, 4, 5, 8, 9, 3];
  for (const n of lengths) {
    const x = Array.from({ length: n * 2 }, (_, i) => i);
    const out = f(tensor(x, [n, 2]));
    assert.equal(out.shape, [n, 2]);
    assert.equal(values(out), x.map((v) => v * 3 + 1));
  }
  // buckets 1, 2, 4, 8, 16: the lengths 3 and 4 share one, as do 5 and 8
  assert.is(f.stats.compilations, 5);
  assert.is(f.stats.cacheHits, lengths.length - 5);
  assert.equal(f.stats.compiles.map((c) => c.failed?.message), [
    undefined, 'input x: S bucket 1 → 2', 'input x: S bucket 2 → 4', 'input x: S bucket 4 → 8', 'input x: S bucket 8 → 16',
  ]);
  assert.equal([...f.cache.keys()][2], 'cpu(x: f32[S≤4,2])');
});

test('configured buckets: a list, and a size above the largest is refused', () => {
  const f = compile((x: Tensor) => x.neg(), { dynamic: { x: { 0: 'S' } }, buckets: [16, 64] });
  for (const n of [1, 15, 16, 17, 64]) f(tensor(new Array(n).fill(1), [n]));
  assert.is(f.stats.compilations, 2);
  assert.throws(() => f(tensor(new Array(65).fill(1), [65])), /S = 65 is larger than the largest bucket \(16, 64\)/);
});

test('a static size in a dynamic input is still guarded', () => {
  const f = compile((x: Tensor) => x.sum(-1), { dynamic: { x: { 0: 'S' } } });
  f(tensor(new Array(6).fill(1), [3, 2]));
  f(tensor(new Array(9).fill(1), [3, 3]));
  assert.is(f.stats.compiles[1].failed?.message, 'input x: axis 1 size 2 → 3');
});

test('padding is masked with validLength: a mean over the dynamic axis ignores padded rows', () => {
  const mean = compile((x: Tensor) => {
    const real = arange(x.dim(0)).lt(validLength('S')).reshape(-1, 1);
    return where(real, x, 0).sum(0).div(validLength('S').cast(DType.F32));
  }, { dynamic: { x: { 0: 'S' } }, padValue: 1000 });
  for (const n of [1, 3, 5, 6]) {
    const x = Array.from({ length: n * 2 }, (_, i) => i + 1);
    const want = [0, 1].map((c) => x.filter((_, i) => i % 2 === c).reduce((a, b) => a + b, 0) / n);
    assert.ok(close(values(mean(tensor(x, [n, 2]))), want), `n=${n}`);
  }
  assert.is(mean.stats.compilations, 3); // buckets 1, 4, 8
});

test('two inputs sharing a dynamic symbol must agree on its size', () => {
  const f = compile((a: Tensor, b: Tensor) => a.add(b), { dynamic: { a: { 0: 'S' }, b: { 0: 'S' } } });
  assert.equal(values(f(tensor([1, 2, 3]), tensor([1, 1, 1]))), [2, 3, 4]);
  assert.throws(() => f(tensor([1, 2, 3]), tensor([1, 1])), /dynamic size S is 3 in one input and 2 in b/);
});

test('params come from options.params; state persists across calls and across compiled graphs', () => {
  const counter = compile((x: Tensor) => {
    const total = state('total', DType.F32, [2]);
    const next = total.add(x.mul(param('w', DType.F32, [2])));
    return total.write(next, scalar(0, DType.I32), 0).sum();
  }, { params: { w: tensor([1, 10]) } });
  counter(tensor([1, 1]));
  counter(tensor([1, 1]));
  assert.equal(values(counter.states.get('total')!), [2, 20]);
  assert.throws(() => compile((x: Tensor) => x.mul(param('missing', DType.F32, [1])))(tensor([1])), /no value for parameter 'missing'/);
});

test('a function returning one tensor gives one host tensor; several give an array', () => {
  const one = compile((x: Tensor) => x.neg());
  const two = compile((x: Tensor) => [x.neg(), x.abs()]);
  assert.ok(!Array.isArray(one(tensor([1]))));
  assert.is(two(tensor([-1])).length, 2);
});

test('input names come from options.inputs; a dynamic input that is not one is refused', () => {
  const f = compile((...xs: Tensor[]) => xs[0].add(xs[1]), { inputs: ['p', 'q'] });
  assert.equal(f.inputNames, ['p', 'q']);
  assert.throws(() => compile((x: Tensor) => x, { dynamic: { y: { 0: 'S' } } }), /dynamic input 'y' is not an input/);
});

// --- a custom op -------------------------------------------------------------------------------------------------

const softsign = registerOp({
  name: 'test_softsign',
  arity: 1,
  reference: ([x]) => x / (1 + Math.abs(x)),
  lower: ([x], b) => b.div(x, b.add(b.const(1), b.unary('abs', x))),
});
const lerp = registerOp({
  name: 'test_lerp',
  arity: 3,
  attrs: { bias: 'float' },
  reference: ([a, b, t], attrs) => a + (b - a) * t + (attrs.bias as number),
  lower: ([a, b, t], k, attrs) => k.add(k.add(a, k.mul(k.sub(b, a), t)), k.const(attrs.bias as number)),
});

test('a custom op fuses with its neighbours into one kernel and matches a hand-computed reference on the CPU', () => {
  const f = compile((x: Tensor, y: Tensor) => softsign(x.mul(2)).add(y).exp(), { verify: true });
  const x = [-3, -0.5, 0, 0.25, 1, 4];
  const y = [0.1, 0.2, 0.3];
  const out = values(f(tensor(x, [2, 3]), tensor(y)));
  const want = x.map((v, i) => Math.exp((2 * v) / (1 + Math.abs(2 * v)) + y[i % 3]));
  assert.ok(close(out, want), `${out} vs ${want}`);
  const g = [...f.cache.values()][0].compiled!.graphs[0].graph;
  assert.is(g.kernels.length, 1, printGraph(g));
  const ir = printGraph(g, { locations: false });
  assert.match(ir, /kernel @k0 \[kind=elementwise\] \{[^}]*= mul [^}]*= test_softsign [^}]*= add [^}]*= exp [^}]*\}/);
  f.backend = 'reference';
  assert.ok(close(values(f(tensor(x, [2, 3]), tensor(y))), want));
});

test('a custom op with attributes and scalar operands, after a reduction, in one kernel', () => {
  const f = compile((x: Tensor) => {
    const m = x.max(-1, { keepdims: true });
    return lerp(x, m, 0.5, { bias: 0.25 });
  });
  const x = [1, 3, 2, -1, -5, 0];
  const out = values(f(tensor(x, [2, 3])));
  const want = x.map((v, i) => { const m = i < 3 ? 3 : 0; return v + (m - v) * 0.5 + 0.25; });
  assert.ok(close(out, want), `${out} vs ${want}`);
  const g = [...f.cache.values()][0].compiled!.graphs[0].graph;
  assert.is(g.kernels.length, 1, printGraph(g));
  assert.match(printGraph(g, { locations: false }), /test_lerp %\w+, %\w+, %\w+ \[bias=0.25\]/);
});

test('registerOp refuses a name that is taken, and wrong operand counts name the model line', () => {
  assert.throws(() => registerOp({ name: 'add', arity: 2, reference: () => 0, lower: ([a]) => a }), /already registered/);
  const f = compile((x: Tensor) => (softsign as unknown as (...a: Tensor[]) => Tensor)(x, x));
  assert.throws(() => f(tensor([1])), /compile-api\.test\.ts:\d+: test_softsign takes 1 operands, got 2/);
});

// --- a pass of your own ------------------------------------------------------------------------------------------

test('a custom pass inserted into the pipeline runs in compile(), in order', () => {
  const seen: string[] = [];
  const spy: Pass = { name: 'spy', run: (g) => { seen.push(`${g.name}:${g.nodes.length}`); return g; } };
  const passes = insertPass(defaultPasses, { before: 'fuse' }, spy);
  assert.equal(passes.map((p) => p.name).slice(-4), ['split-attention', 'spy', 'fuse', 'plan-memory']);
  const after: string[] = [];
  const f = compile(function scaled(x: Tensor) { return x.exp().neg(); }, { passes, after: (p) => after.push(p) });
  f(tensor([1, 2]));
  assert.equal(seen, ['scaled:2']);
  assert.ok(after.indexOf('spy') === after.indexOf('fuse') - 1);
  assert.throws(() => insertPass(defaultPasses, { after: 'nope' }, spy), /no pass named 'nope'/);
});


// --- the webgpu backend and the runnable example ------------------------------------------------------------------

test('the webgpu backend runs a compiled function through WebGpuProgram (skipped without an adapter)', async () => {
  const f = compile((x: Tensor, w: Tensor) => x.matmul(w).silu().add(1), { backend: 'webgpu', dynamic: { x: { 0: 'S' } } });
  const w = tensor([[1, 0, -1], [0.5, 2, 0]]);
  let out: HostTensor;
  try {
    out = await f(tensor([[1, 2], [3, -1], [0, 1]]), w);
  } catch (e) {
    if ((e as Error).name === 'WebGpuUnavailableError' || /no WebGPU adapter/.test((e as Error).message)) return;
    throw e;
  }
  const cpu = compile((x: Tensor, w: Tensor) => x.matmul(w).silu().add(1));
  assert.equal(out.shape, [3, 3]);
  assert.ok(close(values(out), values(cpu(tensor([[1, 2], [3, -1], [0, 1]]), w)), 1e-5));
  await f(tensor([[1, 2], [3, -1], [0, 1], [2, 2]]), w); // same bucket (4)
  assert.is(f.stats.compilations, 1);
});

test('examples/compile-api.ts runs and reports what happened', () => {
  const root = new URL('../../', import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/compile-api.ts'], { cwd: root, encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, 'scaleShift: 4 calls, 3 compilations, 1 cache hit(s)');
  assert.match(r.stdout, 'guard failed: input x: dtype f32 → f16');
  assert.match(r.stdout, 'normalizeRows: 2 compilations for 4 calls');
  assert.match(r.stdout, 'ffn compiles to 1 kernel');
  assert.match(r.stdout, 'parsed back identically: true');
});

test.run();
