// The WGSL renderer: kernel IR → one compute shader per kernel. A row runs as one workgroup: cooperative
// reductions split their range over the threads and combine in workgroup memory, row-local arrays live in
// workgroup memory, stores are strided over the threads. 16-bit weights stay packed two to a u32 (the NVIDIA
// adapter has no shader-f16) and are widened on load. Buffers larger than one storage binding may hold are bound
// in chunks and indexed through a small function.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KernelIR, KExpr, KStmt, ROW, Scalar, varsOf } from '../kernel-ir.ts';
import { cLike, Dialect, ExprPrinter } from '../render-base.ts';

export const WORKGROUP_SIZE = 256;
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
  cast: (a, from, to) => {
    if (to === 'bool') return `(${a} != ${from === 'f32' ? '0.0' : '0i'})`;
    if (from === 'bool') return `select(${to === 'f32' ? '0.0, 1.0' : '0i, 1i'}, ${a})`;
    return `${to}(${a})`;
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

/** The reductions of an expression that are not inside another reduction, in evaluation order. */
function topReductions(e: KExpr, out: Reduce[] = []): Reduce[] {
  switch (e.k) {
    case 'reduce': out.push(e); break;
    case 'load': case 'elem': topReductions(e.index, out); break;
    case 'unary': case 'cast': topReductions(e.a, out); break;
    case 'binary': topReductions(e.a, out); topReductions(e.b, out); break;
    case 'select': topReductions(e.cond, out); topReductions(e.a, out); topReductions(e.b, out); break;
    case 'const': case 'var': break;
    default: e satisfies never;
  }
  return out;
}

function replaceReductions(e: KExpr, names: Map<Reduce, string>): KExpr {
  const r = (x: KExpr) => replaceReductions(x, names);
  switch (e.k) {
    case 'reduce': return names.has(e) ? { k: 'var', name: names.get(e)!, t: e.t } : e;
    case 'load': return { ...e, index: r(e.index) };
    case 'elem': return { ...e, index: r(e.index) };
    case 'unary': case 'cast': return { ...e, a: r(e.a) };
    case 'binary': return { ...e, a: r(e.a), b: r(e.b) };
    case 'select': return { ...e, cond: r(e.cond), a: r(e.a), b: r(e.b) };
    default: return e;
  }
}

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
  const useSubgroups = (opts.subgroups ?? false) && k.body.some(subgroupStore);
  const vectorized = new Map<Reduce, VectorLoad>();
  if (useSubgroups) {
    for (const s of k.body) {
      if (!subgroupStore(s)) continue;
      for (const r of topReductions(s.value)) {
        const v = vectorLoad(r, k.buffers);
        if (v && layouts[v.buf].chunks === 1) vectorized.set(r, v);
      }
    }
  }
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
  for (const buf of new Set([...vectorized.values()].map((v) => v.buf))) {
    const t = k.buffers[buf].dtype === DType.F32 ? 'vec4<f32>' : 'vec4<u32>';
    out.push(`@group(0) @binding(${bindings.length}) var<storage, read> b${buf}_v4: array<${t}>;`);
    bindings.push({ kind: 'vec4', buffer: buf });
  }
  out.push(`struct Sizes { rows: i32, ${k.sizes.map((s) => `${s}: i32, `).join('')}}`);
  out.push(`@group(0) @binding(${bindings.length}) var<uniform> sizes: Sizes;`);
  bindings.push({ kind: 'sizes' });
  k.buffers.forEach((b, i) => out.push(...accessors(i, b, layouts[i])));

  const arrays = k.body.filter((s): s is Extract<KStmt, { k: 'array' }> => s.k === 'array');
  for (const a of arrays) out.push(`var<workgroup> ${a.name}: array<f32, ${a.n}>;`);
  out.push(`var<workgroup> red_f: array<f32, ${WORKGROUP_SIZE}>;`);
  out.push(`var<workgroup> red_i: array<i32, ${WORKGROUP_SIZE}>;`);

  const p = new ExprPrinter(wgslDialect, k.buffers);
  const ctx: RowContext = { p, vectorized, buffers: k.buffers, subgroups: useSubgroups };
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
  for (const s of k.sizes) out.push(`  let ${s} = sizes.${s};`);
  for (const s of k.body) renderStmt(s, ctx, out, '  ');
  out.push('}');
  return { code: out.join('\n') + '\n', bindings };
}

interface RowContext {
  readonly p: ExprPrinter;
  readonly vectorized: Map<Reduce, VectorLoad>;
  readonly buffers: readonly KBuffer[];
  readonly subgroups: boolean;
}

