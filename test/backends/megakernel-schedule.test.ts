// The megakernel's schedule (backends/megakernel-schedule.ts) and its CUDA text (backends/cuda/megakernel.ts), no
// device needed: every task dealt once, waits covering every producer, the static check refusing planted faults,
// and task functions that read their block index from parameters and their shared memory from the pool.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { printCudaMegakernel, renderCudaMegakernel } from '../../backends/cuda/megakernel.ts';
import { cudaCaps } from '../../backends/device-caps.ts';
import { checkMegakernel, dependencies, formatMegakernel, MegakernelSchedule, scheduleMegakernel, TaskRun } from '../../backends/megakernel-schedule.ts';
import { scheduleKernels } from '../../backends/schedule.ts';
import { compileModule } from '../../compiler/compile-module.ts';
import { mlpStack } from './mlp-stack.ts';

const s = suite('megakernel schedule');

const caps = { ...cudaCaps(90, 4), dependentLaunch: false };
const module = compileModule({ graphs: [mlpStack()] });
const kernels = scheduleKernels(module.graphs[0].kernels, caps);
const schedule = scheduleMegakernel(kernels, {}, { blocks: 8, processors: 4 });

/** The schedule with block `b`'s runs replaced. */
const withBlock = (b: number, runs: TaskRun[]): MegakernelSchedule => ({ ...schedule, blocks: schedule.blocks.map((r, i) => (i === b ? runs : r)) });

s('every task of every kernel is dealt to exactly one block, in the kernels\' order', () => {
  assert.ok(kernels.length >= 8, `${kernels.length} kernels`);
  const dealt = schedule.tasks.map((n) => new Array<number>(n).fill(0));
  for (const runs of schedule.blocks) {
    runs.forEach((r, i) => {
      if (i > 0) assert.ok(runs[i - 1].kernel <= r.kernel);
      for (let c = 0; c < r.count; c++) dealt[r.kernel][r.first + c * r.stride]++;
    });
  }
  assert.ok(dealt.every((d) => d.every((n) => n === 1)));
  assert.ok(schedule.blocks.filter((runs) => runs.length > 0).length > 1, 'tasks spread over blocks');
});

s('a kernel depends on the writer of what it reads, and on readers of what it overwrites', () => {
  const irs = kernels.map((k) => k.kernel);
  const deps = dependencies(irs);
  const key = (b: (typeof irs)[number]['buffers'][number]) => JSON.stringify(b.binding);
  irs.forEach((k, j) => {
    // The latest earlier writer of each buffer k touches is among its dependencies.
    for (const b of k.buffers) {
      const writer = irs.slice(0, j).map((x, i) => (x.buffers.some((y) => y.written && key(y) === key(b)) ? i : -1)).filter((i) => i >= 0).pop();
      if (writer !== undefined) assert.ok(deps[j].includes(writer), `kernel ${j} reads or writes ${key(b)}, last written by ${writer}`);
    }
  });
  // The head's input is the last block's output: the head waits for the kernel that wrote it.
  assert.ok(deps[irs.length - 1].length > 0);
});

s('the static check refuses a missing wait, a wait on a later kernel, a task dealt twice or to no block, runs out of order', () => {
  const b = schedule.blocks.findIndex((runs) => runs.some((r) => r.waits.length > 0));
  const runs = schedule.blocks[b];
  const i = runs.findIndex((r) => r.waits.length > 0);
  const planted = (edit: (r: TaskRun) => TaskRun) => withBlock(b, runs.map((r, j) => (j === i ? edit(r) : r)));
  assert.throws(() => checkMegakernel(planted((r) => ({ ...r, waits: r.waits.slice(1) }))), new RegExp(`block ${b}, run ${i} \\(kernel ${runs[i].kernel}\\): does not wait for kernel ${runs[i].waits[0]}`));
  assert.throws(() => checkMegakernel(planted((r) => ({ ...r, waits: [...r.waits, r.kernel + 1] }))), /which is not earlier: a cycle/);
  const other = schedule.blocks.findIndex((rs, j) => j !== b && rs.length > 0);
  assert.throws(() => checkMegakernel(withBlock(other, [...schedule.blocks[other], ...runs])), /dealt twice|comes after a run of kernel/);
  assert.throws(() => checkMegakernel(withBlock(b, runs.filter((_, j) => j !== i))), /dealt to no block|does not wait for kernel/);
  assert.throws(() => checkMegakernel(withBlock(b, [...runs].reverse())), /a block walks the kernels in order/);
});

s('the task list names every block\'s runs and waits', () => {
  const text = formatMegakernel(schedule);
  assert.match(text, /^megakernel: \d+ kernels, \d+ tasks on 8 blocks/);
  assert.match(text, /\n {2}block 0: k0\[/);
  assert.match(text, /wait\(\d+( \d+)*\) k\d+\[/);
});

s('task functions take the block index, drop launch-level waits, and take shared memory from one pool', () => {
  const mk = printCudaMegakernel(schedule, 'mlp_megakernel', 2);
  const functions = mk.source.slice(mk.source.indexOf('// tsfuse megakernel'));
  assert.not.match(functions, /__shared__ (?!__align__\(16\) unsigned char tf_smem\[\];)/, 'only the kernel\'s own dynamic pool');
  assert.not.match(functions.slice(0, functions.indexOf('extern "C"')), /blockIdx|gridDim|tf_grid_wait/);
  assert.match(functions, /static __device__ __noinline__ void tf_task0\(/);
  assert.is((mk.source.match(/ {6}case \d+: tf_task\d+\(/g) ?? []).length, kernels.length);
  assert.ok(mk.sharedBytes >= 16 && mk.sharedBytes < 48 * 1024, `${mk.sharedBytes} bytes of shared memory`);
  assert.is(mk.blocks, 8);
});

s('refused by name: a graph of symbolic sizes, a device too old, a grid of no blocks', () => {
  assert.throws(() => renderCudaMegakernel(module, cudaCaps(61, 4), { graph: 'mlp' }), /compute capability 7\.0 or later/);
  assert.throws(() => renderCudaMegakernel(module, cudaCaps(90, 4), { graph: 'decode' }), /no graph @decode \(it has @mlp\)/);
  assert.throws(() => scheduleMegakernel(kernels, {}, { blocks: 0, processors: 4 }), /0 blocks is not a grid/);
  const symbolic = compileModule({ graphs: [mlpStack('S')] });
  assert.throws(() => renderCudaMegakernel(symbolic, cudaCaps(90, 4), { graph: 'mlp' }), /reads size S, which the step does not fix/);
});

s.run();
