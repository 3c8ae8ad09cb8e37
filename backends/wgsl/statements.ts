// How the threads of a workgroup share each statement of a row: cooperative reductions (a tree, or subgroups),
// row-local arrays (per thread, sliced, or per subgroup), stores (strided, one subgroup per output, or split across
// subgroups), and sums that read 16 bytes of weights (and of their other factor) per load.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KernelIR, KExpr, KStmt, offsetAlong, replaceReductions, Scalar, topReductions } from '../kernel-ir.ts';
import { ExprPrinter } from '../render-base.ts';
import { BufferLayout, NEG_INF, UNROLL, wgslDialect, WORKGROUP_SIZE } from './dialect.ts';

export type Reduce = Extract<KExpr, { k: 'reduce' }>;
type Store = Extract<KStmt, { k: 'store' }>;

/** Stores whose value is built from sums over long ranges (projections): each output gets a subgroup. */
export function subgroupStore(s: KStmt): s is Store {
  const rs = s.k === 'store' ? topReductions(s.value) : [];
  return rs.length > 0 && rs.every((r) => r.op === 'sum' && !(r.n.k === 'const' && r.n.value < 32));
}

export interface RowContext {
  readonly p: ExprPrinter;
  readonly vectorized: Map<Reduce, VectorLoad>;
  readonly buffers: readonly KBuffer[];
  readonly layouts: readonly BufferLayout[];
  readonly subgroups: boolean;
  /** Buffers the body reads as vec4s. */
  readonly vec4: Set<number>;
  /** Row-local arrays declared as vec4s. */
  readonly vec4Arrays: Set<string>;
}

/** A sum whose body is a product with buffer[base + v], base a multiple of the vector width. */
export interface VectorLoad {
  readonly buf: number;
  readonly base: KExpr;
  /** The body with that load replaced by the variable `wv`. */
  readonly body: KExpr;
  /** Elements per 16-byte load. */
  readonly width: number;
  /** The other factor when it is contiguous in the loop variable too: read as vec4<f32>s instead of per element. */
  readonly a?: { readonly kind: 'load'; readonly buf: number; readonly base: KExpr } | { readonly kind: 'elem'; readonly array: string; readonly base: KExpr };
}

function vectorLoad(r: Reduce, buffers: readonly KBuffer[], arrays: ReadonlyMap<string, number>): VectorLoad | undefined {
  const body = r.body;
  if (body.k !== 'binary' || body.op !== 'mul' || r.n.k !== 'const') return undefined;
  for (const [load, other, loadFirst] of [[body.b, body.a, false], [body.a, body.b, true]] as const) {
    if (load.k !== 'load') continue;
    const dtype = buffers[load.buf].dtype;
    const width = dtype === DType.F32 ? 4 : dtype === DType.BF16 || dtype === DType.F16 ? 8 : 0;
    if (!width || r.n.value % width !== 0) continue;
    const base = offsetAlong(load.index, r.v);
    if (!base || !multipleOf(base, width)) continue;
    const wv: KExpr = { k: 'var', name: 'wv', t: 'f32' };
    const aBase = other.k === 'load' || other.k === 'elem' ? offsetAlong(other.index, r.v) : undefined;
    let a: VectorLoad['a'];
    if (aBase && multipleOf(aBase, 4)) {
      if (other.k === 'load' && buffers[other.buf].dtype === DType.F32) a = { kind: 'load', buf: other.buf, base: aBase };
      if (other.k === 'elem' && (arrays.get(other.array) ?? 1) % 4 === 0) a = { kind: 'elem', array: other.array, base: aBase };
    }
    return { buf: load.buf, base, width, a, body: { ...body, a: loadFirst ? wv : other, b: loadFirst ? other : wv } };
  }
  return undefined;
}

