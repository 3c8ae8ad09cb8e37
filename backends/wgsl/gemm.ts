// A GEMM kernel (KernelIR.gemm) in WGSL: each workgroup computes a tile of rows × columns. Per step it stages
// `tileDepth` columns of the left operand (the prologue computed as it loads) and as many rows of each right operand
// in workgroup memory; then either each thread accumulates a 4 × 4 block of outputs with f32 multiply-adds, or each
// subgroup a block of 16 × 16 fragments on subgroup matrices (f16 operands, f32 results).

import { GemmIR } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan } from '../schedule.ts';

/** Workgroup-memory declarations and the body of `main` (after `row` and `lid` are bound). */
export function renderGemmWgsl(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number): { decls: string[]; body: string[] } {
  if (plan.units === 'subgroup-matrix-f16') return subgroupMatrixTile(g, plan, p, rows, threads);
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

/** Lanes of a subgroup the subgroup-matrix tiles are placed for (the device is opened with them only where exact). */
const LANES = 32;
/** Rows, columns and depth of one subgroup-matrix product. */
const FRAGMENT = 16;

/**
 * A tile on subgroup matrices: the operands of the next step are loaded into registers (one value a thread and
 * register, neighbouring threads along the depth) while the subgroups multiply the current step's, then stored to
 * workgroup memory as f16 in rows of `tileDepth + 8` (the padding moves each row's start to other banks). Each
 * subgroup keeps its block's results in subgroup matrices; at the end it stores one fragment of each product at a
 * time to its own f32 scratch, from which its lanes run the epilogue, 8 outputs each.
 */
function subgroupMatrixTile(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number): { decls: string[]; body: string[] } {
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = plan;
  const [subgroups, ops, S] = [threads / LANES, g.b.length, TD + 8];
  // Each subgroup's block: one fragment row, the tile's fragment columns shared among the subgroups of a row.
  const [fragRows, fragColumns] = [TM / FRAGMENT, TN / FRAGMENT];
  const subgroupColumns = subgroups / fragRows;
  const perSubgroup = fragColumns / subgroupColumns;
  if (!Number.isInteger(subgroupColumns) || !Number.isInteger(perSubgroup) || threads % TD !== 0 || TD % FRAGMENT !== 0) {
    throw new Error(`WGSL: no subgroup-matrix tiles of ${TM} × ${TN} × ${TD} for ${threads} threads`);
  }
  const [loadsA, loadsB] = [(TM * TD) / threads, (TN * TD) / threads];
  const left = `subgroup_matrix_left<f16, ${FRAGMENT}, ${FRAGMENT}>`;
  const right = `subgroup_matrix_right<f16, ${FRAGMENT}, ${FRAGMENT}>`;
  const result = `subgroup_matrix_result<f32, ${FRAGMENT}, ${FRAGMENT}>`;
  const decls = [`var<workgroup> tf_as: array<f16, ${TM * S}>;`];
  g.b.forEach((_, o) => decls.push(`var<workgroup> tf_bs${o}: array<f16, ${TN * S}>;`));
  decls.push(`var<workgroup> tf_cs: array<f32, ${subgroups * ops * FRAGMENT * FRAGMENT}>;`);
  const out: string[] = [];
  const rowTiles = p.expr(plan.rowTiles, out, '  ');
  out.push(`  let tf_m0 = (row % ${rowTiles}) * ${TM};`);
  out.push(`  let tf_n0 = (row / ${rowTiles}) * ${TN};`);
  out.push(`  let tf_sg = lid / ${LANES};`);
  out.push(`  let tf_sm = (tf_sg / ${subgroupColumns}) * ${FRAGMENT};`);
  out.push(`  let tf_sn = (tf_sg % ${subgroupColumns}) * ${perSubgroup * FRAGMENT};`);
  for (let o = 0; o < ops; o++) for (let j = 0; j < perSubgroup; j++) out.push(`  var tf_c${o}_${j} = ${result}();`);
  for (let i = 0; i < loadsA; i++) out.push(`  var tf_ra${i}: f32;`);
  for (let o = 0; o < ops; o++) for (let i = 0; i < loadsB; i++) out.push(`  var tf_rb${o}_${i}: f32;`);
  // Register i of a thread holds tile row (or column) lid / TD + i · threads / TD, depth lid % TD.
  const load = (k0: string, indent: string) => {
    for (let i = 0; i < loadsA; i++) {
      out.push(`${indent}{`);
      out.push(`${indent}  let ${g.m} = tf_m0 + lid / ${TD} + ${(i * threads) / TD};`);
      out.push(`${indent}  let ${g.k} = ${k0} + lid % ${TD};`);
      out.push(`${indent}  tf_ra${i} = 0.0;`);
      out.push(`${indent}  if (${g.m} < ${rows} && ${g.k} < ${g.depth}) {`);
      out.push(`${indent}    tf_ra${i} = ${p.expr(g.a, out, `${indent}    `)};`);
      out.push(`${indent}  }`, `${indent}}`);
    }
    g.b.forEach((b, o) => {
      for (let i = 0; i < loadsB; i++) {
        out.push(`${indent}{`);
        out.push(`${indent}  let ${g.n} = tf_n0 + lid / ${TD} + ${(i * threads) / TD};`);
        out.push(`${indent}  let ${g.k} = ${k0} + lid % ${TD};`);
        out.push(`${indent}  tf_rb${o}_${i} = 0.0;`);
        out.push(`${indent}  if (${g.n} < ${g.columns} && ${g.k} < ${g.depth}) {`);
        out.push(`${indent}    tf_rb${o}_${i} = ${p.expr(b, out, `${indent}    `)};`);
        out.push(`${indent}  }`, `${indent}}`);
      }
    });
  };
  load('0', '  ');
  out.push(`  for (var tf_k0: i32 = 0; tf_k0 < ${g.depth}; tf_k0 += ${TD}) {`);
  out.push(`    let tf_at = (lid / ${TD}) * ${S} + lid % ${TD};`);
  for (let i = 0; i < loadsA; i++) out.push(`    tf_as[tf_at + ${((i * threads) / TD) * S}] = f16(tf_ra${i});`);
  for (let o = 0; o < ops; o++) for (let i = 0; i < loadsB; i++) out.push(`    tf_bs${o}[tf_at + ${((i * threads) / TD) * S}] = f16(tf_rb${o}_${i});`);
  out.push('    workgroupBarrier();');
  // The next step's loads are in flight while this step's products run.
  load(`tf_k0 + ${TD}`, '    ');
  for (let kk = 0; kk < TD; kk += FRAGMENT) {
    out.push(`    let tf_a${kk} = subgroupMatrixLoad<${left}, row_major>(&tf_as, u32(tf_sm * ${S} + ${kk}), ${S}u);`);
    for (let o = 0; o < ops; o++) {
      for (let j = 0; j < perSubgroup; j++) {
        out.push(`    tf_c${o}_${j} = subgroupMatrixMultiplyAccumulate(tf_a${kk}, subgroupMatrixLoad<${right}, col_major>(&tf_bs${o}, u32((tf_sn + ${j * FRAGMENT}) * ${S} + ${kk}), ${S}u), tf_c${o}_${j});`);
      }
    }
  }
  out.push('    workgroupBarrier();');
  out.push('  }');
  // The epilogue, a fragment at a time through the subgroup's scratch.
  const scratch = ops * FRAGMENT * FRAGMENT;
  for (let j = 0; j < perSubgroup; j++) {
    for (let o = 0; o < ops; o++) out.push(`  subgroupMatrixStore<row_major>(&tf_cs, u32(tf_sg * ${scratch} + ${o * FRAGMENT * FRAGMENT}), tf_c${o}_${j}, ${FRAGMENT}u);`);
    out.push('  workgroupBarrier();');
    out.push(`  for (var tf_e: i32 = lid % ${LANES}; tf_e < ${FRAGMENT * FRAGMENT}; tf_e += ${LANES}) {`);
    out.push(`    let ${g.m} = tf_m0 + tf_sm + tf_e / ${FRAGMENT};`);
    out.push(`    let ${g.n} = tf_n0 + tf_sn + ${j * FRAGMENT} + tf_e % ${FRAGMENT};`);
    out.push(`    if (${g.m} < ${rows} && ${g.n} < ${g.columns}) {`);
    g.accs.forEach((acc, o) => out.push(`      let ${acc} = tf_cs[tf_sg * ${scratch} + ${o * FRAGMENT * FRAGMENT} + tf_e];`));
    for (const st of g.stores) {
      const value = p.expr(st.value, out, '      ');
      out.push(`      store_b${st.buf}(${p.expr(st.index, out, '      ')}, ${value});`);
    }
    out.push('    }', '  }');
    out.push('  workgroupBarrier();');
  }
  return { decls, body: out };
}
