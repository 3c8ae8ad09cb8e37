// A flash-attention kernel (KernelIR.flash) in CUDA C: each block takes a tile of query rows of one head and walks
// the keys in tiles up to the tile's causal bound, keeping per row the running maximum, the running sum and the
// output row in registers (an online softmax): no row of scores is ever whole.
//   fma:      the query tile (its prologue, the rotary embedding, computed once), each key and value tile and the
//             tile of scores live in shared memory; the threads of a query row split its keys for the scores and its
//             output's columns for probs·V. f32 throughout.
//   mma-bf16: each warp takes 16 query rows (and, with key groups, its group's share of every key tile); scores (q·kᵀ) and the output (probs·V) are m16n8k16 bf16 matrix
//             instructions with f32 accumulators. A score accumulator's layout is the next product's left-operand
//             layout, so the probabilities go from registers to the second product without shared memory (as two
//             bf16 terms each, hi + lo); the query rows, key rows and value columns are staged in shared memory as
//             bf16.
//   decode:   one query row (a decode step): lane groups each take a key at a time, keys' and values' loads for
//             several keys issued together, an online softmax per group, the groups merged at the end.

import { DType } from '../../ir/dtype.ts';
import { FlashIR, KExpr, varsOf } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { FlashPlan } from '../schedule.ts';
import { CUDA_BLOCK } from './prelude.ts';
import { gridWait, storeValue } from './render-cuda.ts';
import { SharedMemory } from './shared-memory.ts';

/** `task`: the megakernel's task form, which loops over its rows [tf_first, tf_end) (the decode form only). */
/** `waits`: the form waits for the kernel's predecessor itself (where the decode form loads keys before it). */
export function renderFlashCuda(f: FlashIR, plan: FlashPlan, p: ExprPrinter, shared: SharedMemory, out: string[], task = false, waits = false): void {
  if (waits && !(plan.units === 'decode' && plan.earlyKeys)) throw new Error(`CUDA: flash tiles of ${plan.units} units do not wait on their own`);
  if (plan.units === 'decode') decodeFlash(f, plan, p, shared, out, task, waits);
  else if (task) throw new Error(`CUDA: a megakernel task cannot run flash tiles of ${plan.units} units`);
  else if (plan.units === 'mma-bf16') mmaFlash(f, plan, p, shared, out);
  else if (plan.units === 'fma') fmaFlash(f, plan, p, shared, out);
  else throw new Error(`CUDA: no flash attention of ${plan.units} units`);
}

/** Each row's bound on the keys into tf_lims, for the tile's query rows from tf_i0. */
function rowLimits(f: FlashIR, rows: number, p: ExprPrinter, out: string[], i1: string): void {
  out.push(`${i1}for (int tf_x = threadIdx.x; tf_x < ${rows}; tf_x += TF_BLOCK) {`);
  out.push(`${i1}  const int ${f.i} = tf_i0 + tf_x;`);
  const limit = f.limit ? p.expr(f.limit, out, i1 + '  ') : String(f.keys);
  out.push(`${i1}  tf_lims[tf_x] = ${f.i} < tf_queries ? tf_imin(tf_imax(${limit}, 0), ${f.keys}) : 0;`);
  out.push(`${i1}}`);
}

/** The stores of the output at (b, i, e), `f.out` bound to its value. */
function stores(f: FlashIR, p: ExprPrinter, out: string[], indent: string): void {
  for (const st of f.stores) {
    const value = p.expr(st.value, out, indent);
    const index = p.expr(st.index, out, indent);
    out.push(`${indent}b${st.buf}[${index}] = ${storeValue(p.buffers[st.buf].dtype, value, st.value.t)};`);
  }
}

/** Where staged elements go: row r, column c of a shared bf16 array at r · pitch + c. */
interface Staging { readonly array: string; readonly pitch: number }

/**
 * Stages `rows` × `cols` elements of `value` in shared memory as bf16, element x at row x / cols, column x % cols:
 * `row` (= `base` + the row) and `col` are the variables `value` reads; rows at or past `bound` are zeros. With
 * `wide` (the plan's: a load of bf16 memory in aligned runs of 8 along the columns, a KV cache's head) they are
 * copied 16 bytes at a time by cp.async, the copies left in flight where `async` (the caller commits and waits).
 */
function stageBf16(value: KExpr, wide: boolean, rows: number, cols: number, v: { row: string; base: string; col: string; bound: string },
  to: Staging, p: ExprPrinter, out: string[], ind: string, async = false): void {
  if (wide && value.k === 'load') {
    const runs = cols / 8;
    out.push(`${ind}for (int tf_x = threadIdx.x; tf_x < ${rows * runs}; tf_x += TF_BLOCK) {`);
    out.push(`${ind}  const int tf_r = tf_x / ${runs}, tf_c = (tf_x % ${runs}) * 8;`);
    out.push(`${ind}  const bool tf_in = ${v.base} + tf_r < ${v.bound};`);
    // Rows past the bound read row 0's address (never used: zeros are copied instead).
    out.push(`${ind}  const int ${v.row} = tf_in ? ${v.base} + tf_r : 0;`);
    out.push(`${ind}  const int ${v.col} = tf_c;`);
    const index = p.expr(value.index, out, ind + '  ');
    out.push(`${ind}  tf_cp16(&${to.array}[tf_r * ${to.pitch} + tf_c], b${value.buf} + ${index}, tf_in);`);
    out.push(`${ind}}`);
    if (!async) out.push(`${ind}tf_cp_commit();`, `${ind}tf_cp_wait<0>();`);
    return;
  }
  if (async) throw new Error('CUDA: flash staging of computed elements is not asynchronous');
  out.push(`${ind}for (int tf_x = threadIdx.x; tf_x < ${rows * cols}; tf_x += TF_BLOCK) {`);
  out.push(`${ind}  const int ${v.row} = ${v.base} + tf_x / ${cols};`);
  out.push(`${ind}  const int ${v.col} = tf_x % ${cols};`);
  out.push(`${ind}  float tf_v = 0.0f;`);
  out.push(`${ind}  if (${v.row} < ${v.bound}) {`);
  out.push(`${ind}    tf_v = ${p.expr(value, out, ind + '    ')};`);
  out.push(`${ind}  }`);
  out.push(`${ind}  ${to.array}[(tf_x / ${cols}) * ${to.pitch} + tf_x % ${cols}] = tf_to_bf16(tf_v);`);
  out.push(`${ind}}`);
}

const MMA_PAD = 8; // bf16 elements a staged row is longer than its data: a warp's fragment reads hit distinct banks

/**
 * The matrix-unit form. Warp w holds query rows 16w … 16w + 15 of the tile; a lane (group g = lane / 4, index
 * q = lane % 4) holds rows g and g + 8, keys (and output columns) 2q, 2q + 1 of each block of 8. Per key tile:
 * scores = q·kᵀ (depth/16 × keys/8 instructions, the query fragments kept in registers for the whole walk), the
 * score expression and mask at each accumulator, the rows' maxima across the lane quad, the rescale, then
 * out += probs·V with the probabilities rounded to bf16 in place as left operands. A warp whose rows all end before
 * the key tile skips it.
 */
