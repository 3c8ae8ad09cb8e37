// Printing each statement of a row as its schedule maps it onto the workgroup: cooperative reductions (a tree, or
// subgroups), row-local arrays (per thread, sliced, or per subgroup), stores (strided, one subgroup per output, or
// split across subgroups), and sums that read 16 bytes of weights (and of their other factor) per load.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KExpr, KStmt, replaceLoads, replaceReductions, ReduceOp, Scalar, topReductions, varsOf } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { ReductionPlan, StmtSchedule, VectorPlan } from '../schedule.ts';
import { NEG_INF, wgslDialect } from './dialect.ts';

type Reduce = Extract<KExpr, { k: 'reduce' }>;
type Store = Extract<KStmt, { k: 'store' }>;
type ArrayStmt = Extract<KStmt, { k: 'array' }>;

export interface RowContext {
  readonly p: ExprPrinter;
  readonly buffers: readonly KBuffer[];
  readonly threads: number;
  /** Row-local arrays stored as vec4s. */
  readonly vec4Arrays: ReadonlySet<string>;
}

/** Largest i32: the index of an argmax partial that saw nothing above the lowest float. */
const NO_INDEX = 2147483647;

export function renderStmt(s: KStmt, sched: StmtSchedule, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  const plan = (r: Reduce) => sched.reductions.get(r.v);
  const m = sched.mapping;
  switch (s.k) {
    case 'let':
      out.push(`${indent}let ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop':
      renderCoop(s, sched.reductions.get(s.v)!, ctx, out, indent);
      break;
    case 'array': {
      const at = (i: string) => (ctx.vec4Arrays.has(s.name) ? `${s.name}[${i} >> 2u][${i} & 3]` : `${s.name}[${i}]`);
      const [r] = topReductions(s.value);
      const vec = r && plan(r)?.vector;
      if (m.kind === 'thread-per-element' && vec) {
        // Each element a dot product over a contiguous row (attention scores): 16 bytes per load.
        out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${s.n}; ${s.v} += ${ctx.threads}) {`);
        out.push(`${inner}var ${s.name}_part: f32 = 0.0;`);
        renderVectorSum(r, vec, ctx, `${s.name}_part`, '0', '1', out, inner);
        out.push(`${inner}${at(s.v)} = ${p.expr(replaceReductions(s.value, new Map([[r, `${s.name}_part`]])), out, inner)};`);
        out.push(`${indent}}`);
      } else if (m.kind === 'thread-per-element') {
        threadLoop(s.v, String(s.n), m.each, ctx.threads, out, indent);
        out.push(`${inner}${at(s.v)} = ${p.expr(s.value, out, inner)};`);
        out.push(`${indent}}`);
      } else if (m.kind === 'sliced') {
        renderSlicedArray(s, r, plan(r)!, m.slices, ctx, out, indent, at);
      } else if (m.kind === 'subgroup-per-element') {
        renderSubgroupArray(s, ctx, out, indent, at);
      } else {
        throw new Error(`WGSL: an array cannot be mapped ${m.kind}`);
      }
      out.push(`${indent}workgroupBarrier();`);
      break;
    }
    case 'store': {
      if (m.kind === 'split-subgroups') {
        renderSplitSubgroupStore(s, m.elements, sched, ctx, out, indent);
      } else if (m.kind === 'subgroup-per-element') {
        renderSubgroupStore(s, sched, ctx, out, indent);
      } else if (m.kind === 'thread-per-element') {
        threadLoop(s.v, p.expr(s.n, out, indent), m.each, ctx.threads, out, indent);
        const value = p.expr(s.value, out, inner);
        out.push(`${inner}store_b${s.buf}(${p.expr(s.index, out, inner)}, ${value});`);
        out.push(`${indent}}`);
      } else {
        throw new Error(`WGSL: a store cannot be mapped ${m.kind}`);
      }
      break;
    }
    default: s satisfies never;
  }
}

