// Bisecting a megakernel (runtime/megakernel-bisect.ts) against a simulated program: three kernels over f32
// buffers of 8 elements, each row one element, their tasks' rows as a megakernel would deal them, and faults
// planted in one task: a wrong value, a row no task runs, a buffer the kernel reads as it writes it.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DType } from '../../ir/dtype.ts';
import { BisectTarget, BisectWrite, bisectMegakernel } from '../../runtime/megakernel-bisect.ts';

const N = 8;
type Memory = Map<string, Float32Array>;
interface Kernel {
  readonly writes: BisectWrite[];
  readonly tasks: { from: number; to: number; block: number }[];
  /** Element r of its write as the kernel computes it. */
  readonly row: (m: Memory, r: number) => number;
}

const write = (key: string, fresh: boolean, alsoRead = false): BisectWrite => ({ key, dtype: DType.F32, alsoRead, fresh });
// k0: t0 = 2 · in; k1: out = t0 + 1; k2: t0 = 3 · out (the temporary's slot used again, as the compiler does).
const kernels: Kernel[] = [
  { writes: [write('temp:t0', true)], tasks: [{ from: 0, to: 3, block: 0 }, { from: 3, to: 6, block: 1 }, { from: 6, to: 8, block: 0 }], row: (m, r) => 2 * m.get('input:in')![r] },
  { writes: [write('output:out', true)], tasks: [{ from: 0, to: 4, block: 1 }, { from: 4, to: 8, block: 0 }], row: (m, r) => m.get('temp:t0')![r] + 1 },
  { writes: [write('temp:t0', true)], tasks: [{ from: 0, to: 2, block: 0 }, { from: 2, to: 5, block: 1 }, { from: 5, to: 8, block: 1 }], row: (m, r) => 3 * m.get('output:out')![r] },
];

/** A simulated program; `fault(kernel, task, row, value)` is what the megakernel's task writes (undefined: nothing). */
function target(memory: Memory, ks: readonly Kernel[], fault = (_k: number, _t: number, _r: number, v: number): number | undefined => v): BisectTarget & { launches: number } {
  const t = {
    launches: 0,
    kernels: ks.map((k, i) => ({ name: `k${i}`, last: `op${i}`, writes: k.writes, tasks: k.tasks })),
    runKernel(i: number) {
      const out = memory.get(ks[i].writes[0].key)!;
      const values = Array.from({ length: N }, (_, r) => ks[i].row(memory, r));
      values.forEach((v, r) => (out[r] = v));
    },
    runTasks(i: number, task?: number) {
      t.launches++;
      const out = memory.get(ks[i].writes[0].key)!;
      ks[i].tasks.forEach((span, j) => {
        if (task !== undefined && task !== j) return;
        for (let r = span.from; r < span.to; r++) {
          const v = fault(i, j, r, ks[i].row(memory, r));
          if (v !== undefined) out[r] = v;
        }
      });
    },
    save(keys: readonly string[]) {
      const copies = keys.map((key) => [key, memory.get(key)!.slice()] as const);
      return { restore: () => copies.forEach(([key, c]) => memory.get(key)!.set(c)), release: () => {} };
    },
    read: (key: string) => new Uint8Array(memory.get(key)!.slice().buffer),
    fill: (key: string, byte: number) => new Uint8Array(memory.get(key)!.buffer).fill(byte),
  };
  return t;
}

const fresh = (): Memory => new Map([
  ['input:in', Float32Array.from({ length: N }, (_, i) => i + 1)],
  ['temp:t0', new Float32Array(N)],
  ['output:out', new Float32Array(N)],
]);

const s = suite('megakernel bisect');

s('a megakernel whose tasks compute what the kernels do: no difference, every buffer as it was', () => {
  const m = fresh();
  m.get('output:out')!.set([9, 9, 9, 9, 9, 9, 9, 9]);
  const before = [...m].map(([k, v]) => [k, [...v]]);
  assert.is(bisectMegakernel(target(m, kernels)), undefined);
  assert.equal([...m].map(([k, v]) => [k, [...v]]), before);
});

s('a wrong value in one task: the first kernel it shows in, the first element, the task that wrote it', () => {
  // Task 2 of k2 (rows 5–7) adds 0.5; k0 and k1 are right.
  const m = fresh();
  const diff = bisectMegakernel(target(m, kernels, (k, t, _r, v) => (k === 2 && t === 2 ? v + 0.5 : v)));
  assert.ok(diff);
  assert.equal({ kernel: diff!.kernel, name: diff!.name, last: diff!.last, buffer: diff!.buffer, element: diff!.element, differing: diff!.differing },
    { kernel: 2, name: 'k2', last: 'op2', buffer: 'temp:t0', element: 5, differing: 3 });
  // t0 = 3 · (2 · 6 + 1) at row 5.
  assert.is(diff!.expected, 39);
  assert.is(diff!.megakernel, 39.5);
  assert.equal(diff!.task, { index: 2, from: 5, to: 8, block: 1 });
});

s('a row no task runs: named by kernel and element, written by no task (even where the last step left its value)', () => {
  const m = fresh();
  m.get('output:out')!.set(Array.from({ length: N }, (_, i) => 2 * i + 3));
  const diff = bisectMegakernel(target(m, kernels, (k, _t, r, v) => (k === 1 && r === 6 ? undefined : v)));
  assert.ok(diff);
  assert.equal([diff!.kernel, diff!.element, diff!.differing], [1, 6, 1]);
  // out = 2 · 7 + 1 at row 6.
  assert.is(diff!.expected, 15);
  assert.ok(diff!.megakernel !== 15, 'the marked element, not a value the kernel wrote');
  assert.is(diff!.task, undefined);
});

s('a kernel that reads what it writes: the element named, not the task (its writes cannot be marked)', () => {
  const m = fresh();
  m.set('state:acc', Float32Array.from({ length: N }, (_, i) => 10 * i));
  const accumulate: Kernel = { writes: [write('state:acc', false, true)], tasks: [{ from: 0, to: 4, block: 0 }, { from: 4, to: 8, block: 1 }], row: (mem, r) => mem.get('state:acc')![r] + mem.get('input:in')![r] };
  const diff = bisectMegakernel(target(m, [accumulate], (_k, t, _r, v) => (t === 1 ? v - 1 : v)));
  assert.ok(diff);
  assert.equal([diff!.kernel, diff!.element, diff!.expected, diff!.megakernel], [0, 4, 45, 44]);
  assert.is(diff!.task, undefined);
  // The state as it was before bisecting.
  assert.equal([...m.get('state:acc')!], [0, 10, 20, 30, 40, 50, 60, 70]);
});

s('a NaN where the kernels give NaN agrees', () => {
  const m = fresh();
  m.get('input:in')!.set([NaN], 3);
  assert.is(bisectMegakernel(target(m, kernels)), undefined);
});

s.run();
