// A flash-attention kernel (KernelIR.flash) in WGSL: one workgroup per tile of query rows of one head, walking the
// keys in tiles up to the tile's causal bound with an online softmax (the running maximum, sum and output row in
// each thread's registers), as backends/cuda/flash.ts does; tiles are smaller to fit WebGPU's 16 KiB of workgroup
// memory. The bound is read back through workgroupUniformLoad, so the loop holding barriers stays uniform.

import { FlashIR } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { FlashPlan } from '../schedule.ts';
import { wgslDialect } from './dialect.ts';

export function renderFlashWgsl(f: FlashIR, plan: FlashPlan, p: ExprPrinter, threads: number): { decls: string[]; body: string[] } {
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
  for (const st of f.stores) {
    const value = p.expr(st.value, out, '      ');
    out.push(`      store_b${st.buf}(${p.expr(st.index, out, '      ')}, ${value});`);
  }
  out.push('    }');
  out.push('  }');
  return { decls, body: out };
}