/** The sums the renderer reads 16 bytes at a time: in stores of projections, and in array fills. */
export function planVectorized(k: KernelIR, layouts: readonly BufferLayout[], subgroups: boolean): Map<Reduce, VectorLoad> {
  const arrays = new Map<string, number>();
  for (const s of k.body) if (s.k === 'array') arrays.set(s.name, s.n);
  const out = new Map<Reduce, VectorLoad>();
  const consider = (r: Reduce) => {
    const v = r.op === 'sum' ? vectorLoad(r, k.buffers, arrays) : undefined;
    if (v && layouts[v.buf].chunks === 1 && (v.a?.kind !== 'load' || layouts[v.a.buf].chunks === 1)) out.set(r, v);
  };
  for (const s of k.body) {
    if (subgroups && subgroupStore(s)) topReductions(s.value).forEach(consider);
    if (s.k === 'array' && s.value.k === 'reduce') consider(s.value);
  }
  return out;
}

function multipleOf(e: KExpr, m: number): boolean {
  if (e.k === 'const') return e.value % m === 0;
  if (e.k === 'binary' && e.op === 'mul') return multipleOf(e.a, m) || multipleOf(e.b, m);
  if (e.k === 'binary' && e.op === 'add') return multipleOf(e.a, m) && multipleOf(e.b, m);
  return false;
}

export function renderStmt(s: KStmt, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  switch (s.k) {
    case 'let':
      out.push(`${indent}let ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop':
      renderCoop(s, ctx, out, indent);
      break;
    case 'array': {
      const r = s.value.k === 'reduce' && s.value.op === 'sum' ? s.value : undefined;
      const vec = r ? ctx.vectorized.get(r) : undefined;
      const at = (i: string) => (ctx.vec4Arrays.has(s.name) ? `${s.name}[${i} >> 2u][${i} & 3]` : `${s.name}[${i}]`);
      if (r && vec) {
        // Each element a dot product over a contiguous row (attention scores): 16 bytes per load.
        out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${s.n}; ${s.v} += ${WORKGROUP_SIZE}) {`);
        out.push(`${inner}var ${s.name}_part: f32 = 0.0;`);
        renderVectorSum(r, vec, ctx, `${s.name}_part`, '0', '1', out, inner);
        out.push(`${inner}${at(s.v)} = ${s.name}_part;`);
        out.push(`${indent}}`);
      } else if (r && 2 * s.n <= WORKGROUP_SIZE && !(r.n.k === 'const' && r.n.value < 32)) {
        // Few elements, each a long sum (probs·v over the cache): several threads per element split the sum,
        // neighbouring threads taking neighbouring elements so their loads coalesce.
        renderSlicedArray(s, r, ctx, out, indent, at);
      } else if (r && ctx.subgroups && !(r.n.k === 'const' && r.n.value < 32)) {
        // A strided dot product per element: a subgroup per element, lanes split it.
        renderSubgroupArray(s, r, ctx, out, indent, at);
      } else {
        out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${s.n}; ${s.v} += ${WORKGROUP_SIZE}) {`);
        out.push(`${inner}${at(s.v)} = ${p.expr(s.value, out, inner)};`);
        out.push(`${indent}}`);
      }
      out.push(`${indent}workgroupBarrier();`);
      break;
    }
    case 'store': {
      if (ctx.subgroups && subgroupStore(s)) {
        renderSubgroupStore(s, ctx, out, indent);
        break;
      }
      const n = p.expr(s.n, out, indent);
      out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${n}; ${s.v} += ${WORKGROUP_SIZE}) {`);
      const value = p.expr(s.value, out, inner);
      out.push(`${inner}store_b${s.buf}(${p.expr(s.index, out, inner)}, ${value});`);
      out.push(`${indent}}`);
      break;
    }
    default: s satisfies never;
  }
}

/**
 * One output per subgroup: the lanes split every sum of its value, subgroupAdd combines, lane 0 stores. With fewer
 * outputs than subgroups (2 or 4 per row), the subgroups of one output split its sums between them as well, and
 * combine through workgroup memory. (Assumes subgroups of at most 32 lanes, so a workgroup has 8 or more.)
 */
