// Projections of many rows run as GEMM tiles (KernelIR.gemm): lowering picks them out, and every device computes
// what the reference interpreter does, at row counts below, at and past a tile (1, 7, 64, 130) and column counts
// that are not a multiple of one (70), on fresh random inputs. The bf16 weights of @bf16 (depth 128, copied 64
// deep a step), @bf16shallow (depth 96, 32 deep) and @bf16norm (its left operand the rows a norm kernel stores, as
// bf16 on CUDA) take CUDA's matrix units, which round the left operand to bf16 (8 bits of mantissa): held to 1e-2
// of the reference's relative error; every f32 path (and @f32mix, depth 96, f32 multiply-adds on every GPU) to 1e-4.
// WebGPU's GEMMs of bf16 weights run on f16 subgroup matrices where Dawn offers them (the H200): held to 1e-2 too.

import koffi from 'koffi';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModule } from '../../compiler/compile-module.ts';
import { param, trace } from '../../compiler/index.ts';
import { DType } from '../../ir/dtype.ts';
import { HostTensor, hostTensor } from '../../ir/host-tensor.ts';
import { Device, namedOutputKey } from '../../runtime/device.ts';
import { ParamStore } from '../../runtime/params.ts';
import { kernelDevices, onDevice, openCudaOrFake, restoreCudaOrFake } from '../runtime/fake-cuda/build.ts';
import { relativeError } from './compare.ts';
import { cudaCaps, DeviceCaps, webgpuCaps } from '../../backends/device-caps.ts';
import { formatSchedule } from '../../backends/schedule-format.ts';
import { printWgsl } from '../../backends/wgsl/render-wgsl.ts';
import { evalSize, int, mul } from '../../backends/kernel-ir.ts';
import { printCudaFunction } from '../../backends/cuda/render-cuda.ts';
import { scheduleKernel, scheduleKernels } from '../../backends/schedule.ts';
import { Rng } from './rng.ts';
import { setLogs } from '../../ir/logs.ts';

const [N, K_MMA, K_FMA] = [70, 128, 96];
/** x·wᵀ (bf16 weights), and silu(h·gᵀ)·(h·uᵀ) + x·rᵀ over h = RMSNorm(x) (f32 weights): one and two products. */
const bf16 = trace('bf16', [{ name: 'x', dtype: DType.F32, shape: ['S', K_MMA] }], (x) => ({
  y: x.matmul(param('w', DType.BF16, [N, K_MMA]).transpose()),
}));
/** x·vᵀ over a depth of 96: CUDA copies steps 32 deep (64 where the depth allows, as in @bf16). */
const bf16shallow = trace('bf16shallow', [{ name: 'x', dtype: DType.F32, shape: ['S', K_FMA] }], (x) => ({
  y: x.matmul(param('v', DType.BF16, [N, K_FMA]).transpose()),
}));
/** RMSNorm(x)·wᵀ: the norm a kernel of its own, whose rows CUDA stores as bf16 for the matrix units to copy. */
const bf16norm = trace('bf16norm', [{ name: 'x', dtype: DType.F32, shape: ['S', K_MMA] }], (x) => ({
  y: x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).matmul(param('w', DType.BF16, [N, K_MMA]).transpose()),
}));
/** tanh(x)·wᵀ: a left operand with a prologue (staged through registers on CUDA, not copied as it is). */
const bf16prologue = trace('bf16prologue', [{ name: 'x', dtype: DType.F32, shape: ['S', K_MMA] }], (x) => ({
  y: x.tanh().matmul(param('w', DType.BF16, [N, K_MMA]).transpose()),
}));
const f32mix = trace('f32mix', [{ name: 'x', dtype: DType.F32, shape: ['S', K_FMA] }], (x) => {
  const h = x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt()).mul(param('n', DType.F32, [K_FMA]));
  const gate = h.matmul(param('g', DType.F32, [N, K_FMA]).transpose()).silu();
  const up = h.matmul(param('u', DType.F32, [N, K_FMA]).transpose());
  return { y: gate.mul(up) };
});
/**
 * silu(x·dᵀ) over depths of 1,024 (16 steps of 64) and 704 (11): few tiles, so on CUDA each tile's depth is split
 * among workgroups (4 and 2 parts, at one row tile and at two; 704 in runs of 5 and 6 steps), the epilogue run
 * once on the parts' sum.
 */
