// How CUDA kernels launch. Overlapping kernels (programmatic dependent launch): which devices get it, and that a
// kernel waits for its predecessor before it touches anything. One wave: the workgroups a multiprocessor must hold
// so that a fixed grid runs at once.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpuCaps, cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { add, int, ivar, KernelIR, KExpr, mul, ROW } from '../../backends/kernel-ir.ts';
import { printCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { scheduleKernel } from '../../backends/schedule.ts';
import { DType } from '../../ir/dtype.ts';

/** rows × outs outputs, each a dot product of `depth` bf16 weights (row-major [rows · outs, depth]) with x. */
function matvec(rows: KExpr, outs: number, depth: number, weight: 'param' | 'input' = 'param', written = false): KernelIR {
  const w = rows.k === 'const' ? int(rows.value * outs * depth) : mul(rows, int(outs * depth));
  return {
    name: 'k0',
    kind: 'contraction',
    fused: [],
    buffers: [
      { binding: { kind: weight, name: 'w' }, dtype: DType.BF16, elems: w, written },
      { binding: { kind: 'input', name: 'x' }, dtype: DType.F32, elems: int(depth), written: false },
      { binding: { kind: 'output', index: 0 }, dtype: DType.F32, elems: rows.k === 'const' ? int(rows.value * outs) : mul(rows, int(outs)), written: true },
    ],
    sizes: rows.k === 'var' ? [rows.name] : [],
    rows,
    body: [{
      k: 'store', buf: 2, v: 'i0', n: int(outs), index: add(mul(ivar(ROW), int(outs)), ivar('i0')),
      value: { k: 'reduce', op: 'sum', v: 'k1', n: int(depth), t: 'f32', body: { k: 'binary', op: 'mul', t: 'f32',
        a: { k: 'load', buf: 0, index: add(mul(add(mul(ivar(ROW), int(outs)), ivar('i0')), int(depth)), ivar('k1')), t: 'f32' },
        b: { k: 'load', buf: 1, index: ivar('k1'), t: 'f32' } } },
    }],
  };
}

test('sm_90 kernels overlap their predecessor; older GPUs, WebGPU and the CPU do not', () => {
  const k = matvec(int(64), 8, 2048);
  assert.ok(scheduleKernel(k, cudaCaps(90)).overlap);
  for (const d of [cudaCaps(80), webgpuCaps({ subgroups: true }), cpuCaps]) assert.is(scheduleKernel(k, d).overlap, undefined, d.name);
});

test('an overlapping kernel waits for its predecessor before anything else, then lets its successor start', () => {
  const code = printCudaFunction(scheduleKernel(matvec(int(64), 8, 2048), cudaCaps(90))).code;
  const wait = code.indexOf('tf_grid_wait();');
  assert.ok(wait > 0 && wait < code.indexOf('tf_grid_release();') && code.indexOf('tf_grid_release();') < code.indexOf('b0['), code);
});

test('TSFUSE_CUDA_OVERLAP: unset overlaps, off launches one after another, anything else is refused', () => {
  const saved = process.env.TSFUSE_CUDA_OVERLAP;
  try {
    delete process.env.TSFUSE_CUDA_OVERLAP;
    assert.is(cudaCaps(90).dependentLaunch, true);
    process.env.TSFUSE_CUDA_OVERLAP = 'off';
    assert.is(cudaCaps(90).dependentLaunch, false);
    process.env.TSFUSE_CUDA_OVERLAP = 'sometimes';
    assert.throws(() => cudaCaps(90), /TSFUSE_CUDA_OVERLAP=sometimes: expected off \(or unset\)/);
    process.env.TSFUSE_CUDA_OVERLAP = 'prefetch';
    assert.throws(() => cudaCaps(90), /TSFUSE_CUDA_OVERLAP=prefetch: expected off/, 'the L2 prefetch is gone');
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_CUDA_OVERLAP;
    else process.env.TSFUSE_CUDA_OVERLAP = saved;
  }
});

test('a fixed grid of more rows than multiprocessors that their slots can hold runs in one wave', () => {
  const perSM = (rows: number, caps = cudaCaps(90, 132)) => scheduleKernel(matvec(int(rows), 2, 2048), caps).workgroupsPerProcessor;
  assert.is(perSM(1024), 8, '1,024 rows on 132 SMs: 8 each');
  assert.is(perSM(700), 6);
  assert.is(perSM(132), undefined, 'one a multiprocessor: nothing to cap');
  assert.is(perSM(2004), undefined, 'more than 8 a multiprocessor: more than one wave anyway');
  assert.is(perSM(1024, cudaCaps(86, 84)), undefined, 'sm_86 holds 6 of 256 threads: 13 would not fit');
  assert.is(perSM(400, cudaCaps(86, 84)), 5);
  assert.is(scheduleKernel(matvec(ivar('S'), 2, 2048), cudaCaps(90)).workgroupsPerProcessor, undefined, 'a grid that depends on the prompt');
  assert.is(scheduleKernel(matvec(int(1024), 2, 2048), webgpuCaps({ subgroups: true })).workgroupsPerProcessor, undefined);
  assert.match(printCudaFunction(scheduleKernel(matvec(int(1024), 2, 2048), cudaCaps(90))).code, '__launch_bounds__(TF_BLOCK, 8) k0(');
});

test.run();
