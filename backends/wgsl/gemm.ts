// A GEMM kernel (KernelIR.gemm) in WGSL: each workgroup computes a tile of rows × columns. Per step it stages
// `tileDepth` columns of the left operand (the prologue computed as it loads) and as many rows of each right operand
// in workgroup memory; then either each thread accumulates a 4 × 4 block of outputs with f32 multiply-adds, or each
// subgroup a block of 16 × 16 fragments on subgroup matrices (f16 operands, f32 results).

import { DType } from '../../ir/dtype.ts';
import { GemmIR, KExpr, runsAlong } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan } from '../schedule.ts';

/** A GEMM tile's shader parts: workgroup memory, the body of `main`, and the buffers it reads through vec4 bindings. */
export interface RenderedGemm {
  readonly decls: string[];
  readonly body: string[];
  readonly vec4Buffers: readonly number[];
}

/**
 * Workgroup-memory declarations and the body of `main` (after `row` and `lid` are bound). `wide` says which buffers
 * may be read 16 bytes at a time (those bound whole).
 */
export function renderGemmWgsl(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number, wide: (buf: number) => boolean): RenderedGemm {
  if (plan.units === 'subgroup-matrix-f16') return subgroupMatrixTile(g, plan, p, rows, threads, wide);
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
  return { decls, body: out, vec4Buffers: [] };
}

/** Lanes of a subgroup the subgroup-matrix tiles are placed for (the device is opened with them only where exact). */
const LANES = 32;
/** Rows, columns and depth of one subgroup-matrix product. */
const FRAGMENT = 16;
/** How the 8 subgroups of a workgroup share a tile: 4 along the rows, 2 along the columns. */
const [SUBGROUP_ROWS, SUBGROUP_COLUMNS] = [4, 2];

/**
 * A tile on subgroup matrices. The operands of the next step are loaded into registers while the subgroups
 * multiply the current step's, then stored to workgroup memory as f16 in rows of `tileDepth + 8` (the padding moves
 * each row's start to other banks). An operand read from memory as it is, in aligned runs along the depth (an f32
 * row, a bf16 weight), is loaded 16 bytes at a time through its vec4 binding (`wide` says which buffers may be
 * bound so); else one value a thread and register, neighbouring threads along the depth. Each subgroup keeps its
 * block's results in subgroup matrices; at the end it stores one fragment of each product at a time to its own f32
 * scratch, from which its lanes run the epilogue, 8 outputs each.
 */