const [K_DEEP, K_ODD] = [1024, 704];
const bf16deep = trace('bf16deep', [{ name: 'x', dtype: DType.F32, shape: ['S', K_DEEP] }], (x) => ({
  y: x.matmul(param('d', DType.BF16, [N, K_DEEP]).transpose()).silu(),
}));
const bf16odd = trace('bf16odd', [{ name: 'x', dtype: DType.F32, shape: ['S', K_ODD] }], (x) => ({
  y: x.matmul(param('o', DType.BF16, [N, K_ODD]).transpose()).silu(),
}));
/**
 * RMSNorm(x)·dᵀ over the depths of @bf16deep and @bf16odd, and RMSNorm(x)·wwᵀ over 320 columns: left operands
 * stored as bf16 by the norm's kernel, which CUDA's sm_90a tiles (the fake reports 9.0) multiply by wgmma from
 * shared memory: split depths (4 and 2 parts), tiles of 128 columns (256 with TSFUSE_GEMM=wgmma:256x3) reaching
 * past the last column.
 */
const normed = (x: ReturnType<typeof param>) => x.mul(x.mul(x).mean(-1, { keepdims: true }).add(1e-5).rsqrt());
const bf16normdeep = trace('bf16normdeep', [{ name: 'x', dtype: DType.F32, shape: ['S', K_DEEP] }], (x) => ({
  y: normed(x).matmul(param('d', DType.BF16, [N, K_DEEP]).transpose()).silu(),
}));
const bf16normodd = trace('bf16normodd', [{ name: 'x', dtype: DType.F32, shape: ['S', K_ODD] }], (x) => ({
  y: normed(x).matmul(param('o', DType.BF16, [N, K_ODD]).transpose()),
}));
/** RMSNorm(x)·dnᵀ over 40 columns (one tile) and the depth of @bf16deep: on CUDA's 8 multiprocessors, 8 parts, a cluster of 8 with a warp each. */
const NARROW = 40;
const bf16normnarrow = trace('bf16normnarrow', [{ name: 'x', dtype: DType.F32, shape: ['S', K_DEEP] }], (x) => ({
  y: normed(x).matmul(param('dn', DType.BF16, [NARROW, K_DEEP]).transpose()),
}));
const WIDE = 320;
const bf16normwide = trace('bf16normwide', [{ name: 'x', dtype: DType.F32, shape: ['S', K_MMA] }], (x) => ({
  y: normed(x).matmul(param('ww', DType.BF16, [WIDE, K_MMA]).transpose()),
}));
/** silu(h·gbᵀ)·(h·ubᵀ) over h = RMSNorm(x) (bf16 weights): two products of a bf16 left operand (a gate/up projection). */
const bf16normglu = trace('bf16normglu', [{ name: 'x', dtype: DType.F32, shape: ['S', K_MMA] }], (x) => {
  const h = normed(x);
  return { y: h.matmul(param('gb', DType.BF16, [N, K_MMA]).transpose()).silu().mul(h.matmul(param('ub', DType.BF16, [N, K_MMA]).transpose())) };
});
/** x·fᵀ over a depth of 640: five steps of WebGPU's short tiles, which keep 4 in flight (the loop's second round one). */
const K_FIVE = 640;
const bf16five = trace('bf16five', [{ name: 'x', dtype: DType.F32, shape: ['S', K_FIVE] }], (x) => ({
  y: x.matmul(param('f', DType.BF16, [N, K_FIVE]).transpose()),
}));
/** x·mᵀ over 3,090 columns: enough for WebGPU's short tiles of 32 columns (97 workgroups, the last one partial). */
const MANY = 3090;
const bf16many = trace('bf16many', [{ name: 'x', dtype: DType.F32, shape: ['S', K_MMA] }], (x) => ({
  y: x.matmul(param('m', DType.BF16, [MANY, K_MMA]).transpose()),
}));
const module = { graphs: [bf16, bf16shallow, bf16norm, bf16prologue, f32mix, bf16deep, bf16odd, bf16normdeep, bf16normodd, bf16normwide, bf16normglu, bf16many, bf16five, bf16normnarrow] };
const compiled = compileModule(module);
const reference = { graphs: module.graphs.map((graph) => ({ graph, kernels: [] })) };