/**
 * The opening of `for (v over [0, n))` spread over the threads; `each` at a thread where the schedule gives every
 * thread the same count (Mapping 'thread-per-element'), in a loop of that constant count for the driver's compiler
 * to unroll.
 */
function threadLoop(v: string, n: string, each: number | undefined, threads: number, out: string[], indent: string): void {
  if (each) out.push(`${indent}for (var tf_e: i32 = 0; tf_e < ${each}; tf_e++) {`, `${indent}  let ${v}: i32 = lid + tf_e * ${threads};`);
  else out.push(`${indent}for (var ${v}: i32 = lid; ${v} < ${n}; ${v} += ${threads}) {`);
}

/** One output per subgroup: the lanes split every sum of its value, subgroupAdd combines, lane 0 stores. */
function renderSubgroupStore(s: Store, sched: StmtSchedule, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  const n = p.expr(s.n, out, indent);
  out.push(`${indent}for (var ${s.v}: i32 = subgroup; ${s.v} < ${n}; ${s.v} += subgroups) {`);
  const names = new Map<Reduce, string>();
  for (const r of topReductions(s.value)) {
    const name = p.fresh();
    const part = `${name}_part`;
    out.push(`${inner}var ${part}: f32 = 0.0;`);
    const vec = sched.reductions.get(r.v)?.vector;
    if (vec) {
      renderVectorSum(r, vec, ctx, part, 'lane', 'lanes', out, inner);
    } else {
      const rn = p.expr(r.n, out, inner);
      out.push(`${inner}for (var ${r.v}: i32 = lane; ${r.v} < ${rn}; ${r.v} += lanes) {`);
      out.push(`${inner}  ${part} = ${part} + ${p.expr(r.body, out, inner + '  ')};`);
      out.push(`${inner}}`);
    }
    out.push(`${inner}let ${name} = subgroupAdd(${part});`);
    names.set(r, name);
  }
  const value = p.expr(replaceReductions(s.value, names), out, inner);
  const index = p.expr(s.index, out, inner);
  out.push(`${inner}if (lane == 0) { store_b${s.buf}(${index}, ${value}); }`);
  out.push(`${indent}}`);
}

/**
 * `slices` threads per element, neighbouring threads on neighbouring elements so that their loads coalesce; each
 * folds every slices-th term, then one thread per element combines the slices through workgroup memory (an argmax
 * keeps the first index of the largest value).
 */
