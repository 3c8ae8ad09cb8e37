// The WGSL renderer: kernel IR → one compute shader per kernel. A row runs as one workgroup: cooperative
// reductions split their range over the threads and combine in workgroup memory, row-local arrays live in
// workgroup memory, stores are strided over the threads. 16-bit weights stay packed two to a u32 (the NVIDIA
// adapter has no shader-f16) and are widened on load. Buffers larger than one storage binding may hold are bound
// in chunks and indexed through a small function.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KernelIR, KExpr, KStmt, offsetAlong, replaceReductions, ROW, Scalar, topReductions } from '../kernel-ir.ts';
import { cLike, Dialect, ExprPrinter } from '../render-base.ts';

export const WORKGROUP_SIZE = 256;
/** 16-byte weight loads each lane issues before using any. */
const UNROLL = 8;
/** WGSL rejects infinities in constant expressions; the largest finite f32 masks as well in softmax and max. */
const NEG_INF = '-3.402823e+38';

/** How a kernel's buffer is bound: its element type in the shader and how many bindings (chunks) it spans. */
export interface BufferLayout {
  readonly chunks: number;
  /** Elements of the shader array per chunk (u32 words for 16-bit data). */
  readonly chunkWords: number;
}

/** Shader array element type of a buffer: 16-bit floats are packed in u32 words, bools are u32. */
export function wordType(d: DType): string {
  switch (d) {
    case DType.F32: return 'f32';
    case DType.I32: return 'i32';
    case DType.F16: case DType.BF16: case DType.U32: case DType.Bool: return 'u32';
    default: return d satisfies never;
  }
}

/** Elements per 4-byte word in device memory. */
export const perWord = (d: DType) => (d === DType.F16 || d === DType.BF16 ? 2 : 1);

const floatLiteral = (v: number) => {
  if (!Number.isFinite(v)) return v > 0 ? '3.402823e+38' : NEG_INF;
  const s = String(v);
  return /[.eE]/.test(s) ? s : `${s}.0`;
};

export const wgslDialect: Dialect = {
  type: { f32: 'f32', i32: 'i32', bool: 'bool' },
  constDecl: (name, t, value) => `let ${name}: ${wgslDialect.type[t]} = ${value};`,
  varDecl: (name, t, value) => `var ${name}: ${wgslDialect.type[t]} = ${value};`,
  forLoop: (v, n) => `for (var ${v}: i32 = 0; ${v} < ${n}; ${v}++) {`,
  unary: {
    ...cLike.unary,
    rsqrt: (a) => `inverseSqrt(${a})`,
  },
  binary: {
    ...cLike.binary,
    imod: (a, b) => `(${a} % ${b})`,
  },
  literal: (value, t) => (t === 'f32' ? floatLiteral(value) : t === 'bool' ? (value ? 'true' : 'false') : `${Math.trunc(value)}i`),
  cast: (a, from, to, round) => {
    if (to === 'bool') return `(${a} != ${from === 'f32' ? '0.0' : '0i'})`;
    if (from === 'bool') return `select(${to === 'f32' ? '0.0, 1.0' : '0i, 1i'}, ${a})`;
    const x = `${to}(${a})`;
    // Rounding to a 16-bit float, ties to even: bf16 by integer arithmetic on the bits, f16 through a pack.
    if (round === 'bf16') return `bitcast<f32>((bitcast<u32>(${x}) + 0x7fffu + ((bitcast<u32>(${x}) >> 16u) & 1u)) & 0xffff0000u)`;
    if (round === 'f16') return `unpack2x16float(pack2x16float(vec2<f32>(${x}, 0.0))).x`;
    return x;
  },
  load: (buf, _b, index) => `load_b${buf}(${index})`,
  elem: (array, index) => `${array}[${index}]`,
  negInfinity: NEG_INF,
};

/** What each @binding of a rendered kernel is: a chunk of a buffer, a whole buffer seen as vec4s, or the sizes. */
export type WgslBinding =
  | { readonly kind: 'chunk'; readonly buffer: number; readonly chunk: number }
  | { readonly kind: 'vec4'; readonly buffer: number }
  | { readonly kind: 'sizes' };