// Fresh inputs each run; GEMM_SEED=N repeats one (the seed is in every failure message).
const seed = Number(process.env.GEMM_SEED ?? Date.now() % 1e9);
const rng = new Rng(seed);
const randoms = (n: number, scale = 1) => Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);
const weights: Record<string, HostTensor> = {
  w: hostTensor(DType.BF16, [N, K_MMA], randoms(N * K_MMA, 0.2)),
  v: hostTensor(DType.BF16, [N, K_FMA], randoms(N * K_FMA, 0.2)),
  n: hostTensor(DType.F32, [K_FMA], randoms(K_FMA)),
  g: hostTensor(DType.F32, [N, K_FMA], randoms(N * K_FMA, 0.2)),
  u: hostTensor(DType.F32, [N, K_FMA], randoms(N * K_FMA, 0.2)),
  d: hostTensor(DType.BF16, [N, K_DEEP], randoms(N * K_DEEP, 0.05)),
  dn: hostTensor(DType.BF16, [NARROW, K_DEEP], randoms(NARROW * K_DEEP, 0.05)),
  o: hostTensor(DType.BF16, [N, K_ODD], randoms(N * K_ODD, 0.05)),
  ww: hostTensor(DType.BF16, [WIDE, K_MMA], randoms(WIDE * K_MMA, 0.2)),
  gb: hostTensor(DType.BF16, [N, K_MMA], randoms(N * K_MMA, 0.2)),
  ub: hostTensor(DType.BF16, [N, K_MMA], randoms(N * K_MMA, 0.2)),
  m: hostTensor(DType.BF16, [MANY, K_MMA], randoms(MANY * K_MMA, 0.2)),
  f: hostTensor(DType.BF16, [N, K_FIVE], randoms(N * K_FIVE, 0.05)),
};
// One row runs the row form; 2 to 32 rows CUDA's short tiles (7, 16, 20 and 32 among them; 32 their bound), 40 its
// wgmma tiles.
const ROWS = [1, 7, 16, 20, 32, 40, 64, 130];
const depthOf = (graph: string) => ({ bf16five: K_FIVE, bf16deep: K_DEEP, bf16odd: K_ODD, bf16normdeep: K_DEEP, bf16normnarrow: K_DEEP, bf16normodd: K_ODD, bf16shallow: K_FMA, f32mix: K_FMA }[graph] ?? K_MMA);
const columnsOf = (graph: string) => ({ bf16normwide: WIDE, bf16many: MANY, bf16normnarrow: NARROW }[graph] ?? N);
const inputs = new Map(ROWS.flatMap((s) => module.graphs.map((g) => [`${g.name}:${s}`, randoms(s * depthOf(g.name))])));

async function outputs(device: Device, lowered: typeof compiled | typeof reference): Promise<Map<string, number[]>> {
  const program = await device.load(lowered, new ParamStore((n) => weights[n]), { maxSizes: { S: Math.max(...ROWS) } });
  const out = new Map<string, number[]>();
  try {
    for (const g of module.graphs) {
      const depth = depthOf(g.name);
      for (const s of ROWS) {
        program.write('input:x', hostTensor(DType.F32, [s, depth], inputs.get(`${g.name}:${s}`)!));
        program.run(g.name, { S: s });
        out.set(`${g.name}:${s}`, [...(await program.read(namedOutputKey(program.graph(g.name), 'y'), DType.F32, [s, columnsOf(g.name)])).data]);
      }
    }
  } finally {
    program.destroy();
  }
  return out;
}

/** `f` with TSFUSE_GEMM set to `value`, restored after. */
function withGemmEnv<T>(value: string, f: () => T): T {
  const saved = process.env.TSFUSE_GEMM;
  process.env.TSFUSE_GEMM = value;
  try {
    return f();
  } finally {
    if (saved === undefined) delete process.env.TSFUSE_GEMM;
    else process.env.TSFUSE_GEMM = saved;
  }
}

