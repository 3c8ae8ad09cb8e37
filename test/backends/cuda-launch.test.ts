// How CUDA kernels launch. Overlapping kernels (programmatic dependent launch): which devices get it, and what a
// kernel prefetches before waiting for its predecessor — its even share of the weights it streams, within the
// device's budget, and nothing it does not stream (a gathered table) or that a kernel writes. One wave: the
// workgroups a multiprocessor must hold so that a fixed grid runs at once.

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

/** The H200 measured prefetching slower (BENCHMARKS.md): it is on with TSFUSE_CUDA_OVERLAP=prefetch. */
function prefetching<T>(f: () => T): T {
  const saved = process.env.TSFUSE_CUDA_OVERLAP;
  process.env.TSFUSE_CUDA_OVERLAP = 'prefetch';
  try {
    return f();
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_CUDA_OVERLAP;
    else process.env.TSFUSE_CUDA_OVERLAP = saved;
  }
}

test('each workgroup prefetches its share of the streamed weights, all of them together within the budget', () => prefetching(() => {
  // 64 rows × 8 outputs × 2,048 bf16: 32 KiB a row, 2 MiB in all (under the 16 MiB budget): every byte.
  assert.equal(scheduleKernel(matvec(int(64), 8, 2048), cudaCaps(90)).overlap?.prefetch, [{ buf: 0, stride: 32768, bytes: 32768 }]);
  // 1,024 rows × 16 outputs × 2,048: 64 KiB a row, 64 MiB in all: 16 KiB a row, 16 MiB in all.
  const big = scheduleKernel(matvec(int(1024), 16, 2048), cudaCaps(90)).overlap!.prefetch;
  assert.equal(big, [{ buf: 0, stride: 65536, bytes: 16384 }]);
  assert.ok(big[0].bytes * 1024 <= cudaCaps(90).tuning.prefetchBytes);
  // Printed: thread 0 asks for the share, then every thread waits.
  const code = printCudaFunction(scheduleKernel(matvec(int(64), 8, 2048), cudaCaps(90))).code;
  const fetch = code.indexOf('tf_prefetch_l2(reinterpret_cast<const char*>(b0) + (size_t)blockIdx.x * 32768u, 32768u);');
  assert.ok(fetch > 0 && fetch < code.indexOf('tf_grid_wait();'), code);
}));

test('nothing is prefetched that is not a weight streamed by the rows, nor where the rows are a size', () => prefetching(() => {
  // Shares over 512 KiB a workgroup are not what one streams.
  assert.equal(scheduleKernel(matvec(int(4), 64, 8192), cudaCaps(90)).overlap?.prefetch, [], 'a 1 MiB share');
  assert.equal(scheduleKernel(matvec(int(64), 8, 2048, 'input'), cudaCaps(90)).overlap?.prefetch, [], 'an input, which a kernel may write');
  assert.equal(scheduleKernel(matvec(int(64), 8, 2048, 'param', true), cudaCaps(90)).overlap?.prefetch, [], 'a written parameter');
  const prompt = scheduleKernel(matvec(ivar('S'), 8, 2048), cudaCaps(90));
  assert.equal(prompt.overlap?.prefetch, [], 'rows that depend on the prompt');
}));

test('TSFUSE_CUDA_OVERLAP: unset overlaps without prefetching, off launches one after another, anything else is refused', () => {
  const saved = process.env.TSFUSE_CUDA_OVERLAP;
  try {
    delete process.env.TSFUSE_CUDA_OVERLAP;
    assert.equal(scheduleKernel(matvec(int(64), 8, 2048), cudaCaps(90)).overlap?.prefetch, []);
    process.env.TSFUSE_CUDA_OVERLAP = 'off';
    assert.is(cudaCaps(90).dependentLaunch, false);
    process.env.TSFUSE_CUDA_OVERLAP = 'sometimes';
    assert.throws(() => cudaCaps(90), /TSFUSE_CUDA_OVERLAP=sometimes: expected off or prefetch/);
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
