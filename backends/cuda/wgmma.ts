// A GEMM tile by sm_90a's warpgroup matrix instructions (GemmPlan.units 'wgmma-bf16'): 128 rows × 64 or 128
// columns, each of the block's two warpgroups 64 rows by wgmma m64nNk16 (N the tile's columns), both operands bf16
// in shared memory, read by the instructions through matrix descriptors (the prelude's tf_wgmma_desc).
//   Copies: cp.async, 16 bytes a copy, `stages − 2` steps of 64 ahead into a ring of stages given at launch (the
//   ring's start rounded up to 1,024 bytes); a stage is the left operand's 128 rows then each weight's columns,
//   every row 64 deep = 128 bytes, in the 128-byte swizzle: chunk c (8 elements) of row r at r · 128 + (c ^ r % 8)
//   · 16, so 8 threads copy a row's 128 contiguous bytes and the wgmma reads hit every bank once.
//   Waits: a step's copies waited for (cp.async.wait_group), made visible to wgmma's proxy (fence.proxy.async) and
//   to every thread (__syncthreads); then the copies of step + stages − 2 issued into the stage step − 2 read,
//   whose instructions every warpgroup retired before the barrier (wgmma.wait_group 1 after each step's batch:
//   one batch stays in flight while the next step's copies and instructions are issued).
//   Epilogue: accumulator i of a thread is row 16 · (warp % 4) + lane / 4 (+ 8 for i % 4 ≥ 2) of its warpgroup's
//   64, column 8 · (i / 4) + 2 · (lane % 4) + i % 2: the layout of the mma tiles' warp blocks (mmaEpilogue) with one
//   m16 block and N / 8 n8 blocks, so the mma tiles' epilogue and depth split (addParts) serve as they are.

import { GemmIR } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan } from '../schedule.ts';
import { addParts, mmaEpilogue, stepCopies, WarpTile } from './gemm.ts';
import { SharedMemory } from './shared-memory.ts';
import { WGMMA_COLUMNS } from './wgmma-prelude.ts';

/** Bytes of a staged row: 64 bf16, one 128-byte swizzle row. */
const ROW_BYTES = 128;