function renderSubgroupStore(s: Store, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  if (s.n.k === 'const' && s.n.value < 8 && 8 % s.n.value === 0) {
    renderSplitSubgroupStore(s, s.n.value, ctx, out, indent);
    return;
  }
  const n = p.expr(s.n, out, indent);
  out.push(`${indent}for (var ${s.v}: i32 = subgroup; ${s.v} < ${n}; ${s.v} += subgroups) {`);
  const names = new Map<Reduce, string>();
  for (const r of topReductions(s.value)) {
    const name = p.fresh();
    const part = `${name}_part`;
    out.push(`${inner}var ${part}: f32 = 0.0;`);
    const vec = ctx.vectorized.get(r);
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

function renderSlicedArray(s: Extract<KStmt, { k: 'array' }>, r: Reduce, ctx: RowContext, out: string[], indent: string, at: (i: string) => string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  let slices = 1;
  while (2 * slices * s.n <= WORKGROUP_SIZE) slices *= 2;
  const part = `${s.name}_part`;
  out.push(`${indent}var ${part}: f32 = 0.0;`);
  out.push(`${indent}if (lid < ${slices * s.n}) {`);
  out.push(`${inner}let ${s.v} = lid % ${s.n};`);
  const rn = p.expr(r.n, out, inner);
  // Four terms per iteration, each in its own block, so their loads are in flight together.
  const from = `${r.v}_at`;
  const fold = (q: number, ind: string) => {
    out.push(`${ind}{`);
    out.push(`${ind}  let ${r.v} = ${from} + ${q * slices};`);
    out.push(`${ind}  ${part} = ${part} + ${p.expr(r.body, out, ind + '  ')};`);
    out.push(`${ind}}`);
  };
  out.push(`${inner}var ${from}: i32 = lid / ${s.n};`);
  out.push(`${inner}for (; ${from} + ${3 * slices} < ${rn}; ${from} += ${4 * slices}) {`);
  for (let q = 0; q < 4; q++) fold(q, inner + '  ');
  out.push(`${inner}}`);
  out.push(`${inner}for (; ${from} < ${rn}; ${from} += ${slices}) {`);
  fold(0, inner + '  ');
  out.push(`${inner}}`);
  out.push(`${indent}}`);
  out.push(`${indent}red_f[lid] = ${part};`);
  out.push(`${indent}workgroupBarrier();`);
  out.push(`${indent}if (lid < ${s.n}) {`);
  out.push(`${inner}var ${s.name}_sum: f32 = 0.0;`);
  out.push(`${inner}for (var q: i32 = 0; q < ${slices}; q++) { ${s.name}_sum = ${s.name}_sum + red_f[q * ${s.n} + lid]; }`);
  out.push(`${inner}${at('lid')} = ${s.name}_sum;`);
  out.push(`${indent}}`);
}

function renderSubgroupArray(s: Extract<KStmt, { k: 'array' }>, r: Reduce, ctx: RowContext, out: string[], indent: string, at: (i: string) => string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  out.push(`${indent}for (var ${s.v}: i32 = subgroup; ${s.v} < ${s.n}; ${s.v} += subgroups) {`);
  out.push(`${inner}var ${s.name}_part: f32 = 0.0;`);
  const rn = p.expr(r.n, out, inner);
  out.push(`${inner}for (var ${r.v}: i32 = lane; ${r.v} < ${rn}; ${r.v} += lanes) {`);
  out.push(`${inner}  ${s.name}_part = ${s.name}_part + ${p.expr(r.body, out, inner + '  ')};`);
  out.push(`${inner}}`);
  out.push(`${inner}let ${s.name}_sum = subgroupAdd(${s.name}_part);`);
  out.push(`${inner}if (lane == 0) { ${at(s.v)} = ${s.name}_sum; }`);
  out.push(`${indent}}`);
}

function renderSplitSubgroupStore(s: Store, n: number, ctx: RowContext, out: string[], indent: string): void {
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
    const vec = ctx.vectorized.get(r);
    if (vec) {
      renderVectorSum(r, vec, ctx, part, lane, lanes, out, indent);
    } else {
      const rn = p.expr(r.n, out, indent);
      out.push(`${indent}for (var ${r.v}: i32 = ${lane}; ${r.v} < ${rn}; ${r.v} += ${lanes}) {`);
      out.push(`${inner}${part} = ${part} + ${p.expr(r.body, out, inner)};`);
      out.push(`${indent}}`);
    }
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

/** Each thread folds a strided share of the range, then a tree over workgroup memory; every thread gets the result. */
function renderCoop(s: Extract<KStmt, { k: 'coop' }>, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
  const n = p.expr(s.n, out, indent);
  const t: Scalar = s.op === 'argmax' ? 'i32' : s.body.t;
  const part = `${s.name}_part`;
  const best = `${s.name}_best`;
  const init = s.op === 'sum' ? wgslDialect.literal(0, s.body.t) : NEG_INF;
  out.push(`${indent}var ${s.op === 'argmax' ? best : part}: ${s.op === 'argmax' ? 'f32' : wgslDialect.type[t]} = ${init};`);
  if (s.op === 'argmax') out.push(`${indent}var ${part}: i32 = 0i;`);
  // Four elements per iteration, each in its own block, so their loads are in flight together.
  const at = `${s.v}_at`;
  const fold = (offset: number, ind: string) => {
    out.push(`${ind}{`);
    out.push(`${ind}  let ${s.v} = ${at} + ${offset * WORKGROUP_SIZE};`);
    const x = p.expr(s.body, out, ind + '  ');
    if (s.op === 'sum') out.push(`${ind}  ${part} = ${part} + ${x};`);
    else if (s.op === 'max') out.push(`${ind}  ${part} = max(${part}, ${x});`);
    else out.push(`${ind}  if (${x} > ${best}) { ${best} = ${x}; ${part} = ${s.v}; }`);
    out.push(`${ind}}`);
  };
  out.push(`${indent}var ${at}: i32 = lid;`);
  out.push(`${indent}for (; ${at} + ${3 * WORKGROUP_SIZE} < ${n}; ${at} += ${4 * WORKGROUP_SIZE}) {`);
  for (let q = 0; q < 4; q++) fold(q, inner);
  out.push(`${indent}}`);
  out.push(`${indent}for (; ${at} < ${n}; ${at} += ${WORKGROUP_SIZE}) {`);
  fold(0, inner);
  out.push(`${indent}}`);
  const red = t === 'i32' && s.op !== 'argmax' ? 'red_i' : 'red_f';
  if (ctx.subgroups && (s.op === 'sum' || s.op === 'max') && t === 'f32') {
    // Subgroups combine their lanes in registers; only one value per subgroup goes through workgroup memory.
    const sum = s.op === 'sum';
    out.push(`${indent}let ${part}_sg = ${sum ? 'subgroupAdd' : 'subgroupMax'}(${part});`);
    out.push(`${indent}if (lane == 0) { red_f[subgroup] = ${part}_sg; }`);
    out.push(`${indent}workgroupBarrier();`);
    out.push(`${indent}var ${s.name}_sum: f32 = ${sum ? '0.0' : NEG_INF};`);
    out.push(`${indent}for (var w: i32 = 0; w < subgroups; w++) { ${s.name}_sum = ${sum ? `${s.name}_sum + red_f[w]` : `max(${s.name}_sum, red_f[w])`}; }`);
    out.push(`${indent}let ${s.name} = ${s.name}_sum;`);
    out.push(`${indent}workgroupBarrier();`);
    return;
  }
  if (s.op === 'argmax') {
    out.push(`${indent}red_f[lid] = ${best}; red_i[lid] = ${part};`);
  } else {
    out.push(`${indent}${red}[lid] = ${part};`);
  }
  out.push(`${indent}workgroupBarrier();`);
  out.push(`${indent}for (var w: i32 = ${WORKGROUP_SIZE / 2}; w > 0; w = w / 2) {`);
  out.push(`${inner}if (lid < w) {`);
  if (s.op === 'sum') out.push(`${inner}  ${red}[lid] = ${red}[lid] + ${red}[lid + w];`);
  else if (s.op === 'max') out.push(`${inner}  ${red}[lid] = max(${red}[lid], ${red}[lid + w]);`);
  else {
    // Keep the first maximum: the lower index wins ties.
    out.push(`${inner}  let a = red_f[lid]; let b = red_f[lid + w];`);
    out.push(`${inner}  if (b > a || (b == a && red_i[lid + w] < red_i[lid])) { red_f[lid] = b; red_i[lid] = red_i[lid + w]; }`);
  }
  out.push(`${inner}}`);
  out.push(`${inner}workgroupBarrier();`);
  out.push(`${indent}}`);
  out.push(`${indent}let ${s.name} = ${s.op === 'argmax' ? 'red_i' : red}[0];`);
  // The next reduction reuses the scratch: wait until every thread has read this result.
  out.push(`${indent}workgroupBarrier();`);
}

/**
 * A lane's share of a vectorised sum: 16 bytes of the weight per load, the rest of the body per element. UNROLL
 * loads are issued before their use, so each thread keeps several in flight (decode is latency-bound otherwise).
 */
function renderVectorSum(r: Reduce, vec: VectorLoad, ctx: RowContext, part: string, lane: string, lanes: string, out: string[], indent: string): void {
  const { p, buffers } = ctx;
  const inner = indent + '  ';
  const dtype = buffers[vec.buf].dtype;
  const base = p.expr(vec.base, out, indent);
  const n = (r.n as { value: number }).value;
  const at = `${r.v}_at`;
  const stride = `${r.v}_stride`;
  const element = (w: string, u: number) => (dtype === DType.F32 ? `${w}[${u}]`
    : dtype === DType.BF16 ? `bitcast<f32>(${u % 2 === 0 ? `${w}[${u >> 1}] << 16u` : `${w}[${u >> 1}] & 0xffff0000u`})`
      : `unpack2x16float(${w}[${u >> 1}])[${u % 2}]`);
  const aBase = vec.a ? p.expr(vec.a.base, out, indent) : '';
  const aVec = (offset: string, j: number) => {
    const i = `(${aBase} + ${at} + ${offset}${4 * j})`;
    return vec.a!.kind === 'load' ? `b${vec.a!.buf}_v4[${i} / 4]` : `${vec.a!.array}[${i} >> 2u]`;
  };
  const fold = (w: string, offset: string, ind: string) => {
    if (vec.a) {
      // Both factors contiguous: 16-byte reads of each, no per-element indexing.
      for (let j = 0; j < vec.width / 4; j++) out.push(`${ind}let a4_${w}_${j} = ${aVec(offset, j)};`);
      for (let u = 0; u < vec.width; u++) out.push(`${ind}${part} = ${part} + a4_${w}_${u >> 2}[${u & 3}] * ${element(w, u)};`);
      return;
    }
    for (let u = 0; u < vec.width; u++) {
      out.push(`${ind}{`);
      out.push(`${ind}  let ${r.v} = ${at} + ${offset}${u};`);
      out.push(`${ind}  let wv = ${element(w, u)};`);
      out.push(`${ind}  ${part} = ${part} + ${p.expr(vec.body, out, ind + '  ')};`);
      out.push(`${ind}}`);
    }
  };
  out.push(`${indent}let ${stride} = ${lanes} * ${vec.width};`);
  out.push(`${indent}var ${at}: i32 = ${lane} * ${vec.width};`);
  out.push(`${indent}for (; ${at} + ${UNROLL - 1} * ${stride} < ${n}; ${at} += ${UNROLL} * ${stride}) {`);
  for (let q = 0; q < UNROLL; q++) out.push(`${inner}let w4_${q} = b${vec.buf}_v4[(${base} + ${at} + ${q} * ${stride}) / ${vec.width}];`);
  for (let q = 0; q < UNROLL; q++) fold(`w4_${q}`, `${q} * ${stride} + `, inner);
  out.push(`${indent}}`);
  out.push(`${indent}for (; ${at} < ${n}; ${at} += ${stride}) {`);
  out.push(`${inner}let w4_0 = b${vec.buf}_v4[(${base} + ${at}) / ${vec.width}];`);
  fold('w4_0', '', inner);
  out.push(`${indent}}`);
}
