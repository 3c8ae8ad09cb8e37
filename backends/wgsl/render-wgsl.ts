// The WGSL renderer: kernel IR → one compute shader per kernel. A row runs as one workgroup: cooperative
// reductions split their range over the threads and combine in workgroup memory, row-local arrays live in
// workgroup memory, stores are strided over the threads. 16-bit weights stay packed two to a u32 (the NVIDIA
// adapter has no shader-f16) and are widened on load. Buffers larger than one storage binding may hold are bound
// in chunks and indexed through a small function.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KernelIR, KStmt, ROW, Scalar } from '../kernel-ir.ts';
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

/** The WGSL source of a kernel, given how each buffer is chunked. */
export function renderWgsl(k: KernelIR, layouts: readonly BufferLayout[] = k.buffers.map(() => ({ chunks: 1, chunkWords: 0 }))): string {
  const out: string[] = [];
  out.push(`// kernel ${k.name}: fuses`);
  for (const line of k.fused) out.push(`//   ${line}`);
  let binding = 0;
  k.buffers.forEach((b, i) => {
    const access = b.written ? 'read_write' : 'read';
    for (let c = 0; c < layouts[i].chunks; c++) {
      out.push(`@group(0) @binding(${binding++}) var<storage, ${access}> b${i}_${c}: array<${wordType(b.dtype)}>;`);
    }
  });
  out.push(`struct Sizes { rows: i32, ${k.sizes.map((s) => `${s}: i32, `).join('')}}`);
  out.push(`@group(0) @binding(${binding}) var<uniform> sizes: Sizes;`);
  k.buffers.forEach((b, i) => out.push(...accessors(i, b, layouts[i])));

  const arrays = k.body.filter((s): s is Extract<KStmt, { k: 'array' }> => s.k === 'array');
  for (const a of arrays) out.push(`var<workgroup> ${a.name}: array<f32, ${a.n}>;`);
  out.push(`var<workgroup> red_f: array<f32, ${WORKGROUP_SIZE}>;`);
  out.push(`var<workgroup> red_i: array<i32, ${WORKGROUP_SIZE}>;`);

  const p = new ExprPrinter(wgslDialect, k.buffers);
  out.push('');
  out.push(`@compute @workgroup_size(${WORKGROUP_SIZE})`);
  out.push('fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {');
  out.push(`  let ${ROW} = i32(wid.x + wid.y * 65535u);`);
  out.push(`  if (${ROW} >= sizes.rows) { return; }`);
  out.push('  let lid = i32(lidx);');
  for (const s of k.sizes) out.push(`  let ${s} = sizes.${s};`);
  for (const s of k.body) renderStmt(s, p, out, '  ');
  out.push('}');
  return out.join('\n') + '\n';
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

function renderStmt(s: KStmt, p: ExprPrinter, out: string[], indent: string): void {
  const inner = indent + '  ';
  switch (s.k) {
    case 'let':
      out.push(`${indent}let ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop':
      renderCoop(s, p, out, indent);
      break;
    case 'array': {
      out.push(`${indent}for (var ${s.v}: i32 = lid; ${s.v} < ${s.n}; ${s.v} += ${WORKGROUP_SIZE}) {`);
      out.push(`${inner}${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      out.push(`${indent}}`);
      out.push(`${indent}workgroupBarrier();`);
      break;
    }
    case 'store': {
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

/** Each thread folds a strided share of the range, then a tree over workgroup memory; every thread gets the result. */
function renderCoop(s: Extract<KStmt, { k: 'coop' }>, p: ExprPrinter, out: string[], indent: string): void {
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
