// A row's elements spread over the threads (an array or a store mapped thread-per-element): where every thread takes
// the same few elements (a constant count, at most 8 a thread), the scheduler says so ("8 each unrolled") and both
// GPU printers loop that constant number of times, CUDA unrolled, so that the elements' loads issue together (a
// norm's row and gain before a projection); otherwise they stride over the threads. On CUDA an array whose loads run
// along it (that norm's row and gain) takes its 8 as neighbours, read 16 bytes at a time ("in runs of 8"). What they
// compute is checked by every numeric test that runs a norm on the CPU fake of CUDA and on WebGPU (e2e/fixtures
// among them); this checks the loops' form.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { printCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { int, ivar, KernelIR, ROW } from '../../backends/kernel-ir.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { DType } from '../../ir/dtype.ts';

/** Each row scales `n` inputs by a gain into a row-local array, then stores them: a norm's second half. */
function scaled(n: number): KernelIR {
  const load = (buf: number) => ({ k: 'load', buf, index: ivar('j'), t: 'f32' } as const);
  return {
    name: 'k0',
    kind: 'reduce',
    fused: [],
    buffers: [
      { binding: { kind: 'input', name: 'x' }, dtype: DType.F32, elems: int(n), written: false },
      { binding: { kind: 'param', name: 'gain' }, dtype: DType.F32, elems: int(n), written: false },
      { binding: { kind: 'output', index: 0 }, dtype: DType.F32, elems: int(4 * n), written: true },
    ],
    sizes: [],
    rows: int(4),
    body: [
      { k: 'array', name: 'arr0', v: 'j', n, value: { k: 'binary', op: 'mul', a: load(0), b: load(1), t: 'f32' } },
      { k: 'store', buf: 2, v: 'i', n: int(n), index: { k: 'binary', op: 'add', a: ivar('i'), b: { k: 'binary', op: 'mul', a: ivar(ROW), b: int(n), t: 'i32' }, t: 'i32' },
        value: { k: 'elem', array: 'arr0', index: ivar('i'), t: 'f32' } },
    ],
  };
}

const cuda = (n: number) => printCudaFunction(scheduleKernel(scaled(n), cudaCaps(90))).code;
const wgsl = (n: number) => printWgsl(scheduleKernel(scaled(n), webgpuCaps({ subgroups: true }))).code;

test('the schedule gives 2,048 elements over 256 threads 8 each, unrolled; 300 and 4,096 elements none', () => {
  const each = (n: number) => scheduleKernel(scaled(n), cudaCaps(90)).stmts.map((st) => (st.mapping.kind === 'thread-per-element' ? st.mapping.each : 'other'));
  assert.equal(each(2048), [8, 8]);
  assert.equal(each(300), [undefined, undefined]);
  assert.equal(each(4096), [undefined, undefined]);
  const schedule = formatSchedule(scheduleKernel(scaled(2048), cudaCaps(90)));
  assert.match(schedule, 'array arr0[2048] over j: thread-per-element, 8 each in runs of 8, vec16B(b0, b1)');
  assert.match(schedule, 'store b2 over i<2048: thread-per-element, 8 each unrolled');
  assert.match(formatSchedule(scheduleKernel(scaled(2048), webgpuCaps({ subgroups: true }))), 'array arr0[2048] over j: thread-per-element, 8 each unrolled');
});

test('CUDA: 2,048 elements over 256 threads: the array in one run of 8 neighbours a thread, the store loops 8 times unrolled', () => {
  const code = cuda(2048);
  const unrolled = code.match(/#pragma unroll\n\s*for \(int tf_e = 0; tf_e < 8; tf_e\+\+\) \{\n\s*const int (\w+) = tf_tid \+ tf_e \* TF_BLOCK;/g) ?? [];
  assert.is(unrolled.length, 1, code);
  assert.match(code, /for \(int tf_r = 0; tf_r < 1; tf_r\+\+\) \{\n\s*const int arr0_at = \(tf_r \* TF_BLOCK \+ tf_tid\) \* 8;/, code);
  assert.match(code, 'tf_ld8_f32(b0 + 0 + arr0_at, arr0_r0);');
  assert.match(code, 'tf_ld8_f32(b1 + 0 + arr0_at, arr0_r1);');
  assert.not.match(code, /\+= TF_BLOCK\)/, 'no strided loop left');
});

test('CUDA: a count that is not a multiple of the block, or more than 8 a thread, strides over the threads', () => {
  for (const n of [300, 4096]) {
    const code = cuda(n);
    assert.not.match(code, /tf_e/, `${n} elements`);
    assert.match(code, new RegExp(`for \\(int \\w+ = tf_tid; \\w+ < ${n}; \\w+ \\+= TF_BLOCK\\)`), `${n} elements`);
  }
});

test('WGSL: 2,048 elements over 256 threads loop a constant 8 times; 300 and 4,096 stride', () => {
  const code = wgsl(2048);
  assert.is((code.match(/for \(var tf_e: i32 = 0; tf_e < 8; tf_e\+\+\) \{\n\s*let \w+: i32 = lid \+ tf_e \* 256;/g) ?? []).length, 2, code);
  for (const n of [300, 4096]) {
    const other = wgsl(n);
    assert.not.match(other, /tf_e/, `${n} elements`);
    assert.match(other, new RegExp(`for \\(var \\w+: i32 = lid; \\w+ < ${n}i?; \\w+ \\+= 256\\)`), `${n} elements`);
  }
});

test.run();