/** A sum whose body is a product with buffer[base + v], base a multiple of the vector width. */
interface VectorLoad {
  readonly buf: number;
  readonly base: KExpr;
  /** The body with that load replaced by the variable `wv`. */
  readonly body: KExpr;
  /** Elements per 16-byte load. */
  readonly width: number;
}

function vectorLoad(r: Reduce, buffers: readonly KBuffer[]): VectorLoad | undefined {
  const body = r.body;
  if (body.k !== 'binary' || body.op !== 'mul' || r.n.k !== 'const') return undefined;
  for (const [load, other, loadFirst] of [[body.b, body.a, false], [body.a, body.b, true]] as const) {
    if (load.k !== 'load') continue;
    const dtype = buffers[load.buf].dtype;
    const width = dtype === DType.F32 ? 4 : dtype === DType.BF16 || dtype === DType.F16 ? 8 : 0;
    if (!width || r.n.value % width !== 0) continue;
    const base = offsetFrom(load.index, r.v);
    if (!base || !multipleOf(base, width)) continue;
    const wv: KExpr = { k: 'var', name: 'wv', t: 'f32' };
    return { buf: load.buf, base, width, body: { ...body, a: loadFirst ? wv : other, b: loadFirst ? other : wv } };
  }
  return undefined;
}

/** base when index = v + base (or base + v) and base does not read v. */
function offsetFrom(index: KExpr, v: string): KExpr | undefined {
  if (index.k === 'var' && index.name === v) return { k: 'const', value: 0, t: 'i32' };
  if (index.k !== 'binary' || index.op !== 'add') return undefined;
  const isV = (e: KExpr) => e.k === 'var' && e.name === v;
  if (isV(index.a) && !varsOf(index.b).has(v)) return index.b;
  if (isV(index.b) && !varsOf(index.a).has(v)) return index.a;
  return undefined;
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
      out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${s.n}; ${s.v} += ${WORKGROUP_SIZE}) {`);
      out.push(`${inner}${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      out.push(`${indent}}`);
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

/** One output per subgroup: the lanes split every sum of its value, subgroupAdd combines, lane 0 stores. */
function renderSubgroupStore(s: Store, ctx: RowContext, out: string[], indent: string): void {
  const { p } = ctx;
  const inner = indent + '  ';
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
  out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${n}; ${s.v} += ${WORKGROUP_SIZE}) {`);
  const x = p.expr(s.body, out, inner);
  if (s.op === 'sum') out.push(`${inner}${part} = ${part} + ${x};`);
  else if (s.op === 'max') out.push(`${inner}${part} = max(${part}, ${x});`);
  else out.push(`${inner}if (${x} > ${best}) { ${best} = ${x}; ${part} = ${s.v}; }`);
  out.push(`${indent}}`);
  const red = t === 'i32' && s.op !== 'argmax' ? 'red_i' : 'red_f';
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

/** A lane's share of a vectorised sum: 16 bytes of the weight per load, the rest of the body per element. */
function renderVectorSum(r: Reduce, vec: VectorLoad, ctx: RowContext, part: string, lane: string, lanes: string, out: string[], indent: string): void {
  const { p, buffers } = ctx;
  const inner = indent + '  ';
  const dtype = buffers[vec.buf].dtype;
  const base = p.expr(vec.base, out, indent);
  const at = `${r.v}_at`;
  out.push(`${indent}for (var ${at}: i32 = ${lane} * ${vec.width}; ${at} < ${(r.n as { value: number }).value}; ${at} += ${lanes} * ${vec.width}) {`);
  out.push(`${inner}let w4 = b${vec.buf}_v4[(${base} + ${at}) / ${vec.width}];`);
  for (let u = 0; u < vec.width; u++) {
    const element = dtype === DType.F32 ? `w4[${u}]`
      : dtype === DType.BF16 ? `bitcast<f32>(${u % 2 === 0 ? `w4[${u >> 1}] << 16u` : `w4[${u >> 1}] & 0xffff0000u`})`
        : `unpack2x16float(w4[${u >> 1}])[${u % 2}]`;
    out.push(`${inner}{`);
    out.push(`${inner}  let ${r.v} = ${at} + ${u};`);
    out.push(`${inner}  let wv = ${element};`);
    out.push(`${inner}  ${part} = ${part} + ${p.expr(vec.body, out, inner + '  ')};`);
    out.push(`${inner}}`);
  }
  out.push(`${indent}}`);
}
