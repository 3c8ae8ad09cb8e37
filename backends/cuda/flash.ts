// A flash-attention kernel (KernelIR.flash) in CUDA C: each block takes a tile of query rows of one head and walks
// the keys in tiles up to the tile's causal bound, keeping per row the running maximum, the running sum and the
// output row in registers (an online softmax): no row of scores is ever whole. The query tile (its prologue, the
// rotary embedding, computed once), each key and value tile and the tile of scores live in shared memory; the
// threads of a query row split its keys for the scores and its output's columns for probs·V. f32 throughout.

import { FlashIR } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { FlashPlan } from '../schedule.ts';
import { storeValue } from './render-cuda.ts';

export function renderFlashCuda(f: FlashIR, plan: FlashPlan, p: ExprPrinter, out: string[]): void {
  const { tileQueries: BQ, tileKeys: BK, threadsPerQuery: TPR } = plan;
  const [D, E] = [f.depth, f.width];
  const pitch = D + 1; // rows of the query and key tiles one bank apart
  const kpt = BK / TPR;
  const ept = E / TPR;
  out.push(`  __shared__ float tf_qs[${BQ * pitch}];`);
  out.push(`  __shared__ float tf_ks[${BK * pitch}];`);
  out.push(`  __shared__ float tf_vs[${BK * E}];`);
  out.push(`  __shared__ float tf_ss[${BQ * BK}];`);
  out.push(`  __shared__ int tf_lims[${BQ}];`);
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
  out.push(`${i1}if (threadIdx.x < ${BQ}) {`);
  out.push(`${i1}  const int ${f.i} = tf_i0 + threadIdx.x;`);
  const limit = f.limit ? p.expr(f.limit, out, i1 + '  ') : String(f.keys);
  out.push(`${i1}  tf_lims[threadIdx.x] = ${f.i} < tf_queries ? tf_imin(tf_imax(${limit}, 0), ${f.keys}) : 0;`);
  out.push(`${i1}}`);
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
  for (const st of f.stores) {
    const value = p.expr(st.value, out, i1 + '    ');
    const index = p.expr(st.index, out, i1 + '    ');
    out.push(`${i1}    b${st.buf}[${index}] = ${storeValue(p.buffers[st.buf].dtype, value, st.value.t)};`);
  }
  out.push(`${i1}  }`);
  out.push(`${i1}}`);
  // The next tile rewrites the query tile and the bounds.
  out.push(`${i1}__syncthreads();`);
  out.push('  }');
}
