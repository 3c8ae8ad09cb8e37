// Weights a kernel reads once ask L2 to evict them first (CUDA sm_80 and later): the scheduler marks a stream `once`
// where the kernel's rows times what one row reads of the weight is no more than the weight (a decode projection,
// each row its own outputs' part), never where rows read it again (several rows run row by row, as a megakernel's
// tasks run them, every row the whole weight) nor on a device without eviction hints; CUDA's short GEMM tiles (one tile of up to 32 rows) read
// every weight once. The hint changes no value: both forms against the reference
// interpreter on every device (CUDA: the GPU, or the CPU fake, which takes the plain load), fresh random inputs,
// f32 sums of bf16 weights: 1e-5 relative; the prompts' normalised rows are stored in bf16 for the projection (as
// GEMM inputs are), 4e-3.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { cudaCaps, DeviceCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { printCudaFunction, renderCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { scheduleKernel, scheduleKernels } from '../../backends/schedule.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { DType } from '../../ir/dtype.ts';
import { roundBf16 } from '../../ir/half.ts';
import { hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { Rng } from './rng.ts';

const seed = Number(process.env.READ_ONCE_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const [DEPTH, OUTPUTS] = [1024, 96];

/** rows × DEPTH normalised, times the bf16 weight w [OUTPUTS, DEPTH] transposed. */
function projection(name: string, rows: number) {
  return trace(name, [{ name: 'x', dtype: DType.F32, shape: [rows, DEPTH] }], (x) => {
    const normed = x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt());
    return { y: normed.matmul(param('w', DType.BF16, [OUTPUTS, DEPTH]).transpose()) };
  });
}

// One row (decode), 4 (row by row where scheduled so, ScheduleOptions.rowsOnly; launched, CUDA's short GEMM tiles)
// and 32 (CUDA's short GEMM tiles).
const ROWS = { decode: 1, short: 4, tiles: 32 } as const;
const graphs = Object.entries(ROWS).map(([name, rows]) => projection(name, rows));
const compiled = compileModule({ graphs });
const reference = { graphs: graphs.map((graph) => ({ graph, kernels: [] })) };
const weights = { w: hostTensor(DType.BF16, [OUTPUTS, DEPTH], Array.from({ length: OUTPUTS * DEPTH }, () => roundBf16(0.1 * rng.normal()))) };
const inputs: Record<keyof typeof ROWS, number[]> = { decode: [], short: [], tiles: [] };
for (const [name, rows] of Object.entries(ROWS) as [keyof typeof ROWS, number][]) inputs[name] = Array.from({ length: rows * DEPTH }, () => rng.normal());
const contraction = (graph: string) => compiled.graphs.find((g) => g.graph.name === graph)!.kernels.find((k) => k.kind === 'contraction')!;

const plan = suite('weights read once: the schedule and the CUDA load');
plan('a decode projection streams its weight evicted first on CUDA sm_80 and later, and says so', () => {
  const k = contraction('decode');
  const schedule = formatSchedule(scheduleKernel(k, cudaCaps(90)));
  assert.match(schedule, /vec16B\([^)]*\bb\d+ once\b[^)]*\)/, schedule);
  assert.match(formatSchedule(scheduleKernel(k, cudaCaps(80))), /\bb\d+ once\b/);
  const code = renderCudaFunction(k).code;
  assert.match(code, /tf_ld8_bf16_once\(b\d+ \+/, code);
  // The input row is not a weight: read as it was.
  assert.match(code, /tf_ld8_f32\(b\d+ \+/, code);
});
plan('not where rows read the weight again, nor without eviction hints (sm_75, WebGPU)', () => {
  const rows = scheduleKernel(contraction('short'), cudaCaps(90), { rowsOnly: true });
  const short = formatSchedule(rows);
  assert.match(short, /vec16B\(/, short);
  assert.not.match(short, /\bb\d+ once\b/, short);
  assert.not.match(printCudaFunction(rows).code, /_once\(b/);
  for (const caps of [cudaCaps(75), webgpuCaps({ subgroups: true })]) {
    assert.not.match(formatSchedule(scheduleKernel(contraction('decode'), caps)), /\bb\d+ once\b/, caps.name);
  }
});
plan("CUDA's short GEMM tiles of a 32-row prompt read their weights evicted first, and say so; not without hints", () => {
  const kernels = compiled.graphs.find((g) => g.graph.name === 'tiles')!.kernels;
  const gemm = (caps: DeviceCaps) => scheduleKernels(kernels, caps).find((k) => k.gemm)!;
  const sk = gemm(cudaCaps(90));
  assert.match(formatSchedule(sk), 'straight into the mma registers (read once: evicted from L2 first)', formatSchedule(sk));
  assert.match(printCudaFunction(sk).code, /tf_w0\[0\]\[tf_u\] = tf_col_in \? tf_ld16_once\(/);
  const plain = gemm({ ...cudaCaps(90), evictionHints: false });
  assert.match(formatSchedule(plain), 'straight into the mma registers, two steps');
  assert.match(printCudaFunction(plain).code, /tf_w0\[0\]\[tf_u\] = tf_col_in \? __ldg\(/);
});
plan.run();

async function output(device: Device, lowered: typeof compiled | typeof reference, graph: keyof typeof ROWS): Promise<number[]> {
  const program = await device.load(lowered, new ParamStore((n) => weights[n as 'w']), { maxSizes: {} });
  try {
    program.write('input:x', hostTensor(DType.F32, [ROWS[graph], DEPTH], inputs[graph]));
    program.run(graph, {});
    return [...(await program.read(namedOutputKey(program.graph(graph), 'y'), DType.F32, [ROWS[graph], OUTPUTS])).data];
  } finally {
    program.destroy();
  }
}

for (const kind of kernelDevices) {
  const s = suite(`weights read once, on ${kind}`);
  for (const graph of Object.keys(ROWS) as (keyof typeof ROWS)[]) {
    s(`${ROWS[graph]} row${ROWS[graph] === 1 ? '' : 's'}: as the reference interpreter`, async () => {
      const expected = await onDevice('reference', (ref) => output(ref, reference, graph));
      await onDevice(kind, async (device) => {
        const err = relativeError(await output(device, compiled, graph), expected!);
        assert.ok(err < (graph === 'decode' ? 1e-5 : 4e-3), `relative error ${err} (READ_ONCE_SEED=${seed})`);
      });
    });
  }
  s.run();
}
