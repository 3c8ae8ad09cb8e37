// A flash-attention kernel (KernelIR.flash) in WGSL: one workgroup per tile of query rows of one head, walking the
// keys in tiles up to the tile's causal bound with an online softmax (the running maximum, sum and output row in
// each thread's registers), as backends/cuda/flash.ts does; tiles are smaller to fit WebGPU's 16 KiB of workgroup
// memory. The bound is read back through workgroupUniformLoad, so the loop holding barriers stays uniform.

import { FlashIR, varsOf } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { FlashPlan, KeyChunks } from '../schedule.ts';
import { DType } from '../../ir/dtype.ts';
import { wgslDialect } from './dialect.ts';

/**
 * The kernel's flash form: its workgroup-memory declarations and the body of `main`; with `merge`, the body of a
 * second entry point, dispatched right after over `merge.rows` workgroups, and the floats of the workspace both
 * bind (`tf_ws`).
 */
export interface WgslFlash {
  readonly decls: string[];
  readonly body: string[];
  readonly merge?: { readonly body: string[]; readonly rows: number; readonly workspaceFloats: number };
}

export function renderFlashWgsl(f: FlashIR, plan: FlashPlan, p: ExprPrinter, threads: number): WgslFlash {
  if (plan.units === 'decode') return decodeFlash(f, plan, p, threads);
  const { tileQueries: BQ, tileKeys: BK, threadsPerQuery: TPR } = plan;
  const [D, E] = [f.depth, f.width];
  const pitch = D + 1;
  const [kpt, ept] = [BK / TPR, E / TPR];
  const ninf = wgslDialect.literal(-Infinity, 'f32');
  const decls = [
    `var<workgroup> tf_qs: array<f32, ${BQ * pitch}>;`,
    `var<workgroup> tf_ks: array<f32, ${BK * pitch}>;`,
    `var<workgroup> tf_vs: array<f32, ${BK * E}>;`,
    `var<workgroup> tf_ss: array<f32, ${BQ * BK}>;`,
    `var<workgroup> tf_lims: array<i32, ${BQ}>;`,
    'var<workgroup> tf_kend_w: i32;',
  ];
  const out: string[] = [];
  out.push(`  let tf_queries = ${p.expr(f.queries, out, '  ')};`);
  out.push(`  let tf_qtiles = ${p.expr(plan.queryTiles, out, '  ')};`);
  out.push(`  let tf_r = lid / ${TPR};`);
  out.push(`  let tf_p = lid % ${TPR};`);
  out.push(`  let ${f.b} = row / tf_qtiles;`);
  out.push(`  let tf_i0 = (row % tf_qtiles) * ${BQ};`);
  out.push(`  for (var tf_x: i32 = lid; tf_x < ${BQ * D}; tf_x += ${threads}) {`);
  out.push(`    let ${f.i} = tf_i0 + tf_x / ${D};`);
  out.push(`    let ${f.d} = tf_x % ${D};`);
  out.push('    var tf_v: f32 = 0.0;');
  out.push(`    if (${f.i} < tf_queries) {`);
  out.push(`      tf_v = ${p.expr(f.q, out, '      ')};`);
  out.push('    }');
  out.push(`    tf_qs[(tf_x / ${D}) * ${pitch} + tf_x % ${D}] = tf_v;`);
  out.push('  }');
  out.push(`  if (lid < ${BQ}) {`);
  out.push(`    let ${f.i} = tf_i0 + lid;`);
  const limit = f.limit ? p.expr(f.limit, out, '    ') : String(f.keys);
  out.push(`    tf_lims[lid] = select(0, clamp(${limit}, 0, ${f.keys}), ${f.i} < tf_queries);`);
  out.push('  }');
  out.push('  workgroupBarrier();');
  out.push('  if (lid == 0) {');
  out.push('    var tf_e: i32 = 0;');
  out.push(`    for (var tf_x: i32 = 0; tf_x < ${BQ}; tf_x++) { tf_e = max(tf_e, tf_lims[tf_x]); }`);
  out.push('    tf_kend_w = tf_e;');
  out.push('  }');
  out.push('  let tf_kend = workgroupUniformLoad(&tf_kend_w);');
  out.push(`  let ${f.i} = tf_i0 + tf_r;`);
  out.push(`  var tf_m: f32 = ${ninf};`);
  out.push('  var tf_l: f32 = 0.0;');
  out.push(`  var tf_o: array<f32, ${ept}>;`);
  out.push(`  for (var tf_t0: i32 = 0; tf_t0 < tf_kend; tf_t0 += ${BK}) {`);
  out.push(`    for (var tf_x: i32 = lid; tf_x < ${BK * D}; tf_x += ${threads}) {`);
  out.push(`      let ${f.t} = tf_t0 + tf_x / ${D};`);
  out.push(`      let ${f.d} = tf_x % ${D};`);
  out.push('      var tf_v: f32 = 0.0;');
  out.push(`      if (${f.t} < ${f.keys}) {`);
  out.push(`        tf_v = ${p.expr(f.k, out, '        ')};`);
  out.push('      }');
  out.push(`      tf_ks[(tf_x / ${D}) * ${pitch} + tf_x % ${D}] = tf_v;`);
  out.push('    }');
  out.push(`    for (var tf_x: i32 = lid; tf_x < ${BK * E}; tf_x += ${threads}) {`);
  out.push(`      let ${f.t} = tf_t0 + tf_x / ${E};`);
  out.push(`      let ${f.e} = tf_x % ${E};`);
  out.push('      var tf_v: f32 = 0.0;');
  out.push(`      if (${f.t} < ${f.keys}) {`);
  out.push(`        tf_v = ${p.expr(f.v, out, '        ')};`);
  out.push('      }');
  out.push('      tf_vs[tf_x] = tf_v;');
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push(`    for (var tf_j: i32 = 0; tf_j < ${kpt}; tf_j++) {`);
  out.push(`      let tf_kk = tf_j * ${TPR} + tf_p;`);
  out.push(`      let ${f.t} = tf_t0 + tf_kk;`);
  out.push(`      var ${f.qk}: f32 = 0.0;`);
  out.push(`      for (var tf_d: i32 = 0; tf_d < ${D}; tf_d++) { ${f.qk} += tf_qs[tf_r * ${pitch} + tf_d] * tf_ks[tf_kk * ${pitch} + tf_d]; }`);
  out.push(`      var tf_s: f32 = ${ninf};`);
  out.push(`      if (${f.t} < ${f.keys} && ${f.i} < tf_queries) {`);
  out.push(`        tf_s = ${p.expr(f.score, out, '        ')};`);
  out.push('      }');
  out.push(`      tf_ss[tf_r * ${BK} + tf_kk] = tf_s;`);
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push(`    var tf_mt: f32 = ${ninf};`);
  out.push(`    for (var tf_j: i32 = 0; tf_j < ${BK}; tf_j++) { tf_mt = tf_max(tf_mt, tf_ss[tf_r * ${BK} + tf_j]); }`);
  out.push('    let tf_mnew = tf_max(tf_m, tf_mt);');
  out.push(`    let tf_ref = select(tf_mnew, 0.0, tf_mnew == ${ninf});`);
  out.push('    let tf_scale = exp(tf_m - tf_ref);');
  out.push('    tf_l *= tf_scale;');
  out.push(`    for (var tf_x: i32 = 0; tf_x < ${ept}; tf_x++) { tf_o[tf_x] *= tf_scale; }`);
  out.push(`    for (var tf_j: i32 = 0; tf_j < ${BK}; tf_j++) {`);
  out.push(`      let tf_pj = exp(tf_ss[tf_r * ${BK} + tf_j] - tf_ref);`);
  out.push('      tf_l += tf_pj;');
  out.push(`      for (var tf_x: i32 = 0; tf_x < ${ept}; tf_x++) { tf_o[tf_x] += tf_pj * tf_vs[tf_j * ${E} + tf_x * ${TPR} + tf_p]; }`);
  out.push('    }');
  out.push('    tf_m = tf_mnew;');
  out.push('    workgroupBarrier();');
  out.push('  }');
  out.push(`  if (${f.i} < tf_queries) {`);
  out.push(`    for (var tf_x: i32 = 0; tf_x < ${ept}; tf_x++) {`);
  out.push(`      let ${f.e} = tf_x * ${TPR} + tf_p;`);
  out.push(`      let ${f.out} = tf_o[tf_x] / tf_l;`);
  stores(f, p, out, '      ');
  out.push('    }');
  out.push('  }');
  return { decls, body: out };
}

