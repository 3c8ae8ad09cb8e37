// What the scheduler decides for tile kernels (KernelIR.gemm / .flash) on each device: the units and tile shapes,
// the size from which the tiles run (below it the row form), and the row form alone where tiles do not fit.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpuCaps, cudaCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { evalSize } from '../../backends/kernel-ir.ts';
import { scheduleKernel, scheduleKernels } from '../../backends/schedule.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { arange, param, Tensor, trace, where } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';

const F = DType.F32;
const projection = (weight: DType) => compileModule({
  graphs: [trace('p', [{ name: 'x', dtype: F, shape: ['S', 128] }], (x) => ({ y: x.matmul(param('w', weight, [96, 128]).transpose()) }))],
}).graphs[0].kernels[0];
/** Causal attention of 4 heads over 256 keys; keys and values of `kv` (read as f32). */
const attention = (head: number, kv: DType = F) => compileModule({
  graphs: [trace('a', [
    { name: 'q', dtype: F, shape: [4, 'S', head] }, { name: 'k', dtype: kv, shape: [4, head, 256] }, { name: 'v', dtype: kv, shape: [4, 256, head] },
  ], (q, k, v) => ({ y: where(arange(256).reshape(1, -1).le(arange(q.dim(1)).reshape(-1, 1)), q.matmul(k.cast(F)), -Infinity).softmax(-1).matmul(v.cast(F)) }))],
}).graphs[0].kernels[0];

test('a bf16 projection: cp.async mma tiles on CUDA from 2 rows, f32 tiles on WebGPU from 2, rows on the CPU', () => {
  const k = projection(DType.BF16);
  assert.ok(k.gemm, 'lowered with a tile form');
  const cuda = scheduleKernel(k, cudaCaps());
  assert.is(cuda.gemm?.units, 'mma-bf16');
  assert.is(cuda.gemm?.staging?.kind, 'async');
  assert.is(cuda.tilesFrom, 2);
  assert.ok(cuda.dynamicWorkgroupBytes > 0, 'the ring of stages is memory given at launch');
  // 128 × 64 tiles, 64 deep (the depth is 128: two steps, too few to split).
  assert.equal([cuda.gemm?.tileRows, cuda.gemm?.tileColumns, cuda.gemm?.tileDepth], [128, 64, 64]);
  assert.is(cuda.gemm?.split, undefined);
  // Below the threshold (one row) the grid is the row form's rows; from it, the tiles: ceil(S / 128) × ceil(96 / 64).
  assert.is(evalSize(cuda.grid.rows, { S: 1 }), evalSize(k.rows, { S: 1 }));
  assert.is(evalSize(cuda.grid.rows, { S: 2 }), 1 * 2);
  assert.is(evalSize(cuda.grid.rows, { S: 130 }), 2 * 2);
  const wgpu = scheduleKernel(k, webgpuCaps({ subgroups: true }));
  assert.is(wgpu.gemm?.units, 'fma');
  assert.is(wgpu.tilesFrom, 2);
  const cpu = scheduleKernel(k, cpuCaps);
  assert.is(cpu.gemm?.units, 'serial');
  assert.is(cpu.tilesFrom, 0);
});

test('a left operand with a prologue is staged through registers, not copied as it is', () => {
  const k = compileModule({
    graphs: [trace('p', [{ name: 'x', dtype: F, shape: ['S', 128] }], (x) => ({ y: x.tanh().matmul(param('w', DType.BF16, [96, 128]).transpose()) }))],
  }).graphs[0].kernels[0];
  const cuda = scheduleKernel(k, cudaCaps());
  assert.is(cuda.gemm?.units, 'mma-bf16');
  assert.is(cuda.gemm?.staging?.kind, 'registers');
});

test('heads side by side (attention\'s output into the output projection) are copied as they are: runs of 4 along the depth', () => {
  const k = compileModule({
    graphs: [trace('p', [{ name: 'x', dtype: F, shape: [4, 'S', 32] }], (x) => ({
      y: x.permute(1, 0, 2).reshape(x.dim(1), 128).matmul(param('w', DType.BF16, [96, 128]).transpose()),
    }))],
  }).graphs[0].kernels[0];
  assert.is(scheduleKernel(k, cudaCaps()).gemm?.staging?.kind, 'async');
  // Heads of 2 break the runs of 4: staged through registers.
  const narrow = compileModule({
    graphs: [trace('p', [{ name: 'x', dtype: F, shape: [64, 'S', 2] }], (x) => ({
      y: x.permute(1, 0, 2).reshape(x.dim(1), 128).matmul(param('w', DType.BF16, [96, 128]).transpose()),
    }))],
  }).graphs[0].kernels[0];
  assert.is(scheduleKernel(narrow, cudaCaps()).gemm?.staging?.kind, 'registers');
});