function mmaFlash(f: FlashIR, plan: FlashPlan, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  const { tileQueries: BQ, tileKeys: BK } = plan;
  const [D, E] = [f.depth, f.width];
  const [QP, VP] = [D + MMA_PAD, E + MMA_PAD];
  // G groups of W warps: warp w holds rows 16 (w % W) onwards of the tile, and keys SK (w / W) onwards of each key tile.
  const G = plan.keyGroups ?? 1;
  const W = BQ / 16;
  const SK = BK / G;
  if (W * G * 32 !== CUDA_BLOCK || SK % 16 !== 0 || (G > 1 && !plan.ring)) throw new Error(`CUDA: flash tiles of ${BQ} queries in ${G} key groups are not printed`);
  const [steps, keyBlocks, outBlocks] = [D / 16, SK / 8, E / 8];
  const full = '0xffffffffu';
  out.push(`  ${shared.array('unsigned short', 'tf_qs', BQ * QP, { aligned: true })}`);
  if (plan.ring) {
    out.push(`  ${shared.dynamic('tf_ring')}`);
    out.push(`  unsigned short* const tf_kr = reinterpret_cast<unsigned short*>(tf_ring);`);
    out.push(`  unsigned short* const tf_vr = tf_kr + ${2 * BK * QP};`);
  } else {
    out.push(`  ${shared.array('unsigned short', 'tf_ks', BK * QP, { aligned: true })}`);
    out.push(`  ${shared.array('unsigned short', 'tf_vs', BK * VP, { aligned: true })}`);
  }
  out.push(`  ${shared.array('int', 'tf_lims', BQ)}`);
  out.push(`  const int tf_queries = ${p.expr(f.queries, out, '  ')};`);
  out.push(`  const int tf_qtiles = ${p.expr(plan.queryTiles, out, '  ')};`);
  out.push('  const int tf_lane = threadIdx.x & 31, tf_warp = threadIdx.x >> 5;');
  out.push(`  const int tf_g = tf_lane >> 2, tf_q = tf_lane & 3, tf_wm = (tf_warp % ${W}) * 16, tf_kg = tf_warp / ${W};`);
  out.push(`  for (int tf_tile = blockIdx.x; tf_tile < ${f.batch} * tf_qtiles; tf_tile += gridDim.x) {`);
  const i1 = '    ';
  if (plan.longestFirst) {
    out.push(`${i1}const int ${f.b} = tf_tile % ${f.batch};`);
    out.push(`${i1}const int tf_i0 = (tf_qtiles - 1 - tf_tile / ${f.batch}) * ${BQ};`);
  } else {
    out.push(`${i1}const int ${f.b} = tf_tile / tf_qtiles;`);
    out.push(`${i1}const int tf_i0 = (tf_tile % tf_qtiles) * ${BQ};`);
  }
  stageBf16(f.q, false, BQ, D, { row: f.i, base: 'tf_i0', col: f.d, bound: 'tf_queries' }, { array: 'tf_qs', pitch: QP }, p, out, i1);
  rowLimits(f, BQ, p, out, i1);
  out.push(`${i1}__syncthreads();`);
  // Phases for a step's timeline (stamped programs only): the query tile staged (mark 0), the key tiles done (1),
  // the key groups merged (2).
  out.push(`${i1}tf_stamp_mark(0);`);
  // The tile walks to its rows' largest bound, the warp computes up to its own rows' largest.
  out.push(`${i1}int tf_kend = 0, tf_wend = 0;`);
  out.push(`${i1}for (int tf_x = 0; tf_x < ${BQ}; tf_x++) tf_kend = tf_imax(tf_kend, tf_lims[tf_x]);`);
  out.push(`${i1}for (int tf_x = 0; tf_x < 16; tf_x++) tf_wend = tf_imax(tf_wend, tf_lims[tf_wm + tf_x]);`);
  out.push(`${i1}unsigned tf_qf[${steps}][4];`);
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_kk = 0; tf_kk < ${steps}; tf_kk++) {`);
  out.push(`${i1}  const unsigned short* tf_pa = tf_qs + (tf_wm + tf_g) * ${QP} + tf_kk * 16 + tf_q * 2;`);
  for (const [r, off] of [[0, 0], [1, 8 * QP], [2, 8], [3, 8 * QP + 8]]) {
    out.push(`${i1}  tf_qf[tf_kk][${r}] = *reinterpret_cast<const unsigned*>(tf_pa + ${off});`);
  }
  out.push(`${i1}}`);
  out.push(`${i1}float tf_m[2] = {-TF_INF, -TF_INF}, tf_l[2] = {0.0f, 0.0f};`);
  out.push(`${i1}float tf_o[${outBlocks * 4}];`);
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_x = 0; tf_x < ${outBlocks * 4}; tf_x++) tf_o[tf_x] = 0.0f;`);
  const stageKeys = (base: string, keys: string, values: string, ind: string, async: boolean) => {
    stageBf16(f.k, plan.wideRows?.keys ?? false, BK, D, { row: f.t, base, col: f.d, bound: String(f.keys) }, { array: keys, pitch: QP }, p, out, ind, async);
    stageBf16(f.v, plan.wideRows?.values ?? false, BK, E, { row: f.t, base, col: f.e, bound: String(f.keys) }, { array: values, pitch: VP }, p, out, ind, async);
  };
  const i2 = i1 + '  ';
  if (plan.ring) {
    // Key tile n in stage n % 2: tile n + 1's copies are issued before tile n's products.
    out.push(`${i1}if (tf_kend > 0) {`);
    stageKeys('0', 'tf_kr', 'tf_vr', `${i1}  `, true);
    out.push(`${i1}}`);
    out.push(`${i1}tf_cp_commit();`);
    out.push(`${i1}for (int tf_t0 = 0, tf_st = 0; tf_t0 < tf_kend; tf_t0 += ${BK}, tf_st ^= 1) {`);
    // Every warp is done with the stage the next copies overwrite (the previous tile's; the first time, the bounds).
    out.push(`${i2}__syncthreads();`);
    out.push(`${i2}if (tf_t0 + ${BK} < tf_kend) {`);
    out.push(`${i2}  unsigned short* const tf_kn = tf_kr + (tf_st ^ 1) * ${BK * QP};`);
    out.push(`${i2}  unsigned short* const tf_vn = tf_vr + (tf_st ^ 1) * ${BK * VP};`);
    stageKeys(`tf_t0 + ${BK}`, 'tf_kn', 'tf_vn', `${i2}  `, true);
    out.push(`${i2}}`);
    out.push(`${i2}tf_cp_commit();`);
    out.push(`${i2}tf_cp_wait<1>();`);
    out.push(`${i2}__syncthreads();`);
    out.push(`${i2}const unsigned short* const tf_ks = tf_kr + tf_st * ${BK * QP};`);
    out.push(`${i2}const unsigned short* const tf_vs = tf_vr + tf_st * ${BK * VP};`);
  } else {
    out.push(`${i1}for (int tf_t0 = 0; tf_t0 < tf_kend; tf_t0 += ${BK}) {`);
    // Every warp is done with the previous tile's keys and values (and, the first time, with the query tile's bounds).
    out.push(`${i2}__syncthreads();`);
    stageKeys('tf_t0', 'tf_ks', 'tf_vs', i2, false);
    out.push(`${i2}__syncthreads();`);
  }
  out.push(`${i2}if (tf_t0 + tf_kg * ${SK} < tf_wend) {`);
  const i3 = i2 + '  ';
  out.push(`${i3}float tf_s[${keyBlocks * 4}];`);
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_x = 0; tf_x < ${keyBlocks * 4}; tf_x++) tf_s[tf_x] = 0.0f;`);
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_kk = 0; tf_kk < ${steps}; tf_kk++) {`);
  out.push(`${i3}  #pragma unroll`);
  // Two key blocks' fragments a load: matrices (keys 8ni…, depth 0–7), (8ni…, 8–15), (8ni + 8…, 0–7), (8ni + 8…, 8–15).
  out.push(`${i3}  for (int tf_ni = 0; tf_ni < ${keyBlocks}; tf_ni += 2) {`);
  out.push(`${i3}    unsigned tf_fb[4];`);
  out.push(`${i3}    tf_ldsm4(tf_fb, tf_ks + (tf_kg * ${SK} + (tf_ni + (tf_lane >> 4)) * 8 + (tf_lane & 7)) * ${QP} + tf_kk * 16 + ((tf_lane >> 3) & 1) * 8);`);
  out.push(`${i3}    tf_mma_bf16(tf_s + tf_ni * 4, tf_qf[tf_kk], tf_fb);`);
  out.push(`${i3}    tf_mma_bf16(tf_s + tf_ni * 4 + 4, tf_qf[tf_kk], tf_fb + 2);`);
  out.push(`${i3}  }`);
  out.push(`${i3}}`);
  // The score (scale, mask) at each accumulator; keys past the cache and rows past the queries are −∞.
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_ni = 0; tf_ni < ${keyBlocks}; tf_ni++) {`);
  out.push(`${i3}  #pragma unroll`);
  out.push(`${i3}  for (int tf_r = 0; tf_r < 4; tf_r++) {`);
  const i4 = i3 + '    ';
  out.push(`${i4}const int ${f.i} = tf_i0 + tf_wm + tf_g + (tf_r >> 1) * 8;`);
  out.push(`${i4}const int ${f.t} = tf_t0 + tf_kg * ${SK} + tf_ni * 8 + tf_q * 2 + (tf_r & 1);`);
  out.push(`${i4}const float ${f.qk} = tf_s[tf_ni * 4 + tf_r];`);
  out.push(`${i4}float tf_x = -TF_INF;`);
  out.push(`${i4}if (${f.t} < ${f.keys} && ${f.i} < tf_queries) {`);
  out.push(`${i4}  tf_x = ${p.expr(f.score, out, i4 + '  ')};`);
  out.push(`${i4}}`);
  out.push(`${i4}tf_s[tf_ni * 4 + tf_r] = tf_x;`);
  out.push(`${i3}  }`);
  out.push(`${i3}}`);
  // The online softmax per row (h = 0: row g, 1: row g + 8): the maximum so far across the quad (NaN propagates),
  // the rescale of what was summed before it.
  out.push(`${i3}float tf_ref[2];`);
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_h = 0; tf_h < 2; tf_h++) {`);
  out.push(`${i3}  float tf_mt = -TF_INF;`);
  out.push(`${i3}  #pragma unroll`);
  out.push(`${i3}  for (int tf_ni = 0; tf_ni < ${keyBlocks}; tf_ni++) tf_mt = tf_fmax(tf_mt, tf_fmax(tf_s[tf_ni * 4 + tf_h * 2], tf_s[tf_ni * 4 + tf_h * 2 + 1]));`);
  out.push(`${i3}  tf_mt = tf_fmax(tf_mt, __shfl_xor_sync(${full}, tf_mt, 1));`);
  out.push(`${i3}  tf_mt = tf_fmax(tf_mt, __shfl_xor_sync(${full}, tf_mt, 2));`);
  out.push(`${i3}  const float tf_mnew = tf_fmax(tf_m[tf_h], tf_mt);`);
  out.push(`${i3}  tf_ref[tf_h] = tf_mnew == -TF_INF ? 0.0f : tf_mnew;`);
  out.push(`${i3}  const float tf_scale = expf(tf_m[tf_h] - tf_ref[tf_h]);`);
  out.push(`${i3}  tf_l[tf_h] *= tf_scale;`);
  out.push(`${i3}  #pragma unroll`);
  out.push(`${i3}  for (int tf_nb = 0; tf_nb < ${outBlocks}; tf_nb++) {`);
  out.push(`${i3}    tf_o[tf_nb * 4 + tf_h * 2] *= tf_scale;`);
  out.push(`${i3}    tf_o[tf_nb * 4 + tf_h * 2 + 1] *= tf_scale;`);
  out.push(`${i3}  }`);
  out.push(`${i3}  tf_m[tf_h] = tf_mnew;`);
  out.push(`${i3}}`);
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_x = 0; tf_x < ${keyBlocks * 4}; tf_x++) {`);
  out.push(`${i3}  const float tf_pr = expf(tf_s[tf_x] - tf_ref[(tf_x >> 1) & 1]);`);
  out.push(`${i3}  tf_l[(tf_x >> 1) & 1] += tf_pr;`);
  out.push(`${i3}  tf_s[tf_x] = tf_pr;`);
  out.push(`${i3}}`);
  // out += probs·V, 16 keys a step: key blocks 2kk and 2kk + 1 are the left operand's two halves of depth. Each
  // probability goes in as two bf16 terms, p = hi + lo: rounded to one, probabilities flipped near-tied argmaxes
  // of the bf16 fixture against float32 (the queries rounded once did not).
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_kk = 0; tf_kk < ${SK / 16}; tf_kk++) {`);
  out.push(`${i3}  float tf_lo[8];`);
  out.push(`${i3}  #pragma unroll`);
  out.push(`${i3}  for (int tf_x = 0; tf_x < 8; tf_x++) tf_lo[tf_x] = tf_s[tf_kk * 8 + tf_x] - tf_round_bf16(tf_s[tf_kk * 8 + tf_x]);`);
  const pairs = (at: (x: number) => string) => [0, 2, 4, 6].map((x) => `tf_pack_bf16x2(${at(x)}, ${at(x + 1)})`).join(', ');
  out.push(`${i3}  const unsigned tf_hi[4] = {${pairs((x) => `tf_s[tf_kk * 8 + ${x}]`)}};`);
  out.push(`${i3}  const unsigned tf_fl[4] = {${pairs((x) => `tf_lo[${x}]`)}};`);
  out.push(`${i3}  #pragma unroll`);
  // Two output blocks' fragments a load, transposed from the value rows: matrices (keys 16kk + 0–7, columns 8nb…),
  // (16kk + 8–15, 8nb…), (16kk + 0–7, 8nb + 8…), (16kk + 8–15, 8nb + 8…).
  out.push(`${i3}  for (int tf_nb = 0; tf_nb < ${outBlocks}; tf_nb += 2) {`);
  out.push(`${i3}    unsigned tf_fb[4];`);
  out.push(`${i3}    tf_ldsm4t(tf_fb, tf_vs + (tf_kg * ${SK} + tf_kk * 16 + (tf_lane & 7) + ((tf_lane >> 3) & 1) * 8) * ${VP} + (tf_nb + (tf_lane >> 4)) * 8);`);
  out.push(`${i3}    tf_mma_bf16(tf_o + tf_nb * 4, tf_hi, tf_fb);`);
  out.push(`${i3}    tf_mma_bf16(tf_o + tf_nb * 4, tf_fl, tf_fb);`);
  out.push(`${i3}    tf_mma_bf16(tf_o + tf_nb * 4 + 4, tf_hi, tf_fb + 2);`);
  out.push(`${i3}    tf_mma_bf16(tf_o + tf_nb * 4 + 4, tf_fl, tf_fb + 2);`);
  out.push(`${i3}  }`);
  out.push(`${i3}}`);
  out.push(`${i2}}`);
  out.push(`${i1}}`);
  // A row's sum is spread over its quad.
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_h = 0; tf_h < 2; tf_h++) {`);
  out.push(`${i1}  tf_l[tf_h] += __shfl_xor_sync(${full}, tf_l[tf_h], 1);`);
  out.push(`${i1}  tf_l[tf_h] += __shfl_xor_sync(${full}, tf_l[tf_h], 2);`);
  out.push(`${i1}}`);
  out.push(`${i1}tf_stamp_mark(1);`);
  if (G > 1) mergeKeyGroups(G, W, outBlocks, out, i1);
  out.push(`${i1}tf_stamp_mark(2);`);
  out.push(`${i1}if (tf_kg == 0) {`);
  const i5 = i1 + '  ';
  out.push(`${i5}#pragma unroll`);
  out.push(`${i5}for (int tf_nb = 0; tf_nb < ${outBlocks}; tf_nb++) {`);
  out.push(`${i5}  #pragma unroll`);
  out.push(`${i5}  for (int tf_r = 0; tf_r < 4; tf_r++) {`);
  out.push(`${i5}    const int ${f.i} = tf_i0 + tf_wm + tf_g + (tf_r >> 1) * 8;`);
  out.push(`${i5}    const int ${f.e} = tf_nb * 8 + tf_q * 2 + (tf_r & 1);`);
  out.push(`${i5}    if (${f.i} < tf_queries) {`);
  out.push(`${i5}      const float ${f.out} = tf_o[tf_nb * 4 + tf_r] / tf_l[tf_r >> 1];`);
  stores(f, p, out, `${i5}      `);
  out.push(`${i5}    }`);
  out.push(`${i5}  }`);
  out.push(`${i5}}`);
  out.push(`${i1}}`);
  // The next tile rewrites the query tile and the bounds.
  out.push(`${i1}__syncthreads();`);
  out.push('  }');
}