/**
 * The decode form (FlashPlan 'decode', as backends/cuda/flash.ts has it) over an f32, bf16 or f16 cache: a workgroup
 * a head's one query row; lane group g (depth / 8 threads) takes keys t0 + u · G + g of each step of G · U keys,
 * every thread 8 elements of the head, read as two vec4s of f32 or one of packed halves (the key and value buffers
 * are bound a second time as vec4s). A step's loads of keys and values are issued together; each thread's 8 products
 * go through workgroup memory, where its group's threads add them (no subgroups needed), and each group keeps its
 * own online softmax. The groups are merged at the end, a thread an output element. The bound is read back through
 * workgroupUniformLoad, so the loop holding barriers stays uniform. Over a long cache (FlashPlan.keyChunks) each
 * workgroup takes a chunk of a head's keys and leaves its output run, sum and maximum in the workspace for the
 * second entry point (mergeChunks).
 */
function decodeFlash(f: FlashIR, plan: FlashPlan, p: ExprPrinter, threads: number): WgslFlash {
  const D = f.depth;
  const LG = D / 8;
  const G = plan.tileKeys;
  const U = plan.keyUnroll ?? 1;
  const chunks = plan.keyChunks;
  if (chunks && chunks.keys % (G * U)) throw new Error(`WGSL: decode attention chunks of ${chunks.keys} keys for steps of ${G * U}`);
  const NC = chunks?.count ?? 1;
  if (f.k.k !== 'load' || f.v.k !== 'load' || f.width !== D || G * LG !== threads || G * D > U * threads) {
    throw new Error(`WGSL: a decode attention of head ${D} in ${G} key groups is not printed`);
  }
  const [kLoad, vLoad] = [f.k, f.v];
  const dtype = p.buffers[kLoad.buf].dtype;
  if (p.buffers[vLoad.buf].dtype !== dtype) throw new Error(`WGSL: a decode attention over ${dtype} keys and ${p.buffers[vLoad.buf].dtype} values is not printed`);
  // A thread's 8 elements: two vec4s of f32, or one vec4<u32> of 16-bit halves whose even and odd elements are taken
  // apart (the query, the output and a value row kept in that order: the thread's elements 0, 2, 4, 6 then 1, 3, 5, 7).
  const half = dtype === DType.BF16 || dtype === DType.F16;
  const split = half ? (dtype === DType.BF16 ? ['tf_even_bf16', 'tf_odd_bf16'] : ['tf_even_f16', 'tf_odd_f16']) : [];
  const run = half ? [0, 2, 4, 6, 1, 3, 5, 7] : [0, 1, 2, 3, 4, 5, 6, 7];
  const ninf = wgslDialect.literal(-Infinity, 'f32');
  // The step's new key and value rows where this kernel computes them from the update (FreshRange.value: the cache
  // is written by a later kernel): into workgroup memory beside the query, read in place of the cache's stale rows.
  const computed = { k: f.fresh?.k?.value, v: f.fresh?.v?.value };
  if ([computed.k, computed.v].some((x) => x && varsOf(x).has(f.t))) throw new Error('WGSL: a decode attention computing more than one new key row is not printed');
  const decls = [
    `var<workgroup> tf_qs: array<f32, ${D}>;`,
    ...(computed.k ? [`var<workgroup> tf_ks: array<f32, ${D}>;`] : []),
    ...(computed.v ? [`var<workgroup> tf_vs: array<f32, ${D}>;`] : []),
    // A step's partial dot products, then (after the walk) the groups' output runs.
    `var<workgroup> tf_dp: array<f32, ${U * threads}>;`,
    `var<workgroup> tf_gm: array<f32, ${G}>;`,
    `var<workgroup> tf_gl: array<f32, ${G}>;`,
    'var<workgroup> tf_lim_w: i32;',
  ];
  const out: string[] = [];
  out.push(`  let tf_grp = lid / ${LG};`);
  out.push(`  let tf_part = (lid % ${LG}) * 8;`);
  out.push(`  let tf_c = row % ${NC};`);
  out.push(`  let ${f.b} = row / ${NC};`);
  out.push(`  let ${f.i} = 0;`);
  out.push('  if (lid == 0) {');
  const limit = f.limit ? p.expr(f.limit, out, '    ') : String(f.keys);
  out.push(`    tf_lim_w = clamp(${limit}, 0, ${f.keys});`);
  out.push('  }');
  out.push(`  for (var ${f.d}: i32 = lid; ${f.d} < ${D}; ${f.d} += ${threads}) {`);
  out.push(`    tf_qs[${f.d}] = ${p.expr(f.q, out, '    ')};`);
  if (computed.k) out.push(`    tf_ks[${f.d}] = ${p.expr(computed.k, out, '    ')};`);
  if (computed.v) {
    out.push('    {', `      let ${f.e} = ${f.d};`);
    out.push(`      tf_vs[${f.d}] = ${p.expr(computed.v, out, '      ')};`, '    }');
  }
  out.push('  }');
  // (workgroupUniformLoad is a barrier too: the query and computed rows are in place after it.)
  out.push('  let tf_lim = workgroupUniformLoad(&tf_lim_w);');
  // The computed rows' element runs in the cache (they read inputs only).
  for (const r of ['k', 'v'] as const) {
    if (!computed[r]) continue;
    out.push(`  let tf_${r}from = ${p.expr(f.fresh![r]!.from, out, '  ')};`);
    out.push(`  let tf_${r}to = ${p.expr(f.fresh![r]!.to, out, '  ')};`);
  }
  // This workgroup's keys [tf_from, tf_to): its chunk's, where the position reaches it (at least one chunk runs, so
  // that a row that sees no key is NaN, as the reference has it), else none.
  out.push(`  let tf_parts = ${chunks ? `max((tf_lim + ${chunks.keys - 1}) / ${chunks.keys}, 1)` : '1'};`);
  out.push('  if (tf_c >= tf_parts) { return; }');
  out.push(`  let tf_from = tf_c * ${chunks?.keys ?? 0};`);
  out.push(`  let tf_to = ${chunks ? `min(tf_lim, tf_from + ${chunks.keys})` : 'tf_lim'};`);
  const qs = (js: number[]) => `vec4<f32>(${js.map((j) => `tf_qs[tf_part + ${j}]`).join(', ')})`;
  out.push(`  let tf_q0 = ${qs(run.slice(0, 4))};`);
  out.push(`  let tf_q1 = ${qs(run.slice(4))};`);
  out.push(`  var tf_m: f32 = ${ninf};`);
  out.push('  var tf_l: f32 = 0.0;');
  out.push('  var tf_o0 = vec4<f32>(0.0);');
  out.push('  var tf_o1 = vec4<f32>(0.0);');
  out.push(`  for (var tf_t0: i32 = tf_from; tf_t0 < tf_to; tf_t0 += ${G * U}) {`);
  out.push(`    var tf_vv: array<vec4<f32>, ${2 * U}>;`);
  out.push(`    for (var tf_u: i32 = 0; tf_u < ${U}; tf_u++) {`);
  out.push(`      let tf_t = tf_t0 + tf_u * ${G} + tf_grp;`);
  // Keys past the bound read row 0 (unused).
  out.push(`      let ${f.t} = select(0, tf_t, tf_t < tf_to);`);
  out.push(`      let ${f.d} = tf_part;`);
  // A key's (value's) 8 elements as two vec4s of f32 in the thread's order (`run`): from memory, or from the
  // computed row where the element index is in its run.
  const rowOf = (r: 'k' | 'v', load: typeof kLoad, lo: string, hi: string) => {
    const index = p.expr(load.index, out, '      ');
    out.push(`      let tf_${r}i = ${index};`);
    if (half) {
      out.push(`      let tf_${r}w = b${load.buf}_v4[tf_${r}i >> 3];`);
      out.push(`      ${lo} = ${split[0]}(tf_${r}w);`, `      ${hi} = ${split[1]}(tf_${r}w);`);
    } else {
      out.push(`      ${lo} = b${load.buf}_v4[tf_${r}i >> 2];`, `      ${hi} = b${load.buf}_v4[(tf_${r}i >> 2) + 1];`);
    }
    if (!computed[r]) return;
    const row = r === 'k' ? 'tf_ks' : 'tf_vs';
    const at = (js: number[]) => `vec4<f32>(${js.map((j) => `${row}[tf_part + ${j}]`).join(', ')})`;
    out.push(`      if (tf_${r}i >= tf_${r}from && tf_${r}i < tf_${r}to) {`, `        ${lo} = ${at(run.slice(0, 4))};`, `        ${hi} = ${at(run.slice(4))};`, '      }');
  };
  out.push('      var tf_k0: vec4<f32>;', '      var tf_k1: vec4<f32>;');
  rowOf('k', kLoad, 'tf_k0', 'tf_k1');
  out.push(`      tf_dp[tf_u * ${threads} + lid] = dot(tf_q0, tf_k0) + dot(tf_q1, tf_k1);`);
  out.push(`      let ${f.e} = tf_part;`);
  rowOf('v', vLoad, 'tf_vv[2 * tf_u]', 'tf_vv[2 * tf_u + 1]');
  out.push('    }');
  out.push('    workgroupBarrier();');
  // Each group's scores (its threads' products added in the same order) and their maximum; keys past the bound −∞.
  out.push(`    var tf_s: array<f32, ${U}>;`);
  out.push(`    var tf_mt: f32 = ${ninf};`);
  out.push(`    for (var tf_u: i32 = 0; tf_u < ${U}; tf_u++) {`);
  out.push(`      var ${f.qk}: f32 = 0.0;`);
  out.push(`      for (var tf_j: i32 = 0; tf_j < ${LG}; tf_j++) { ${f.qk} += tf_dp[tf_u * ${threads} + tf_grp * ${LG} + tf_j]; }`);
  out.push(`      let ${f.t} = tf_t0 + tf_u * ${G} + tf_grp;`);
  out.push(`      var tf_x: f32 = ${ninf};`);
  out.push(`      if (${f.t} < tf_to) {`);
  out.push(`        tf_x = ${p.expr(f.score, out, '        ')};`);
  out.push('      }');
  out.push('      tf_s[tf_u] = tf_x;');
  out.push('      tf_mt = tf_max(tf_mt, tf_x);');
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push('    let tf_mnew = tf_max(tf_m, tf_mt);');
  out.push(`    let tf_ref = select(tf_mnew, 0.0, tf_mnew == ${ninf});`);
  out.push('    let tf_scale = exp(tf_m - tf_ref);');
  out.push('    tf_m = tf_mnew;');
  out.push('    tf_l *= tf_scale;');
  out.push('    tf_o0 *= tf_scale;');
  out.push('    tf_o1 *= tf_scale;');
  out.push(`    for (var tf_u: i32 = 0; tf_u < ${U}; tf_u++) {`);
  out.push(`      if (tf_t0 + tf_u * ${G} + tf_grp < tf_to) {`);
  out.push('        let tf_pr = exp(tf_s[tf_u] - tf_ref);');
  out.push('        tf_l += tf_pr;');
  out.push('        tf_o0 += tf_pr * tf_vv[2 * tf_u];');
  out.push('        tf_o1 += tf_pr * tf_vv[2 * tf_u + 1];');
  out.push('      }');
  out.push('    }');
  out.push('  }');
  // The groups merged: each leaves its maximum, sum and output run; a thread an output element adds them.
  out.push(`  if (lid % ${LG} == 0) {`);
  out.push('    tf_gm[tf_grp] = tf_m;');
  out.push('    tf_gl[tf_grp] = tf_l;');
  out.push('  }');
  out.push('  for (var tf_j: i32 = 0; tf_j < 4; tf_j++) {');
  out.push(`    tf_dp[tf_grp * ${D} + tf_part + ${half ? '2 * tf_j' : 'tf_j'}] = tf_o0[tf_j];`);
  out.push(`    tf_dp[tf_grp * ${D} + tf_part + ${half ? '2 * tf_j + 1' : '4 + tf_j'}] = tf_o1[tf_j];`);
  out.push('  }');
  out.push('  workgroupBarrier();');
  out.push(`  for (var tf_x: i32 = lid; tf_x < ${D}; tf_x += ${threads}) {`);
  out.push(`    var tf_mx: f32 = ${ninf};`);
  out.push(`    for (var tf_g: i32 = 0; tf_g < ${G}; tf_g++) { tf_mx = tf_max(tf_mx, tf_gm[tf_g]); }`);
  out.push(`    let tf_ref = select(tf_mx, 0.0, tf_mx == ${ninf});`);
  out.push('    var tf_sum: f32 = 0.0;');
  out.push('    var tf_acc: f32 = 0.0;');
  out.push(`    for (var tf_g: i32 = 0; tf_g < ${G}; tf_g++) {`);
  out.push('      let tf_w = exp(tf_gm[tf_g] - tf_ref);');
  out.push('      tf_sum += tf_gl[tf_g] * tf_w;');
  out.push(`      tf_acc += tf_dp[tf_g * ${D} + tf_x] * tf_w;`);
  out.push('    }');
  if (chunks) {
    // The chunk's output run, sum and reference maximum (finite: 0 where it saw no key) for the merge.
    const at = `row * ${D + 2}`;
    out.push(`    tf_ws[${at} + tf_x] = tf_acc;`);
    out.push(`    if (tf_x == 0) { tf_ws[${at} + ${D}] = tf_ref; tf_ws[${at} + ${D + 1}] = tf_sum; }`);
    out.push('  }');
    return { decls, body: out, merge: { body: mergeChunks(f, chunks, p, threads), rows: f.batch, workspaceFloats: chunks.workspaceFloats } };
  }
  out.push(`    let ${f.e} = tf_x;`);
  out.push(`    let ${f.out} = tf_acc / tf_sum;`);
  stores(f, p, out, '    ');
  out.push('  }');
  return { decls, body: out };
}

