// A GEMM kernel (KernelIR.gemm) in CUDA C: each block computes a tile of rows × columns of every product, looping
// over the depth in steps staged through shared memory, then runs the epilogue at each output it holds.
//   mma-bf16: 8 warps as 4 × 2, each a block of (tile rows / 4) × (tile columns / 2) by m16n8k16 matrix
//             instructions (64 × 64 tiles: 16 × 32 a warp; 128 × 64: 32 × 32, each right fragment read once for two
//             instructions). The left operand (the prologue, computed as the tile loads) is rounded to bf16 as it
//             is staged; the weights are read 16 bytes at a time. The next step's global loads are issued before
//             this step's matrix instructions, so their latency hides behind them.
//             With a left operand read as it is from memory (f32, or bf16 where its writer stored it so), cp.async
//             copies both operands a few steps ahead into a ring of stages instead (mmaAsyncTile).
//             Where few tiles would leave multiprocessors idle, each tile's depth is split among workgroups whose
//             sums the last to finish adds (addParts).
//   wgmma-bf16: sm_90a's warpgroup instructions on operands in shared memory (backends/cuda/wgmma.ts).
//   fma:      each thread a 4 × 4 block of outputs by f32 multiply-adds (any operand types).
//   For a short prompt (GemmPlan.shortTile) either matrix-unit GEMM has a form whose weights stream from memory
//   straight into the mma instructions' registers, without shared memory (streamedTile).

import { GemmIR, KExpr, offsetAlong } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan, shortLeftBytes, ShortTile } from '../schedule.ts';
import { DType } from '../../ir/dtype.ts';
import { gridWait, storeValue } from './render-cuda.ts';
import { SharedMemory } from './shared-memory.ts';
import { wgmmaTile } from './wgmma.ts';

/**
 * The function body after the signature: the tile loop over the grid's rows; with a short tile (GemmPlan.shortTile),
 * its own loop where the rows are fewer than it is for.
 */
export function renderGemmCuda(g: GemmIR, plan: GemmPlan, rows: KExpr, waits: boolean, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  out.push(`  const int tf_m_total = ${p.expr(rows, out, '  ')};`);
  const short = plan.shortTile;
  if (!short) {
    if (waits) throw new Error('CUDA: only a short tile waits for the predecessor inside');
    return tileLoop(g, plan, p, out, () => tileBody(g, plan, p, shared, out));
  }
  const [streamed, tiles]: string[][] = [[], waits ? gridWait('  ') : []];
  if (plan.staging?.kind !== 'async') throw new Error('CUDA: a short tile copies into the memory given at launch');
  const ringBytes = plan.staging.bytes;
  tileLoop(g, short, p, streamed, () => streamedTile(g, short, ringBytes, waits, p, shared, streamed), short.cluster);
  tileLoop(g, plan, p, tiles, () => tileBody(g, plan, p, shared, tiles));
  out.push(`  if (tf_m_total < ${short.below}) {`, ...streamed.map((l) => `  ${l}`), '  } else {', ...tiles.map((l) => `  ${l}`), '  }');
}

/** A left operand read from memory as it is. */
type LoadExpr = Extract<KExpr, { k: 'load' }>;

/** A tile's shape and its place in the grid (GemmPlan, or its ShortTile). */
type TileGrid = Pick<GemmPlan, 'tileRows' | 'tileColumns' | 'rowTiles' | 'columnTiles' | 'split'>;

/**
 * The loop over a grid of tiles (each part of each, where the depth is split), `body` printing one tile. A tile's
 * parts are neighbouring work items where they run as a cluster (`clustered`: a cluster's blocks are consecutive, the
 * part its rank), else a part's tiles are.
 */
function tileLoop(g: GemmIR, t: TileGrid, p: ExprPrinter, out: string[], body: () => void, clustered = false): void {
  out.push(`  const int tf_row_tiles = ${p.expr(t.rowTiles, out, '  ')};`);
  out.push(`  const int tf_tiles = tf_row_tiles * ${t.columnTiles};`);
  if (t.split) {
    out.push(`  const int tf_parts = ${p.expr(t.split.parts, out, '  ')};`);
    out.push('  for (int tf_work = blockIdx.x; tf_work < tf_tiles * tf_parts; tf_work += gridDim.x) {');
    out.push(clustered ? '    const int tf_tile = tf_work / tf_parts, tf_part = tf_work % tf_parts;' : '    const int tf_tile = tf_work % tf_tiles, tf_part = tf_work / tf_tiles;');
  } else {
    out.push('  for (int tf_tile = blockIdx.x; tf_tile < tf_tiles; tf_tile += gridDim.x) {');
  }
  // Tiles along the rows are neighbours: the blocks sharing a weight tile run together and read it from L2.
  out.push(`    const int tf_m0 = (tf_tile % tf_row_tiles) * ${t.tileRows};`);
  out.push(`    const int tf_n0 = (tf_tile / tf_row_tiles) * ${t.tileColumns};`);
  body();
  out.push('  }');
}

function tileBody(g: GemmIR, plan: GemmPlan, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  if (plan.split && plan.staging?.kind !== 'async') throw new Error('CUDA: only copied mma tiles split their depth');
  if (plan.units === 'wgmma-bf16' && plan.staging?.kind === 'async') wgmmaTile(g, plan, plan.staging.stages, p, shared, out);
  else if (plan.units === 'mma-bf16' && plan.staging?.kind === 'async') mmaAsyncTile(g, plan, plan.staging.stages, plan.staging.left, p, shared, out);
  else if (plan.units === 'mma-bf16') mmaTile(g, plan, p, shared, out);
  else if (plan.units === 'fma') fmaTile(g, plan, p, shared, out);
  else throw new Error(`CUDA: no GEMM of ${plan.units} units`);
}

/**
 * The short tile (GemmPlan.shortTile) of 32 rows × 64 columns, each warp 8 columns of every row, over one part of
 * the depth (all of it unsplit):
 *   The left operand's rows of the part, bf16 in memory, are copied once into the memory given at launch (rows 32
 *   elements longer than the part, so a warp's fragment reads spread over the banks), in the groups the schedule
 *   gives (ShortTile.leftGroups: halves of the depth, the second landing while the first half's products run).
 *   The weights never pass through shared memory: lane (g, q) of a warp reads 16 bytes of its column g, depth
 *   8q to 8q + 7 of each 32, into a ring of two steps' registers, each reloaded for two steps on once its products
 *   are issued (the first two steps before the wait for the previous kernel, whose writes the weights are not).
 *   Two m16n8k16 instructions take them as they lie: the first the lane's elements 8q…8q + 3 as its fragment's
 *   depths 2q, 2q + 1, 2q + 8, 2q + 9, the second 8q + 4…8q + 7; the left fragments are read from the same depths,
 *   so each instruction sums a permutation of 16 depths and the two all 32. The accumulators are as in the mma
 *   tiles (mmaEpilogue); a split tile's parts add them in their cluster (clusterParts) or through memory (addParts).
 */