/**
 * The key groups' softmax states merged into group 0's (FlashPlan.keyGroups): every group past the first leaves
 * its rows' maxima, sums and output accumulators in the ring (free once every warp is past the last key tile and
 * no copy is in flight), thread t of a group's warps at slot · 32W + t; group 0 adds them in the groups' order,
 * each rescaled to the larger maximum (a maximum of −∞ is taken as 0, as in the walk: rows that saw no key stay 0).
 */
function mergeKeyGroups(G: number, W: number, outBlocks: number, out: string[], i: string): void {
  const T = 32 * W;
  const slots = 4 + outBlocks * 4;
  out.push(`${i}tf_cp_wait<0>();`);
  out.push(`${i}__syncthreads();`);
  out.push(`${i}{`);
  out.push(`${i}  float* const tf_mg = reinterpret_cast<float*>(tf_ring) + (tf_warp % ${W}) * 32 + tf_lane;`);
  out.push(`${i}  if (tf_kg > 0) {`);
  out.push(`${i}    float* const tf_to = tf_mg + (tf_kg - 1) * ${slots * T};`);
  out.push(`${i}    tf_to[0] = tf_m[0]; tf_to[${T}] = tf_m[1]; tf_to[${2 * T}] = tf_l[0]; tf_to[${3 * T}] = tf_l[1];`);
  out.push(`${i}    #pragma unroll`);
  out.push(`${i}    for (int tf_x = 0; tf_x < ${outBlocks * 4}; tf_x++) tf_to[(4 + tf_x) * ${T}] = tf_o[tf_x];`);
  out.push(`${i}  }`);
  out.push(`${i}  __syncthreads();`);
  out.push(`${i}  if (tf_kg == 0) {`);
  out.push(`${i}    for (int tf_og = 1; tf_og < ${G}; tf_og++) {`);
  out.push(`${i}      const float* const tf_from = tf_mg + (tf_og - 1) * ${slots * T};`);
  out.push(`${i}      #pragma unroll`);
  out.push(`${i}      for (int tf_h = 0; tf_h < 2; tf_h++) {`);
  out.push(`${i}        const float tf_mo = tf_from[tf_h * ${T}], tf_lo = tf_from[(2 + tf_h) * ${T}];`);
  out.push(`${i}        const float tf_mnew = tf_fmax(tf_m[tf_h], tf_mo);`);
  out.push(`${i}        const float tf_ref = tf_mnew == -TF_INF ? 0.0f : tf_mnew;`);
  out.push(`${i}        const float tf_a = expf(tf_m[tf_h] - tf_ref), tf_b = expf(tf_mo - tf_ref);`);
  out.push(`${i}        tf_l[tf_h] = tf_l[tf_h] * tf_a + tf_lo * tf_b;`);
  out.push(`${i}        #pragma unroll`);
  out.push(`${i}        for (int tf_nb = 0; tf_nb < ${outBlocks}; tf_nb++) {`);
  out.push(`${i}          #pragma unroll`);
  out.push(`${i}          for (int tf_c = 0; tf_c < 2; tf_c++) {`);
  out.push(`${i}            const int tf_x = tf_nb * 4 + tf_h * 2 + tf_c;`);
  out.push(`${i}            tf_o[tf_x] = tf_o[tf_x] * tf_a + tf_from[(4 + tf_x) * ${T}] * tf_b;`);
  out.push(`${i}          }`);
  out.push(`${i}        }`);
  out.push(`${i}        tf_m[tf_h] = tf_mnew;`);
  out.push(`${i}      }`);
  out.push(`${i}    }`);
  out.push(`${i}  }`);
  out.push(`${i}}`);
}

