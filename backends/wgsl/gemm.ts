// A GEMM kernel (KernelIR.gemm) in WGSL: each workgroup computes a tile of rows × columns. Per step it stages
// `tileDepth` columns of the left operand (the prologue computed as it loads) and as many rows of each right operand
// in workgroup memory, loading the next step's into registers while this step's products run (stageOperands); then
// either each thread accumulates a 4 × 4 block of outputs with f32 multiply-adds, or each subgroup a block of 16 × 16
// fragments on subgroup matrices (f16 operands, f32 results).

import { DType } from '../../ir/dtype.ts';
import { GemmIR, KExpr } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { GemmPlan, ShortTile, StagedLoads, subgroupMatrixBytes } from '../schedule.ts';

/** A GEMM tile's shader parts: workgroup memory, the body of `main`, and the buffers it reads through vec4 bindings. */
export interface RenderedGemm {
  readonly decls: string[];
  readonly body: string[];
  readonly vec4Buffers: readonly number[];
}

/** Workgroup-memory declarations and the body of `main` (after `row` and `lid` are bound). */
export function renderGemmWgsl(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number): RenderedGemm {
  if (plan.units === 'subgroup-matrix-f16') return subgroupMatrixTiles(g, plan, p, rows, threads);
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = plan;
  const per = 4;
  if (plan.units !== 'fma' || !plan.loads || (TM / per) * (TN / per) !== threads) throw new Error(`WGSL: no GEMM tiles of ${TM} × ${TN} (${plan.units}) for ${threads} threads`);
  const decls = [`var<workgroup> tf_as: array<f32, ${TM * TD}>;`];
  g.b.forEach((_, i) => decls.push(`var<workgroup> tf_bs${i}: array<f32, ${TN * TD}>;`));
  const c: TileContext = { g, p, rows, threads, vec4Buffers: new Set() };
  const out = tileSteps(c, { ...plan, loads: plan.loads }, 'depth-major-f32', (o) => {
    o.push(`  let tf_tr = (lid / ${TN / per}) * ${per};`);
    o.push(`  let tf_tc = (lid % ${TN / per}) * ${per};`);
    g.accs.forEach((acc) => o.push(`  var ${acc}_t: array<f32, ${per * per}>;`));
  }, (o) => {
    o.push(`    for (var tf_d: i32 = 0; tf_d < ${TD}; tf_d++) {`);
    for (let i = 0; i < per; i++) o.push(`      let tf_a${i} = tf_as[tf_d * ${TM} + tf_tr + ${i}];`);
    g.b.forEach((_, b) => {
      for (let j = 0; j < per; j++) {
        o.push(`      let tf_b${b}_${j} = tf_bs${b}[tf_d * ${TN} + tf_tc + ${j}];`);
        for (let i = 0; i < per; i++) o.push(`      ${g.accs[b]}_t[${i * per + j}] += tf_a${i} * tf_b${b}_${j};`);
      }
    });
    o.push('    }');
  });
  // The epilogue at each output of the thread's block.
  out.push(`  for (var tf_i: i32 = 0; tf_i < ${per * per}; tf_i++) {`);
  epilogue(c, `tf_m0 + tf_tr + tf_i / ${per}`, `tf_n0 + tf_tc + tf_i % ${per}`, (o) => `${g.accs[o]}_t[tf_i]`, '    ', out);
  out.push('  }');
  return { decls, body: out, vec4Buffers: [...c.vec4Buffers] };
}

/** What a tile's printers share: the GEMM, the printer, the rows' extent, the threads, and the buffers read wide. */
interface TileContext {
  readonly g: GemmIR;
  readonly p: ExprPrinter;
  /** The GEMM's rows, as printed. */
  readonly rows: string;
  readonly threads: number;
  /** The buffers the tile reads through their vec4 bindings (filled as it prints). */
  readonly vec4Buffers: Set<number>;
}

