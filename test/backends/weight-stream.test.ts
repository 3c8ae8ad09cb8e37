// The weights a megakernel streams through pages of shared memory (backends/weight-stream.ts): a decode projection
// whose rows each read their own contiguous run of an out-major weight streams it, a run a row at a fixed stride;
// a weight every row reads alike (a norm's scale), one read by the task's prologue, and an in-major weight (each
// row's outputs strided over the whole weight) do not; nor anything past a page. With streaming asked, the
// megakernel lowers its projections in rows whose weights fit a page (RowOptions.rowWeightBytes), schedules them
// without eviction hints for what it streams, and prints a ring; without it, none.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { cudaCaps } from '../../backends/device-caps.ts';
import { evalSize, KernelIR } from '../../backends/kernel-ir.ts';
import { megakernelKernels, MegakernelRefused, megakernelScheduleOptions, renderCudaMegakernel } from '../../backends/cuda/megakernel.ts';
import { CUDA_BLOCK } from '../../backends/cuda/prelude.ts';
import { rowInvariantPrologue, scheduleKernel } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { rowStreams } from '../../backends/weight-stream.ts';
import { weightReads } from '../../backends/element-ranges.ts';
import { DType } from '../../ir/dtype.ts';

const [DEPTH, OUTPUTS] = [8192, 96];
const PAGE = 32 * 1024;

/** One input row normalised (with a scale), times w: out-major [OUTPUTS, DEPTH] transposed, or in-major [DEPTH, OUTPUTS]. */
function projection(layout: 'out-major' | 'in-major') {
  return trace('step', [{ name: 'x', dtype: DType.F32, shape: [1, DEPTH] }], (x) => {
    const normed = x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).mul(param('scale', DType.F32, [DEPTH]));
    const w = layout === 'out-major' ? param('w', DType.BF16, [OUTPUTS, DEPTH]).transpose() : param('w', DType.BF16, [DEPTH, OUTPUTS]);
    return { y: normed.matmul(w) };
  });
}

const contraction = (ks: readonly KernelIR[]) => ks.find((k) => k.kind === 'contraction')!;
const weight = (k: KernelIR, name: string) => k.buffers.findIndex((b) => b.binding.kind === 'param' && b.binding.name === name);
const caps = cudaCaps(90, 4);

const s = suite('weights streamed through the megakernel\'s pages');

s('an out-major projection streams its weight a run a row; the norm\'s scale and an in-major weight are read as they were', () => {
  const out = compileModule({ graphs: [projection('out-major')] });
  const k = contraction(out.graphs[0].kernels);
  const rows = evalSize(k.rows, {});
  const prologue = rowInvariantPrologue(k) ?? 0;
  const streams = rowStreams(k, 1 << 20, prologue);
  assert.equal(streams.map((r) => r.buffer), [weight(k, 'w')], 'the weight only, not the scale');
  const [r] = streams;
  const perRowBytes = (OUTPUTS / rows) * DEPTH * 2;
  assert.equal({ first: r.first, perRow: r.perRow, bytes: r.bytes, pageOffset: r.pageOffset }, { first: 0, perRow: perRowBytes, bytes: perRowBytes, pageOffset: 0 });
  // Every row's run is where weightReads bounds that row's reads.
  for (const row of [0, 1, rows - 1]) {
    const [read] = weightReads(k, {}, row, row + 1).filter((e) => e.buffer === r.buffer);
    assert.equal([read.from * 2, read.to * 2], [r.first + row * r.perRow, r.first + row * r.perRow + r.bytes]);
  }
  assert.equal(rowStreams(k, perRowBytes - 16, prologue), [], 'a row past a page streams nothing');
  const inMajor = contraction(compileModule({ graphs: [projection('in-major')] }).graphs[0].kernels);
  assert.equal(rowStreams(inMajor, 1 << 20, rowInvariantPrologue(inMajor) ?? 0), [], 'each row strided over the whole weight');
});