function streamedTile(g: GemmIR, t: ShortTile, ringBytes: number, waits: boolean, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  const [TM, TN, TD] = [t.tileRows, t.tileColumns, t.tileDepth];
  if (TM !== 32 || TN !== 64 || TD % 32) throw new Error(`CUDA: short tiles of ${TM} × ${TN} × ${TD} are not printed`);
  const left = g.a;
  if (left.k !== 'load' || p.buffers[left.buf].dtype !== DType.BF16) throw new Error('CUDA: a short tile copies a bf16 left operand as it is');
  const parts = t.split?.maxParts ?? 1;
  const part = g.depth / parts;
  const steps = part / TD;
  if (!Number.isInteger(steps)) throw new Error(`CUDA: a short tile's ${TD}-deep steps do not divide its part of ${part}`);
  if (shortLeftBytes(TM, part) > ringBytes) throw new Error(`CUDA: a short tile's left rows (${shortLeftBytes(TM, part)} bytes) do not fit the ${ringBytes} given at launch`);
  const ops = g.b.length;
  const w: WarpTile = { mb: TM / 16, nb: 1 };
  const accs = ops * w.mb * 4;
  const AP = part + 32;
  const chunks = TD / 32;
  const i = '    ';
  out.push(`${i}${shared.dynamic('tf_ring')}`);
  out.push(`${i}unsigned short* const tf_as = reinterpret_cast<unsigned short*>(tf_ring);`);
  out.push(`${i}const int tf_lane = threadIdx.x & 31, tf_warp = threadIdx.x >> 5;`);
  out.push(`${i}const int tf_g = tf_lane >> 2, tf_q = tf_lane & 3;`);
  out.push(`${i}const int tf_wm = 0, tf_wn = tf_warp * 8;`);
  out.push(`${i}float tf_c[${accs}];`);
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_i = 0; tf_i < ${accs}; tf_i++) tf_c[tf_i] = 0.0f;`);
  out.push(`${i}const int tf_k0 = ${parts > 1 ? `tf_part * ${part}` : '0'};`);
  // Each weight's column for this lane, from the part's first depth; columns past the weights read column 0 (as zeros).
  out.push(`${i}const bool tf_col_in = tf_n0 + tf_wn + tf_g < ${g.columns};`);
  out.push(...g.b.map((_, o) => `${i}const unsigned short* tf_wp${o};`));
  out.push(`${i}{`);
  out.push(`${i}  const int ${g.n} = tf_col_in ? tf_n0 + tf_wn + tf_g : 0;`);
  g.b.forEach((b, o) => {
    if (b.k !== 'load') throw new Error('CUDA: a short tile reads its weights directly');
    const base = offsetAlong(b.index, g.k);
    if (!base) throw new Error('CUDA: a short tile reads its weights along the depth');
    out.push(`${i}  tf_wp${o} = b${b.buf} + ${p.expr(base, out, `${i}  `)} + tf_k0 + tf_q * 8;`);
  });
  out.push(`${i}}`);
  // A step's weights: chunk c of product o at tf_w[o][c].
  const load = (ind: string, into: string, step: string) => {
    out.push(`${ind}#pragma unroll`);
    out.push(`${ind}for (int tf_u = 0; tf_u < ${chunks}; tf_u++) {`);
    g.b.forEach((_, o) => out.push(`${ind}  ${into}[${o}][tf_u] = tf_col_in ? ${t.weightsOnce ? 'tf_ld16_once' : '__ldg'}(reinterpret_cast<const uint4*>(tf_wp${o} + (${step}) * ${TD} + tf_u * 32)) : make_uint4(0u, 0u, 0u, 0u);`));
    out.push(`${ind}}`);
  };
  // A ring of two steps' weights (tf_w0, tf_w1), each reloaded for two steps later as soon as its products are
  // issued: two steps' loads in flight, with no copy from one set of registers to the other (a copy waits for
  // the loads it copies).
  out.push(`${i}uint4 tf_w0[${ops}][${chunks}]${steps > 1 ? `, tf_w1[${ops}][${chunks}]` : ''};`);
  load(i, 'tf_w0', '0');
  if (steps > 1) load(i, 'tf_w1', '1');
  // The weights no kernel writes are on their way before the wait for the predecessor, whose writes the left rows are.
  if (waits) out.push(...gridWait(i));
  // The left rows, in groups of the depth (bulkLeftRows, asyncLeftRows).
  const groups = t.leftGroups ?? 1;
  if (steps % groups) throw new Error(`CUDA: a short tile's ${steps} steps do not split into ${groups} groups of left rows`);
  const groupDepth = part / groups;
  if (t.bulkLeft) {
    bulkLeftRows(g, left, groups, groupDepth, AP, p, shared, out, i);
  } else {
    asyncLeftRows(g, left, groups, groupDepth, AP, p, out, i);
  }
  out.push(`${i}#pragma unroll 1`);
  out.push(`${i}for (int tf_s = 0; tf_s < ${steps}; tf_s += 2) {`);
  const j = `${i}  `;
  // Step tf_s + slot from ring slot `slot`, then its registers reloaded for two steps on.
  const step = (slot: number, ind: string) => {
    const at = slot ? 'tf_s + 1' : 'tf_s';
    // Group g's rows before the first step of its share of the steps (at most groups − 1 − g later groups in flight).
    for (let grp = 0; grp < groups; grp++) {
      const wait = t.bulkLeft ? `tf_bar_wait(tf_rows_bar + ${grp}, 0u);` : `tf_cp_wait<${groups - 1 - grp}>(); __syncthreads();`;
      out.push(`${ind}if (${at} == ${(grp * steps) / groups}) { ${wait}${grp ? '' : ' tf_stamp_mark(0);'} }`);
    }
    out.push(`${ind}#pragma unroll`);
    out.push(`${ind}for (int tf_u = 0; tf_u < ${chunks}; tf_u++) {`);
    out.push(`${ind}  const int tf_kc = ((${at}) * ${chunks} + tf_u) * 32 + tf_q * 8;`);
    out.push(`${ind}  #pragma unroll`);
    out.push(`${ind}  for (int tf_mi = 0; tf_mi < ${w.mb}; tf_mi++) {`);
    out.push(`${ind}    const uint4 tf_lo = *reinterpret_cast<const uint4*>(tf_as + (tf_mi * 16 + tf_g) * ${AP} + tf_kc);`);
    out.push(`${ind}    const uint4 tf_hi = *reinterpret_cast<const uint4*>(tf_as + (tf_mi * 16 + tf_g + 8) * ${AP} + tf_kc);`);
    out.push(`${ind}    const unsigned tf_fa0[4] = {tf_lo.x, tf_hi.x, tf_lo.y, tf_hi.y}, tf_fa1[4] = {tf_lo.z, tf_hi.z, tf_lo.w, tf_hi.w};`);
    g.b.forEach((_, o) => {
      out.push(`${ind}    { const unsigned tf_fb0[2] = {tf_w${slot}[${o}][tf_u].x, tf_w${slot}[${o}][tf_u].y}, tf_fb1[2] = {tf_w${slot}[${o}][tf_u].z, tf_w${slot}[${o}][tf_u].w};`);
      out.push(`${ind}      tf_mma_bf16(tf_c + ${o * w.mb * 4} + tf_mi * 4, tf_fa0, tf_fb0);`);
      out.push(`${ind}      tf_mma_bf16(tf_c + ${o * w.mb * 4} + tf_mi * 4, tf_fa1, tf_fb1); }`);
    });
    out.push(`${ind}  }`);
    out.push(`${ind}}`);
    out.push(`${ind}if (${at} + 2 < ${steps}) {`);
    load(`${ind}  `, `tf_w${slot}`, `${at} + 2`);
    out.push(`${ind}}`);
  };
  step(0, j);
  if (steps > 1) {
    out.push(`${j}if (tf_s + 1 < ${steps}) {`);
    step(1, `${j}  `);
    out.push(`${j}}`);
  }
  out.push(`${i}}`);
  // The next work item's copies overwrite the rows slow warps may still read (and re-arm the barriers).
  out.push(`${i}__syncthreads();`);
  if (t.bulkLeft) out.push(`${i}if (threadIdx.x < ${groups}) tf_bar_inval(tf_rows_bar + threadIdx.x);`);
  // Phases for a step's timeline (stamped programs only): the first rows landed (mark 0), the steps done (1), the
  // parts summed (2; through memory, only the part that sums them gets there).
  out.push(`${i}tf_stamp_mark(1);`);
  const throughMemory = (ind: string) => addParts(accs, parts, { warpRows: TM, warpsAcross: 8 }, ringBytes, shared, out, ind);
  if (t.split && t.cluster) {
    // Launched in clusters (where they all fit at once), else as blocks alone: through memory.
    out.push(`${i}bool tf_ours = true;`, `${i}if (tf_cluster_blocks() == ${parts}u) {`);
    clusterParts(accs, parts, out, `${i}  `);
    out.push(`${i}} else {`);
    throughMemory(`${i}  `);
    out.push(`${i}}`);
  } else if (t.split) {
    throughMemory(i);
  }
  out.push(`${i}tf_stamp_mark(2);`);
  if (!t.cluster) return mmaEpilogue(g, w, p, out, i);
  out.push(`${i}if (tf_ours) {`);
  mmaEpilogue(g, w, p, out, `${i}  `);
  out.push(`${i}}`);
}