/**
 * A tile up to its epilogue: its origin (tf_m0, tf_n0), what `setup` declares, and the loop over the depth's steps,
 * in which each step's operands are stored to workgroup memory (stageOperands) and `step` prints its products while
 * the loads of the next `stages` steps are in flight.
 */
function tileSteps(c: TileContext, tile: TileShape, layout: StagingLayout, setup: (out: string[]) => void, step: (out: string[]) => void, stages = 1): string[] {
  const out: string[] = [];
  const rowTiles = c.p.expr(tile.rowTiles, out, '  ');
  out.push(`  let tf_m0 = (row % ${rowTiles}) * ${tile.tileRows};`);
  out.push(`  let tf_n0 = (row / ${rowTiles}) * ${tile.tileColumns};`);
  setup(out);
  const staging = stageOperands(c, tile, layout, stages, out);
  const TD = tile.tileDepth;
  const span = stages * TD;
  for (let s = 0; s < stages; s++) staging.load(String(s * TD), '  ', s);
  out.push(`  for (var tf_k0: i32 = 0; tf_k0 < ${c.g.depth}; tf_k0 += ${span}) {`);
  // With several stages each takes its own registers, the loop unrolled by them: a step stores the registers
  // loaded `stages` steps earlier and reloads them for `stages` steps later. (A step past the depth is skipped; the
  // condition is uniform.)
  for (let s = 0; s < stages; s++) {
    const indent = stages > 1 ? '      ' : '    ';
    if (stages > 1) out.push(c.g.depth % span && s > 0 ? `    if (tf_k0 + ${s * TD} < ${c.g.depth}) {` : '    {');
    staging.store(indent, s);
    out.push(`${indent}workgroupBarrier();`);
    staging.load(`tf_k0 + ${s * TD + span}`, indent, s);
    const body: string[] = [];
    step(body);
    out.push(...body.map((l) => (stages > 1 ? `  ${l}` : l)));
    out.push(`${indent}workgroupBarrier();`);
    if (stages > 1) out.push('    }');
  }
  out.push('  }');
  return out;
}

/** Lanes of a subgroup the subgroup-matrix tiles are placed for (the device is opened with them only where exact). */
const LANES = 32;
/** Rows, columns and depth of one subgroup-matrix product. */
const FRAGMENT = 16;
/** How the 8 subgroups of a workgroup share a tile: 4 along the rows, 2 along the columns. */
const [SUBGROUP_ROWS, SUBGROUP_COLUMNS] = [4, 2];
const LEFT = `subgroup_matrix_left<f16, ${FRAGMENT}, ${FRAGMENT}>`;
const RIGHT = `subgroup_matrix_right<f16, ${FRAGMENT}, ${FRAGMENT}>`;
const RESULT = `subgroup_matrix_result<f32, ${FRAGMENT}, ${FRAGMENT}>`;

/** A tile's shape, rows, columns and depth per step, and how its staging loads read (GemmPlan or its ShortTile). */
interface TileShape {
  readonly tileRows: number;
  readonly tileColumns: number;
  readonly tileDepth: number;
  readonly rowTiles: KExpr;
  readonly loads: StagedLoads;
}

/**
 * GEMM tiles on subgroup matrices: the plan's tiles, and where it has a short tile, those for fewer rows than its
 * `below`. Both stage their operands the same way (stageOperands) into the same workgroup arrays, sized for the
 * larger of the two (subgroupMatrixBytes).
 */