function fmaFlash(f: FlashIR, plan: FlashPlan, p: ExprPrinter, shared: SharedMemory, out: string[]): void {
  const { tileQueries: BQ, tileKeys: BK, threadsPerQuery: TPR } = plan;
  const [D, E] = [f.depth, f.width];
  const pitch = D + 1; // rows of the query and key tiles one bank apart
  const kpt = BK / TPR;
  const ept = E / TPR;
  out.push(`  ${shared.array('float', 'tf_qs', BQ * pitch)}`);
  out.push(`  ${shared.array('float', 'tf_ks', BK * pitch)}`);
  out.push(`  ${shared.array('float', 'tf_vs', BK * E)}`);
  out.push(`  ${shared.array('float', 'tf_ss', BQ * BK)}`);
  out.push(`  ${shared.array('int', 'tf_lims', BQ)}`);
  out.push(`  const int tf_queries = ${p.expr(f.queries, out, '  ')};`);
  out.push(`  const int tf_qtiles = ${p.expr(plan.queryTiles, out, '  ')};`);
  out.push(`  const int tf_r = threadIdx.x / ${TPR}, tf_p = threadIdx.x % ${TPR};`);
  out.push(`  for (int tf_tile = blockIdx.x; tf_tile < ${f.batch} * tf_qtiles; tf_tile += gridDim.x) {`);
  const i1 = '    ';
  out.push(`${i1}const int ${f.b} = tf_tile / tf_qtiles;`);
  out.push(`${i1}const int tf_i0 = (tf_tile % tf_qtiles) * ${BQ};`);
  // The query tile, element e at row e / D, column e % D.
  out.push(`${i1}for (int tf_x = threadIdx.x; tf_x < ${BQ * D}; tf_x += TF_BLOCK) {`);
  out.push(`${i1}  const int ${f.i} = tf_i0 + tf_x / ${D};`);
  out.push(`${i1}  const int ${f.d} = tf_x % ${D};`);
  out.push(`${i1}  float tf_v = 0.0f;`);
  out.push(`${i1}  if (${f.i} < tf_queries) {`);
  out.push(`${i1}    tf_v = ${p.expr(f.q, out, i1 + '    ')};`);
  out.push(`${i1}  }`);
  out.push(`${i1}  tf_qs[(tf_x / ${D}) * ${pitch} + tf_x % ${D}] = tf_v;`);
  out.push(`${i1}}`);
  // Each row's bound on the keys; the tile walks to the largest.
  rowLimits(f, BQ, p, out, i1);
  out.push(`${i1}__syncthreads();`);
  out.push(`${i1}int tf_kend = 0;`);
  out.push(`${i1}for (int tf_x = 0; tf_x < ${BQ}; tf_x++) tf_kend = tf_imax(tf_kend, tf_lims[tf_x]);`);
  out.push(`${i1}const int ${f.i} = tf_i0 + tf_r;`);
  out.push(`${i1}float tf_m = -TF_INF, tf_l = 0.0f;`);
  out.push(`${i1}float tf_o[${ept}];`);
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_x = 0; tf_x < ${ept}; tf_x++) tf_o[tf_x] = 0.0f;`);
  out.push(`${i1}for (int tf_t0 = 0; tf_t0 < tf_kend; tf_t0 += ${BK}) {`);
  const i2 = i1 + '  ';
  out.push(`${i2}for (int tf_x = threadIdx.x; tf_x < ${BK * D}; tf_x += TF_BLOCK) {`);
  out.push(`${i2}  const int ${f.t} = tf_t0 + tf_x / ${D};`);
  out.push(`${i2}  const int ${f.d} = tf_x % ${D};`);
  out.push(`${i2}  float tf_v = 0.0f;`);
  out.push(`${i2}  if (${f.t} < ${f.keys}) {`);
  out.push(`${i2}    tf_v = ${p.expr(f.k, out, i2 + '    ')};`);
  out.push(`${i2}  }`);
  out.push(`${i2}  tf_ks[(tf_x / ${D}) * ${pitch} + tf_x % ${D}] = tf_v;`);
  out.push(`${i2}}`);
  out.push(`${i2}for (int tf_x = threadIdx.x; tf_x < ${BK * E}; tf_x += TF_BLOCK) {`);
  out.push(`${i2}  const int ${f.t} = tf_t0 + tf_x / ${E};`);
  out.push(`${i2}  const int ${f.e} = tf_x % ${E};`);
  out.push(`${i2}  float tf_v = 0.0f;`);
  out.push(`${i2}  if (${f.t} < ${f.keys}) {`);
  out.push(`${i2}    tf_v = ${p.expr(f.v, out, i2 + '    ')};`);
  out.push(`${i2}  }`);
  out.push(`${i2}  tf_vs[tf_x] = tf_v;`);
  out.push(`${i2}}`);
  out.push(`${i2}__syncthreads();`);
  // Scores: the thread's keys tf_p, tf_p + TPR, … of the tile (neighbouring threads on neighbouring keys).
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_j = 0; tf_j < ${kpt}; tf_j++) {`);
  out.push(`${i2}  const int tf_kk = tf_j * ${TPR} + tf_p;`);
  out.push(`${i2}  const int ${f.t} = tf_t0 + tf_kk;`);
  out.push(`${i2}  float ${f.qk} = 0.0f;`);
  out.push(`${i2}  #pragma unroll 8`);
  out.push(`${i2}  for (int tf_d = 0; tf_d < ${D}; tf_d++) ${f.qk} += tf_qs[tf_r * ${pitch} + tf_d] * tf_ks[tf_kk * ${pitch} + tf_d];`);
  out.push(`${i2}  float tf_s = -TF_INF;`);
  out.push(`${i2}  if (${f.t} < ${f.keys} && ${f.i} < tf_queries) {`);
  out.push(`${i2}    tf_s = ${p.expr(f.score, out, i2 + '    ')};`);
  out.push(`${i2}  }`);
  out.push(`${i2}  tf_ss[tf_r * ${BK} + tf_kk] = tf_s;`);
  out.push(`${i2}}`);
  out.push(`${i2}__syncthreads();`);
  // The online softmax: the row's maximum so far (NaN propagates), the rescale of what was summed before it.
  out.push(`${i2}float tf_mt = -TF_INF;`);
  out.push(`${i2}for (int tf_j = 0; tf_j < ${BK}; tf_j++) tf_mt = tf_fmax(tf_mt, tf_ss[tf_r * ${BK} + tf_j]);`);
  out.push(`${i2}const float tf_mnew = tf_fmax(tf_m, tf_mt);`);
  out.push(`${i2}const float tf_ref = tf_mnew == -TF_INF ? 0.0f : tf_mnew;`);
  out.push(`${i2}const float tf_scale = expf(tf_m - tf_ref);`);
  out.push(`${i2}tf_l *= tf_scale;`);
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_x = 0; tf_x < ${ept}; tf_x++) tf_o[tf_x] *= tf_scale;`);
  out.push(`${i2}for (int tf_j = 0; tf_j < ${BK}; tf_j++) {`);
  out.push(`${i2}  const float tf_pj = expf(tf_ss[tf_r * ${BK} + tf_j] - tf_ref);`);
  out.push(`${i2}  tf_l += tf_pj;`);
  out.push(`${i2}  #pragma unroll`);
  out.push(`${i2}  for (int tf_x = 0; tf_x < ${ept}; tf_x++) tf_o[tf_x] += tf_pj * tf_vs[tf_j * ${E} + tf_x * ${TPR} + tf_p];`);
  out.push(`${i2}}`);
  out.push(`${i2}tf_m = tf_mnew;`);
  out.push(`${i2}__syncthreads();`);
  out.push(`${i1}}`);
  // The row's output columns tf_p, tf_p + TPR, …
  out.push(`${i1}if (${f.i} < tf_queries) {`);
  out.push(`${i1}  #pragma unroll`);
  out.push(`${i1}  for (int tf_x = 0; tf_x < ${ept}; tf_x++) {`);
  out.push(`${i1}    const int ${f.e} = tf_x * ${TPR} + tf_p;`);
  out.push(`${i1}    const float ${f.out} = tf_o[tf_x] / tf_l;`);
  stores(f, p, out, `${i1}    `);
  out.push(`${i1}  }`);
  out.push(`${i1}}`);
  // The next tile rewrites the query tile and the bounds.
  out.push(`${i1}__syncthreads();`);
  out.push('  }');
}

