// f.bisect(...inputs) on a compile()d function: the same report as data, for the call's compiled graph (padded to
// its bucket), with the function's state left as it was.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { jsDialect } from '../../backends/cpu/render-js.ts';
import { compile, scalar, state, tensor, type Tensor } from '../../index.ts';
import { DType } from '../../ir/dtype.ts';
import { sourceDir, withRule } from './plant.ts';

const here = (offset = 0) => `test/bisect/compile-api.test.ts:${Number(/:(\d+):\d+\)?$/m.exec(new Error().stack!.split('\n')[2])![1]) + offset}`;

test('a clean function agrees; the call\'s bucket, and nothing of the function changes', async () => {
  const f = compile((x: Tensor, w: Tensor) => x.mul(w).add(1).silu().sum(-1, { keepdims: true }).mul(x), { dynamic: { x: { 0: 'S' } } });
  const r = await f.bisect(tensor([[1, 2], [3, 4], [5, 6]]), tensor([0.5, 2]));
  assert.ok(r.agrees, `culprit ${r.culprit?.kernel}`);
  assert.is(r.backend, 'cpu');
  assert.is(r.against, 'reference');
  assert.equal(r.sizes, { S: 4 }, 'padded to the bucket of 3 rows');
  assert.ok(r.kernels >= 1 && r.kernelsChecked === r.kernels);
  assert.ok(r.passes?.agrees);
  assert.is(f.stats.calls, 0, 'not a call');
  assert.is(f.stats.compilations, 1);
  f(tensor([[1, 2], [3, 4], [5, 6]]), tensor([0.5, 2]));
  assert.is(f.stats.cacheHits, 1, 'the call reuses what bisect compiled');
});

test('a wrong rule in the JavaScript renderer: the kernel and the node, with this file\'s line', async () => {
  let line = '';
  const r = await withRule(jsDialect.unary, 'exp', (a: string) => `Math.exp(-${a})`, async () => {
    const f = compile((x: Tensor) => {
      line = here(1);
      const e = x.sub(x.max(-1, { keepdims: true })).exp();
      return e.div(e.sum(-1, { keepdims: true }));
    });
    return f.bisect(tensor([[1, 2, 3], [0, -1, 4]]), { inside: true, sourceDir });
  });
  assert.not.ok(r.agrees);
  const c = r.culprit!;
  assert.is(c.index, 0);
  assert.is(c.kind, 'reduce');
  assert.ok(c.inputsAgree);
  assert.is(c.suspect.op, 'exp');
  assert.is(c.suspect.found, 'inside');
  assert.is(c.suspect.loc, line);
  assert.ok(c.inside!.checks.filter((v) => v.op === 'sub').every((v) => v.agrees), 'the values before exp agree');
});

test('state: the function\'s state is read, not written; the reference backend bisects the cpu kernels', async () => {
  const f = compile((x: Tensor) => {
    const acc = state('acc', DType.F32, [2]);
    const next = acc.add(x);
    acc.write(next, scalar(0, DType.I32), 0);
    return next.mul(2);
  });
  f(tensor([1, 2]));
  const before = [...f.states.get('acc')!.data];
  assert.equal(before, [1, 2]);
  f.backend = 'reference';
  const r = await f.bisect(tensor([10, 20]), { against: 'cpu' });
  assert.ok(r.agrees);
  assert.is(r.backend, 'cpu');
  assert.is(r.against, 'cpu');
  assert.equal([...f.states.get('acc')!.data], before);
});

test.run();