function subgroupMatrixTiles(g: GemmIR, plan: GemmPlan, p: ExprPrinter, rows: string, threads: number): RenderedGemm {
  if (threads !== LANES * SUBGROUP_ROWS * SUBGROUP_COLUMNS) throw new Error(`WGSL: subgroup-matrix tiles are placed for ${LANES * SUBGROUP_ROWS * SUBGROUP_COLUMNS} threads, not ${threads}`);
  const [left, right, scratch] = subgroupMatrixBytes(g, plan);
  const decls = [`var<workgroup> tf_as: array<f16, ${left / 2}>;`];
  g.b.forEach((_, o) => decls.push(`var<workgroup> tf_bs${o}: array<f16, ${right / 2 / g.b.length}>;`));
  decls.push(`var<workgroup> tf_cs: array<f32, ${scratch / 4}>;`);
  if (!plan.loads) throw new Error('WGSL: subgroup-matrix tiles without staged loads');
  const c: TileContext = { g, p, rows, threads, vec4Buffers: new Set() };
  const tiles = subgroupMatrixTile(c, { ...plan, loads: plan.loads });
  if (!plan.shortTile) return { decls, body: tiles, vec4Buffers: [...c.vec4Buffers] };
  const short = shortSubgroupMatrixTile(c, plan.shortTile);
  const indent = (lines: string[]) => lines.map((l) => `  ${l}`);
  return { decls, body: [`  if (${rows} < ${plan.shortTile.below}) {`, ...indent(short), '  } else {', ...indent(tiles), '  }'], vec4Buffers: [...c.vec4Buffers] };
}

/** How staged operands lie in workgroup memory: f16 rows padded by 8 (subgroup matrices), or f32 depth-major. */
type StagingLayout = 'rows-f16' | 'depth-major-f32';

/**
 * The operands' staging: registers for a step, the code that loads a step into them (`k0` its first depth), and
 * the code that stores them to workgroup memory in the layout given. Each load reads as many elements as the
 * schedule says (StagedLoads): 4 or 8 through the buffer's vec4 binding (added to `vec4Buffers`), else one value a
 * thread and register, neighbouring threads along the depth.
 */