/** Key chunks whose results the last chunk of a head loads at once when it merges them. */
const MERGED_CHUNKS = 8;

/**
 * The decode form (FlashPlan 'decode'): a workgroup per head's one query row. Lane group g (depth / 8 lanes) takes
 * keys t0 + u · G + g of each step of G · U keys (G groups, U = keyUnroll), every lane 8 elements of the head: of
 * the query, of each key it scores and of each value row it adds. The first step's loads of keys and values (16
 * bytes each, kept as bf16; keys past the bound read row 0, unused) are issued before the query's prologue (the
 * rotary embedding, an element a thread, through workgroup memory), so the two overlap; each later step's are
 * issued after the previous step's arithmetic. A step sums each lane's 8 products across its group by shuffles and
 * updates the group's online softmax; the loop is the same for every lane (bounds are checked per key), so the
 * shuffles see whole warps. The groups' maxima, sums and output runs are merged through workgroup memory, each
 * output element by depth / 8 neighbouring threads a share of the groups, rescaled to the largest maximum (−∞ taken
 * as 0, as the tile forms do). Over a long cache (FlashPlan.keyChunks) each head's keys are divided among
 * workgroups a step each: a chunk the position reaches leaves its maximum, sum and output run in the workspace
 * (tf_ws) and counts itself done (tf_count); the last merges the chunks, 8 at a time in their order, and zeroes the
 * counter.
 */