function renderSlicedArray(s: ArrayStmt, r: Reduce, plan: ReductionPlan, slices: number, ctx: RowContext, out: string[], indent: string, at: (i: string) => string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  const part = `${s.name}_part`;
  const best = `${s.name}_best`;
  // What the partials hold: the sum or max itself, or an argmax's best value (with its index in red_i).
  const vt: Scalar = r.op === 'sum' ? 'f32' : r.body.t;
  const values = vt === 'i32' ? 'red_v' : 'red_f';
  out.push(`${indent}var ${part}: ${r.op === 'argmax' ? 'i32' : wgslDialect.type[vt]} = ${r.op === 'argmax' ? NO_INDEX : initial(r.op, vt)};`);
  if (r.op === 'argmax') out.push(`${indent}var ${best}: ${wgslDialect.type[vt]} = ${wgslDialect.lowest(vt)};`);
  out.push(`${indent}if (lid < ${slices * s.n}) {`);
  out.push(`${inner}let ${s.v} = lid % ${s.n};`);
  const rn = p.expr(r.n, out, inner);
  const from = `${r.v}_at`;
  const fold = (q: number, ind: string) => {
    out.push(`${ind}{`);
    out.push(`${ind}  let ${r.v} = ${from} + ${q * slices};`);
    foldInto(r.op, vt, part, best, r.v, p.expr(r.body, out, ind + '  '), out, ind + '  ');
    out.push(`${ind}}`);
  };
  unrolledLoop(from, `lid / ${s.n}`, slices, rn, plan.unroll, fold, out, inner);
  out.push(`${indent}}`);
  out.push(`${indent}${values}[lid] = ${r.op === 'argmax' ? best : part};`);
  if (r.op === 'argmax') out.push(`${indent}red_i[lid] = ${part};`);
  out.push(`${indent}workgroupBarrier();`);
  out.push(`${indent}if (lid < ${s.n}) {`);
  // The element's value after its reduction may read the element's index (a mask by position).
  const total = `${s.name}_sum`;
  const after = replaceReductions(s.value, new Map([[r, total]]));
  if (varsOf(after).has(s.v)) out.push(`${inner}let ${s.v} = lid;`);
  const slot = `q * ${s.n} + lid`;
  if (r.op === 'argmax') {
    out.push(`${inner}var ${total}: i32 = ${NO_INDEX};`);
    out.push(`${inner}var ${total}_best: ${wgslDialect.type[vt]} = ${wgslDialect.lowest(vt)};`);
    out.push(`${inner}for (var q: i32 = 0; q < ${slices}; q++) {`);
    out.push(`${inner}  let b = ${values}[${slot}]; let i = red_i[${slot}];`);
    out.push(`${inner}  if (${argmaxCombines('b', 'i', `${total}_best`, total, vt)}) { ${total}_best = b; ${total} = i; }`);
    out.push(`${inner}}`);
    out.push(`${inner}${total} = select(${total}, 0i, ${total} == ${NO_INDEX});`);
  } else {
    const combine = r.op === 'sum' ? `${total} + red_f[${slot}]` : wgslDialect.binary.max(total, `${values}[${slot}]`, vt);
    out.push(`${inner}var ${total}: ${wgslDialect.type[vt]} = ${initial(r.op, vt)};`);
    out.push(`${inner}for (var q: i32 = 0; q < ${slices}; q++) { ${total} = ${combine}; }`);
  }
  out.push(`${inner}${at('lid')} = ${p.expr(after, out, inner)};`);
  out.push(`${indent}}`);
}

/** A subgroup per element: the lanes split each of its sums, subgroupAdd combines, lane 0 writes. */
function renderSubgroupArray(s: ArrayStmt, ctx: RowContext, out: string[], indent: string, at: (i: string) => string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  out.push(`${indent}for (var ${s.v}: i32 = subgroup; ${s.v} < ${s.n}; ${s.v} += subgroups) {`);
  const reductions = topReductions(s.value);
  const names = new Map<Reduce, string>();
  reductions.forEach((r, i) => {
    const name = reductions.length === 1 ? s.name : `${s.name}_${i}`;
    out.push(`${inner}var ${name}_part: f32 = 0.0;`);
    const rn = p.expr(r.n, out, inner);
    out.push(`${inner}for (var ${r.v}: i32 = lane; ${r.v} < ${rn}; ${r.v} += lanes) {`);
    out.push(`${inner}  ${name}_part = ${name}_part + ${p.expr(r.body, out, inner + '  ')};`);
    out.push(`${inner}}`);
    out.push(`${inner}let ${name}_sum = subgroupAdd(${name}_part);`);
    names.set(r, `${name}_sum`);
  });
  const value = p.expr(replaceReductions(s.value, names), out, inner);
  out.push(`${inner}if (lane == 0) { ${at(s.v)} = ${value}; }`);
  out.push(`${indent}}`);
}

/**
 * Fewer outputs than subgroups (2 or 4 per row): the subgroups of one output split its sums between them as well,
 * and combine through workgroup memory.
 */