function stageOperands(c: TileContext, tile: TileShape, layout: StagingLayout, stages: number, out: string[]) {
  const { g, p, rows, threads, vec4Buffers } = c;
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = tile;
  const S = TD + 8;
  const operands = [
    { e: g.a, v: g.m, extent: rows, tile: TM, base: 'tf_m0', array: 'tf_as', reg: 'tf_ra' },
    ...g.b.map((e, o) => ({ e, v: g.n, extent: String(g.columns), tile: TN, base: 'tf_n0', array: `tf_bs${o}`, reg: `tf_rb${o}_` })),
  ].map((o, i) => {
    const e = o.e;
    const vector = i === 0 ? tile.loads.left : tile.loads.right[i - 1];
    // A thread's registers hold whole runs: threads a multiple of the runs in a tile row (some threads idle where
    // the tile has fewer runs than threads).
    const total = (o.tile * TD) / vector;
    if (threads % (TD / vector) !== 0 || (total > threads && total % threads !== 0)) throw new Error(`WGSL: a ${o.tile} × ${TD} operand tile is not a whole number of loads for ${threads} threads`);
    if (vector > 1 && e.k === 'load') vec4Buffers.add(e.buf);
    const f16 = vector === 8 && p.buffers[(e as Extract<KExpr, { k: 'load' }>).buf].dtype === DType.F16;
    return { ...o, vector, f16, loads: Math.ceil(total / threads), runs: TD / vector, busy: total < threads ? `lid < ${total}` : undefined };
  });
  // A stage's registers: stage 0's keep the plain names.
  const reg = (o: { reg: string }, i: number, stage: number) => `${o.reg}${i}${stage ? `_s${stage}` : ''}`;
  for (let st = 0; st < stages; st++) for (const o of operands) for (let i = 0; i < o.loads; i++) out.push(`  var ${reg(o, i, st)}: ${o.vector === 4 ? 'vec4<f32>' : o.vector === 8 ? 'vec4<u32>' : 'f32'};`);
  // Register i of a thread holds run (lid + i · threads) of the tile: tile row (column) run / runs, depth
  // (run % runs) · vector.
  const load = (k0: string, indent: string, stage: number) => {
    for (const o of operands) {
      for (let i = 0; i < o.loads; i++) {
        const r = reg(o, i, stage);
        out.push(`${indent}{`);
        out.push(`${indent}  let ${o.v} = ${o.base} + lid / ${o.runs} + ${(i * threads) / o.runs};`);
        out.push(`${indent}  let ${g.k} = ${k0} + (lid % ${o.runs}) * ${o.vector};`);
        out.push(`${indent}  ${r} = ${o.vector === 4 ? 'vec4<f32>()' : o.vector === 8 ? 'vec4<u32>()' : '0.0'};`);
        out.push(`${indent}  if (${o.busy ? `${o.busy} && ` : ''}${o.v} < ${o.extent} && ${g.k} < ${g.depth}) {`);
        if (o.vector === 1) out.push(`${indent}    ${r} = ${p.expr(o.e, out, `${indent}    `)};`);
        else out.push(`${indent}    ${r} = b${(o.e as Extract<KExpr, { k: 'load' }>).buf}_v4[${p.expr((o.e as Extract<KExpr, { k: 'load' }>).index, out, `${indent}    `)} / ${o.vector}];`);
        out.push(`${indent}  }`, `${indent}}`);
      }
    }
  };
  // Where element (tile row or column r, depth d) of an operand goes: row r of TD + 8 (f16, for subgroup matrices),
  // or depth d of the tile's rows (f32, for multiply-adds reading neighbouring rows).
  const place = (tileRows: number, r: string, d: string) => (layout === 'rows-f16' ? `(${r}) * ${S} + ${d}` : `(${d}) * ${tileRows} + ${r}`);
  const convert = (v: string) => (layout === 'rows-f16' ? `f16(${v})` : v);
  const store = (indent: string, stage: number) => {
    for (const o of operands) {
      for (let i = 0; i < o.loads; i++) {
        const name = reg(o, i, stage);
        const [r, d] = [`lid / ${o.runs} + ${(i * threads) / o.runs}`, `(lid % ${o.runs}) * ${o.vector}`];
        if (o.busy) out.push(`${indent}if (${o.busy}) {`);
        const ind = o.busy ? `${indent}  ` : indent;
        if (o.vector === 1) out.push(`${ind}${o.array}[${place(o.tile, r, d)}] = ${convert(name)};`);
        for (let j = 0; o.vector > 1 && j < o.vector; j++) {
          // bf16 and f16 words: the element at the even position is the low half.
          const word = `${name}[${j >> 1}]`;
          const value = o.vector === 4 ? `${name}[${j}]` : o.f16 ? `unpack2x16float(${word})[${j % 2}]` : `bitcast<f32>(${j % 2 === 0 ? `${word} << 16u` : `${word} & 0xffff0000u`})`;
          out.push(`${ind}${o.array}[${place(o.tile, r, `${d} + ${j}`)}] = ${convert(value)};`);
        }
        if (o.busy) out.push(`${indent}}`);
      }
    }
  };
  return { load, store };
}

/** The epilogue at the tile's output (m, n), each product's result read by `acc(o)`. */
function epilogue(c: TileContext, m: string, n: string, acc: (o: number) => string, indent: string, out: string[]): void {
  const { g, p, rows } = c;
  out.push(`${indent}let ${g.m} = ${m};`, `${indent}let ${g.n} = ${n};`);
  out.push(`${indent}if (${g.m} < ${rows} && ${g.n} < ${g.columns}) {`);
  g.accs.forEach((a, o) => out.push(`${indent}  let ${a} = ${acc(o)};`));
  for (const st of g.stores) {
    const value = p.expr(st.value, out, `${indent}  `);
    out.push(`${indent}  store_b${st.buf}(${p.expr(st.index, out, `${indent}  `)}, ${value});`);
  }
  out.push(`${indent}}`);
}

/**
 * The plan's tile: each of the 8 subgroups a block of (tileRows / 4) × (tileColumns / 2), whose results it keeps in
 * subgroup matrices; the next step's operands load while this step's products run. At the end each subgroup stores
 * one fragment of each product at a time to its own f32 scratch, from which its lanes run the epilogue, 8 outputs
 * each.
 */
