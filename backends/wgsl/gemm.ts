// A GEMM kernel (KernelIR.gemm) in WGSL: each workgroup computes a tile of rows × columns with f32 multiply-adds.
// Per step it stages `tileDepth` columns of the left operand (the prologue computed as it loads) and as many rows
// of each right operand in workgroup memory; each thread then accumulates a 4 × 4 block of outputs.

import { GemmIR } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan } from '../schedule.ts';

/** Workgroup-memory declarations and the body of `main` (after `row` and `lid` are bound). */
export function renderGemmWgsl(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number): { decls: string[]; body: string[] } {
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = plan;
  const per = 4;
  if (plan.units !== 'fma' || (TM / per) * (TN / per) !== threads) throw new Error(`WGSL: no GEMM tiles of ${TM} × ${TN} (${plan.units}) for ${threads} threads`);
  const decls = [`var<workgroup> tf_as: array<f32, ${TM * TD}>;`];
  g.b.forEach((_, i) => decls.push(`var<workgroup> tf_bs${i}: array<f32, ${TN * TD}>;`));
  const out: string[] = [];
  const rowTiles = p.expr(plan.rowTiles, out, '  ');
  out.push(`  let tf_m0 = (row % ${rowTiles}) * ${TM};`);
  out.push(`  let tf_n0 = (row / ${rowTiles}) * ${TN};`);
  out.push(`  let tf_tr = (lid / ${TN / per}) * ${per};`);
  out.push(`  let tf_tc = (lid % ${TN / per}) * ${per};`);
  g.accs.forEach((acc) => out.push(`  var ${acc}_t: array<f32, ${per * per}>;`));
  out.push(`  for (var tf_k0: i32 = 0; tf_k0 < ${g.depth}; tf_k0 += ${TD}) {`);
  // The left operand's tile: element e is row e / TD, depth e % TD (neighbouring threads read along the depth).
  out.push(`    for (var tf_e: i32 = lid; tf_e < ${TM * TD}; tf_e += ${threads}) {`);
  out.push(`      let ${g.m} = tf_m0 + tf_e / ${TD};`);
  out.push(`      let ${g.k} = tf_k0 + tf_e % ${TD};`);
  out.push('      var tf_v: f32 = 0.0;');
  out.push(`      if (${g.m} < ${rows} && ${g.k} < ${g.depth}) {`);
  out.push(`        tf_v = ${p.expr(g.a, out, '        ')};`);
  out.push('      }');
  out.push(`      tf_as[(tf_e % ${TD}) * ${TM} + tf_e / ${TD}] = tf_v;`);
  out.push('    }');
  // Each right operand's tile: element e is column e / TD, depth e % TD.
  out.push(`    for (var tf_e: i32 = lid; tf_e < ${TN * TD}; tf_e += ${threads}) {`);
  out.push(`      let ${g.n} = tf_n0 + tf_e / ${TD};`);
  out.push(`      let ${g.k} = tf_k0 + tf_e % ${TD};`);
  g.b.forEach((b, i) => {
    out.push('      {');
    out.push('        var tf_v: f32 = 0.0;');
    out.push(`        if (${g.n} < ${g.columns} && ${g.k} < ${g.depth}) {`);
    out.push(`          tf_v = ${p.expr(b, out, '          ')};`);
    out.push('        }');
    out.push(`        tf_bs${i}[(tf_e % ${TD}) * ${TN} + tf_e / ${TD}] = tf_v;`);
    out.push('      }');
  });
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push(`    for (var tf_d: i32 = 0; tf_d < ${TD}; tf_d++) {`);
  for (let i = 0; i < per; i++) out.push(`      let tf_a${i} = tf_as[tf_d * ${TM} + tf_tr + ${i}];`);
  g.b.forEach((_, o) => {
    for (let j = 0; j < per; j++) {
      out.push(`      let tf_b${o}_${j} = tf_bs${o}[tf_d * ${TN} + tf_tc + ${j}];`);
      for (let i = 0; i < per; i++) out.push(`      ${g.accs[o]}_t[${i * per + j}] += tf_a${i} * tf_b${o}_${j};`);
    }
  });
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push('  }');
  // The epilogue at each output of the thread's block.
  out.push(`  for (var tf_i: i32 = 0; tf_i < ${per * per}; tf_i++) {`);
  out.push(`    let ${g.m} = tf_m0 + tf_tr + tf_i / ${per};`);
  out.push(`    let ${g.n} = tf_n0 + tf_tc + tf_i % ${per};`);
  out.push(`    if (${g.m} < ${rows} && ${g.n} < ${g.columns}) {`);
  g.accs.forEach((acc) => out.push(`      let ${acc} = ${acc}_t[tf_i];`));
  for (const st of g.stores) {
    const value = p.expr(st.value, out, '      ');
    out.push(`      store_b${st.buf}(${p.expr(st.index, out, '      ')}, ${value});`);
  }
  out.push('    }');
  out.push('  }');
  return { decls, body: out };
}