function renderSplitSubgroupStore(s: Store, n: number, sched: StmtSchedule, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  const slices = `${s.v}_slices`;
  const slice = `${s.v}_slice`;
  out.push(`${indent}let ${slices} = subgroups / ${n};`);
  out.push(`${indent}let ${s.v} = subgroup % ${n};`);
  out.push(`${indent}let ${slice} = subgroup / ${n};`);
  const reductions = topReductions(s.value);
  const names = new Map<Reduce, string>();
  reductions.forEach((r, ri) => {
    const name = p.fresh();
    const part = `${name}_part`;
    const lane = `(${slice} * lanes + lane)`;
    const lanes = `(${slices} * lanes)`;
    out.push(`${indent}var ${part}: f32 = 0.0;`);
    const vec = sched.reductions.get(r.v)?.vector;
    if (vec) {
      renderVectorSum(r, vec, ctx, part, lane, lanes, out, indent);
    } else {
      const rn = p.expr(r.n, out, indent);
      out.push(`${indent}for (var ${r.v}: i32 = ${lane}; ${r.v} < ${rn}; ${r.v} += ${lanes}) {`);
      out.push(`${inner}${part} = ${part} + ${p.expr(r.body, out, inner)};`);
      out.push(`${indent}}`);
    }
    // Up to 64 subgroups per workgroup (of 4 lanes or more), four reductions in the 256 slots.
    out.push(`${indent}let ${name}_sg = subgroupAdd(${part});`);
    out.push(`${indent}if (lane == 0) { red_f[${ri * 64} + subgroup] = ${name}_sg; }`);
    names.set(r, name);
  });
  out.push(`${indent}workgroupBarrier();`);
  out.push(`${indent}if (${slice} == 0 && lane == 0) {`);
  reductions.forEach((r, ri) => {
    const name = names.get(r)!;
    out.push(`${inner}var ${name}: f32 = 0.0;`);
    out.push(`${inner}for (var q: i32 = 0; q < ${slices}; q++) { ${name} = ${name} + red_f[${ri * 64} + q * ${n} + ${s.v}]; }`);
  });
  const value = p.expr(replaceReductions(s.value, names), out, inner);
  const index = p.expr(s.index, out, inner);
  out.push(`${inner}store_b${s.buf}(${index}, ${value});`);
  out.push(`${indent}}`);
  out.push(`${indent}workgroupBarrier();`);
}

/** Each thread folds a strided share of the range, then the partials combine; every thread gets the result. */
function renderCoop(s: Extract<KStmt, { k: 'coop' }>, plan: ReductionPlan, ctx: RowContext, out: string[], indent: string): void {
  const { p, threads } = ctx;
  const inner = indent + '  ';
  const n = p.expr(s.n, out, indent);
  const t: Scalar = s.op === 'argmax' ? 'i32' : s.body.t;
  // The type of the values compared or added (an argmax's best value, with its index in red_i).
  const vt = s.body.t;
  const part = `${s.name}_part`;
  const best = `${s.name}_best`;
  out.push(`${indent}var ${s.op === 'argmax' ? best : part}: ${wgslDialect.type[vt]} = ${initial(s.op === 'argmax' ? 'max' : s.op, vt)};`);
  if (s.op === 'argmax') out.push(`${indent}var ${part}: i32 = 0i;`);
  const at = `${s.v}_at`;
  const fold = (offset: number, ind: string) => {
    out.push(`${ind}{`);
    out.push(`${ind}  let ${s.v} = ${at} + ${offset * threads};`);
    foldInto(s.op, vt, part, best, s.v, p.expr(s.body, out, ind + '  '), out, ind + '  ');
    out.push(`${ind}}`);
  };
  out.push(`${indent}var ${at}: i32 = lid;`);
  unrolledLoop(at, undefined, threads, n, plan.unroll, fold, out, indent);
  const red = t === 'i32' && s.op !== 'argmax' ? 'red_i' : 'red_f';
  if (plan.combine === 'subgroup') {
    // Subgroups combine their lanes in registers; only one value per subgroup goes through workgroup memory.
    // (subgroupMax may drop NaN: a NaN in any lane makes the result NaN.)
    const sum = s.op === 'sum';
    const sg = sum ? `subgroupAdd(${part})` : `select(subgroupMax(${part}), tf_nan(), subgroupAny(tf_isnan(${part})))`;
    out.push(`${indent}let ${part}_sg = ${sg};`);
    out.push(`${indent}if (lane == 0) { red_f[subgroup] = ${part}_sg; }`);
    out.push(`${indent}workgroupBarrier();`);
    out.push(`${indent}var ${s.name}_sum: f32 = ${sum ? '0.0' : NEG_INF};`);
    out.push(`${indent}for (var w: i32 = 0; w < subgroups; w++) { ${s.name}_sum = ${sum ? `${s.name}_sum + red_f[w]` : `tf_max(${s.name}_sum, red_f[w])`}; }`);
    out.push(`${indent}let ${s.name} = ${s.name}_sum;`);
    out.push(`${indent}workgroupBarrier();`);
    return;
  }
  const values = vt === 'i32' ? 'red_v' : 'red_f';
  if (s.op === 'argmax') {
    out.push(`${indent}${values}[lid] = ${best}; red_i[lid] = ${part};`);
  } else {
    out.push(`${indent}${red}[lid] = ${part};`);
  }
  out.push(`${indent}workgroupBarrier();`);
  out.push(`${indent}for (var w: i32 = ${threads / 2}; w > 0; w = w / 2) {`);
  out.push(`${inner}if (lid < w) {`);
  if (s.op === 'sum') out.push(`${inner}  ${red}[lid] = ${red}[lid] + ${red}[lid + w];`);
  else if (s.op === 'max') out.push(`${inner}  ${red}[lid] = ${wgslDialect.binary.max(`${red}[lid]`, `${red}[lid + w]`, t)};`);
  else {
    // Keep the first maximum: the lower index wins ties (and NaN wins, as the largest).
    out.push(`${inner}  let a = ${values}[lid]; let b = ${values}[lid + w];`);
    out.push(`${inner}  if (${argmaxCombines('b', `red_i[lid + w]`, 'a', 'red_i[lid]', vt)}) { ${values}[lid] = b; red_i[lid] = red_i[lid + w]; }`);
  }
  out.push(`${inner}}`);
  out.push(`${inner}workgroupBarrier();`);
  out.push(`${indent}}`);
  out.push(`${indent}let ${s.name} = ${s.op === 'argmax' ? 'red_i' : red}[0];`);
  // The next reduction reuses the scratch: wait until every thread has read this result.
  out.push(`${indent}workgroupBarrier();`);
}