function subgroupMatrixTile(c: TileContext, tile: TileShape): string[] {
  const g = c.g;
  const { tileRows: TM, tileColumns: TN, tileDepth: TD } = tile;
  const [ops, S] = [g.b.length, TD + 8];
  const [fragRows, fragColumns] = [TM / (FRAGMENT * SUBGROUP_ROWS), TN / (FRAGMENT * SUBGROUP_COLUMNS)];
  if (!Number.isInteger(fragRows) || !Number.isInteger(fragColumns) || TD % FRAGMENT !== 0) throw new Error(`WGSL: no subgroup-matrix tiles of ${TM} × ${TN} × ${TD}`);
  const out = tileSteps(c, tile, 'rows-f16', (o) => {
    o.push(`  let tf_sg = lid / ${LANES};`);
    o.push(`  let tf_sm = (tf_sg / ${SUBGROUP_COLUMNS}) * ${fragRows * FRAGMENT};`);
    o.push(`  let tf_sn = (tf_sg % ${SUBGROUP_COLUMNS}) * ${fragColumns * FRAGMENT};`);
    for (let b = 0; b < ops; b++) for (let i = 0; i < fragRows; i++) for (let j = 0; j < fragColumns; j++) o.push(`  var tf_c${b}_${i}_${j} = ${RESULT}();`);
  }, (o) => {
    for (let kk = 0; kk < TD; kk += FRAGMENT) {
      for (let i = 0; i < fragRows; i++) o.push(`    let tf_a${kk}_${i} = subgroupMatrixLoad<${LEFT}, row_major>(&tf_as, u32((tf_sm + ${i * FRAGMENT}) * ${S} + ${kk}), ${S}u);`);
      for (let b = 0; b < ops; b++) {
        for (let j = 0; j < fragColumns; j++) {
          o.push(`    let tf_b${kk}_${b}_${j} = subgroupMatrixLoad<${RIGHT}, col_major>(&tf_bs${b}, u32((tf_sn + ${j * FRAGMENT}) * ${S} + ${kk}), ${S}u);`);
          for (let i = 0; i < fragRows; i++) o.push(`    tf_c${b}_${i}_${j} = subgroupMatrixMultiplyAccumulate(tf_a${kk}_${i}, tf_b${kk}_${b}_${j}, tf_c${b}_${i}_${j});`);
        }
      }
    }
  });
  // The epilogue, a fragment at a time through the subgroup's scratch.
  const scratch = ops * FRAGMENT * FRAGMENT;
  for (let i = 0; i < fragRows; i++) {
    for (let j = 0; j < fragColumns; j++) {
      for (let o = 0; o < ops; o++) out.push(`  subgroupMatrixStore<row_major>(&tf_cs, u32(tf_sg * ${scratch} + ${o * FRAGMENT * FRAGMENT}), tf_c${o}_${i}_${j}, ${FRAGMENT}u);`);
      out.push('  workgroupBarrier();');
      out.push(`  for (var tf_e: i32 = lid % ${LANES}; tf_e < ${FRAGMENT * FRAGMENT}; tf_e += ${LANES}) {`);
      epilogue(c, `tf_m0 + tf_sm + ${i * FRAGMENT} + tf_e / ${FRAGMENT}`, `tf_n0 + tf_sn + ${j * FRAGMENT} + tf_e % ${FRAGMENT}`,
        (o) => `tf_cs[tf_sg * ${scratch} + ${o * FRAGMENT * FRAGMENT} + tf_e]`, '    ', out);
      out.push('  }');
      out.push('  workgroupBarrier();');
    }
  }
  return out;
}

/**
 * The short tile (GemmPlan.shortTile): tileRows × tileColumns (one or two fragments of columns), each of the 8
 * subgroups a 16-deep slice of every step for all the tile's fragments. At the end the subgroups' sums of one product
 * and fragment column at a time go through the scratch, each thread adding the 8 partial sums of its outputs in the
 * order of the depth; then the epilogue.
 */
