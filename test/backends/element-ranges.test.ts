// What a kernel's rows touch (backends/element-ranges.ts): the runs of each buffer a range of rows loads and stores,
// bounded by interval arithmetic. A select's sides are bounded under its condition (the side a condition rules out
// reads nothing), so a half rotation's rows read exactly their own row; an index read from memory bounds nothing.
// The megakernel's waits rest on these bounds (test/backends/megakernel-schedule.test.ts checks them against every
// row-form task run on the CPU).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { concat, trace } from '../../compiler/index.ts';
import { rowAccesses, weightReads } from '../../backends/element-ranges.ts';
import { evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { DType } from '../../ir/dtype.ts';

const s = suite('element ranges');

const [ROWS, WIDTH] = [8, 64];
const only = (ks: readonly KernelIR[]) => {
  assert.is(ks.length, 1, 'one kernel');
  return ks[0];
};
const bufferOf = (k: KernelIR, name: string) => k.buffers.findIndex((b) => b.binding.kind !== 'output' && b.binding.kind !== 'temp' && b.binding.name === name);

s('a half rotation (the rotary pattern: each half of a row read by the other\'s side of a select) reads exactly its own rows', () => {
  const g = trace('rot', [{ name: 'x', dtype: DType.F32, shape: [ROWS, WIDTH] }], (x) => ({
    y: concat([x.slice(-1, WIDTH / 2, WIDTH).neg(), x.slice(-1, 0, WIDTH / 2)], -1).mul(2),
  }));
  const k = only(compileModule({ graphs: [g] }).graphs[0].kernels);
  assert.is(evalSize(k.rows, {}), ROWS, 'a row a row of x');
  const x = bufferOf(k, 'x');
  const y = k.buffers.findIndex((b) => b.written);
  for (const [from, to] of [[0, 1], [3, 4], [2, 6], [ROWS - 1, ROWS]]) {
    const a = rowAccesses(k, {}, from, to);
    assert.equal(a.reads.get(x), [{ buffer: x, from: from * WIDTH, to: to * WIDTH }], `rows [${from}, ${to}) read`);
    assert.equal(a.writes.get(y), [{ buffer: y, from: from * WIDTH, to: to * WIDTH }], `rows [${from}, ${to}) write`);
    assert.is(a.reads.has(y), false, 'the output is not read');
  }
  assert.equal(rowAccesses(k, {}, 2, 2), { reads: new Map(), writes: new Map() }, 'no rows touch nothing');
});

s('an index loaded from memory bounds nothing: the gathered table is unbounded, the indices and the output are not', () => {
  const g = trace('lookup', [{ name: 'table', dtype: DType.F32, shape: [100, WIDTH] }, { name: 'ids', dtype: DType.I32, shape: [ROWS] }], (table, ids) => ({ y: table.gather(ids).mul(2) }));
  const k = only(compileModule({ graphs: [g] }).graphs[0].kernels);
  const a = rowAccesses(k, {}, 1, 2);
  assert.is(a.reads.get(bufferOf(k, 'table')), 'unbounded');
  assert.is(evalSize(k.rows, {}), ROWS, 'a row an index');
  const [ids, out] = [bufferOf(k, 'ids'), k.buffers.findIndex((b) => b.written)];
  assert.equal(a.reads.get(ids), [{ buffer: ids, from: 1, to: 2 }]);
  assert.equal(a.writes.get(out), [{ buffer: out, from: WIDTH, to: 2 * WIDTH }]);
  // weightReads keeps parameters alone and leaves an unbounded one out: here there are none.
  assert.equal(weightReads(k, {}, 1, 2), []);
});

s.run();