test('rows a norm kernel writes for a matrix-unit GEMM alone are stored as bf16 on CUDA; read by anything else, f32', () => {
  const norm = (x: Tensor) => x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt());
  const alone = compileModule({
    graphs: [trace('p', [{ name: 'x', dtype: F, shape: ['S', 128] }], (x) => ({ y: norm(x).matmul(param('w', DType.BF16, [96, 128]).transpose()) }))],
  }).graphs[0].kernels;
  assert.is(alone.length, 2);
  const [writer, gemm] = scheduleKernels(alone, cudaCaps());
  const slot = (b: { binding: { kind: string } }) => b.binding.kind === 'temp';
  assert.is(writer.kernel.buffers.find((b) => slot(b) && b.written)?.dtype, DType.BF16);
  assert.is(gemm.kernel.buffers.find((b) => slot(b) && !b.written)?.dtype, DType.BF16);
  // sm_90: wgmma tiles, rows of 64 (128 bytes, swizzled) unpadded, 1,024 bytes to align the ring; sm_80 (and
  // TSFUSE_GEMM=mma): mma tiles, rows padded by 8.
  assert.is(gemm.gemm?.units, 'wgmma-bf16');
  assert.equal(gemm.gemm?.staging, { kind: 'async', stages: 6, bytes: 6 * (128 * 64 * 2 + 64 * 64 * 2) + 1024, left: 'bf16' });
  const sm80 = scheduleKernels(alone, cudaCaps(80))[1];
  assert.is(sm80.gemm?.units, 'mma-bf16');
  assert.equal(sm80.gemm?.staging, { kind: 'async', stages: 3, bytes: 3 * (128 * 72 * 2 + 64 * 72 * 2), left: 'bf16' });
  // No matrix units (WebGPU), or f32 weights: stored as computed.
  assert.is(scheduleKernels(alone, webgpuCaps({ subgroups: true }))[0].kernel.buffers.find((b) => slot(b) && b.written)?.dtype, DType.F32);
  // The normalised rows also feed a projection of f32 weights (one GEMM of both products, on f32 multiply-adds):
  // stored as computed.
  const shared = compileModule({
    graphs: [trace('p', [{ name: 'x', dtype: F, shape: ['S', 128] }], (x) => {
      const h = norm(x);
      return { y: h.matmul(param('w', DType.BF16, [96, 128]).transpose()), z: h.matmul(param('v', F, [96, 128]).transpose()) };
    })],
  }).graphs[0].kernels;
  assert.ok(shared.some((k) => k.buffers.some((b) => slot(b) && b.written)), 'the rows pass through a temporary');
  for (const s of scheduleKernels(shared, cudaCaps())) assert.ok(s.kernel.buffers.every((b) => !slot(b) || b.dtype === DType.F32), s.kernel.name);
});

test('an f32 projection takes f32 tiles on CUDA too (matrix units take bf16 weights only)', () => {
  assert.is(scheduleKernel(projection(F), cudaCaps()).gemm?.units, 'fma');
  assert.is(scheduleKernel(projection(DType.BF16), cudaCaps(75)).gemm?.units, 'fma', 'no mma before sm_80');
});

test('flash tiles: 64 × 32 on CUDA, 16 × 16 in WebGPU\'s 16 KiB; a head too large for WebGPU runs the row form', () => {
  const k = attention(64);
  assert.ok(k.flash?.limit, 'the causal bound found');
  const cuda = scheduleKernel(k, cudaCaps());
  assert.equal([cuda.flash?.tileQueries, cuda.flash?.tileKeys], [64, 32]);
  const wgpu = scheduleKernel(k, webgpuCaps({ subgroups: false }));
  assert.equal([wgpu.flash?.tileQueries, wgpu.flash?.tileKeys], [16, 16]);
  const big = scheduleKernel(attention(256), webgpuCaps({ subgroups: false }));
  assert.is(big.flash, undefined);
  assert.is(big.tilesFrom, undefined);
  assert.ok(big.stmts.length > 0, 'the row form');
});

test('flash over bf16 keys and values: a warp per 16 queries on CUDA\'s matrix units, 128 × 64 tiles; f32 elsewhere', () => {
  const k = attention(64, DType.BF16);
  const cuda = scheduleKernel(k, cudaCaps());
  assert.is(cuda.flash?.units, 'mma-bf16');
  assert.equal([cuda.flash?.tileQueries, cuda.flash?.tileKeys], [128, 64]);
  assert.is(cuda.tilesFrom, 2);
  assert.is(cuda.workgroupsPerProcessor, 2, 'registers capped for two tiles a multiprocessor');
  assert.is(scheduleKernel(k, cudaCaps(75)).flash?.units, 'fma', 'no mma before sm_80');
  assert.is(scheduleKernel(attention(64), cudaCaps()).flash?.units, 'fma', 'f32 keys keep f32 arithmetic');
  assert.is(scheduleKernel(attention(24, DType.BF16), cudaCaps()).flash?.units, 'fma', 'a head not a multiple of 16');
  assert.is(scheduleKernel(k, webgpuCaps({ subgroups: true })).flash?.units, 'fma');
});

test('rowsOnly (the megakernel\'s graph): GEMM and flash kernels row by row at every size, whatever was scheduled before', () => {
  const caps = cudaCaps();
  for (const k of [projection(DType.BF16), attention(64, DType.BF16)]) {
    const tiled = scheduleKernel(k, caps);
    assert.is(tiled.tilesFrom, 2);
    // The same kernel and device object again, rows only: not the schedule made first.
    const rows = scheduleKernel(k, caps, { rowsOnly: true });
    assert.is(rows.tilesFrom, undefined);
    assert.is(rows.gemm ?? rows.flash, undefined);
    assert.is(evalSize(rows.grid.rows, { S: 40 }), evalSize(k.rows, { S: 40 }));
    assert.ok(rows.stmts.length > 0, 'the row form');
    assert.is(scheduleKernel(k, caps).tilesFrom, 2, 'and the tiled schedule again without the option');
  }
});

test.run();