function shortSubgroupMatrixTile(c: TileContext, tile: ShortTile): string[] {
  const { g, threads } = c;
  const { tileRows: TM, tileColumns: TN, tileDepth: TD, loads } = tile;
  if (!loads) throw new Error('WGSL: a short tile without its staging loads');
  const [ops, S, subgroups] = [g.b.length, TD + 8, threads / LANES];
  const [fragRows, fragColumns] = [TM / FRAGMENT, TN / FRAGMENT];
  if (!Number.isInteger(fragColumns) || TD !== FRAGMENT * subgroups || !Number.isInteger(fragRows)) throw new Error(`WGSL: no short subgroup-matrix tiles of ${TM} × ${TN} × ${TD}`);
  const out = tileSteps(c, { ...tile, loads }, 'rows-f16', (o) => {
    o.push(`  let tf_sk = (lid / ${LANES}) * ${FRAGMENT};`);
    for (let b = 0; b < ops; b++) for (let i = 0; i < fragRows; i++) for (let j = 0; j < fragColumns; j++) o.push(`  var tf_c${b}_${i}_${j} = ${RESULT}();`);
  }, (o) => {
    for (let i = 0; i < fragRows; i++) o.push(`    let tf_a${i} = subgroupMatrixLoad<${LEFT}, row_major>(&tf_as, u32(${i * FRAGMENT * S} + tf_sk), ${S}u);`);
    for (let b = 0; b < ops; b++) {
      for (let j = 0; j < fragColumns; j++) {
        // Columns j · 16 onwards: rows of the staged right operand, S apart.
        o.push(`    let tf_b${b}_${j} = subgroupMatrixLoad<${RIGHT}, col_major>(&tf_bs${b}, u32(${j * FRAGMENT * S} + tf_sk), ${S}u);`);
        for (let i = 0; i < fragRows; i++) o.push(`    tf_c${b}_${i}_${j} = subgroupMatrixMultiplyAccumulate(tf_a${i}, tf_b${b}_${j}, tf_c${b}_${i}_${j});`);
      }
    }
  }, tile.stagesAhead ?? 1);
  // Each thread's outputs of a fragment column: e = lid + q · threads of its TM × 16, fragment e / 256, place e % 256.
  const perThread = (TM * FRAGMENT) / threads;
  const frag = FRAGMENT * FRAGMENT;
  for (let o = 0; o < ops; o++) {
    for (let j = 0; j < fragColumns; j++) {
      for (let i = 0; i < fragRows; i++) out.push(`  subgroupMatrixStore<row_major>(&tf_cs, u32((lid / ${LANES}) * ${fragRows * frag} + ${i * frag}), tf_c${o}_${i}_${j}, ${FRAGMENT}u);`);
      out.push('  workgroupBarrier();');
      for (let q = 0; q < perThread; q++) {
        const terms = Array.from({ length: subgroups }, (_, sg) => `tf_cs[${sg * fragRows * frag} + lid + ${q * threads}]`);
        out.push(`  let tf_s${o}_${j}_${q} = ${terms.join(' + ')};`);
      }
      out.push('  workgroupBarrier();');
    }
  }
  for (let j = 0; j < fragColumns; j++) {
    for (let q = 0; q < perThread; q++) {
      out.push('  {');
      // Output e = lid + q · threads is fragment row e / 256 (16 rows each), place e % 256 in it.
      epilogue(c, `tf_m0 + (lid + ${q * threads}) / ${frag} * ${FRAGMENT} + ((lid + ${q * threads}) % ${frag}) / ${FRAGMENT}`, `tf_n0 + ${j * FRAGMENT} + (lid + ${q * threads}) % ${FRAGMENT}`,
        (o) => `tf_s${o}_${j}_${q}`, '    ', out);
      out.push('  }');
    }
  }
  return out;
}