export function wgmmaTile(g: GemmIR, plan: GemmPlan, stages: number, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  const [TM, TN, TD] = [plan.tileRows, plan.tileColumns, plan.tileDepth];
  if (TM !== 128 || TD !== 64 || !(WGMMA_COLUMNS as readonly number[]).includes(TN) || stages < 3) {
    throw new Error(`CUDA: wgmma tiles of ${TM} × ${TN} × ${TD}, ${stages} stages, are not printed`);
  }
  if (g.a.k !== 'load' || g.b.some((b) => b.k !== 'load')) throw new Error('CUDA: a wgmma GEMM copies its operands as they are');
  const ops = g.b.length;
  const ahead = stages - 2;
  const aBytes = TM * ROW_BYTES;
  const bBytes = TN * ROW_BYTES;
  const stageBytes = aBytes + ops * bBytes;
  const accs = ops * (TN / 2);
  const w: WarpTile = { mb: 1, nb: TN / 8 };
  const i = '    ';
  out.push(`${i}${shared.dynamic('tf_ring')}`);
  // The swizzle repeats every 8 rows of 128 bytes from multiples of 1,024 (the descriptors' base offset is 0).
  out.push(`${i}unsigned char* const tf_sm = tf_ring + ((1024u - (tf_smem_addr(tf_ring) & 1023u)) & 1023u);`);
  out.push(`${i}const unsigned tf_sm_addr = tf_smem_addr(tf_sm);`);
  out.push(`${i}const int tf_lane = threadIdx.x & 31, tf_warp = threadIdx.x >> 5;`);
  out.push(`${i}const int tf_g = tf_lane >> 2, tf_q = tf_lane & 3;`);
  // Warpgroup warp / 4 computes rows 64 · (warp / 4) onwards; the warp holds 16 of them.
  out.push(`${i}const int tf_wm = (tf_warp >> 2) * 64 + (tf_warp & 3) * 16, tf_wn = 0;`);
  out.push(`${i}float tf_c[${accs}];`);
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_i = 0; tf_i < ${accs}; tf_i++) tf_c[tf_i] = 0.0f;`);
  if (plan.split) {
    out.push(`${i}const int tf_step0 = tf_part * ${g.depth / TD} / tf_parts;`);
    out.push(`${i}const int tf_steps = (tf_part + 1) * ${g.depth / TD} / tf_parts - tf_step0;`);
  } else {
    out.push(`${i}const int tf_steps = ${g.depth / TD};`);
  }
  // Copy x of an operand: row x / 8, chunk x % 8 (depth 8 · (x % 8)), to the chunk the swizzle moves it to.
  const dst = (stage: string, offset: string) => `tf_sm + (${stage}) * ${stageBytes} + ${offset}tf_r * ${ROW_BYTES} + ((tf_ch ^ (tf_r & 7)) << 4)`;
  const swizzled = { split: 'tf_r = tf_x >> 3, tf_ch = tf_x & 7', depth: 'tf_ch * 8' };
  const issue = stepCopies(g, p, out, i, plan.split ? 'tf_step0' : '', TD,
    { ...swizzled, copies: TM * 8, at: (_, stage) => dst(stage, '') }, { ...swizzled, copies: TN * 8, at: (o, stage) => dst(stage, `${aBytes + o * bBytes} + `) });
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_s = 0; tf_s < ${ahead}; tf_s++) {`);
  out.push(`${i}  if (tf_s < tf_steps) {`);
  issue(`${i}    `, 'tf_s', 'tf_s');
  out.push(`${i}  }`);
  out.push(`${i}  tf_cp_commit();`);
  out.push(`${i}}`);
  out.push(`${i}for (int tf_kt = 0; tf_kt < tf_steps; tf_kt++) {`);
  const j = i + '  ';
  out.push(`${j}tf_cp_wait<${ahead - 1}>();`);
  out.push(`${j}tf_fence_async_smem();`);
  out.push(`${j}__syncthreads();`);
  out.push(`${j}{`);
  out.push(`${j}  const int tf_next = tf_kt + ${ahead};`);
  out.push(`${j}  if (tf_next < tf_steps) {`);
  issue(`${j}    `, `tf_next % ${stages}`, 'tf_next');
  out.push(`${j}  }`);
  out.push(`${j}  tf_cp_commit();`);
  out.push(`${j}}`);
  out.push(`${j}const unsigned tf_sa = tf_sm_addr + (tf_kt % ${stages}) * ${stageBytes};`);
  out.push(`${j}tf_wgmma_hold<${accs}>(tf_c);`);
  out.push(`${j}tf_wgmma_fence();`);
  // Depth 16 a instruction: the descriptors' start 32 bytes further along the (swizzled) rows.
  out.push(`${j}#pragma unroll`);
  out.push(`${j}for (int tf_kk = 0; tf_kk < ${TD / 16}; tf_kk++) {`);
  out.push(`${j}  const unsigned long long tf_da = tf_wgmma_desc(tf_sa + (tf_warp >> 2) * ${64 * ROW_BYTES} + tf_kk * 32);`);
  for (let o = 0; o < ops; o++) {
    out.push(`${j}  tf_wgmma_n${TN}(tf_c + ${o * (TN / 2)}, tf_da, tf_wgmma_desc(tf_sa + ${aBytes + o * bBytes} + tf_kk * 32));`);
  }
  out.push(`${j}}`);
  out.push(`${j}tf_wgmma_commit();`);
  out.push(`${j}tf_wgmma_wait<1>();`);
  out.push(`${j}tf_wgmma_hold<${accs}>(tf_c);`);
  out.push(`${i}}`);
  out.push(`${i}tf_wgmma_wait<0>();`);
  out.push(`${i}tf_wgmma_hold<${accs}>(tf_c);`);
  // The next tile's first copies overwrite stages still being read by slow warpgroups: all finish first.
  out.push(`${i}__syncthreads();`);
  // The ring's start is rounded up to 1,024 bytes inside the bytes given.
  if (plan.split) addParts(accs, plan.split.maxParts, { warpRows: 16, warpsAcross: 1 }, stages * stageBytes, shared, out, i);
  mmaEpilogue(g, w, p, out, i);
}
