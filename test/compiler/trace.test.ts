// The tracer: recorded graphs, source lines on nodes, state writes, and the errors model code gets.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { param, state, trace, TraceError } from '../../compiler/index.ts';
import { interpret } from '../../backends/reference/interpreter.ts';
import { DType } from '../../ir/dtype.ts';
import { printGraph } from '../../ir/printer.ts';
import { verifyGraph } from '../../ir/verify.ts';
import { hostTensor } from '../../ir/host-tensor.ts';

const here = 'test/compiler/trace.test.ts';

/** The line of this file on which `marker` appears, for asserting source locations. */
async function lineOf(marker: string): Promise<number> {
  const { readFileSync } = await import('node:fs');
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  return lines.findIndex((l) => l.includes(marker) && !l.includes('lineOf(')) + 1;
}

test('nodes carry the model line that created them', async () => {
  const g = trace('f', [{ name: 'x', dtype: DType.F32, shape: [4] }], (x) => x.exp().add(1)); // MARK-LOC
  const line = await lineOf('MARK-LOC');
  assert.ok(g.nodes.length === 3);
  for (const n of g.nodes) assert.is(n.loc, `${here}:${line}`);
});

test('a tensor in an if-condition via comparison throws naming the file and line', async () => {
  try {
    trace('f', [{ name: 'x', dtype: DType.F32, shape: [4] }], (x) => {
      if ((x as unknown as number) > 0) return x; // MARK-IF
      return x.neg();
    });
    assert.unreachable('tracing should fail');
  } catch (e) {
    assert.instance(e, TraceError);
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(`${here}:${await lineOf('MARK-IF')}:`), msg);
    assert.match(msg, 'where(cond, a, b)');
  }
});

test('Number(t) throws naming the file and line', async () => {
  try {
    trace('f', [{ name: 'x', dtype: DType.F32, shape: [] }], (x) => x.mul(Number(x))); // MARK-NUM
    assert.unreachable('tracing should fail');
  } catch (e) {
    assert.instance(e, TraceError);
    assert.ok((e as Error).message.startsWith(`${here}:${await lineOf('MARK-NUM')}:`), (e as Error).message);
  }
});

test('a shape error names the model line and both shapes', async () => {
  try {
    trace('f', [{ name: 'x', dtype: DType.F32, shape: [4, 3] }, { name: 'y', dtype: DType.F32, shape: [5] }],
      (x, y) => x.add(y)); // MARK-SHAPE
    assert.unreachable('tracing should fail');
  } catch (e) {
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(`${here}:${await lineOf('MARK-SHAPE')}:`), msg);
    assert.match(msg, '[4,3] and [5] do not broadcast');
  }
});

test('dtype mismatches must be cast explicitly', () => {
  assert.throws(() => trace('f', [{ name: 'x', dtype: DType.F32, shape: [2] }, { name: 'y', dtype: DType.BF16, shape: [2] }],
    (x, y) => x.add(y)), /add needs operands of one dtype, got f32 and bf16/);
});

test('param() outside trace() is an error, not a crash', () => {
  assert.throws(() => param('w', DType.F32, [2]), /only be called while tracing/);
});

test('write() updates a state tensor in place and sets its final value', () => {
  const g = trace('step', [{ name: 'u', dtype: DType.F32, shape: [1, 2] }, { name: 'i', dtype: DType.I32, shape: [] }], (u, i) => {
    const cache = state('cache', DType.F32, [3, 2]);
    return cache.write(u, i, 0).sum(0);
  });
  verifyGraph(g);
  assert.is(g.stateUpdates.length, 1);
  assert.match(printGraph(g, { locations: false }), 'state %cache <- %0');
  const states = new Map([['cache', hostTensor(DType.F32, [3, 2], [1, 1, 1, 1, 1, 1])]]);
  const inputs = { u: hostTensor(DType.F32, [1, 2], [5, 7]), i: hostTensor(DType.I32, [], [2]) };
  const [sum] = interpret(g, { inputs, param: () => { throw new Error('none'); }, states });
  assert.equal([...states.get('cache')!.data], [1, 1, 1, 1, 5, 7]);
  assert.equal([...sum.data], [7, 9]);
  // a write past the end names the node instead of corrupting memory
  assert.throws(() => interpret(g, { inputs: { ...inputs, i: hostTensor(DType.I32, [], [3]) }, param: () => { throw new Error(); }, states }),
    /update_slice.*past the end of axis 0/);
});

test('write() on a non-state tensor is refused', () => {
  assert.throws(() => trace('f', [{ name: 'x', dtype: DType.F32, shape: [2, 2] }, { name: 'i', dtype: DType.I32, shape: [] }],
    (x, i) => x.write(x, i, 0)), /write\(\) needs a state tensor/);
});

test('reshape infers -1, symbolic dims included', () => {
  const g = trace('f', [{ name: 'x', dtype: DType.F32, shape: ['S', 4, 8] }], (x) => x.reshape(-1, 32).reshape('S', 2, -1));
  assert.equal(g.outputs[0].type.shape, ['S', 2, 16]);
});

test.run();