function decodeFlash(f: FlashIR, plan: FlashPlan, p: ExprPrinter, shared: SharedMemory, out: string[], task: boolean, waits: boolean): void {
  const D = f.depth;
  const LG = D / 8;
  const G = plan.tileKeys;
  const U = plan.keyUnroll ?? 1;
  // Threads merging one output element, and the groups each adds.
  const TE = CUDA_BLOCK / D;
  if (f.k.k !== 'load' || f.v.k !== 'load' || f.width !== D || G * LG !== CUDA_BLOCK || !Number.isInteger(TE) || 32 % TE !== 0 || G % TE !== 0) {
    throw new Error(`CUDA: a decode attention of head ${D} in ${G} key groups is not printed`);
  }
  const [kLoad, vLoad] = [f.k, f.v];
  const unpack = p.buffers[kLoad.buf].dtype === DType.F16 ? 'tf_unpack_f16x8' : 'tf_unpack_bf16x8';
  const chunks = plan.keyChunks;
  if (chunks && chunks.keys % (G * U) !== 0) throw new Error(`CUDA: decode attention chunks of ${chunks.keys} keys for steps of ${G * U}`);
  const NC = chunks?.count ?? 1;
  const full = '0xffffffffu';
  const computed = { k: f.fresh?.k?.value, v: f.fresh?.v?.value };
  if ([computed.k, computed.v].some((x) => x && varsOf(x).has(f.t))) throw new Error('CUDA: a decode attention computing more than one new key row is not printed');
  out.push(`  ${shared.array('float', 'tf_qs', D, { aligned: true })}`);
  if (computed.k) out.push(`  ${shared.array('float', 'tf_ks', D, { aligned: true })}`);
  if (computed.v) out.push(`  ${shared.array('float', 'tf_vs', D, { aligned: true })}`);
  out.push(`  ${shared.array('float', 'tf_gm', G)}`);
  out.push(`  ${shared.array('float', 'tf_gl', G)}`);
  out.push(`  ${shared.array('float', 'tf_go', G * D, { aligned: true })}`);
  if (chunks) out.push(`  ${shared.array('int', 'tf_last', 1)}`);
  out.push(`  const int tf_grp = threadIdx.x / ${LG}, tf_part = (threadIdx.x % ${LG}) * 8;`);
  if (waits) out.push('  bool tf_waited = false;');
  out.push(task ? '  for (int tf_work = tf_first; tf_work < tf_end; tf_work++) {' : `  for (int tf_work = blockIdx.x; tf_work < ${f.batch * NC}; tf_work += gridDim.x) {`);
  const i1 = '    ';
  const i2 = i1 + '  ';
  const i3 = i2 + '  ';
  out.push(`${i1}const int tf_row = tf_work / ${NC}, tf_c = tf_work % ${NC};`);
  out.push(`${i1}const int ${f.b} = tf_row;`);
  out.push(`${i1}const int ${f.i} = 0;`);
  out.push(`${i1}(void)${f.b}; (void)${f.i};`);
  const limit = f.limit ? p.expr(f.limit, out, i1) : String(f.keys);
  out.push(`${i1}const int tf_lim = tf_imin(tf_imax(${limit}, 0), ${f.keys});`);
  // The chunks the position reaches (at least one: a row that sees no key is NaN, as the reference has it).
  out.push(`${i1}const int tf_parts = ${chunks ? `tf_imax((tf_lim + ${chunks.keys - 1}) / ${chunks.keys}, 1)` : '1'};`);
  out.push(`${i1}if (tf_c >= tf_parts) continue;`);
  out.push(`${i1}const int tf_from = tf_c * ${chunks?.keys ?? 0}, tf_to = ${chunks ? `tf_imin(tf_lim, tf_from + ${chunks.keys})` : 'tf_lim'};`);
  out.push(`${i1}uint4 tf_kr[${U}], tf_vr[${U}];`);
  // Keys and values of the step's new row that this kernel computes and writes itself (FlashIR.updates): their
  // elements computed after the wait (they read what the predecessor wrote) into workgroup memory beside the
  // query, and put in place of what the lanes loaded for that row (not yet written, or being written).
  const pack = p.buffers[kLoad.buf].dtype === DType.F16 ? 'tf_pack_f16x8' : 'tf_pack_bf16x8';
  const freshBounds = (r: 'k' | 'v', ind: string) => [p.expr(f.fresh![r]!.from, out, ind), p.expr(f.fresh![r]!.to, out, ind)];
  // A step's loads of keys and values (`load`: __ldg, or __ldcg before the wait: past the L1, which could keep a
  // row the predecessor is writing; null: no loads, only the computed rows put in place of those loaded before);
  // `only`, a condition on each key's and value's element index: load those alone; `fresh`: the computed rows in
  // place of what was loaded.
  const loadStep = (t0: string, ind: string, load: '__ldg' | '__ldcg' | null, only?: (index: string, range: 'k' | 'v') => string, fresh = false) => {
    out.push(`${ind}#pragma unroll`);
    out.push(`${ind}for (int tf_u = 0; tf_u < ${U}; tf_u++) {`);
    out.push(`${ind}  const int tf_t = ${t0} + tf_u * ${G} + tf_grp;`);
    out.push(`${ind}  const int ${f.t} = tf_t < tf_to ? tf_t : 0;`);
    for (const [x, ld, reg, r] of [[f.d, kLoad, 'tf_kr', 'k'], [f.e, vLoad, 'tf_vr', 'v']] as const) {
      out.push(`${ind}  {`);
      out.push(`${ind}    const int ${x} = tf_part;`);
      const index = p.expr(ld.index, out, ind + '    ');
      const at = `reinterpret_cast<const uint4*>(b${ld.buf} + ${index})`;
      if (load) out.push(`${ind}    ${only ? `if (${only(index, r)}) ` : ''}${reg}[tf_u] = ${load}(${at});`);
      if (fresh && computed[r]) {
        const [from, to] = freshBounds(r, ind + '    ');
        out.push(`${ind}    if (${index} >= ${from} && ${index} < ${to}) ${reg}[tf_u] = ${pack}(${r === 'k' ? 'tf_ks' : 'tf_vs'} + tf_part);`);
      }
      out.push(`${ind}  }`);
    }
    out.push(`${ind}}`);
  };
  // The step's cache writes, shared out among the heads' first chunks (always run), after the wait: head r's share
  // (FlashPlan.updateShare) on its threads from firstThread on.
  const updateStores = (ind: string) => {
    const share = plan.updateShare;
    if (!share) throw new Error('CUDA: a decode attention making cache writes was planned without their share among its heads');
    const writer = share.firstThread ? `(int)threadIdx.x - ${share.firstThread}` : '(int)threadIdx.x';
    out.push(`${ind}const int tf_writer = ${writer};`);
    out.push(`${ind}if (tf_c == 0 && tf_writer >= 0 && tf_writer < ${share.perHead}) {`);
    for (const u of f.updates ?? []) {
      out.push(`${ind}  for (int ${u.v} = tf_row * ${share.perHead} + tf_writer; ${u.v} < ${p.expr(u.n, out, ind + '  ')}; ${u.v} += ${f.batch * share.perHead}) {`);
      const index = p.expr(u.index, out, ind + '    ');
      const value = p.expr(u.value, out, ind + '    ');
      out.push(`${ind}    b${u.buf}[${index}] = ${storeValue(p.buffers[u.buf].dtype, value, u.value.t)};`);
      out.push(`${ind}  }`);
    }
    out.push(`${ind}}`);
  };
  const computes = !!(computed.k || computed.v);
  if (waits && computes) {
    // Keys and values were written before this step but for the row the step's update writes, which this kernel
    // computes (FlashIR.updates): the first step's loads go before the wait, the computed row (below) after it.
    loadStep('tf_from', i1, '__ldcg');
    out.push(`${i1}if (!tf_waited) {`, ...gridWait(`${i1}  `), `${i1}  tf_waited = true;`, `${i1}}`);
  } else if (waits) {
    // Keys and values were written before this step but for the run the step's update writes (FlashIR.fresh): the
    // first step's loads go before the wait, and the fresh ones again after it.
    const [[kFrom, kTo], [vFrom, vTo]] = [freshBounds('k', i1), freshBounds('v', i1)];
    loadStep('tf_from', i1, '__ldcg');
    out.push(`${i1}if (!tf_waited) {`, ...gridWait(`${i1}  `), `${i1}  tf_waited = true;`);
    loadStep('tf_from', `${i1}  `, '__ldcg', (index, r) => (r === 'k' ? `${index} >= ${kFrom} && ${index} < ${kTo}` : `${index} >= ${vFrom} && ${index} < ${vTo}`));
    out.push(`${i1}}`);
  } else {
    // (Under a register cap, where the kernel computes the new rows, after them: FlashPlan.keysAfterRows.)
    if (!plan.keysAfterRows) loadStep('tf_from', i1, '__ldg');
  }
  if (f.updates) updateStores(i1);
  // The query, an element a thread, while the loads are in flight; and the computed key and value rows.
  out.push(`${i1}for (int ${f.d} = threadIdx.x; ${f.d} < ${D}; ${f.d} += TF_BLOCK) {`);
  out.push(`${i2}tf_qs[${f.d}] = ${p.expr(f.q, out, i2)};`);
  if (computed.k) out.push(`${i2}tf_ks[${f.d}] = ${p.expr(computed.k, out, i2)};`);
  if (computed.v) {
    out.push(`${i2}{`, `${i2}  const int ${f.e} = ${f.d};`);
    out.push(`${i2}  tf_vs[${f.d}] = ${p.expr(computed.v, out, i2 + '  ')};`, `${i2}}`);
  }
  out.push(`${i1}}`);
  out.push(`${i1}__syncthreads();`);
  // The computed rows replace what the lanes loaded for them, the loads above long in flight: loading again here would
  // put a second round trip after the query's (and, waiting, all of them after the wait).
  if (computes) loadStep('tf_from', i1, plan.keysAfterRows ? '__ldg' : null, undefined, true);
  out.push(`${i1}float tf_qv[8];`);
  out.push(`${i1}tf_ld8_smem(tf_qs + tf_part, tf_qv);`);
  out.push(`${i1}float tf_m = -TF_INF, tf_l = 0.0f, tf_o[8];`);
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_j = 0; tf_j < 8; tf_j++) tf_o[tf_j] = 0.0f;`);
  out.push(`${i1}for (int tf_t0 = tf_from; tf_t0 < tf_to; tf_t0 += ${G * U}) {`);
  // The scores (scale, mask) and their maximum; keys past the bound are −∞.
  out.push(`${i2}float tf_s[${U}], tf_mt = -TF_INF;`);
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_u = 0; tf_u < ${U}; tf_u++) {`);
  out.push(`${i3}float tf_kv[8];`);
  out.push(`${i3}${unpack}(tf_kr[tf_u], tf_kv);`);
  out.push(`${i3}float tf_dot = 0.0f;`);
  out.push(`${i3}#pragma unroll`);
  out.push(`${i3}for (int tf_j = 0; tf_j < 8; tf_j++) tf_dot += tf_qv[tf_j] * tf_kv[tf_j];`);
  for (let off = LG / 2; off >= 1; off /= 2) out.push(`${i3}tf_dot += __shfl_xor_sync(${full}, tf_dot, ${off});`);
  out.push(`${i3}const int ${f.t} = tf_t0 + tf_u * ${G} + tf_grp;`);
  out.push(`${i3}const float ${f.qk} = tf_dot;`);
  out.push(`${i3}float tf_x = -TF_INF;`);
  out.push(`${i3}if (${f.t} < tf_to) {`);
  out.push(`${i3}  tf_x = ${p.expr(f.score, out, i3 + '  ')};`);
  out.push(`${i3}}`);
  out.push(`${i3}tf_s[tf_u] = tf_x;`);
  out.push(`${i3}tf_mt = tf_fmax(tf_mt, tf_x);`);
  out.push(`${i2}}`);
  out.push(`${i2}const float tf_mnew = tf_fmax(tf_m, tf_mt);`);
  out.push(`${i2}const float tf_ref = tf_mnew == -TF_INF ? 0.0f : tf_mnew;`);
  out.push(`${i2}const float tf_scale = expf(tf_m - tf_ref);`);
  out.push(`${i2}tf_m = tf_mnew;`);
  out.push(`${i2}tf_l *= tf_scale;`);
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_j = 0; tf_j < 8; tf_j++) tf_o[tf_j] *= tf_scale;`);
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_u = 0; tf_u < ${U}; tf_u++) {`);
  out.push(`${i3}if (tf_t0 + tf_u * ${G} + tf_grp < tf_to) {`);
  out.push(`${i3}  const float tf_pr = expf(tf_s[tf_u] - tf_ref);`);
  out.push(`${i3}  float tf_vv[8];`);
  out.push(`${i3}  ${unpack}(tf_vr[tf_u], tf_vv);`);
  out.push(`${i3}  tf_l += tf_pr;`);
  out.push(`${i3}  #pragma unroll`);
  out.push(`${i3}  for (int tf_j = 0; tf_j < 8; tf_j++) tf_o[tf_j] += tf_pr * tf_vv[tf_j];`);
  out.push(`${i3}}`);
  out.push(`${i2}}`);
  out.push(`${i2}if (tf_t0 + ${G * U} < tf_to) {`);
  loadStep(`tf_t0 + ${G * U}`, i3, '__ldg', undefined, computes);
  out.push(`${i2}}`);
  out.push(`${i1}}`);
  // The groups merged: each leaves its maximum, sum and output run; output element x is added by the TE threads
  // TE·x …, each over G / TE groups, their shares joined by shuffles.
  out.push(`${i1}if (tf_part == 0) {`);
  out.push(`${i1}  tf_gm[tf_grp] = tf_m;`);
  out.push(`${i1}  tf_gl[tf_grp] = tf_l;`);
  out.push(`${i1}}`);
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_j = 0; tf_j < 8; tf_j++) tf_go[tf_grp * ${D} + tf_part + tf_j] = tf_o[tf_j];`);
  out.push(`${i1}__syncthreads();`);
  out.push(`${i1}{`);
  out.push(`${i2}const int tf_x = threadIdx.x / ${TE}, tf_g0 = (threadIdx.x % ${TE}) * ${G / TE};`);
  out.push(`${i2}float tf_mx = -TF_INF;`);
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_g = 0; tf_g < ${G / TE}; tf_g++) tf_mx = tf_fmax(tf_mx, tf_gm[tf_g0 + tf_g]);`);
  for (let off = TE / 2; off >= 1; off /= 2) out.push(`${i2}tf_mx = tf_fmax(tf_mx, __shfl_xor_sync(${full}, tf_mx, ${off}));`);
  out.push(`${i2}const float tf_ref = tf_mx == -TF_INF ? 0.0f : tf_mx;`);
  out.push(`${i2}float tf_sum = 0.0f, tf_acc = 0.0f;`);
  out.push(`${i2}#pragma unroll`);
  out.push(`${i2}for (int tf_g = tf_g0; tf_g < tf_g0 + ${G / TE}; tf_g++) {`);
  out.push(`${i3}const float tf_w = expf(tf_gm[tf_g] - tf_ref);`);
  out.push(`${i3}tf_sum += tf_gl[tf_g] * tf_w;`);
  out.push(`${i3}tf_acc += tf_go[tf_g * ${D} + tf_x] * tf_w;`);
  out.push(`${i2}}`);
  for (let off = TE / 2; off >= 1; off /= 2) {
    out.push(`${i2}tf_sum += __shfl_xor_sync(${full}, tf_sum, ${off});`);
    out.push(`${i2}tf_acc += __shfl_xor_sync(${full}, tf_acc, ${off});`);
  }
  out.push(`${i2}if (threadIdx.x % ${TE} == 0) {`);
  if (chunks) {
    // A chunk of several leaves its maximum, its sum and its output run, each relative to the maximum.
    out.push(`${i3}float* const tf_at = tf_ws + ((size_t)tf_row * ${NC} + tf_c) * ${D + 2};`);
    out.push(`${i3}tf_at[tf_x] = tf_acc;`);
    out.push(`${i3}if (tf_x == 0) {`);
    out.push(`${i3}  tf_at[${D}] = tf_sum;`);
    out.push(`${i3}  tf_at[${D + 1}] = tf_mx;`);
    out.push(`${i3}}`);
    out.push(`${i3}if (tf_parts == 1) {`);
  }
  const i4 = chunks ? i3 + '  ' : i3;
  out.push(`${i4}const int ${f.e} = tf_x;`);
  out.push(`${i4}const float ${f.out} = tf_acc / tf_sum;`);
  stores(f, p, out, i4);
  if (chunks) out.push(`${i3}}`);
  out.push(`${i2}}`);
  out.push(`${i1}}`);
  if (chunks) {
    // The last chunk of the head to finish merges them all, in the chunks' order, reading past the L1.
    // The block's stores before the count: the barrier orders them before thread 0's acquire-release count
    // (tf_count_part), which publishes them; the last chunk's count acquires the others', and it resets the count
    // for the next step.
    out.push(`${i1}if (tf_parts > 1) {`);
    out.push(`${i2}__syncthreads();`);
    out.push(`${i2}if (threadIdx.x == 0) {`);
    out.push(`${i3}const bool tf_l = tf_count_part(tf_count + tf_row) == (unsigned)(tf_parts - 1);`);
    out.push(`${i3}if (tf_l) tf_count[tf_row] = 0u;`);
    out.push(`${i3}tf_last[0] = tf_l;`);
    out.push(`${i2}}`);
    out.push(`${i2}__syncthreads();`);
    out.push(`${i2}if (tf_last[0]) {`);
    out.push(`${i3}const float* const tf_head = tf_ws + (size_t)tf_row * ${NC * (D + 2)};`);
    out.push(`${i3}for (int tf_x = threadIdx.x; tf_x < ${D}; tf_x += TF_BLOCK) {`);
    const i5 = i3 + '  ';
    // The chunks' three values loaded 8 chunks at once (a round trip a batch, not one a chunk), chunks past the
    // position adding nothing (−∞, 0, 0); a later batch's larger maximum rescales the sums so far (with 8 chunks at
    // most, one batch: the sums as in the chunks' order).
    const B = Math.min(NC, MERGED_CHUNKS);
    out.push(`${i5}float tf_mx = -TF_INF, tf_sum = 0.0f, tf_acc = 0.0f;`);
    out.push(`${i5}for (int tf_q0 = 0; tf_q0 < tf_parts; tf_q0 += ${B}) {`);
    const i6 = i5 + '  ';
    out.push(`${i6}float tf_pm[${B}], tf_pl[${B}], tf_po[${B}];`);
    out.push(`${i6}#pragma unroll`);
    out.push(`${i6}for (int tf_q = 0; tf_q < ${B}; tf_q++) {`);
    out.push(`${i6}  const bool tf_in = tf_q0 + tf_q < tf_parts;`);
    out.push(`${i6}  const float* const tf_at = tf_head + (tf_q0 + tf_q) * ${D + 2};`);
    out.push(`${i6}  tf_pm[tf_q] = tf_in ? __ldcg(tf_at + ${D + 1}) : -TF_INF;`);
    out.push(`${i6}  tf_pl[tf_q] = tf_in ? __ldcg(tf_at + ${D}) : 0.0f;`);
    out.push(`${i6}  tf_po[tf_q] = tf_in ? __ldcg(tf_at + tf_x) : 0.0f;`);
    out.push(`${i6}}`);
    out.push(`${i6}float tf_bm = tf_mx;`);
    out.push(`${i6}#pragma unroll`);
    out.push(`${i6}for (int tf_q = 0; tf_q < ${B}; tf_q++) tf_bm = tf_fmax(tf_bm, tf_pm[tf_q]);`);
    out.push(`${i6}const float tf_ref = tf_bm == -TF_INF ? 0.0f : tf_bm;`);
    out.push(`${i6}const float tf_rescale = expf(tf_mx - tf_ref);`);
    out.push(`${i6}tf_sum *= tf_rescale;`);
    out.push(`${i6}tf_acc *= tf_rescale;`);
    out.push(`${i6}#pragma unroll`);
    out.push(`${i6}for (int tf_q = 0; tf_q < ${B}; tf_q++) {`);
    out.push(`${i6}  const float tf_w = expf(tf_pm[tf_q] - tf_ref);`);
    out.push(`${i6}  tf_sum += tf_pl[tf_q] * tf_w;`);
    out.push(`${i6}  tf_acc += tf_po[tf_q] * tf_w;`);
    out.push(`${i6}}`);
    out.push(`${i6}tf_mx = tf_bm;`);
    out.push(`${i5}}`);
    out.push(`${i5}const int ${f.e} = tf_x;`);
    out.push(`${i5}const float ${f.out} = tf_acc / tf_sum;`);
    stores(f, p, out, i5);
    out.push(`${i3}}`);
    out.push(`${i2}}`);
    out.push(`${i1}}`);
  }
  // The next row rewrites the query and the groups' states.
  out.push(`${i1}__syncthreads();`);
  out.push('  }');
}