/** Where a sum or max starts: 0, or the lowest value of its type. */
const initial = (op: 'sum' | 'max', t: Scalar) => (op === 'sum' ? wgslDialect.literal(0, t) : wgslDialect.lowest(t));

/** Folds x (at loop index v) into a partial: a sum, a max, or an argmax keeping the first largest value (or NaN). */
function foldInto(op: ReduceOp, t: Scalar, part: string, best: string, v: string, x: string, out: string[], indent: string): void {
  if (op === 'sum') out.push(`${indent}${part} = ${part} + ${x};`);
  else if (op === 'max') out.push(`${indent}${part} = ${wgslDialect.binary.max(part, x, t)};`);
  else out.push(`${indent}if (${wgslDialect.argmaxTakes(x, best, t)}) { ${best} = ${x}; ${part} = ${v}; }`);
}

/** Whether the argmax partial (b at index ib) replaces (a at ia): NaN first, then larger, then the lower index. */
function argmaxCombines(b: string, ib: string, a: string, ia: string, t: Scalar): string {
  return t === 'f32' ? `tf_argmax_takes(${b}, ${ib}, ${a}, ${ia})` : `(${b} > ${a} || (${b} == ${a} && ${ib} < ${ia}))`;
}

/**
 * `for (at = from; at < n; at += step)`, `unroll` steps per iteration, each printed by `fold(q)` in a block of its
 * own so that their loads are in flight together; then the rest one step at a time. `from` undefined: `at` is
 * declared already.
 */
