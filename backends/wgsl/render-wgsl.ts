// The WGSL renderer: kernel IR → one compute shader per kernel. A row runs as one workgroup: cooperative
// reductions split their range over the threads and combine in workgroup memory, row-local arrays live in
// workgroup memory, stores are strided over the threads. 16-bit weights stay packed two to a u32 (the NVIDIA
// adapter has no shader-f16) and are widened on load. Buffers larger than one storage binding may hold are bound
// in chunks and indexed through a small function.

import { DType } from '../../ir/dtype.ts';
import { KBuffer, KernelIR, KStmt, ROW } from '../kernel-ir.ts';
import { Dialect, ExprPrinter } from '../render-base.ts';
import { BufferLayout, wgslDialect, wordType, WORKGROUP_SIZE } from './dialect.ts';
import { planVectorized, renderStmt, RowContext, subgroupStore } from './statements.ts';

export { perWord, wgslDialect, wordType, WORKGROUP_SIZE } from './dialect.ts';
export type { BufferLayout } from './dialect.ts';

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