function stores(f: FlashIR, p: ExprPrinter, out: string[], indent: string): void {
  for (const st of f.stores) {
    const value = p.expr(st.value, out, indent);
    out.push(`${indent}store_b${st.buf}(${p.expr(st.index, out, indent)}, ${value});`);
  }
}

/**
 * The second dispatch over a cache in chunks: a workgroup a head, a thread an output element. The chunks the position
 * reached are read KeyChunks.mergeBatch at a time, every load of a batch issued before any is used (a chunk's maximum, sum and
 * output element), and merged online: the running sums rescaled to each batch's larger maximum. (A loop over the
 * chunks one at a time waited for L2 twice a chunk, once for the maxima and once for the sums.)
 */
function mergeChunks(f: FlashIR, chunks: KeyChunks, p: ExprPrinter, threads: number): string[] {
  const D = f.depth;
  const { keys, count } = chunks;
  const B = chunks.mergeBatch ?? 1;
  const ninf = wgslDialect.literal(-Infinity, 'f32');
  const out: string[] = [];
  out.push(`  let ${f.b} = row;`);
  out.push(`  let ${f.i} = 0;`);
  const limit = f.limit ? p.expr(f.limit, out, '  ') : String(f.keys);
  out.push(`  let tf_lim = clamp(${limit}, 0, ${f.keys});`);
  out.push(`  let tf_parts = max((tf_lim + ${keys - 1}) / ${keys}, 1);`);
  out.push(`  let tf_at = row * ${count * (D + 2)};`);
  out.push(`  for (var tf_x: i32 = lid; tf_x < ${D}; tf_x += ${threads}) {`);
  out.push(`    var tf_mx: f32 = ${ninf};`);
  out.push('    var tf_sum: f32 = 0.0;');
  out.push('    var tf_acc: f32 = 0.0;');
  out.push(`    for (var tf_c0: i32 = 0; tf_c0 < tf_parts; tf_c0 += ${B}) {`);
  const js = Array.from({ length: B }, (_, j) => j);
  // Chunks past the position read the last one's run (in bounds, unused).
  for (const j of js) {
    out.push(`      let tf_r${j} = tf_at + min(tf_c0 + ${j}, tf_parts - 1) * ${D + 2};`);
    out.push(`      let tf_m${j} = select(${ninf}, tf_ws[tf_r${j} + ${D}], tf_c0 + ${j} < tf_parts);`);
    out.push(`      let tf_l${j} = tf_ws[tf_r${j} + ${D + 1}];`);
    out.push(`      let tf_a${j} = tf_ws[tf_r${j} + tf_x];`);
  }
  // The chunks' maxima are finite (0 where a chunk saw no key): after the first batch tf_mx is too.
  out.push(`      let tf_nm = ${js.reduce((acc, j) => `tf_max(${acc}, tf_m${j})`, 'tf_mx')};`);
  out.push('      let tf_scale = exp(tf_mx - tf_nm);');
  out.push('      tf_sum *= tf_scale;');
  out.push('      tf_acc *= tf_scale;');
  for (const j of js) {
    out.push(`      if (tf_c0 + ${j} < tf_parts) {`);
    out.push(`        let tf_w = exp(tf_m${j} - tf_nm);`);
    out.push(`        tf_sum += tf_l${j} * tf_w;`);
    out.push(`        tf_acc += tf_a${j} * tf_w;`);
    out.push('      }');
  }
  out.push('      tf_mx = tf_nm;');
  out.push('    }');
  out.push(`    let ${f.e} = tf_x;`);
  out.push(`    let ${f.out} = tf_acc / tf_sum;`);
  stores(f, p, out, '    ');
  out.push('  }');
  return out;
}