const basics = suite('GEMM lowering');
basics('the projections of many rows lower to GEMM kernels with their epilogue, the norm to a kernel of its own', () => {
  const kinds = compiled.graphs.map((g) => g.kernels.map((k) => (k.gemm ? `gemm×${k.gemm.b.length}` : k.kind)));
  assert.equal(kinds, [['gemm×1'], ['gemm×1'], ['reduce', 'gemm×1'], ['gemm×1'], ['reduce', 'gemm×2'], ['gemm×1'], ['gemm×1'], ['reduce', 'gemm×1'], ['reduce', 'gemm×1'], ['reduce', 'gemm×1'], ['reduce', 'gemm×2'], ['gemm×1'], ['gemm×1'], ['reduce', 'gemm×1']]);
});
basics('on sm_90 the GEMMs of bf16 left operands take wgmma tiles (64, 96 or 128 columns), TSFUSE_GEMM=mma the mma tiles; sm_80 never', () => {
  const plan = (graph: string, caps = cudaCaps(90, 8)) => {
    const gemm = scheduleKernels(compiled.graphs.find((g) => g.graph.name === graph)!.kernels, caps).find((k) => k.gemm)!.gemm!;
    return `${gemm.units} ${gemm.tileRows}×${gemm.tileColumns}×${gemm.tileDepth}${gemm.staging?.kind === 'async' ? ` ${gemm.staging.stages} stages` : ''}`;
  };
  assert.equal(withGemmEnv('wgmma', () => ['bf16norm', 'bf16normdeep', 'bf16normodd', 'bf16normwide', 'bf16', 'bf16shallow'].map((g) => plan(g, cudaCaps(90, 8)))),
    ['wgmma-bf16 128×64×64 6 stages', 'wgmma-bf16 128×64×64 6 stages', 'wgmma-bf16 128×64×64 6 stages', 'wgmma-bf16 128×96×64 6 stages', 'mma-bf16 128×64×64 3 stages', 'mma-bf16 128×64×32 3 stages']);
  // 320 columns: 3 tiles of 128 fill 6 of 8 multiprocessors in 2 parts, 4 tiles of 96 all 8; on 16, 3 × 4 fill 12
  // of 16 and 4 × 4 all of them; on 6, 3 × 2 fill them all already.
  assert.is(plan('bf16normwide', cudaCaps(90, 16)), 'wgmma-bf16 128×96×64 6 stages');
  assert.is(plan('bf16normwide', cudaCaps(90, 6)), 'wgmma-bf16 128×128×64 6 stages', '3 tiles of 128 × 2 parts fill 6');
  assert.is(plan('bf16norm', cudaCaps(80, 8)), 'mma-bf16 128×64×64 3 stages');
  withGemmEnv('mma', () => assert.is(plan('bf16normwide', cudaCaps(90, 8)), 'mma-bf16 128×64×64 3 stages'));
  withGemmEnv('wgmma:256x3', () => {
    assert.is(plan('bf16normwide', cudaCaps(90, 8)), 'wgmma-bf16 128×256×64 3 stages');
    assert.is(plan('bf16norm', cudaCaps(90, 8)), 'wgmma-bf16 128×64×64 3 stages', 'no wider than the GEMM');
  });
  assert.throws(() => withGemmEnv('wgmma:96x4', () => cudaCaps(90, 8)), /TSFUSE_GEMM=wgmma:96x4: expected/);
});
basics('on CUDA up to 32 rows, GEMMs of bf16 left operands stream their weights into the matrix instructions (short tiles)', () => {
  const sk = (graph: string, caps = cudaCaps(90, 8)) => scheduleKernels(compiled.graphs.find((g) => g.graph.name === graph)!.kernels, caps).find((k) => k.gemm)!;
  const short = (graph: string, caps = cudaCaps(90, 8)) => {
    const t = sk(graph, caps).gemm!.shortTile;
    return t && `below ${t.below}: ${t.tileRows}×${t.tileColumns}×${t.tileDepth} ${t.split?.maxParts ?? 1} parts`;
  };
  // The most parts that keep the work items within the 8 multiprocessors (70 columns: 2 tiles; 320: 5), each part
  // a multiple of 32 deep (704 = 22 × 32: 2 parts of 11 steps); loads 256 deep ahead for one product (8 steps of
  // 32) where the part allows (else as many steps as divide it). An f32 left operand (@bf16) keeps the tiles.
  assert.equal(['bf16norm', 'bf16normdeep', 'bf16normodd', 'bf16normwide', 'bf16normglu', 'bf16'].map((g) => short(g)),
    ['below 33: 32×64×32 4 parts', 'below 33: 32×64×256 4 parts', 'below 33: 32×64×32 2 parts', 'below 33: 32×64×128 1 parts', 'below 33: 32×64×32 4 parts', undefined]);
  assert.is(short('bf16normdeep', cudaCaps(90, 132)), 'below 33: 32×64×64 16 parts');
  assert.is(short('bf16norm', cudaCaps(80, 8)), 'below 33: 32×64×32 4 parts', 'sm_80: the mma tiles\' ring');
  assert.is(short('bf16norm', webgpuCaps({ subgroups: true })), undefined);
  // The grid: the row form for one row (35 workgroups a row), then 2 column tiles × 4 parts up to 32 rows, then
  // the wgmma tiles (128 × 64, 2 column tiles, split while few).
  const norm = sk('bf16norm');
  assert.equal([1, 2, 15, 32].map((rows) => evalSize(norm.grid.rows, { S: rows })), [35, 8, 8, 8]);
  const tiles = (rows: number) => evalSize(mul(norm.gemm!.rowTiles, int(norm.gemm!.columnTiles)), { S: rows }) * evalSize(norm.gemm!.split?.parts ?? int(1), { S: rows });
  assert.equal([33, 64].map((rows) => evalSize(norm.grid.rows, { S: rows })), [tiles(33), tiles(64)]);
  assert.match(formatSchedule(norm), 'below 33 rows, tiles of 32 × 64');
  // The split scratch serves both forms: the short tiles' 2 column tiles × 4 parts of 8 accumulators a thread.
  const f = printCudaFunction(norm);
  assert.ok(f.splitScratch!.workspaceFloats >= 2 * 4 * 8 * 256 && f.splitScratch!.counters >= 2);
  // On sm_90 the left rows come by bulk copies, a row's run of each group of the part (a barrier each); on sm_80 by
  // cp.async.
  for (const needed of ['if (tf_m_total < 33) {', 'tf_mma_bf16(tf_c + 0 + tf_mi * 4, tf_fa1, tf_fb1)', 'tf_bar_wait(tf_rows_bar + 0, 0u);', 'tf_bulk_copy(tf_as + threadIdx.x * ']) assert.ok(f.code.includes(needed), needed);
  assert.ok(norm.gemm!.shortTile!.bulkLeft);
  const sm80rows = printCudaFunction(sk('bf16norm', cudaCaps(80, 8))).code;
  assert.ok(sm80rows.includes('tf_cp_wait<0>()') && !sm80rows.includes('tf_bulk_copy('), 'sm_80: cp.async');
  // On sm_90 a tile's parts are a cluster where the short tiles run (2 to 32 rows); 16 parts are more than a
  // cluster may have, and sm_80 has none.
  assert.equal([1, 2, 15, 32, 33].map((rows) => evalSize(norm.grid.clusterBlocks!, { S: rows })), [1, 4, 4, 4, 1]);
  assert.equal(f.clusterBlocks, norm.grid.clusterBlocks);
  for (const needed of ['if (tf_cluster_blocks() == 4u) {', 'tf_ours = tf_warp / 2 == tf_part;', 'tf_part = tf_work % tf_parts']) assert.ok(f.code.includes(needed), needed);
  assert.match(formatSchedule(norm), 'the depth split in 4 parts, a cluster of workgroups');
  assert.is(sk('bf16normdeep', cudaCaps(90, 132)).grid.clusterBlocks, undefined, '16 parts');
  // One column tile on 8 multiprocessors: 8 parts, a cluster of 8, a warp each.
  const narrow = sk('bf16normnarrow');
  assert.is(short('bf16normnarrow'), 'below 33: 32×64×128 8 parts');
  assert.is(evalSize(narrow.grid.clusterBlocks!, { S: 20 }), 8);
  assert.ok(printCudaFunction(narrow).code.includes('tf_ours = tf_warp / 1 == tf_part;'));
  const sm80 = printCudaFunction(sk('bf16norm', cudaCaps(80, 8)));
  assert.is(sm80.clusterBlocks, undefined);
  assert.not.ok(sm80.code.includes('tf_cluster_blocks() =='), 'sm_80: the parts add through memory');
});
basics('on WebGPU with f16 subgroup matrices the GEMMs of bf16 weights take subgroup-matrix tiles where they fit, f32 weights multiply-adds', () => {
  const plan = (graph: string, caps: DeviceCaps) => {
    const sk = scheduleKernels(compiled.graphs.find((g) => g.graph.name === graph)!.kernels, caps).find((k) => k.gemm)!;
    return `${sk.gemm!.units} ${sk.gemm!.tileRows}×${sk.gemm!.tileColumns}×${sk.gemm!.tileDepth}`;
  };
  const matrix = webgpuCaps({ subgroups: true, subgroupMatrix: { workgroupBytes: 49152 } });
  assert.equal(['bf16', 'bf16norm', 'bf16deep', 'bf16normwide', 'f32mix'].map((g) => plan(g, matrix)),
    ['subgroup-matrix-f16 128×64×64', 'subgroup-matrix-f16 128×64×64', 'subgroup-matrix-f16 128×64×64', 'subgroup-matrix-f16 128×64×64', 'fma 64×64×16']);
  assert.is(plan('bf16', webgpuCaps({ subgroups: true })), 'fma 64×64×16', 'no subgroup matrices offered');
  assert.is(plan('bf16', webgpuCaps({ subgroups: true, subgroupMatrix: { workgroupBytes: 16384 } })), 'fma 64×64×16', 'the tile does not fit in 16 KiB');
  assert.is(plan('bf16', webgpuCaps({ subgroups: true, subgroupMatrix: { workgroupBytes: 40000 } })), 'subgroup-matrix-f16 128×64×32', '64 deep needs 46,080 bytes');
  // Short tiles (the depth split among the subgroups, 128 a step) where the depth is a multiple of 128.
  const short = (graph: string) => scheduleKernels(compiled.graphs.find((g) => g.graph.name === graph)!.kernels, matrix).find((k) => k.gemm)!.gemm!.shortTile;
  // 32 columns where that leaves 96 workgroups or more (@bf16many: 97), else 16.
  assert.equal(['bf16', 'bf16deep', 'bf16normodd', 'bf16shallow', 'bf16many'].map((g) => short(g) && `below ${short(g)!.below}: ${short(g)!.tileRows}×${short(g)!.tileColumns}×${short(g)!.tileDepth}`),
    ['below 128: 32×16×128', 'below 128: 32×16×128', undefined, undefined, 'below 128: 32×32×128']);
  const sk = scheduleKernels(compiled.graphs.find((g) => g.graph.name === 'bf16')!.kernels, matrix).find((k) => k.gemm)!;
  const code = printWgsl(sk).code;
  for (const needed of ['enable f16;', 'enable chromium_experimental_subgroup_matrix;', 'subgroupMatrixMultiplyAccumulate(', 'subgroupMatrixStore<row_major>(&tf_cs', 'if (sz_S < 128) {']) assert.ok(code.includes(needed), needed);
  // The grid: the row form for one row (35 workgroups a row), short tiles (32 × 16) below 128, else 128 × 64.
  assert.equal([1, 2, 15, 16, 127, 128, 300].map((rows) => evalSize(sk.grid.rows, { S: rows })), [35, 5, 5, 5, 4 * 5, 1 * 2, 3 * 2]);
  const mk = scheduleKernels(compiled.graphs.find((g) => g.graph.name === 'bf16many')!.kernels, matrix).find((k) => k.gemm)!;
  assert.equal([16, 127].map((rows) => evalSize(mk.grid.rows, { S: rows })), [97, 4 * 97]);
  assert.ok(printWgsl(mk).code.includes('tf_c0_1_1 = subgroupMatrixMultiplyAccumulate('), 'two fragment columns');
  // Staging loads up to 4 steps ahead, each step's registers its own: 1 step over a depth of 128, 4 over 1,024 and
  // 640 (five steps: the loop's second round takes one, the rest skipped by a uniform condition).
  const stages = (graph: string) => scheduleKernels(compiled.graphs.find((g) => g.graph.name === graph)!.kernels, matrix).find((k) => k.gemm)!;
  assert.equal(['bf16', 'bf16deep', 'bf16five'].map((g) => stages(g).gemm!.shortTile!.stagesAhead), [1, 4, 4]);
  const five = printWgsl(stages('bf16five')).code;
  for (const needed of ['var tf_ra0_s3: vec4<f32>;', 'for (var tf_k0: i32 = 0; tf_k0 < 640; tf_k0 += 512) {', 'if (tf_k0 + 384 < 640) {']) assert.ok(five.includes(needed), needed);
  assert.match(formatSchedule(stages('bf16five')), 'the staging loads 4 steps ahead');
  assert.match(formatSchedule(sk), 'f16 subgroup matrices (16 × 16 × 16, f32 results)');
  // Staging loads read 16 bytes (4 f32, 8 bf16) unless the buffer is bound in chunks: then one value each.
  assert.equal(sk.gemm!.loads, { left: 4, right: [8] });
  assert.match(formatSchedule(sk), '16-byte staging loads: left, right 0');
  const gk = compiled.graphs.find((g) => g.graph.name === 'bf16')!.kernels.find((k) => k.gemm)!;
  const weight = (gk.gemm!.b[0] as { buf: number }).buf;
  assert.equal(scheduleKernel(gk, matrix, { splitBuffers: new Set([weight]) }).gemm!.loads, { left: 4, right: [1] });
  // The row form keeps the f32 products for fewer rows than the tiles start from.
  assert.is(sk.tilesFrom, 2);
  // The norm's rows, which only the GEMM reads (as its left operand), are stored as f16 by the norm's kernel and
  // staged 8 halves a load; without subgroup matrices they stay f32.
  const normKernels = (caps: typeof matrix) => scheduleKernels(compiled.graphs.find((g) => g.graph.name === 'bf16norm')!.kernels, caps);
  const [norm, product] = normKernels(matrix);
  const rowsBuffer = (k: typeof norm) => k.kernel.buffers.find((b) => b.binding.kind === 'temp')!;
  assert.equal([rowsBuffer(norm).dtype, rowsBuffer(product).dtype], [DType.F16, DType.F16]);
  assert.equal(product.gemm!.loads, { left: 8, right: [8] });
  assert.ok(printWgsl(product).code.includes('unpack2x16float('), 'f16 halves unpacked as they are staged');
  assert.equal(normKernels(webgpuCaps({ subgroups: true })).map((k) => rowsBuffer(k).dtype), [DType.F32, DType.F32]);
});
basics('on CUDA (8 multiprocessors) the deep GEMMs split their depth while their tiles are few, the others never', () => {
  const caps = cudaCaps(90, 8);
  const parts = (graph: string, rows: number) => {
    const gemm = scheduleKernels(compiled.graphs.find((g) => g.graph.name === graph)!.kernels, caps).find((k) => k.gemm)!.gemm!;
    return gemm.split ? evalSize(gemm.split.parts, { S: rows }) : 1;
  };
  // An f32 left operand's ring (138 KB) and wgmma's six stages (145 KB) leave room for one workgroup a
  // multiprocessor: at 130 rows the tiles double and 2 parts each fill the 8.
  assert.equal([1, 7, 64, 130].map((r) => parts('bf16deep', r)), [4, 4, 4, 2]);
  assert.equal([1, 7, 64, 130].map((r) => parts('bf16odd', r)), [2, 2, 2, 2]);
  assert.equal([1, 7, 64, 130].map((r) => parts('bf16', r)), [1, 1, 1, 1]);
  assert.equal([1, 7, 64, 130].map((r) => parts('bf16normdeep', r)), [4, 4, 4, 2]);
  assert.equal([1, 7, 64, 130].map((r) => parts('bf16normodd', r)), [2, 2, 2, 2]);
});
basics.run();