s('with streaming asked the megakernel lowers rows that fit a page, reads them without eviction hints and prints a ring', () => {
  const module = compileModule({ graphs: [projection('out-major')] });
  const lg = module.graphs[0];
  const plain = contraction(megakernelKernels(lg, caps, { graph: 'step' }));
  const paged = contraction(megakernelKernels(lg, caps, { graph: 'step', streamWeights: true }));
  // 8 blocks (4 multiprocessors, 2 each): 8 outputs a row (12 rows, 128 KiB of weight a row) plain; 2 a row
  // (32 KiB, a page) streamed.
  assert.is(evalSize(plain.rows, {}), OUTPUTS / 8);
  assert.is(evalSize(paged.rows, {}), OUTPUTS / 2);
  const w = weight(paged, 'w');
  assert.match(formatSchedule(scheduleKernel(paged, caps, megakernelScheduleOptions(caps, { graph: 'step' }))), new RegExp(`\\bb${w} once\\b`));
  assert.not.match(formatSchedule(scheduleKernel(paged, caps, megakernelScheduleOptions(caps, { graph: 'step', streamWeights: true }))), new RegExp(`\\bb${w} once\\b`));
  const mk = renderCudaMegakernel(module, caps, { graph: 'step', streamWeights: true });
  const k = mk.schedule.kernels.findIndex((sk) => sk.kernel.kind === 'contraction');
  assert.equal(mk.schedule.streams[k].map((r) => [r.buffer, r.bytes]), [[w, PAGE]]);
  assert.match(mk.tasks, new RegExp(`streaming b${w} \\(${PAGE} bytes a row\\)`));
  // The normalised row (32 KiB of floats) takes the pool: two pages fit beside it in a block's share (2 a multiprocessor).
  const pages = Number(/#define TF_RING_PAGES (\d+)/.exec(mk.kernel.source)?.[1]);
  assert.is(pages, 2);
  assert.ok(mk.kernel.sharedBytes > DEPTH * 4 + pages * PAGE && mk.kernel.sharedBytes <= 113 * 1024, `${mk.kernel.sharedBytes} bytes of shared memory a block`);
  // The producer's warp after the compute threads: its block is a warp wider, takes its share of the registers,
  // and the compute threads' barriers leave it out.
  assert.is(mk.kernel.threads, CUDA_BLOCK + 32);
  assert.match(mk.kernel.source, /__launch_bounds__\(TF_BLOCK \+ 32, 2\)/);
  assert.match(mk.kernel.source, new RegExp(`bar\\.sync 1, ${CUDA_BLOCK};[^]*#define __syncthreads\\(\\) tf_sync_compute\\(\\)[^]*tsfuse CUDA helpers`));
  assert.is(megakernelScheduleOptions(caps, { graph: 'step', streamWeights: true }).registersPerThread, Math.floor(65536 / (2 * (CUDA_BLOCK + 32))));
  const off = renderCudaMegakernel(module, caps, { graph: 'step' });
  assert.not.match(off.kernel.source, /tf_ring|tf_sync_compute/);
  assert.is(off.kernel.threads, CUDA_BLOCK);
  assert.is(megakernelScheduleOptions(caps, { graph: 'step' }).registersPerThread, 65536 / (2 * CUDA_BLOCK));
  assert.ok(off.kernel.sharedBytes < DEPTH * 4 + PAGE, `${off.kernel.sharedBytes} bytes without a ring`);
});

s('a device without bulk copies refuses streaming by name', () => {
  const module = compileModule({ graphs: [projection('out-major')] });
  assert.throws(() => renderCudaMegakernel(module, cudaCaps(80, 4), { graph: 'step', streamWeights: true }), (e: unknown) => e instanceof MegakernelRefused && /--megakernel-stream needs compute capability 9\.0/.test((e as Error).message));
});

s.run();