/**
 * The left rows of a short tile's part by cp.async through L1 (.ca; the .cg copies moved twice the rows' bytes from
 * L2 and waited longer, BENCHMARKS.md, twentieth and twenty-first sessions): copy x of a group is depth
 * (x / 128) · 32 + (x % 4) · 8 of row (x / 4) % 32, four lanes a row's 64 contiguous bytes; rows past the operand's
 * are zeros. A commit closes each group.
 */
function asyncLeftRows(g: GemmIR, a: LoadExpr, groups: number, groupDepth: number, AP: number, p: ExprPrinter, out: string[], i: string): void {
  out.push(`${i}#pragma unroll 1`);
  out.push(`${i}for (int tf_grp = 0; tf_grp < ${groups}; tf_grp++) {`);
  out.push(`${i}  for (int tf_x = threadIdx.x; tf_x < ${(32 * groupDepth) / 8}; tf_x += TF_BLOCK) {`);
  out.push(`${i}    const int tf_r = (tf_x >> 2) & 31, tf_kk = tf_grp * ${groupDepth} + (tf_x >> 7) * 32 + (tf_x & 3) * 8;`);
  out.push(`${i}    const bool tf_in = tf_m0 + tf_r < tf_m_total;`);
  out.push(`${i}    const int ${g.m} = tf_in ? tf_m0 + tf_r : 0;`);
  out.push(`${i}    const int ${g.k} = tf_k0 + tf_kk;`);
  out.push(`${i}    tf_cp16_l1(tf_as + tf_r * ${AP} + tf_kk, b${a.buf} + ${p.expr(a.index, out, `${i}    `)}, tf_in);`);
  out.push(`${i}  }`);
  out.push(`${i}  tf_cp_commit();`);
  out.push(`${i}}`);
}

/**
 * The left rows of a short tile's part by the copy engine (ShortTile.bulkLeft): lane r of the first warp copies row
 * r's run of each group (its depth contiguous in memory) in one bulk copy, counted against the group's barrier, armed
 * first with the bytes of the rows inside the operand. Rows past it are not copied: their sums are never stored.
 */
function bulkLeftRows(g: GemmIR, a: LoadExpr, groups: number, groupDepth: number, AP: number, p: ExprPrinter, shared: SharedMemory, out: string[], i: string): void {
  const base = offsetAlong(a.index, g.k);
  if (!base) throw new Error('CUDA: a short tile copies its left rows in bulk only where each runs along the depth');
  const bytes = groupDepth * 2;
  if (bytes % 16) throw new Error(`CUDA: a bulk copy of ${bytes} bytes (a multiple of 16 only)`);
  out.push(`${i}${shared.array('unsigned long long', 'tf_rows_bar', groups)}`);
  out.push(`${i}const int tf_rows_in = tf_m_total - tf_m0 < 32 ? tf_m_total - tf_m0 : 32;`);
  out.push(`${i}if (threadIdx.x < ${groups}) {`);
  out.push(`${i}  tf_bar_init(tf_rows_bar + threadIdx.x);`);
  out.push(`${i}  tf_bar_expect(tf_rows_bar + threadIdx.x, (unsigned)tf_rows_in * ${bytes}u);`);
  out.push(`${i}}`);
  // The barriers armed, and every thread's earlier reads and writes of the ring (a previous work item's rows and
  // sums), before the copies.
  out.push(`${i}tf_fence_async_shared();`);
  out.push(`${i}__syncthreads();`);
  out.push(`${i}if (threadIdx.x < 32) {`);
  out.push(`${i}  if ((int)threadIdx.x < tf_rows_in) {`);
  out.push(`${i}    const int ${g.m} = tf_m0 + threadIdx.x;`);
  out.push(`${i}    const unsigned short* const tf_row = b${a.buf} + ${p.expr(base, out, `${i}    `)} + tf_k0;`);
  out.push(`${i}    #pragma unroll`);
  out.push(`${i}    for (int tf_grp = 0; tf_grp < ${groups}; tf_grp++) tf_bulk_copy(tf_as + threadIdx.x * ${AP} + tf_grp * ${groupDepth}, tf_row + tf_grp * ${groupDepth}, ${bytes}u, tf_rows_bar + tf_grp);`);
  out.push(`${i}  }`);
  out.push(`${i}}`);
}