function unrolledLoop(at: string, from: string | undefined, step: number, n: string, unroll: number, fold: (q: number, indent: string) => void, out: string[], indent: string): void {
  const inner = indent + '  ';
  if (from !== undefined) out.push(`${indent}var ${at}: i32 = ${from};`);
  if (unroll > 1) {
    out.push(`${indent}for (; ${at} + ${(unroll - 1) * step} < ${n}; ${at} += ${unroll * step}) {`);
    for (let q = 0; q < unroll; q++) fold(q, inner);
    out.push(`${indent}}`);
  }
  out.push(`${indent}for (; ${at} < ${n}; ${at} += ${step}) {`);
  fold(0, inner);
  out.push(`${indent}}`);
}

/**
 * A lane's share of a vectorised sum: 16 bytes of the weight per load, the rest of the body per element. `unroll`
 * loads are issued before their use, so each thread keeps several in flight (decode is latency-bound otherwise).
 */
function renderVectorSum(r: Reduce, vec: VectorPlan, ctx: RowContext, part: string, lane: string, lanes: string, out: string[], indent: string): void {
  const { p, buffers } = ctx;
  const inner = indent + '  ';
  const [weight, other] = vec.streams;
  if (weight.load.k !== 'load') throw new Error('WGSL: a vectorised sum streams its weight from a buffer');
  const buf = weight.load.buf;
  const dtype = buffers[buf].dtype;
  const base = p.expr(weight.base, out, indent);
  const n = (r.n as { value: number }).value;
  const width = vec.elements;
  const at = `${r.v}_at`;
  const stride = `${r.v}_stride`;
  const element = (w: string, u: number) => (dtype === DType.F32 ? `${w}[${u}]`
    : dtype === DType.BF16 ? `bitcast<f32>(${u % 2 === 0 ? `${w}[${u >> 1}] << 16u` : `${w}[${u >> 1}] & 0xffff0000u`})`
      : `unpack2x16float(${w}[${u >> 1}])[${u % 2}]`);
  const otherBase = other ? p.expr(other.base, out, indent) : '';
  const otherVec = (offset: string, j: number) => {
    const i = `(${otherBase} + ${at} + ${offset}${4 * j})`;
    return other!.load.k === 'load' ? `b${other!.load.buf}_v4[${i} / 4]` : `${other!.load.array}[${i} >> 2u]`;
  };
  const body = replaceLoads(r.body, new Map([[weight.key, { k: 'var', name: 'wv', t: 'f32' }]]));
  const fold = (w: string, offset: string, ind: string) => {
    if (other) {
      // Both factors contiguous: 16-byte reads of each, no per-element indexing.
      for (let j = 0; j < width / 4; j++) out.push(`${ind}let a4_${w}_${j} = ${otherVec(offset, j)};`);
      for (let u = 0; u < width; u++) out.push(`${ind}${part} = ${part} + a4_${w}_${u >> 2}[${u & 3}] * ${element(w, u)};`);
      return;
    }
    for (let u = 0; u < width; u++) {
      out.push(`${ind}{`);
      out.push(`${ind}  let ${r.v} = ${at} + ${offset}${u};`);
      out.push(`${ind}  let wv = ${element(w, u)};`);
      out.push(`${ind}  ${part} = ${part} + ${p.expr(body, out, ind + '  ')};`);
      out.push(`${ind}}`);
    }
  };
  out.push(`${indent}let ${stride} = ${lanes} * ${width};`);
  out.push(`${indent}var ${at}: i32 = ${lane} * ${width};`);
  out.push(`${indent}for (; ${at} + ${vec.unroll - 1} * ${stride} < ${n}; ${at} += ${vec.unroll} * ${stride}) {`);
  for (let q = 0; q < vec.unroll; q++) out.push(`${inner}let w4_${q} = b${buf}_v4[(${base} + ${at} + ${q} * ${stride}) / ${width}];`);
  for (let q = 0; q < vec.unroll; q++) fold(`w4_${q}`, `${q} * ${stride} + `, inner);
  out.push(`${indent}}`);
  out.push(`${indent}for (; ${at} < ${n}; ${at} += ${stride}) {`);
  out.push(`${inner}let w4_0 = b${buf}_v4[(${base} + ${at}) / ${width}];`);
  fold('w4_0', '', inner);
  out.push(`${indent}}`);
}
