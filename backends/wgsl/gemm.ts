// A GEMM kernel (KernelIR.gemm) in WGSL: each workgroup computes a tile of rows × columns with f32 multiply-adds.
// Per step it stages `tileDepth` columns of the left operand (the prologue computed as it loads) and as many rows
// of each right operand in workgroup memory, depth-major (a step's rows of one depth side by side, each run padded
// by 4 so that a thread's staging stores fall on distinct banks); each thread then accumulates a block of
// plan.threadBlock outputs (8 rows × 4 columns: per depth, two 16-byte reads of the left operand and one of each
// right operand feed 32 multiply-adds of each product).

import { GemmIR } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan } from '../schedule.ts';

const PAD = 4;

/** Workgroup-memory declarations and the body of `main` (after `row` and `lid` are bound). */
export function renderGemmWgsl(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number): { decls: string[]; body: string[] } {
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = plan;
  const block = plan.threadBlock;
  if (plan.units !== 'fma' || !block || block.rows % 4 || block.columns !== 4 || (TM / block.rows) * (TN / block.columns) !== threads) {
    throw new Error(`WGSL: no GEMM tiles of ${TM} × ${TN} (${plan.units}) for ${threads} threads`);
  }
  const [BR, AP, BP] = [block.rows, TM + PAD, TN + PAD];
  // vec4 arrays: the element at depth d, row (or column) r is [(d · pitch + r) / 4][r % 4].
  const decls = [`var<workgroup> tf_as: array<vec4<f32>, ${(TD * AP) / 4}>;`];
  g.b.forEach((_, i) => decls.push(`var<workgroup> tf_bs${i}: array<vec4<f32>, ${(TD * BP) / 4}>;`));
  const out: string[] = [];
  const rowTiles = p.expr(plan.rowTiles, out, '  ');
  out.push(`  let tf_m0 = (row % ${rowTiles}) * ${TM};`);
  out.push(`  let tf_n0 = (row / ${rowTiles}) * ${TN};`);
  out.push(`  let tf_tr = (lid / ${TN / 4}) * ${BR};`);
  out.push(`  let tf_tc = (lid % ${TN / 4}) * 4;`);
  // Accumulators: [i] holds row tf_tr + i, columns tf_tc … tf_tc + 3.
  g.accs.forEach((acc) => out.push(`  var ${acc}_t: array<vec4<f32>, ${BR}>;`));
  out.push(`  for (var tf_k0: i32 = 0; tf_k0 < ${g.depth}; tf_k0 += ${TD}) {`);
  // The left operand's tile: element e is row e / TD, depth e % TD (neighbouring threads read along the depth).
  out.push(`    for (var tf_e: i32 = lid; tf_e < ${TM * TD}; tf_e += ${threads}) {`);
  out.push(`      let ${g.m} = tf_m0 + tf_e / ${TD};`);
  out.push(`      let ${g.k} = tf_k0 + tf_e % ${TD};`);
  out.push('      var tf_v: f32 = 0.0;');
  out.push(`      if (${g.m} < ${rows} && ${g.k} < ${g.depth}) {`);
  out.push(`        tf_v = ${p.expr(g.a, out, '        ')};`);
  out.push('      }');
  out.push(`      let tf_at = (tf_e % ${TD}) * ${AP} + tf_e / ${TD};`);
  out.push('      tf_as[tf_at >> 2u][tf_at & 3] = tf_v;');
  out.push('    }');
  // Each right operand's tile: element e is column e / TD, depth e % TD.
  out.push(`    for (var tf_e: i32 = lid; tf_e < ${TN * TD}; tf_e += ${threads}) {`);
  out.push(`      let ${g.n} = tf_n0 + tf_e / ${TD};`);
  out.push(`      let ${g.k} = tf_k0 + tf_e % ${TD};`);
  out.push(`      let tf_at = (tf_e % ${TD}) * ${BP} + tf_e / ${TD};`);
  g.b.forEach((b, i) => {
    out.push('      {');
    out.push('        var tf_v: f32 = 0.0;');
    out.push(`        if (${g.n} < ${g.columns} && ${g.k} < ${g.depth}) {`);
    out.push(`          tf_v = ${p.expr(b, out, '          ')};`);
    out.push('        }');
    out.push(`        tf_bs${i}[tf_at >> 2u][tf_at & 3] = tf_v;`);
    out.push('      }');
  });
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push(`    for (var tf_d: i32 = 0; tf_d < ${TD}; tf_d++) {`);
  for (let h = 0; h < BR / 4; h++) out.push(`      let tf_a${h} = tf_as[(tf_d * ${AP} + tf_tr) / 4 + ${h}];`);
  g.b.forEach((_, o) => {
    out.push(`      let tf_b${o} = tf_bs${o}[(tf_d * ${BP} + tf_tc) / 4];`);
    for (let i = 0; i < BR; i++) out.push(`      ${g.accs[o]}_t[${i}] += tf_a${i >> 2}[${i & 3}] * tf_b${o};`);
  });
  out.push('    }');
  out.push('    workgroupBarrier();');
  out.push('  }');
  // The epilogue at each output of the thread's block.
  out.push(`  for (var tf_i: i32 = 0; tf_i < ${BR * 4}; tf_i++) {`);
  out.push(`    let ${g.m} = tf_m0 + tf_tr + tf_i / 4;`);
  out.push(`    let ${g.n} = tf_n0 + tf_tc + tf_i % 4;`);
  out.push(`    if (${g.m} < ${rows} && ${g.n} < ${g.columns}) {`);
  g.accs.forEach((acc) => out.push(`      let ${acc} = ${acc}_t[tf_i / 4][tf_i % 4];`));
  for (const st of g.stores) {
    const value = p.expr(st.value, out, '      ');
    out.push(`      store_b${st.buf}(${p.expr(st.index, out, '      ')}, ${value});`);
  }
  out.push('    }');
  out.push('  }');
  return { decls, body: out };
}
