// A scheduled kernel as text: the grid on top, then one line per statement with how threads share it and how its
// reductions run. Deterministic (tests pin it as golden text; --dump-kernels writes it next to each kernel):
//
//   kernel k0 (reduce) on webgpu with subgroups: 64 rows, a workgroup of 256 threads each
//     let c0: uniform
//     array arr2[8] over j3: sliced x32 | k4 sum<4096 by slices, unroll 4
//     store b1 over i1<8: thread-per-element

import { BinaryOp, KExpr, KStmt, reductionsOf } from './kernel-ir.ts';
import { Mapping, ReductionPlan, ScheduledKernel, StagedLoads, StmtSchedule, VectorPlan } from './schedule.ts';
import { Stream } from './schedule-vector.ts';

export function formatSchedule(s: ScheduledKernel): string {
  const k = s.kernel;
  const g = s.grid;
  const rows = `${formatSize(g.rows)} ${g.rows.k === 'const' && g.rows.value === 1 ? 'row' : 'rows'}`;
  const shared = g.sharedStatements === undefined ? ''
    : `${formatSize(k.rows)} rows, ${g.rowsPerWorkgroup} a workgroup (the first ${g.sharedStatements === 1 ? 'statement' : `${g.sharedStatements} statements`} once for them, the rest row by row): `;
  const grid = g.overflow === 'serial'
    ? `${rows}, one after another`
    : shared ? `${shared}${formatSize(g.rows)} workgroups of ${g.threads} threads`
      : `${rows}, a workgroup of ${g.threads} threads each${g.overflow === 'grid-stride' ? ' (striding over rows past the grid)' : ''}`;
  const lines = [`kernel ${k.name} (${k.kind}) on ${s.device.name}: ${grid}${s.subgroups ? ', subgroups' : ''}`];
  const placed = s.arrays.filter((a) => a.vec4 || a.dynamicOffset !== undefined);
  if (placed.length) {
    const where = placed.map((a) => `${a.name}${a.vec4 ? ' as vec4' : ''}${a.dynamicOffset !== undefined ? ` at ${a.dynamicOffset} of ${s.dynamicWorkgroupBytes} bytes given at launch` : ''}`);
    lines.push(`  arrays: ${where.join(', ')}`);
  }
  if (s.tilesFrom !== 0) k.body.forEach((st, i) => lines.push(`  ${formatStmt(st, s.stmts[i])}`));
  if (s.flash?.units === 'decode' && s.tilesFrom) lines.push('  launched, the decode form below; in a megakernel, the rows above');
  else if (s.tilesFrom !== undefined && s.tilesFrom > 0) lines.push(`  from ${s.tilesFrom} rows, the tiles below; fewer, the rows above`);
  if (k.gemm && s.gemm) {
    const p = s.gemm;
    const staging = p.staging?.kind === 'async'
      ? `copied by cp.async ${p.staging.stages} stages deep, the left operand ${p.staging.left === 'bf16' ? 'stored as bf16 by its writer' : 'rounded to bf16 as fragments are read'}`
      : 'staged through registers, the left operand rounded to bf16';
    // The parts are an expression of the rows (long when printed): what it decides, in words.
    const split = p.split ? `; while tiles × 2 ≤ ${2 * p.split.counters}, each tile's depth split among the most workgroups (2 to ${p.split.maxParts}) that keep parts × tiles ≤ ${2 * p.split.counters}, the last to finish adding the parts in order` : '';
    const wgmma = p.staging?.kind === 'async' ? `bf16 warpgroup matrix instructions (wgmma m64n${p.tileColumns}k16 from shared memory, f32 accumulators), copied by cp.async ${p.staging.stages} stages deep in the 128-byte swizzle (TSFUSE_GEMM=mma: mma.sync instead)` : '';
    const units = { 'mma-bf16': `bf16 matrix instructions (mma m16n8k16, f32 accumulators), ${staging}`, 'wgmma-bf16': wgmma,
      'subgroup-matrix-f16': `f16 subgroup matrices (16 × 16 × 16, f32 results), each of 8 subgroups ${p.tileRows / 4} × ${p.tileColumns / 2} of the tile, staged through registers a step ahead, the left operand rounded to f16`,
      fma: 'f32 multiply-adds, 4 × 4 outputs per thread', serial: 'one row at a time' }[p.units];
    // Which operands a WGSL tile's staging reads 16 bytes a load (StagedLoads).
    const wide = (l: StagedLoads | undefined) => {
      const names = l ? [...(l.left > 1 ? ['left'] : []), ...l.right.flatMap((n, i) => (n > 1 ? [`right ${i}`] : []))] : [];
      return names.length ? `; 16-byte staging loads: ${names.join(', ')}` : '';
    };
    const t = p.shortTile;
    const shortForm = t && (p.units === 'subgroup-matrix-f16'
      ? `${t.tileDepth} deep per step, each subgroup a ${t.tileDepth / 8}-deep slice of it, the slices' sums added in order at the end${wide(t.loads)}${(t.stagesAhead ?? 1) > 1 ? `, the staging loads ${t.stagesAhead} steps ahead` : ''}`
      : `the left operand's rows of the tile's part of the depth copied once ${t.bulkLeft ? 'by bulk copies (a lane a row, a barrier a group)' : 'by cp.async'}, each warp 8 columns of every row, its weights read 16 bytes a lane straight into the mma registers${t.weightsOnce ? ' (read once: evicted from L2 first)' : ''}, two steps of ${t.tileDepth} ahead${s.overlap ? " (the first two before the wait for the previous kernel)" : ""}${t.split ? `, the depth split in ${t.split.maxParts} parts, ${t.cluster ? "a cluster of workgroups whose warps each add every part's sums of their columns from the others' shared memory (where the device runs all the grid's clusters at once; else the last to finish adds them in order)" : 'the last to finish adding them in order'}` : ''}`);
    const short = t ? `; below ${t.below} rows, tiles of ${t.tileRows} × ${t.tileColumns} (${formatSize(t.rowTiles)} × ${t.columnTiles}), ${shortForm}` : '';
    lines.push(`  gemm ${formatSize(k.gemm.rows)} × ${k.gemm.columns} over ${k.gemm.depth}, ${k.gemm.b.length} product${k.gemm.b.length > 1 ? 's' : ''}: tiles of ${p.tileRows} × ${p.tileColumns} (${formatSize(p.rowTiles)} × ${p.columnTiles}), ${p.tileDepth} deep per step, ${units}${wide(p.loads)}${split}${short}`);
  }
  if (k.flash && s.flash) {
    const f = k.flash;
    const p = s.flash;
    const skip = f.limit ? ', key tiles past the causal bound skipped' : '';
    lines.push(p.units === 'serial'
      ? `  flash attention ${f.batch} × ${formatSize(f.queries)} queries over ${f.keys} keys (head ${f.depth}): row by row, online softmax${skip}`
      : p.units === 'decode'
        ? `  decode attention ${f.batch} heads × 1 query over ${f.keys} keys (head ${f.depth}): a workgroup a head${p.keyChunks ? ` and ${p.keyChunks.keys} keys (${p.keyChunks.count} chunks, ${s.device.target === 'wgsl' ? `merged by a second dispatch, a workgroup a head, ${p.keyChunks.mergeBatch ?? 1} chunk${(p.keyChunks.mergeBatch ?? 1) > 1 ? 's' : ''} a round trip` : 'the last of a head to finish merging them in order'})` : ''}, ${p.tileKeys} groups of ${f.depth / 8} lanes each taking a key at a time, ${p.keyUnroll} keys' and values' 16-byte loads issued together, an online softmax per group, the groups merged at the end${f.limit ? ', keys past the causal bound not read' : ''}${f.updates ? `; this step's new key and value rows computed here, their cache writes shared among the heads${p.updateShare ? ` (a head ${p.updateShare.perHead} elements of each${p.updateShare.firstThread ? `, on its threads from ${p.updateShare.firstThread}, which the query leaves idle` : ''})` : ''}` : f.fresh?.k?.value || f.fresh?.v?.value ? '; this step\'s new key and value rows computed here (a later kernel writes them; the cache only read)' : ''}${p.earlyKeys ? `; the first step's keys and values loaded before the wait, ${f.updates ? 'the new rows computed' : 'the rows this step writes read again'} after it` : ''}${p.keysAfterRows ? '; the first step\'s keys and values loaded after the new rows (a register cap)' : ''}`
      : p.units === 'mma-bf16'
        ? `  flash attention ${f.batch} × ${formatSize(f.queries)} queries over ${f.keys} keys (head ${f.depth}): tiles of ${p.tileQueries} queries × ${p.tileKeys} keys, a warp per 16 queries${p.keyGroups && p.keyGroups > 1 ? ` and ${p.keyGroups === 2 ? 'half' : `1/${p.keyGroups}`} of each key tile (${p.keyGroups} groups of warps, merged at the end)` : ''}, bf16 matrix instructions (mma m16n8k16, f32 accumulators), online softmax in registers${p.longestFirst ? ', the last query tiles of every head first' : ''}${p.ring ? ', key and value rows copied by cp.async a key tile ahead (two stages)' : `${p.wideRows?.keys ? ', key rows copied by cp.async' : ''}${p.wideRows?.values ? ', value rows copied by cp.async' : ''}`}${skip}`
        : `  flash attention ${f.batch} × ${formatSize(f.queries)} queries over ${f.keys} keys (head ${f.depth}): tiles of ${p.tileQueries} queries × ${p.tileKeys} keys, ${p.threadsPerQuery} threads per query, online softmax, f32${skip}`);
  }
  if (s.workgroupsPerProcessor) lines.push(`  ${s.workgroupsPerProcessor} workgroups a multiprocessor at once (registers capped to fit)${s.flash ? '' : ': one wave'}`);
  if (s.overlap) {
    lines.push('  starts while the previous kernel finishes, then waits for its writes');
  }
  return lines.join('\n') + '\n';
}

function formatStmt(st: KStmt, sched: StmtSchedule): string {
  const reductions = reductionsOf(st);
  const plans = [...sched.reductions].map(([v, plan]) => {
    const r = reductions.get(v);
    return `${v} ${r ? `${r.op}<${formatSize(r.n)} ` : ''}${formatPlan(plan)}`;
  });
  return [`${head(st)}: ${formatMapping(sched.mapping)}`, ...plans].join(' | ');
}

function head(st: KStmt): string {
  switch (st.k) {
    case 'let': return `let ${st.name}`;
    case 'coop': return `coop ${st.name}`;
    case 'array': return `array ${st.name}[${st.n}] over ${st.v}`;
    case 'store': return `store b${st.buf} over ${st.v}<${formatSize(st.n)}`;
    default: return st satisfies never;
  }
}

function formatMapping(m: Mapping): string {
  switch (m.kind) {
    case 'split-subgroups': return `split-subgroups between ${m.elements}`;
    case 'sliced': return `sliced x${m.slices}`;
    case 'thread-per-element':
      if (m.runs) return `thread-per-element, ${m.each} each in runs of 8, vec16B(${streamNames(m.runs)})`;
      return m.each ? `thread-per-element, ${m.each} each unrolled` : m.kind;
    case 'serial': case 'uniform': case 'workgroup': case 'subgroup-per-element': return m.kind;
    default: return m satisfies never;
  }
}

function formatPlan(p: ReductionPlan): string {
  const parts = [`by ${p.lanes}`];
  if (p.combine !== 'none' && p.combine !== 'slices') parts.push(`combine ${p.combine}`);
  if (p.vector) parts.push(formatVector(p.vector));
  if (p.unroll > 1) parts.push(`unroll ${p.unroll}`);
  return parts.join(', ');
}

/** A 16-byte plan's streams: buffers as the printers name them, row-local arrays by name. */
function streamNames(streams: readonly Stream[]): string {
  return streams.map((s) => (s.load.k === 'load' ? `b${s.load.buf}${s.readOnce ? ' once' : ''}` : s.load.array)).join(', ');
}

/**
 * e.g. `vec16B(b0 once, arr2) x8 checked, 8 steps a lane unroll 4`: the streams (`once`: a weight read once, evicted
 * from L2 first), elements per step, how alignment is known,
 * the steps each lane takes where that is one constant, the steps in flight.
 */
function formatVector(v: VectorPlan): string {
  return `vec16B(${streamNames(v.streams)}) x${v.elements} ${v.alignment}${v.steps ? `, ${v.steps} step${v.steps === 1 ? '' : 's'} a lane` : ''}${v.unroll > 1 ? ` unroll ${v.unroll}` : ''}`;
}

const infix: Partial<Record<BinaryOp, string>> = { add: '+', sub: '-', mul: '*', idiv: '/', imod: '%', lt: ' < ' };

/** A size (rows, a loop's extent) as arithmetic over the symbolic sizes: `S*8`. */
export function formatSize(e: KExpr): string {
  switch (e.k) {
    case 'const': return String(e.value);
    case 'var': return e.name;
    case 'binary': {
      const op = infix[e.op];
      const side = (x: KExpr) => (x.k === 'binary' ? `(${formatSize(x)})` : formatSize(x));
      if (op) return `${side(e.a)}${op}${side(e.b)}`;
      return `${e.op}(${formatSize(e.a)}, ${formatSize(e.b)})`;
    }
    case 'select': return `(${formatSize(e.cond)} ? ${formatSize(e.a)} : ${formatSize(e.b)})`;
    default: return `<${e.k}>`;
  }
}