function subgroupMatrixTile(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number, wide: (buf: number) => boolean): RenderedGemm {
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = plan;
  const [subgroups, ops, S] = [threads / LANES, g.b.length, TD + 8];
  const [fragRows, fragColumns] = [TM / (FRAGMENT * SUBGROUP_ROWS), TN / (FRAGMENT * SUBGROUP_COLUMNS)];
  if (subgroups !== SUBGROUP_ROWS * SUBGROUP_COLUMNS || !Number.isInteger(fragRows) || !Number.isInteger(fragColumns) || threads % TD !== 0 || TD % FRAGMENT !== 0) {
    throw new Error(`WGSL: no subgroup-matrix tiles of ${TM} × ${TN} × ${TD} for ${threads} threads`);
  }
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
  out.push(`  let tf_sm = (tf_sg / ${SUBGROUP_COLUMNS}) * ${fragRows * FRAGMENT};`);
  out.push(`  let tf_sn = (tf_sg % ${SUBGROUP_COLUMNS}) * ${fragColumns * FRAGMENT};`);
  for (let o = 0; o < ops; o++) for (let i = 0; i < fragRows; i++) for (let j = 0; j < fragColumns; j++) out.push(`  var tf_c${o}_${i}_${j} = ${result}();`);
  // Each operand's staging: registers, the loads of a step into them, and their stores to workgroup memory.
  const operands = [
    { e: g.a, v: g.m, extent: rows, tile: TM, base: 'tf_m0', array: 'tf_as', reg: 'tf_ra' },
    ...g.b.map((e, o) => ({ e, v: g.n, extent: String(g.columns), tile: TN, base: 'tf_n0', array: `tf_bs${o}`, reg: `tf_rb${o}_` })),
  ].map((o) => {
    const e = o.e;
    const dtype = e.k === 'load' ? p.buffers[e.buf].dtype : undefined;
    const per = dtype === DType.F32 ? 4 : dtype === DType.BF16 ? 8 : 0;
    const vector = e.k === 'load' && per > 0 && wide(e.buf) && runsAlong(e.index, g.k, per) && (o.tile * TD) % (per * threads) === 0 && TD % per === 0 ? per : 1;
    return { ...o, vector, loads: (o.tile * TD) / (vector * threads), buf: e.k === 'load' ? e.buf : -1 };
  });
  for (const o of operands) for (let i = 0; i < o.loads; i++) out.push(`  var ${o.reg}${i}: ${o.vector === 4 ? 'vec4<f32>' : o.vector === 8 ? 'vec4<u32>' : 'f32'};`);
  // Register i of a thread holds run (lid + i · threads) of the tile: tile row (column) run / (TD / vector), depth
  // (run % (TD / vector)) · vector.
  const load = (k0: string, indent: string) => {
    for (const o of operands) {
      const runs = TD / o.vector;
      for (let i = 0; i < o.loads; i++) {
        out.push(`${indent}{`);
        out.push(`${indent}  let ${o.v} = ${o.base} + lid / ${runs} + ${(i * threads) / runs};`);
        out.push(`${indent}  let ${g.k} = ${k0} + (lid % ${runs}) * ${o.vector};`);
        out.push(`${indent}  ${o.reg}${i} = ${o.vector === 4 ? 'vec4<f32>()' : o.vector === 8 ? 'vec4<u32>()' : '0.0'};`);
        out.push(`${indent}  if (${o.v} < ${o.extent} && ${g.k} < ${g.depth}) {`);
        if (o.vector === 1) out.push(`${indent}    ${o.reg}${i} = ${p.expr(o.e, out, `${indent}    `)};`);
        else out.push(`${indent}    ${o.reg}${i} = b${o.buf}_v4[${p.expr((o.e as Extract<KExpr, { k: 'load' }>).index, out, `${indent}    `)} / ${o.vector}];`);
        out.push(`${indent}  }`, `${indent}}`);
      }
    }
  };
  load('0', '  ');
  out.push(`  for (var tf_k0: i32 = 0; tf_k0 < ${g.depth}; tf_k0 += ${TD}) {`);
  for (const o of operands) {
    const runs = TD / o.vector;
    const at = `(lid / ${runs}) * ${S} + (lid % ${runs}) * ${o.vector}`;
    for (let i = 0; i < o.loads; i++) {
      const base = `${at} + ${((i * threads) / runs) * S}`;
      if (o.vector === 1) out.push(`    ${o.array}[${base}] = f16(${o.reg}${i});`);
      for (let j = 0; o.vector > 1 && j < o.vector; j++) {
        // bf16 words: the element at the even position is the low half.
        const value = o.vector === 4 ? `${o.reg}${i}[${j}]` : `bitcast<f32>(${j % 2 === 0 ? `${o.reg}${i}[${j >> 1}] << 16u` : `${o.reg}${i}[${j >> 1}] & 0xffff0000u`})`;
        out.push(`    ${o.array}[${base} + ${j}] = f16(${value});`);
      }
    }
  }
  out.push('    workgroupBarrier();');
  // The next step's loads are in flight while this step's products run.
  load(`tf_k0 + ${TD}`, '    ');
  for (let kk = 0; kk < TD; kk += FRAGMENT) {
    for (let i = 0; i < fragRows; i++) out.push(`    let tf_a${kk}_${i} = subgroupMatrixLoad<${left}, row_major>(&tf_as, u32((tf_sm + ${i * FRAGMENT}) * ${S} + ${kk}), ${S}u);`);
    for (let o = 0; o < ops; o++) {
      for (let j = 0; j < fragColumns; j++) {
        out.push(`    let tf_b${kk}_${o}_${j} = subgroupMatrixLoad<${right}, col_major>(&tf_bs${o}, u32((tf_sn + ${j * FRAGMENT}) * ${S} + ${kk}), ${S}u);`);
        for (let i = 0; i < fragRows; i++) out.push(`    tf_c${o}_${i}_${j} = subgroupMatrixMultiplyAccumulate(tf_a${kk}_${i}, tf_b${kk}_${o}_${j}, tf_c${o}_${i}_${j});`);
      }
    }
  }
  out.push('    workgroupBarrier();');
  out.push('  }');
  // The epilogue, a fragment at a time through the subgroup's scratch.
  const scratch = ops * FRAGMENT * FRAGMENT;
  for (let i = 0; i < fragRows; i++) {
    for (let j = 0; j < fragColumns; j++) {
      for (let o = 0; o < ops; o++) out.push(`  subgroupMatrixStore<row_major>(&tf_cs, u32(tf_sg * ${scratch} + ${o * FRAGMENT * FRAGMENT}), tf_c${o}_${i}_${j}, ${FRAGMENT}u);`);
      out.push('  workgroupBarrier();');
      out.push(`  for (var tf_e: i32 = lid % ${LANES}; tf_e < ${FRAGMENT * FRAGMENT}; tf_e += ${LANES}) {`);
      out.push(`    let ${g.m} = tf_m0 + tf_sm + ${i * FRAGMENT} + tf_e / ${FRAGMENT};`);
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
  }
  return { decls, body: out, vec4Buffers: [...new Set(operands.filter((o) => o.vector > 1).map((o) => o.buf))] };
}