/**
 * A short tile's parts added in their cluster (ShortTile.cluster; block rank r of the cluster is part r): each part
 * leaves its accumulators in its shared memory (the ring, free since the steps' last barrier; accumulator a of
 * thread t at a · 256 + t), then part r's share of the warps (8 / parts, each 8 columns of every row) add every
 * part's accumulators of theirs, in the parts' order as addParts does, and only they run the epilogue
 * (tf_ours). The second barrier keeps each block's shared memory in place until the others have read it.
 */
function clusterParts(accs: number, parts: number, out: string[], i: string): void {
  out.push(`${i}float* const tf_sums = reinterpret_cast<float*>(tf_ring);`);
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_i = 0; tf_i < ${accs}; tf_i++) tf_sums[tf_i * 256 + threadIdx.x] = tf_c[tf_i];`);
  out.push(`${i}tf_cluster_sync();`);
  out.push(`${i}tf_ours = tf_warp / ${8 / parts} == tf_part;`);
  out.push(`${i}if (tf_ours) {`);
  out.push(`${i}  #pragma unroll`);
  out.push(`${i}  for (int tf_i = 0; tf_i < ${accs}; tf_i++) {`);
  out.push(`${i}    float tf_v[${parts}];`);
  out.push(`${i}    #pragma unroll`);
  out.push(`${i}    for (int tf_p = 0; tf_p < ${parts}; tf_p++) tf_v[tf_p] = tf_cluster_load(tf_sums + tf_i * 256 + threadIdx.x, tf_p);`);
  out.push(`${i}    float tf_s = tf_v[0];`);
  out.push(`${i}    #pragma unroll`);
  out.push(`${i}    for (int tf_p = 1; tf_p < ${parts}; tf_p++) tf_s += tf_v[tf_p];`);
  out.push(`${i}    tf_c[tf_i] = tf_s;`);
  out.push(`${i}  }`);
  out.push(`${i}}`);
  out.push(`${i}tf_cluster_sync();`);
}

/**
 * Stores of the epilogue at (m, n), the accumulators already bound to the names the stores read; `inside` is
 * whether (m, n) is inside the output. Values are computed at every position (m and n are in range: the caller
 * moves the outside ones to (0, 0)), only the stores are guarded: the loads an epilogue reads (a residual) then
 * issue together across the unrolled positions, where guarded ones waited one by one (a 512-token output
 * projection's last parts spent a sixth of the kernel's ncu samples on them).
 */
function epilogue(g: GemmIR, p: ExprPrinter, out: string[], indent: string, inside: string): void {
  const stores = g.stores.map((st) => {
    const value = p.expr(st.value, out, indent);
    const index = p.expr(st.index, out, indent);
    return `b${st.buf}[${index}] = ${storeValue(p.buffers[st.buf].dtype, value, st.value.t)};`;
  });
  out.push(`${indent}if (${inside}) {`, ...stores.map((s) => `${indent}  ${s}`), `${indent}}`);
}

// ---- mma tiles: 8 warps as 4 × 2, warp w a block of MB m16 blocks × NB n8 blocks at (tf_wm, tf_wn) ----

const MMA_PAD = 8; // elements a staged row is longer than the depth: a warp's fragment reads then hit distinct banks

/** A warp's share of an mma tile: m16 blocks along the rows, n8 blocks along the columns. */
export interface WarpTile { readonly mb: number; readonly nb: number }
const warpTile = (plan: GemmPlan): WarpTile => ({ mb: plan.tileRows / 64, nb: plan.tileColumns / 16 });

/**
 * The warp's coordinates in the tile and its accumulators: tf_c[o · MB · NB · 4 + (mi · NB + ni) · 4 + r] for
 * product o, m16 block mi, n8 block ni.
 */
function mmaSetup(ops: number, w: WarpTile, out: string[], i: string): void {
  const acc = ops * w.mb * w.nb * 4;
  out.push(`${i}const int tf_lane = threadIdx.x & 31, tf_warp = threadIdx.x >> 5;`);
  out.push(`${i}const int tf_g = tf_lane >> 2, tf_q = tf_lane & 3;`);
  out.push(`${i}const int tf_wm = (tf_warp >> 1) * ${16 * w.mb}, tf_wn = (tf_warp & 1) * ${8 * w.nb};`);
  out.push(`${i}float tf_c[${acc}];`);
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_i = 0; tf_i < ${acc}; tf_i++) tf_c[tf_i] = 0.0f;`);
}

/**
 * One staged step's matrix instructions: per 16 of depth, the warp's left fragments (read by `fragmentA`, which
 * fills tf_fa[mi][4] for depth offset tf_kk), then each product's right fragments from the bf16 tile at `b` (rows
 * of `columns` columns), each used for every m16 block.
 */
function mmaStep(ops: number, w: WarpTile, columns: number, depth: number, b: string, fragmentA: (indent: string) => void, out: string[], j: string): void {
  const pitch = depth + MMA_PAD;
  out.push(`${j}#pragma unroll`);
  out.push(`${j}for (int tf_kk = 0; tf_kk < ${depth}; tf_kk += 16) {`);
  out.push(`${j}  unsigned tf_fa[${w.mb}][4];`);
  fragmentA(`${j}  `);
  // Two n8 blocks' right fragments a load: matrices (block ni, depth 0–7), (ni, 8–15), (ni + 1, 0–7), (ni + 1, 8–15).
  if (w.nb % 2) throw new Error(`CUDA: an mma warp tile of ${w.nb} column blocks (an even count is read in pairs)`);
  out.push(`${j}  #pragma unroll`);
  out.push(`${j}  for (int tf_o = 0; tf_o < ${ops}; tf_o++) {`);
  out.push(`${j}    #pragma unroll`);
  out.push(`${j}    for (int tf_ni = 0; tf_ni < ${w.nb}; tf_ni += 2) {`);
  out.push(`${j}      unsigned tf_fb[4];`);
  out.push(`${j}      tf_ldsm4(tf_fb, ${b} + tf_o * ${columns * pitch} + (tf_wn + (tf_ni + (tf_lane >> 4)) * 8 + (tf_lane & 7)) * ${pitch} + tf_kk + ((tf_lane >> 3) & 1) * 8);`);
  out.push(`${j}      #pragma unroll`);
  out.push(`${j}      for (int tf_mi = 0; tf_mi < ${w.mb}; tf_mi++) {`);
  out.push(`${j}        tf_mma_bf16(tf_c + tf_o * ${w.mb * w.nb * 4} + (tf_mi * ${w.nb} + tf_ni) * 4, tf_fa[tf_mi], tf_fb);`);
  out.push(`${j}        tf_mma_bf16(tf_c + tf_o * ${w.mb * w.nb * 4} + (tf_mi * ${w.nb} + tf_ni + 1) * 4, tf_fa[tf_mi], tf_fb + 2);`);
  out.push(`${j}      }`);
  out.push(`${j}    }`);
  out.push(`${j}  }`);
  out.push(`${j}}`);
}