export interface RenderedWgsl {
  readonly code: string;
  readonly bindings: readonly WgslBinding[];
}

export interface WgslOptions {
  /** How each buffer is chunked (default: one binding each). */
  readonly layouts?: readonly BufferLayout[];
  /** The device has the `subgroups` feature: reductions inside stores run one subgroup per output. */
  readonly subgroups?: boolean;
}

type Reduce = Extract<KExpr, { k: 'reduce' }>;
type Store = Extract<KStmt, { k: 'store' }>;

/** Stores whose value is built from sums over long ranges (projections): each output gets a subgroup. */
function subgroupStore(s: KStmt): s is Store {
  const rs = s.k === 'store' ? topReductions(s.value) : [];
  return rs.length > 0 && rs.every((r) => r.op === 'sum' && !(r.n.k === 'const' && r.n.value < 32));
}

/**
 * The WGSL source of a kernel. One workgroup per row. With subgroups, a store of projections runs one output per
 * subgroup: its lanes split each sum, reading 16 bytes of weights per load where the weights are contiguous.
 */
export function renderWgsl(k: KernelIR, opts: WgslOptions = {}): RenderedWgsl {
  const layouts = opts.layouts ?? k.buffers.map(() => ({ chunks: 1, chunkWords: 0 }));
  const useSubgroups = (opts.subgroups ?? false) && k.body.some((s) => subgroupStore(s) || (s.k === 'coop' && s.op !== 'argmax') || (s.k === 'array' && s.value.k === 'reduce'));
  const vectorized = planVectorized(k, layouts, useSubgroups);
  // Shared arrays read four elements at a time are declared as vec4s.
  const vec4Arrays = new Set([...vectorized.values()].flatMap((v) => (v.a?.kind === 'elem' ? [v.a.array] : [])));
  const dialect: Dialect = {
    ...wgslDialect,
    elem: (array, index) => (vec4Arrays.has(array) ? `${array}[(${index}) >> 2u][(${index}) & 3]` : `${array}[${index}]`),
  };
  // The body first: it decides which buffers are also read as vec4s, which the declarations then bind.
  const p = new ExprPrinter(dialect, k.buffers);
  const vec4 = new Set([...vectorized.values()].flatMap((v) => [v.buf, ...(v.a?.kind === 'load' ? [v.a.buf] : [])]));
  const ctx: RowContext = { p, vectorized, buffers: k.buffers, layouts, subgroups: useSubgroups, vec4, vec4Arrays };
  const body: string[] = [];
  for (const s of k.sizes) body.push(`  let ${s} = sizes.${s};`);
  for (const s of k.body) renderStmt(s, ctx, body, '  ');

  const out: string[] = [];
  const bindings: WgslBinding[] = [];
  if (useSubgroups) out.push('enable subgroups;', 'diagnostic(off, subgroup_uniformity);');
  out.push(`// kernel ${k.name}: fuses`);
  for (const line of k.fused) out.push(`//   ${line}`);
  k.buffers.forEach((b, i) => {
    const access = b.written ? 'read_write' : 'read';
    for (let c = 0; c < layouts[i].chunks; c++) {
      out.push(`@group(0) @binding(${bindings.length}) var<storage, ${access}> b${i}_${c}: array<${wordType(b.dtype)}>;`);
      bindings.push({ kind: 'chunk', buffer: i, chunk: c });
    }
  });
  for (const buf of ctx.vec4) {
    const t = k.buffers[buf].dtype === DType.F32 ? 'vec4<f32>' : 'vec4<u32>';
    out.push(`@group(0) @binding(${bindings.length}) var<storage, read> b${buf}_v4: array<${t}>;`);
    bindings.push({ kind: 'vec4', buffer: buf });
  }
  out.push(`struct Sizes { rows: i32, ${k.sizes.map((s) => `${s}: i32, `).join('')}}`);
  out.push(`@group(0) @binding(${bindings.length}) var<uniform> sizes: Sizes;`);
  bindings.push({ kind: 'sizes' });
  k.buffers.forEach((b, i) => out.push(...accessors(i, b, layouts[i])));

  const arrays = k.body.filter((s): s is Extract<KStmt, { k: 'array' }> => s.k === 'array');
  for (const a of arrays) {
    out.push(vec4Arrays.has(a.name) ? `var<workgroup> ${a.name}: array<vec4<f32>, ${a.n / 4}>;` : `var<workgroup> ${a.name}: array<f32, ${a.n}>;`);
  }
  out.push(`var<workgroup> red_f: array<f32, ${WORKGROUP_SIZE}>;`);
  out.push(`var<workgroup> red_i: array<i32, ${WORKGROUP_SIZE}>;`);
  out.push('');
  out.push(`@compute @workgroup_size(${WORKGROUP_SIZE})`);
  const sg = useSubgroups ? ', @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32' : '';
  out.push(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32${sg}) {`);
  out.push(`  let ${ROW} = i32(wid.x + wid.y * 65535u);`);
  out.push(`  if (${ROW} >= sizes.rows) { return; }`);
  out.push('  let lid = i32(lidx);');
  if (useSubgroups) {
    out.push('  let lane = i32(sg_lane);', '  let lanes = i32(sg_size);', '  let subgroup = lid / lanes;', `  let subgroups = ${WORKGROUP_SIZE} / lanes;`);
  }
  out.push(...body);
  out.push('}');
  return { code: out.join('\n') + '\n', bindings };
}

interface RowContext {
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
interface VectorLoad {
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
function planVectorized(k: KernelIR, layouts: readonly BufferLayout[], subgroups: boolean): Map<Reduce, VectorLoad> {
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

/** load_bN(i) (and store_bN(i, v) for written buffers) over the buffer's chunks and packing. */
function accessors(i: number, b: KBuffer, layout: BufferLayout): string[] {
  const word = wordType(b.dtype);
  const chunked = (w: string, body: (arr: string) => string): string[] => {
    if (layout.chunks === 1) return [`  ${body(`b${i}_0[${w}]`)}`];
    const lines = [`  let c = ${w} / ${layout.chunkWords}; let o = ${w} % ${layout.chunkWords};`];
    for (let c = 0; c < layout.chunks; c++) lines.push(`  if (c == ${c}) { ${body(`b${i}_${c}[o]`)} }`);
    if (!body('x').startsWith('return')) return lines;
    return [...lines, `  return ${b.dtype === DType.I32 ? '0i' : b.dtype === DType.Bool ? 'false' : '0.0'};`];
  };
  const t = b.dtype === DType.I32 ? 'i32' : b.dtype === DType.Bool ? 'bool' : 'f32';
  const lines: string[] = [`fn load_b${i}(i: i32) -> ${t} {`];
  switch (b.dtype) {
    case DType.BF16:
      lines.push('  let w = u32(i) >> 1u;', ...chunked('w', (a) => `return bitcast<f32>(select(${a} << 16u, ${a} & 0xffff0000u, (i & 1) == 1));`));
      break;
    case DType.F16:
      lines.push('  let w = u32(i) >> 1u;', ...chunked('w', (a) => `return unpack2x16float(${a})[u32(i) & 1u];`));
      break;
    case DType.Bool: case DType.U32:
      lines.push('  let w = u32(i);', ...chunked('w', (a) => (b.dtype === DType.Bool ? `return ${a} != 0u;` : `return f32(${a});`)));
      break;
    default:
      lines.push('  let w = u32(i);', ...chunked('w', (a) => `return ${a};`));
  }
  lines.push('}');
  if (b.written) {
    if (b.dtype === DType.F16 || b.dtype === DType.BF16) {
      throw new Error(`kernel buffer ${i}: WGSL kernels store f32, i32 or bool, not packed ${b.dtype}`);
    }
    const value = b.dtype === DType.Bool ? 'select(0u, 1u, v)' : b.dtype === DType.U32 ? 'u32(v)' : 'v';
    lines.push(`fn store_b${i}(i: i32, v: ${t}) {`, '  let w = u32(i);', ...chunked('w', (a) => `${a} = ${value};`), '}');
    void word;
  }
  return lines;
}

function renderStmt(s: KStmt, ctx: RowContext, out: string[], indent: string): void {
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