let expected: Map<string, number[]> | undefined;
for (const kind of kernelDevices) {
  const s = suite(`GEMM tiles on ${kind}`);
  s(`rows ${ROWS.join(', ')} × ${N} columns match the reference interpreter`, async () => {
    expected ??= await onDevice('reference', (ref) => outputs(ref, reference));
    await onDevice(kind, async (device) => {
      const got = await outputs(device, compiled);
      // WebGPU where Dawn offers f16 subgroup matrices (the H200, not lavapipe): the left operand rounded to f16.
      const matrixUnits = kind === 'cuda' || (device as { subgroupMatrix?: boolean }).subgroupMatrix === true;
      for (const [key, ref] of expected!) {
        const mma = matrixUnits && key.startsWith('bf16');
        const err = relativeError(got.get(key)!, ref);
        assert.ok(err < (mma ? 1e-2 : 1e-4), `${key}: relative error ${err} (GEMM_SEED=${seed})`);
        // Not a coincidence of zeros: the outputs are spread.
        assert.ok(ref.some((v) => Math.abs(v) > 0.1), key);
      }
    });
  });
  s.run();
}

/** A device's outputs against the reference interpreter's: bf16 products to 1e-2, f32 to 1e-4 (relative). */
async function checkOutputs(device: Device): Promise<void> {
  expected ??= await onDevice('reference', (ref) => outputs(ref, reference));
  const got = await outputs(device, compiled);
  for (const [key, ref] of expected!) {
    const err = relativeError(got.get(key)!, ref);
    assert.ok(err < (key.startsWith('bf16') ? 1e-2 : 1e-4), `${key}: relative error ${err} (GEMM_SEED=${seed})`);
  }
}

