// Every op of the registry through the reference interpreter, against hand-computed values: a table of
// (op, operands, attributes, expected) rows, traced with the public tensor API so types are inferred as in models.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { arange, concat, random, scalar, Tensor, trace, where } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { Op } from '../../ir/ops.ts';
import { interpret } from '../../backends/reference/interpreter.ts';
import { HostTensor, hostTensor, roundBf16 } from '../../ir/host-tensor.ts';

interface Case {
  name: string;
  op: Op;
  inputs: HostTensor[];
  fn: (...xs: Tensor[]) => Tensor;
  want: { dtype: DType; shape: number[]; data: number[] };
  tol?: number;
}

const f32 = (shape: number[], data: number[]) => hostTensor(DType.F32, shape, data);
const i32 = (shape: number[], data: number[]) => hostTensor(DType.I32, shape, data);
const out = (dtype: DType, shape: number[], data: number[]) => ({ dtype, shape, data });

const x23 = f32([2, 3], [1, -2, 3, -4, 5, 0.5]);
const sig = (v: number) => 1 / (1 + Math.exp(-v));
const map = (f: (v: number) => number) => out(DType.F32, [2, 3], [...x23.data].map(f));

const cases: Case[] = [
  { name: 'neg', op: Op.Neg, inputs: [x23], fn: (x) => x.neg(), want: map((v) => -v) },
  { name: 'abs', op: Op.Abs, inputs: [x23], fn: (x) => x.abs(), want: map(Math.abs) },
  { name: 'exp', op: Op.Exp, inputs: [x23], fn: (x) => x.exp(), want: map(Math.exp) },
  { name: 'log of |x|', op: Op.Log, inputs: [x23], fn: (x) => x.abs().log(), want: map((v) => Math.log(Math.abs(v))) },
  { name: 'sqrt', op: Op.Sqrt, inputs: [x23], fn: (x) => x.abs().sqrt(), want: map((v) => Math.sqrt(Math.abs(v))) },
  { name: 'rsqrt', op: Op.Rsqrt, inputs: [x23], fn: (x) => x.abs().rsqrt(), want: map((v) => 1 / Math.sqrt(Math.abs(v))) },
  { name: 'recip', op: Op.Recip, inputs: [x23], fn: (x) => x.recip(), want: map((v) => 1 / v) },
  { name: 'sin', op: Op.Sin, inputs: [x23], fn: (x) => x.sin(), want: map(Math.sin) },
  { name: 'cos', op: Op.Cos, inputs: [x23], fn: (x) => x.cos(), want: map(Math.cos) },
  { name: 'tanh', op: Op.Tanh, inputs: [x23], fn: (x) => x.tanh(), want: map(Math.tanh) },
  { name: 'sigmoid', op: Op.Sigmoid, inputs: [x23], fn: (x) => x.sigmoid(), want: map(sig) },
  { name: 'silu', op: Op.Silu, inputs: [x23], fn: (x) => x.silu(), want: map((v) => v * sig(v)) },
  { name: 'floor', op: Op.Floor, inputs: [x23], fn: (x) => x.floor(), want: map(Math.floor) },
  { name: 'not', op: Op.Not, inputs: [x23], fn: (x) => x.gt(0).not(), want: out(DType.Bool, [2, 3], [0, 1, 0, 1, 0, 0]) },
  { name: 'cast f32→i32 truncates', op: Op.Cast, inputs: [f32([3], [1.7, -1.7, 2.5])], fn: (x) => x.cast(DType.I32), want: out(DType.I32, [3], [1, -1, 2]) },
  { name: 'cast f32→bf16 rounds', op: Op.Cast, inputs: [f32([2], [1.00390625, 3.14159])], fn: (x) => x.cast(DType.BF16), want: out(DType.BF16, [2], [1, roundBf16(3.14159)]) },
  { name: 'add broadcasts a row', op: Op.Add, inputs: [x23, f32([3], [10, 20, 30])], fn: (x, y) => x.add(y), want: out(DType.F32, [2, 3], [11, 18, 33, 6, 25, 30.5]) },
  { name: 'sub broadcasts a column', op: Op.Sub, inputs: [x23, f32([2, 1], [1, 2])], fn: (x, y) => x.sub(y), want: out(DType.F32, [2, 3], [0, -3, 2, -6, 3, -1.5]) },
  { name: 'mul by a literal', op: Op.Mul, inputs: [x23], fn: (x) => x.mul(2), want: map((v) => 2 * v) },
  { name: 'div', op: Op.Div, inputs: [x23], fn: (x) => x.div(4), want: map((v) => v / 4) },
  { name: 'pow', op: Op.Pow, inputs: [x23], fn: (x) => x.pow(2), want: map((v) => v * v) },
  { name: 'maximum', op: Op.Maximum, inputs: [x23], fn: (x) => x.maximum(0), want: map((v) => Math.max(v, 0)) },
  { name: 'minimum', op: Op.Minimum, inputs: [x23], fn: (x) => x.minimum(0), want: map((v) => Math.min(v, 0)) },
  { name: 'eq', op: Op.Eq, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.eq(3), want: out(DType.Bool, [4], [0, 0, 1, 0]) },
  { name: 'ne', op: Op.Ne, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.ne(3), want: out(DType.Bool, [4], [1, 1, 0, 1]) },
  { name: 'lt', op: Op.Lt, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.lt(3), want: out(DType.Bool, [4], [1, 1, 0, 0]) },
  { name: 'le', op: Op.Le, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.le(3), want: out(DType.Bool, [4], [1, 1, 1, 0]) },
  { name: 'gt', op: Op.Gt, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.gt(3), want: out(DType.Bool, [4], [0, 0, 0, 1]) },
  { name: 'ge', op: Op.Ge, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.ge(3), want: out(DType.Bool, [4], [0, 0, 1, 1]) },
  { name: 'and', op: Op.And, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.gt(1).and(x.lt(4)), want: out(DType.Bool, [4], [0, 1, 1, 0]) },
  { name: 'or', op: Op.Or, inputs: [i32([4], [1, 2, 3, 4])], fn: (x) => x.lt(2).or(x.gt(3)), want: out(DType.Bool, [4], [1, 0, 0, 1]) },
  { name: 'where with a literal', op: Op.Where, inputs: [x23], fn: (x) => where(x.gt(0), x, -Infinity), want: map((v) => (v > 0 ? v : -Infinity)) },
  { name: 'const', op: Op.Const, inputs: [], fn: () => scalar(0.1), want: out(DType.F32, [], [Math.fround(0.1)]) },
  // The generator's bits are pinned (24 of them, times 2⁻²⁴): a change to ir/random.ts changes every seeded sample.
  { name: 'random (key 11, counters 0..2)', op: Op.Random, inputs: [i32([], [11]), i32([3], [0, 1, 2])], fn: (k, c) => random(k, c), want: out(DType.F32, [3], [15446749 / 16777216, 16439721 / 16777216, 7547791 / 16777216]) },
  { name: 'arange', op: Op.Arange, inputs: [], fn: () => arange(5), want: out(DType.I32, [5], [0, 1, 2, 3, 4]) },
  { name: 'sum over rows', op: Op.Sum, inputs: [x23], fn: (x) => x.sum(1), want: out(DType.F32, [2], [2, 1.5]) },
  { name: 'sum over all, keepdims', op: Op.Sum, inputs: [x23], fn: (x) => x.sum([0, 1], { keepdims: true }), want: out(DType.F32, [1, 1], [3.5]) },
  { name: 'mean over columns', op: Op.Mean, inputs: [x23], fn: (x) => x.mean(0), want: out(DType.F32, [3], [-1.5, 1.5, 1.75]) },
  { name: 'max', op: Op.Max, inputs: [x23], fn: (x) => x.max(-1, { keepdims: true }), want: out(DType.F32, [2, 1], [3, 5]) },
  { name: 'argmax takes the first maximum', op: Op.Argmax, inputs: [f32([2, 3], [1, 3, 3, 9, 2, 9])], fn: (x) => x.argmax(-1), want: out(DType.I32, [2], [1, 0]) },
  {
    name: 'softmax', op: Op.Softmax, inputs: [f32([1, 3], [1, 2, 3])], fn: (x) => x.softmax(-1),
    want: out(DType.F32, [1, 3], [1, 2, 3].map((v) => Math.exp(v) / (Math.exp(1) + Math.exp(2) + Math.exp(3)))),
  },
  {
    name: 'matmul', op: Op.Matmul, inputs: [x23, f32([3, 2], [1, 2, 3, 4, 5, 6])], fn: (x, w) => x.matmul(w),
    want: out(DType.F32, [2, 2], [1 - 6 + 15, 2 - 8 + 18, -4 + 15 + 2.5, -8 + 20 + 3]),
  },
  {
    name: 'batched matmul broadcasts the batch', op: Op.Matmul, inputs: [f32([2, 1, 2], [1, 2, 3, 4]), f32([1, 2, 1], [10, 100])],
    fn: (x, w) => x.matmul(w), want: out(DType.F32, [2, 1, 1], [210, 430]),
  },
  {
    name: 'matmul widens a bf16 weight', op: Op.Matmul, inputs: [f32([1, 2], [1, 1]), hostTensor(DType.BF16, [2, 1], [0.5, 0.25])],
    fn: (x, w) => x.matmul(w), want: out(DType.F32, [1, 1], [0.75]),
  },
  { name: 'reshape', op: Op.Reshape, inputs: [x23], fn: (x) => x.reshape(3, -1), want: out(DType.F32, [3, 2], [...x23.data]) },
  { name: 'permute', op: Op.Permute, inputs: [x23], fn: (x) => x.transpose(), want: out(DType.F32, [3, 2], [1, -4, -2, 5, 3, 0.5]) },
  { name: 'expand', op: Op.Expand, inputs: [f32([2, 1], [1, 2])], fn: (x) => x.expand(2, 3), want: out(DType.F32, [2, 3], [1, 1, 1, 2, 2, 2]) },
  { name: 'slice', op: Op.Slice, inputs: [x23], fn: (x) => x.slice(1, 1, 3), want: out(DType.F32, [2, 2], [-2, 3, 5, 0.5]) },
  { name: 'slice with negative start', op: Op.Slice, inputs: [x23], fn: (x) => x.slice(-1, -1), want: out(DType.F32, [2, 1], [3, 0.5]) },
  { name: 'concat', op: Op.Concat, inputs: [x23, f32([2, 1], [7, 8])], fn: (x, y) => concat([x, y], 1), want: out(DType.F32, [2, 4], [1, -2, 3, 7, -4, 5, 0.5, 8]) },
  { name: 'gather rows', op: Op.Gather, inputs: [x23, i32([3], [1, 0, 1])], fn: (t, ids) => t.gather(ids), want: out(DType.F32, [3, 3], [-4, 5, 0.5, 1, -2, 3, -4, 5, 0.5]) },
];

for (const c of cases) {
  test(`${c.op}: ${c.name}`, () => {
    const specs = c.inputs.map((t, i) => ({ name: `x${i}`, dtype: t.dtype, shape: t.shape }));
    const g = trace('t', specs, c.fn);
    assert.ok(g.nodes.some((n) => n.op === c.op), `the traced graph uses ${c.op}`);
    const inputs = Object.fromEntries(c.inputs.map((t, i) => [`x${i}`, t]));
    const [got] = interpret(g, { inputs, param: () => { throw new Error('no params'); }, states: new Map() });
    assert.is(got.dtype, c.want.dtype);
    assert.equal(got.shape, c.want.shape);
    const tol = c.tol ?? 1e-6;
    c.want.data.forEach((w, i) => {
      const v = got.data[i];
      const ok = w === v || Math.abs(v - w) <= tol * Math.max(1, Math.abs(w));
      assert.ok(ok, `element ${i}: got ${v}, want ${w}`);
    });
  });
}

test('every built-in op has a case in this table', () => {
  const covered = new Set(cases.map((c) => c.op));
  const missing = Object.values(Op).filter((op) => !covered.has(op) && op !== Op.UpdateSlice);
  assert.equal(missing, []);
});

test.run();