/**
 * The epilogue at each accumulator: c[… (mi · NB + ni) · 4 + r] is row 16 mi + g (+ 8 for r ≥ 2), column 8 ni + 2q
 * + (r & 1) of the warp's block.
 */
export function mmaEpilogue(g: GemmIR, w: WarpTile, p: ExprPrinter, out: string[], i: string): void {
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_mi = 0; tf_mi < ${w.mb}; tf_mi++) {`);
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_ni = 0; tf_ni < ${w.nb}; tf_ni++) {`);
  out.push(`${i}  #pragma unroll`);
  out.push(`${i}  for (int tf_r = 0; tf_r < 4; tf_r++) {`);
  out.push(`${i}    const int tf_em = tf_m0 + tf_wm + tf_mi * 16 + tf_g + (tf_r >> 1) * 8;`);
  out.push(`${i}    const int tf_en = tf_n0 + tf_wn + tf_ni * 8 + tf_q * 2 + (tf_r & 1);`);
  out.push(`${i}    const bool tf_inside = tf_em < tf_m_total && tf_en < ${g.columns};`);
  out.push(`${i}    const int ${g.m} = tf_inside ? tf_em : 0, ${g.n} = tf_inside ? tf_en : 0;`);
  g.accs.forEach((acc, o) => out.push(`${i}    const float ${acc} = tf_c[${o * w.mb * w.nb * 4} + (tf_mi * ${w.nb} + tf_ni) * 4 + tf_r];`));
  epilogue(g, p, out, `${i}    `, 'tf_inside');
  out.push(`${i}  }`);
  out.push(`${i}}`);
  out.push(`${i}}`);
}

/**
 * The address a lane gives ldmatrix for a warp's 16 × 16 left fragment at rows `row0`, depth tf_kk of bf16 rows of
 * `pitch`: matrices (rows 0–7, depth 0–7), (8–15, 0–7), (0–7, 8–15), (8–15, 8–15), the fragment's four registers.
 */
const leftRow = (row0: string, pitch: number) => `(${row0} + (tf_lane & 7) + ((tf_lane >> 3) & 1) * 8) * ${pitch} + tf_kk + (tf_lane >> 4) * 8`;

const checkMmaTile = ({ tileRows, tileColumns, tileDepth }: GemmPlan) => {
  if (tileRows !== 64 || tileColumns !== 64 || tileDepth !== 32) throw new Error(`CUDA: mma tiles of ${tileRows} × ${tileColumns} × ${tileDepth} are not printed`);
};

/**
 * Operands staged through registers: the next step's global loads (the left operand computed by its prologue, 8
 * neighbouring elements a thread; one 16-byte weight load a thread and product) are issued before this step's
 * matrix instructions, then rounded to bf16 and stored to shared memory.
 */
function mmaTile(g: GemmIR, plan: GemmPlan, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  checkMmaTile(plan);
  const TD = plan.tileDepth;
  const pitch = TD + MMA_PAD;
  const ops = g.b.length;
  const i = '    ';
  out.push(`${i}${shared.array('unsigned short', 'tf_as', 64 * pitch, { aligned: true })}`);
  out.push(`${i}${shared.array('unsigned short', 'tf_bs', ops * 64 * pitch, { aligned: true })}`);
  const w = warpTile(plan);
  mmaSetup(ops, w, out, i);
  // Row (or column) t / 4, depth (t % 4) · 8 onwards, of the step.
  out.push(`${i}const int tf_sr = threadIdx.x >> 2, tf_sc = (threadIdx.x & 3) * 8;`);
  out.push(`${i}float tf_ra[8];`);
  out.push(`${i}uint4 tf_rb[${ops}];`);
  const load = (indent: string, k0: string) => {
    const inner = indent + '  ';
    out.push(`${indent}{`);
    out.push(`${inner}const int ${g.m} = tf_m0 + tf_sr;`);
    out.push(`${inner}#pragma unroll`);
    out.push(`${inner}for (int tf_j = 0; tf_j < 8; tf_j++) {`);
    out.push(`${inner}  const int ${g.k} = ${k0} + tf_sc + tf_j;`);
    out.push(`${inner}  float tf_v = 0.0f;`);
    out.push(`${inner}  if (${g.m} < tf_m_total) {`);
    out.push(`${inner}    tf_v = ${p.expr(g.a, out, inner + '    ')};`);
    out.push(`${inner}  }`);
    out.push(`${inner}  tf_ra[tf_j] = tf_v;`);
    out.push(`${inner}}`);
    out.push(`${inner}const int ${g.n} = tf_n0 + tf_sr;`);
    out.push(`${inner}const int ${g.k} = ${k0} + tf_sc;`);
    g.b.forEach((b, o) => {
      if (b.k !== 'load') throw new Error('CUDA: an mma GEMM reads its weights directly');
      const index = p.expr(b.index, out, inner);
      out.push(`${inner}tf_rb[${o}] = ${g.n} < ${g.columns} ? __ldg(reinterpret_cast<const uint4*>(b${b.buf} + ${index})) : make_uint4(0u, 0u, 0u, 0u);`);
    });
    out.push(`${indent}}`);
  };
  const stage = (indent: string) => {
    const pack = (x: number) => `tf_pack_bf16(tf_ra[${2 * x}], tf_ra[${2 * x + 1}])`;
    out.push(`${indent}*reinterpret_cast<uint4*>(tf_as + tf_sr * ${pitch} + tf_sc) = make_uint4(${pack(0)}, ${pack(1)}, ${pack(2)}, ${pack(3)});`);
    for (let o = 0; o < ops; o++) out.push(`${indent}*reinterpret_cast<uint4*>(tf_bs + ${o * 64 * pitch} + tf_sr * ${pitch} + tf_sc) = tf_rb[${o}];`);
  };
  load(i, '0');
  stage(i);
  out.push(`${i}__syncthreads();`);
  out.push(`${i}for (int tf_k0 = 0; tf_k0 < ${g.depth}; tf_k0 += ${TD}) {`);
  const j = i + '  ';
  out.push(`${j}const bool tf_more = tf_k0 + ${TD} < ${g.depth};`);
  out.push(`${j}if (tf_more) {`);
  out.push(`${j}  const int tf_k1 = tf_k0 + ${TD};`);
  load(`${j}  `, 'tf_k1');
  out.push(`${j}}`);
  mmaStep(ops, w, 64, TD, 'tf_bs', (f) => out.push(`${f}tf_ldsm4(tf_fa[0], tf_as + ${leftRow('tf_wm', pitch)});`), out, j);
  out.push(`${j}__syncthreads();`);
  out.push(`${j}if (tf_more) {`);
  stage(`${j}  `);
  out.push(`${j}}`);
  out.push(`${j}__syncthreads();`);
  out.push(`${i}}`);
  mmaEpilogue(g, w, p, out, i);
}