/** Runs `body` on the CUDA device `opened` (the GPU, else the CPU fake), then closes it; says so where neither runs. */
async function onCuda(opened: Promise<Device | string>, body: (device: Device) => Promise<void>): Promise<void> {
  const device = await opened;
  if (typeof device === 'string') return void console.log(`  cuda: skipped (${device})`);
  try {
    await body(device);
  } finally {
    device.destroy();
    restoreCudaOrFake();
  }
}

// wgmma tiles of 256 columns from a ring of 3 stages (TSFUSE_GEMM=wgmma:256x3, read as the device opens).
const wide = suite('GEMM tiles on cuda, TSFUSE_GEMM=wgmma:256x3');
wide('the same outputs (unless TSFUSE_GEMM is set outside) as the reference interpreter', async () => {
  if (process.env.TSFUSE_GEMM !== undefined) return;
  // The device reads TSFUSE_GEMM as it opens (its caps): set until it is open.
  process.env.TSFUSE_GEMM = 'wgmma:256x3';
  await onCuda(openCudaOrFake({}).finally(() => delete process.env.TSFUSE_GEMM), checkOutputs);
});
wide.run();

// A short tile's depth parts run as one cluster on sm_90 and add their sums through each other's shared memory;
// launched as blocks alone (the CPU fake told to, as a GPU without clusters would) the same kernels add them through
// the workspace. The fake counts the grids it ran in clusters, so each way is seen to have run.
const clusters = suite('GEMM tiles on cuda, short tiles\' parts in clusters and alone');
clusters('the same outputs as the reference interpreter either way', () => onCuda(openCudaOrFake({}), async (device) => {
  if (!device.description.includes('fake CUDA')) return void (await checkOutputs(device));
  const clustered = koffi.load(process.env.TSFUSE_LIBCUDA!).func('unsigned int fakeCudaClusteredLaunches()') as () => number;
  const before = clustered();
  // TSFUSE_LOGS=schedule says, once a kernel, whether its grid ran in clusters.
  const logged = await withStderr(() => checkOutputs(device), 'schedule');
  assert.ok(clustered() > before, 'the 16- to 32-row short tiles ran in clusters');
  assert.match(logged, /\[tsfuse:schedule\] cuda k\d+: 2 clusters of 4 blocks, 4 run at once: launched in clusters/);
  process.env.FAKE_CUDA_NO_CLUSTERS = '1';
  try {
    const alone = clustered();
    await checkOutputs(device);
    assert.is(clustered(), alone, 'no grid ran in clusters');
  } finally {
    delete process.env.FAKE_CUDA_NO_CLUSTERS;
  }
}));
clusters.run();

/** What `f` writes to stderr with TSFUSE_LOGS topics `logs` on (then off again). */
async function withStderr(f: () => Promise<void>, logs: string): Promise<string> {
  const write = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => ((text += String(chunk)), true)) as typeof process.stderr.write;
  setLogs(logs);
  try {
    await f();
  } finally {
    setLogs('');
    process.stderr.write = write;
  }
  return text;
}

// NVRTC compiles a module as several units in parallel on a cold start (CudaOptions.units): the same kernels,
// found in whichever unit holds them.
const units = suite('GEMM tiles on cuda, the module in 3 compilation units');
units('the same outputs as the reference interpreter', () => onCuda(openCudaOrFake({ units: 3 }), checkOutputs));
units.run();