function fmaTile(g: GemmIR, plan: GemmPlan, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = plan;
  const per = 4;
  if ((TM / per) * (TN / per) !== 256) throw new Error(`CUDA: no fma tiles of ${TM} × ${TN} for 256 threads`);
  const ops = g.b.length;
  const i = '    ';
  out.push(`${i}${shared.array('float', 'tf_as', TD * TM)}`);
  out.push(`${i}${shared.array('float', 'tf_bs', ops * TD * TN)}`);
  out.push(`${i}const int tf_tr = (threadIdx.x / ${TN / per}) * ${per}, tf_tc = (threadIdx.x % ${TN / per}) * ${per};`);
  out.push(`${i}float tf_c[${ops * per * per}];`);
  out.push(`${i}for (int tf_i = 0; tf_i < ${ops * per * per}; tf_i++) tf_c[tf_i] = 0.0f;`);
  out.push(`${i}for (int tf_k0 = 0; tf_k0 < ${g.depth}; tf_k0 += ${TD}) {`);
  const j = i + '  ';
  // Element e of a tile: row (or column) e / TD, depth e % TD, so neighbouring threads read along the depth.
  out.push(`${j}for (int tf_e = threadIdx.x; tf_e < ${TM * TD}; tf_e += TF_BLOCK) {`);
  out.push(`${j}  const int ${g.m} = tf_m0 + tf_e / ${TD};`);
  out.push(`${j}  const int ${g.k} = tf_k0 + tf_e % ${TD};`);
  out.push(`${j}  float tf_v = 0.0f;`);
  out.push(`${j}  if (${g.m} < tf_m_total && ${g.k} < ${g.depth}) {`);
  out.push(`${j}    tf_v = ${p.expr(g.a, out, j + '    ')};`);
  out.push(`${j}  }`);
  out.push(`${j}  tf_as[(tf_e % ${TD}) * ${TM} + tf_e / ${TD}] = tf_v;`);
  out.push(`${j}}`);
  out.push(`${j}for (int tf_e = threadIdx.x; tf_e < ${TN * TD}; tf_e += TF_BLOCK) {`);
  out.push(`${j}  const int ${g.n} = tf_n0 + tf_e / ${TD};`);
  out.push(`${j}  const int ${g.k} = tf_k0 + tf_e % ${TD};`);
  g.b.forEach((b, o) => {
    out.push(`${j}  {`);
    out.push(`${j}    float tf_v = 0.0f;`);
    out.push(`${j}    if (${g.n} < ${g.columns} && ${g.k} < ${g.depth}) {`);
    out.push(`${j}      tf_v = ${p.expr(b, out, j + '      ')};`);
    out.push(`${j}    }`);
    out.push(`${j}    tf_bs[${o * TD * TN} + (tf_e % ${TD}) * ${TN} + tf_e / ${TD}] = tf_v;`);
    out.push(`${j}  }`);
  });
  out.push(`${j}}`);
  out.push(`${j}__syncthreads();`);
  out.push(`${j}#pragma unroll 4`);
  out.push(`${j}for (int tf_d = 0; tf_d < ${TD}; tf_d++) {`);
  out.push(`${j}  float tf_a[${per}];`);
  out.push(`${j}  for (int tf_x = 0; tf_x < ${per}; tf_x++) tf_a[tf_x] = tf_as[tf_d * ${TM} + tf_tr + tf_x];`);
  out.push(`${j}  for (int tf_o = 0; tf_o < ${ops}; tf_o++) {`);
  out.push(`${j}    for (int tf_y = 0; tf_y < ${per}; tf_y++) {`);
  out.push(`${j}      const float tf_b = tf_bs[tf_o * ${TD * TN} + tf_d * ${TN} + tf_tc + tf_y];`);
  out.push(`${j}      for (int tf_x = 0; tf_x < ${per}; tf_x++) tf_c[tf_o * ${per * per} + tf_x * ${per} + tf_y] += tf_a[tf_x] * tf_b;`);
  out.push(`${j}    }`);
  out.push(`${j}  }`);
  out.push(`${j}}`);
  out.push(`${j}__syncthreads();`);
  out.push(`${i}}`);
  out.push(`${i}for (int tf_i = 0; tf_i < ${per * per}; tf_i++) {`);
  out.push(`${i}  const int tf_em = tf_m0 + tf_tr + tf_i / ${per}, tf_en = tf_n0 + tf_tc + tf_i % ${per};`);
  out.push(`${i}  const bool tf_inside = tf_em < tf_m_total && tf_en < ${g.columns};`);
  out.push(`${i}  const int ${g.m} = tf_inside ? tf_em : 0, ${g.n} = tf_inside ? tf_en : 0;`);
  g.accs.forEach((acc, o) => out.push(`${i}  const float ${acc} = tf_c[${o * per * per} + tf_i];`));
  epilogue(g, p, out, `${i}  `, 'tf_inside');
  out.push(`${i}}`);
}

/**
 * The mma tile with its operands copied by cp.async into `stages` buffers of memory given at launch, `stages − 1`
 * steps ahead of the one computed: per step and block, the tile's rows × depth of the left operand as it is in
 * memory (f32, rounded to bf16 as fragments are read, or bf16) and its columns × depth of each weight as bf16, in
 * 16-byte copies. Rows 8 elements longer than the depth keep a warp's fragment reads on distinct banks.
 */
function mmaAsyncTile(g: GemmIR, plan: GemmPlan, stages: number, left: 'f32' | 'bf16', p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  const [TM, TN, TD] = [plan.tileRows, plan.tileColumns, plan.tileDepth];
  if (TM % 64 || TN % 64 || TD % 32) throw new Error(`CUDA: async mma tiles of ${TM} × ${TN} × ${TD} are not printed`);
  if (g.a.k !== 'load' || g.b.some((b) => b.k !== 'load')) throw new Error('CUDA: an async mma GEMM copies its operands as they are');
  const [AP, BP] = [TD + MMA_PAD, TD + MMA_PAD];
  const ops = g.b.length;
  const w = warpTile(plan);
  const aStage = TM * AP;
  const bStage = ops * TN * BP;
  // Elements of the left operand a 16-byte copy moves, and the element type staged.
  const [perCopy, aType, aBytes] = left === 'bf16' ? [8, 'unsigned short', 2] : [4, 'float', 4];
  const i = '    ';
  out.push(`${i}${shared.dynamic('tf_ring')}`);
  out.push(`${i}${aType}* const tf_as = reinterpret_cast<${aType}*>(tf_ring);`);
  out.push(`${i}unsigned short* const tf_bs = reinterpret_cast<unsigned short*>(tf_ring + ${stages * aStage * aBytes});`);
  mmaSetup(ops, w, out, i);
  if (plan.split) {
    // This part's run of steps: part p of P takes steps [p · S / P, (p + 1) · S / P).
    out.push(`${i}const int tf_step0 = tf_part * ${g.depth / TD} / tf_parts;`);
    out.push(`${i}const int tf_steps = (tf_part + 1) * ${g.depth / TD} / tf_parts - tf_step0;`);
  } else {
    out.push(`${i}const int tf_steps = ${g.depth / TD};`);
  }
  // The copies of step `step` into stage `stage`: rows past the left operand's and columns past the weights' are
  // zeros (their source address is row 0's, never read). Copy x of the left operand: row x / (depth / perCopy),
  // depth (x % (depth / perCopy)) · perCopy; of a weight: column x / (depth / 8), depth (x % (depth / 8)) · 8.
  const issue = stepCopies(g, p, out, i, plan.split ? 'tf_step0' : '', TD, {
    copies: (TM * TD) / perCopy, split: `tf_r = tf_x / ${TD / perCopy}, tf_kk = (tf_x % ${TD / perCopy}) * ${perCopy}`, depth: 'tf_kk',
    at: (_, stage) => `tf_as + (${stage}) * ${aStage} + tf_r * ${AP} + tf_kk`,
  }, {
    copies: (TN * TD) / 8, split: `tf_r = tf_x / ${TD / 8}, tf_kk = (tf_x % ${TD / 8}) * 8`, depth: 'tf_kk',
    at: (o, stage) => `tf_bs + (${stage}) * ${bStage} + ${o * TN * BP} + tf_r * ${BP} + tf_kk`,
  });
  out.push(`${i}#pragma unroll`);
  out.push(`${i}for (int tf_s = 0; tf_s < ${stages - 1}; tf_s++) {`);
  out.push(`${i}  if (tf_s < tf_steps) {`);
  issue(`${i}    `, 'tf_s', 'tf_s');
  out.push(`${i}  }`);
  out.push(`${i}  tf_cp_commit();`);
  out.push(`${i}}`);
  out.push(`${i}for (int tf_kt = 0; tf_kt < tf_steps; tf_kt++) {`);
  const j = i + '  ';
  // Step kt's copies have landed (at most stages − 2 later groups in flight) and every thread is past step kt − 1,
  // whose stage the copies issued next overwrite.
  out.push(`${j}tf_cp_wait<${stages - 2}>();`);
  out.push(`${j}__syncthreads();`);
  out.push(`${j}{`);
  out.push(`${j}  const int tf_next = tf_kt + ${stages - 1};`);
  out.push(`${j}  if (tf_next < tf_steps) {`);
  issue(`${j}    `, `tf_next % ${stages}`, 'tf_next');
  out.push(`${j}  }`);
  out.push(`${j}  tf_cp_commit();`);
  out.push(`${j}}`);
  out.push(`${j}const ${aType}* const tf_a = tf_as + (tf_kt % ${stages}) * ${aStage};`);
  out.push(`${j}const unsigned short* const tf_b = tf_bs + (tf_kt % ${stages}) * ${bStage};`);
  mmaStep(ops, w, TN, TD, 'tf_b', (f) => {
    out.push(`${f}#pragma unroll`);
    out.push(`${f}for (int tf_mi = 0; tf_mi < ${w.mb}; tf_mi++) {`);
    if (left === 'bf16') {
      out.push(`${f}  tf_ldsm4(tf_fa[tf_mi], tf_a + ${leftRow('tf_wm + tf_mi * 16', AP)});`);
    } else {
      out.push(`${f}  const float* const tf_pa = tf_a + (tf_wm + tf_mi * 16 + tf_g) * ${AP} + tf_kk + tf_q * 2;`);
      for (const [r, off] of [[0, 0], [1, 8 * AP], [2, 8], [3, 8 * AP + 8]]) {
        out.push(`${f}  { const float2 tf_v = *reinterpret_cast<const float2*>(tf_pa + ${off}); tf_fa[tf_mi][${r}] = tf_pack_bf16x2(tf_v.x, tf_v.y); }`);
      }
    }
    out.push(`${f}}`);
  }, out, j);
  out.push(`${i}}`);
  // The next tile's first copies overwrite stages still being read by slow warps: all finish first.
  out.push(`${i}__syncthreads();`);
  if (plan.split) addParts(ops * w.mb * w.nb * 4, plan.split.maxParts, { warpRows: 16 * w.mb, warpsAcross: 2 }, stages * (aStage * aBytes + bStage * 2), shared, out, i);
  mmaEpilogue(g, w, p, out, i);
}

/** Where a split tile's warps hold their rows (for addParts): rows a warp holds, warps side by side on the same rows. */
export interface PartsLayout { readonly warpRows: number; readonly warpsAcross: number }

/** Where a step's 16-byte copies of one operand go: copy x (tf_x) as row tf_r and a depth within the step. */
export interface StepCopies {
  /** Copies a step makes (a multiple of the block's threads). */
  readonly copies: number;
  /** Declares tf_r and the depth's variable from tf_x. */
  readonly split: string;
  /** The depth within the step, in elements. */
  readonly depth: string;
  /** The staged address of the copy into stage `stage` (of weight o for the right operands). */
  readonly at: (o: number, stage: string) => string;
}

/**
 * The cp.async copies of a GEMM tile's steps, `depth` deep each from step `first` (an expression; '' for 0): the
 * left operand's rows from tf_m0 and each weight's columns from tf_n0. Rows past the left operand's and columns
 * past the weights' are zeros (their source address is row 0's, never read).
 *   Prints, where it is called (once a tile, before its steps), each copy's source at the first step for every
 * operand whose index is the depth plus what does not read it (offsetAlong): a step then adds its depth to a
 * pointer, where printing the index again each step had kept a 512-token output projection's issue slots busy (a
 * seventh of its ncu samples). Returns what prints a step's copies into a stage.
 */
export function stepCopies(g: GemmIR, p: ExprPrinter, out: string[], indent: string, first: string, depth: number, left: StepCopies, right: StepCopies): (indent: string, stage: string, step: string) => void {
  const a = g.a;
  if (a.k !== 'load' || g.b.some((b) => b.k !== 'load')) throw new Error('CUDA: copies of a computed operand');
  const operands = [
    { side: left, loads: [a], name: 'tf_sl', inside: 'tf_m0 + tf_r < tf_m_total', v: g.m, origin: 'tf_m0' },
    { side: right, loads: g.b as typeof a[], name: 'tf_sr', inside: `tf_n0 + tf_r < ${g.columns}`, v: g.n, origin: 'tf_n0' },
  ].map((o) => ({ ...o, hoisted: o.loads.every((l) => offsetAlong(l.index, g.k) !== undefined) }));
  const start = first ? `(${first}) * ${depth}` : '0';
  for (const o of operands.filter((x) => x.hoisted)) {
    const inner = indent + '  ';
    const per = o.side.copies / 256;
    o.loads.forEach((l, li) => out.push(`${indent}decltype(b${l.buf} + 0) ${o.name}${li}[${per}];`));
    out.push(`${indent}bool ${o.name}_in[${per}];`);
    out.push(`${indent}#pragma unroll`);
    out.push(`${indent}for (int tf_h = 0; tf_h < ${per}; tf_h++) {`);
    out.push(`${inner}const int tf_x = threadIdx.x + tf_h * 256, ${o.side.split};`);
    out.push(`${inner}${o.name}_in[tf_h] = ${o.inside};`);
    out.push(`${inner}const int ${o.v} = ${o.name}_in[tf_h] ? ${o.origin} + tf_r : 0;`);
    o.loads.forEach((l, li) => {
      const base = p.expr(offsetAlong(l.index, g.k)!, out, inner);
      out.push(`${inner}${o.name}${li}[tf_h] = b${l.buf} + ${base} + ${start} + ${o.side.depth};`);
    });
    out.push(`${indent}}`);
  }
  return (ind, stage, step) => {
    const inner = ind + '  ';
    out.push(`${ind}{`);
    for (const o of operands) {
      out.push(`${inner}#pragma unroll`);
      out.push(`${inner}for (int tf_h = 0; tf_h < ${o.side.copies / 256}; tf_h++) {`);
      out.push(`${inner}  const int tf_x = threadIdx.x + tf_h * 256, ${o.side.split};`);
      if (o.hoisted) {
        o.loads.forEach((l, li) => out.push(`${inner}  tf_cp16(${o.side.at(li, stage)}, ${o.name}${li}[tf_h] + (${step}) * ${depth}, ${o.name}_in[tf_h]);`));
      } else {
        out.push(`${inner}  const bool tf_in = ${o.inside};`);
        out.push(`${inner}  const int ${o.v} = tf_in ? ${o.origin} + tf_r : 0;`);
        out.push(`${inner}  const int ${g.k} = (${first ? `${first} + ` : ''}${step}) * ${depth} + ${o.side.depth};`);
        o.loads.forEach((l, li) => {
          const index = p.expr(l.index, out, inner + '  ');
          out.push(`${inner}  tf_cp16(${o.side.at(li, stage)}, b${l.buf} + ${index}, tf_in);`);
        });
      }
      out.push(`${inner}}`);
    }
    out.push(`${ind}}`);
  };
}

/**
 * A split tile's parts added (GemmPlan.split): each part stores its accumulators to its slot of the workspace
 * (accumulator a of thread t at a · 256 + t) and counts itself done in the tile's counter; the last adds every
 * slot in the order of the parts (its own read back too, so the sum does not depend on which part is last), zeroes
 * the counter for the next launch and goes on to the epilogue; the others go on to their next work item.
 *   Only the threads of warps holding rows below the total store and are summed (the warps' first rows grow with
 * their index, so they are the first `tf_live` threads: at 32 rows of a 128-row tile, a quarter). The last part's
 * sum is spread over all 256 threads, every part of an accumulator loaded at once and several accumulators a
 * thread in flight (tf_add_parts), into the staging ring (free by now), from where each thread takes its own back. (Summed by
 * the threads that held them, one part at a time, the output projection of a 32-token prompt, 8 parts, took 20 µs
 * on the H200: 8 round trips to L2 in its last block.)
 */
export function addParts(accs: number, maxParts: number, layout: PartsLayout, ringBytes: number, shared: SharedMemory, out: string[], i: string): void {
  if (accs * 256 * 4 > ringBytes) throw new Error(`CUDA: a split tile's ${accs} accumulators a thread do not fit its ${ringBytes}-byte staging ring`);
  const slot = (work: string) => `tf_ws + (size_t)(${work}) * ${accs * 256}`;
  out.push(`${i}if (tf_parts > 1) {`);
  out.push(`${i}  ${shared.scalar('int', 'tf_last')}`);
  const { warpRows: R, warpsAcross: W } = layout;
  out.push(`${i}  const int tf_live_warps = ${W} * ((tf_m_total - tf_m0 + ${R - 1}) / ${R});`);
  out.push(`${i}  const int tf_live = 32 * (tf_live_warps < 8 ? tf_live_warps : 8);`);
  out.push(`${i}  if (threadIdx.x < tf_live) {`);
  out.push(`${i}    #pragma unroll`);
  out.push(`${i}    for (int tf_i = 0; tf_i < ${accs}; tf_i++) (${slot('tf_part * tf_tiles + tf_tile')} + threadIdx.x)[tf_i * 256] = tf_c[tf_i];`);
  out.push(`${i}  }`);
  // The block's stores before the count: the barrier orders them before thread 0's acquire-release count
  // (tf_count_part), which publishes them; the last part's count acquires the others'. (A fence in every thread had
  // cost a 512-token output projection an eighth of its samples in ncu.)
  out.push(`${i}  __syncthreads();`);
  out.push(`${i}  if (threadIdx.x == 0) {`);
  out.push(`${i}    tf_last = tf_count_part(tf_count + tf_tile) == (unsigned)(tf_parts - 1);`);
  out.push(`${i}    if (tf_last) tf_count[tf_tile] = 0u;`);
  out.push(`${i}  }`);
  out.push(`${i}  __syncthreads();`);
  out.push(`${i}  if (!tf_last) continue;`);
  // 32 loads a thread in flight whatever the parts (a power of two, at most maxParts).
  out.push(`${i}  float* const tf_sum = reinterpret_cast<float*>(tf_ring);`);
  out.push(`${i}  const float* const tf_part0 = ${slot('tf_tile')};`);
  out.push(`${i}  const size_t tf_stride = (size_t)tf_tiles * ${accs * 256};`);
  out.push(`${i}  switch (tf_parts) {`);
  for (let parts = 2; parts <= maxParts; parts *= 2) {
    out.push(`${i}    case ${parts}: tf_add_parts<${parts}, ${Math.max(1, 32 / parts)}>(tf_part0, tf_stride, ${accs}, tf_live, tf_sum); break;`);
  }
  out.push(`${i}  }`);
  out.push(`${i}  __syncthreads();`);
  out.push(`${i}  if (threadIdx.x < tf_live) {`);
  out.push(`${i}    #pragma unroll`);
  out.push(`${i}    for (int tf_i = 0; tf_i < ${accs}; tf_i++) tf_c[tf_i] = tf_sum[tf_i * 256 + threadIdx.x];`);
  out.push(`${i}  }`);
  // The next work item's copies overwrite the ring.
  out.push(`${i}  __syncthreads();`);
  out.push(`${i}}`);
}
