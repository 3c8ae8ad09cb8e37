// The WGSL printer: a scheduled kernel → one compute shader. A row runs as one workgroup, each statement mapped
// onto its threads as the schedule says (backends/wgsl/statements.ts prints each mapping); this file prints the
// bindings, accessors and entry point. 16-bit weights stay packed two to a u32 (the NVIDIA adapter has no
// shader-f16) and are widened on load. Buffers larger than one storage binding may hold are bound in chunks and
// indexed through a small function.

import { DType } from '../../ir/dtype.ts';
import { randomFunction } from '../random-source.ts';
import { SubgroupMatrixCaps, webgpuCaps } from '../device-caps.ts';
import { KBuffer, KernelIR, KExpr, ROW } from '../kernel-ir.ts';
import { renderGemmWgsl } from './gemm.ts';
import { renderFlashWgsl } from './flash.ts';
import { Dialect, ExprPrinter, sizeName } from '../render-base.ts';
import { narrowActivations, scheduleKernel, ScheduledKernel, scheduleOrigin } from '../schedule.ts';
import { BufferLayout, wgslDialect, wgslHelpers, wordType } from './dialect.ts';
import { renderStmt, RowContext } from './statements.ts';
import { WgslBinding } from './bindings.ts';

export { perWord, wgslDialect, wordType, WORKGROUP_SIZE } from './dialect.ts';
export type { BufferLayout } from './dialect.ts';
export { bindingType } from './bindings.ts';
export type { WgslBinding } from './bindings.ts';

export interface RenderedWgsl {
  readonly code: string;
  readonly bindings: readonly WgslBinding[];
  /** Workgroups to dispatch (the schedule's grid: a GEMM's tiles, else the kernel's rows). */
  readonly rows: KExpr;
  /**
   * A second entry point, `merge`, to dispatch right after `main` with the same bindings over `rows` workgroups
   * (a decode attention's chunks merged), and the floats of the workspace the two share (binding 'workspace').
   */
  readonly merge?: { readonly rows: number; readonly workspaceFloats: number };
}

export interface WgslOptions {
  /** How each buffer is chunked (default: one binding each). */
  readonly layouts?: readonly BufferLayout[];
  /** The device has the `subgroups` feature. */
  readonly subgroups?: boolean;
  /** The device was opened with f16 subgroup matrices (runtime/webgpu/device.ts says when). */
  readonly subgroupMatrix?: SubgroupMatrixCaps;
  /** false: no kernel needs a second dispatch (a decode attention takes whole heads, as in artifacts). */
  readonly keyChunks?: boolean;
}

/** Schedules a kernel for a WebGPU device (webgpuCaps) and prints it: the one-step form. */
export function renderWgsl(k: KernelIR, opts: WgslOptions = {}): RenderedWgsl {
  const layouts = opts.layouts ?? defaultLayouts(k);
  const splitBuffers = new Set(layouts.flatMap((l, i) => (l.chunks > 1 ? [i] : [])));
  return printWgsl(scheduleKernel(k, wgslDevice(opts), { splitBuffers, ...(opts.keyChunks === false ? { keyChunks: false } : {}) }), { layouts });
}

/**
 * A graph's kernels as the device opened with `opts` runs them: the temporaries only subgroup-matrix GEMMs read
 * stored as f16 (narrowActivations). Render each with renderWgsl and the same options.
 */
export function narrowWgsl(kernels: readonly KernelIR[], opts: WgslOptions = {}): readonly KernelIR[] {
  return narrowActivations(kernels, wgslDevice(opts));
}

/** The device caps that `opts` describe. */
const wgslDevice = (opts: WgslOptions) => webgpuCaps({ subgroups: opts.subgroups ?? false, ...(opts.subgroupMatrix ? { subgroupMatrix: opts.subgroupMatrix } : {}) });

/** What a device's features and limits let its kernels use: subgroups, and f16 subgroup matrices. */
export function wgslFeatures(gpu: { readonly features: { has(f: string): boolean }; readonly limits: { readonly maxComputeWorkgroupStorageSize: number } }): WgslOptions {
  const matrix = gpu.features.has('chromium-experimental-subgroup-matrix') && gpu.features.has('shader-f16');
  return { subgroups: gpu.features.has('subgroups'), ...(matrix ? { subgroupMatrix: { workgroupBytes: gpu.limits.maxComputeWorkgroupStorageSize } } : {}) };
}

const defaultLayouts = (k: KernelIR): BufferLayout[] => k.buffers.map(() => ({ chunks: 1, chunkWords: 0 }));

/**
 * The WGSL source of a scheduled kernel: one workgroup per row, each statement as its schedule maps it. Buffers
 * larger than one storage binding may hold are bound in chunks (the schedule must have been made knowing which).
 */
export function printWgsl(sk: ScheduledKernel, opts: { readonly layouts?: readonly BufferLayout[] } = {}): RenderedWgsl {
  const k = sk.kernel;
  if (sk.device.target !== 'wgsl') throw new Error(`printWgsl: kernel ${k.name} is scheduled for ${sk.device.name}`);
  const layouts = opts.layouts ?? defaultLayouts(k);
  const origin = scheduleOrigin(sk);
  let byLayout = printedShaders.get(origin);
  if (!byLayout) printedShaders.set(origin, (byLayout = new Map()));
  const layoutKey = layouts.map((l) => `${l.chunks}:${l.chunkWords}`).join(',');
  let parts = byLayout.get(layoutKey);
  if (!parts) byLayout.set(layoutKey, (parts = shaderParts(sk, layouts)));
  const out = [...parts.before, `// kernel ${k.name}: fuses`, ...parts.random];
  for (const line of k.fused) out.push(`//   ${line}`);
  return { code: `${out.join('\n')}\n${parts.after}`, bindings: parts.bindings, rows: sk.grid.rows, ...(parts.merge ? { merge: parts.merge } : {}) };
}

/** A shader but for its comment: the lines before it and after it, and the random function if it calls one. */
interface ShaderParts {
  readonly before: readonly string[];
  readonly random: readonly string[];
  readonly after: string;
  readonly bindings: readonly WgslBinding[];
  readonly merge?: RenderedWgsl['merge'];
}

/**
 * The parts of each shader printed, by the schedule it was printed from and the buffers' layouts: kernels alike
 * but for their name, comment and buffers bound share a schedule (scheduleOrigin) and these parts.
 */
const printedShaders = new WeakMap<ScheduledKernel, Map<string, ShaderParts>>();

function shaderParts(sk: ScheduledKernel, layouts: readonly BufferLayout[]): ShaderParts {
  const k = sk.kernel;
  const threads = sk.grid.threads;
  const vec4Arrays = new Set(sk.arrays.filter((a) => a.vec4).map((a) => a.name));
  // Buffers a sum reads 16 bytes at a time are bound a second time, as vec4s.
  const vec4 = new Set<number>();
  for (const st of sk.stmts) {
    for (const plan of st.reductions.values()) {
      for (const s of plan.vector?.streams ?? []) {
        if (s.load.k !== 'load') continue;
        if (layouts[s.load.buf].chunks > 1) throw new Error(`printWgsl: kernel ${k.name} reads buffer ${s.load.buf} wide, but it is bound in chunks`);
        vec4.add(s.load.buf);
      }
    }
  }
  // Attention's decode form reads its keys and values as vec4s.
  if (k.flash && sk.flash?.units === 'decode') {
    for (const e of [k.flash.k, k.flash.v]) {
      if (e.k !== 'load' || layouts[e.buf].chunks > 1) throw new Error(`printWgsl: kernel ${k.name}'s decode attention reads a buffer bound in chunks`);
      vec4.add(e.buf);
    }
  }
  const dialect: Dialect = {
    ...wgslDialect,
    elem: (array, index) => (vec4Arrays.has(array) ? `${array}[(${index}) >> 2u][(${index}) & 3]` : `${array}[${index}]`),
  };
  const p = new ExprPrinter(dialect, k.buffers);
  p.sizes = new Set(k.sizes);
  const ctx: RowContext = { p, buffers: k.buffers, threads, vec4Arrays };
  const body: string[] = [];
  for (const s of k.sizes) body.push(`  let ${sizeName(s)} = sizes.${sizeName(s)};`);
  // The tile form, and the rows from which it runs rather than the row form (sk.tilesFrom).
  const tiles = k.gemm && sk.gemm ? renderGemmWgsl(k.gemm, sk.gemm, p, p.expr(k.gemm.rows, body, '  '), threads)
    : k.flash && sk.flash ? renderFlashWgsl(k.flash, sk.flash, p, threads) : undefined;
  for (const buf of (tiles && 'vec4Buffers' in tiles ? tiles.vec4Buffers : [])) vec4.add(buf);
  const rowForm: string[] = [];
  // Several rows a workgroup (Grid.sharedStatements): the first statements once, the rest in a loop over the rows.
  const shared = sk.grid.sharedStatements;
  if (sk.tilesFrom !== 0) {
    k.body.forEach((st, i) => {
      if (shared !== undefined && i === shared) rowForm.push(`  for (var ${ROW}: i32 = tf_wg; ${ROW} < ${p.expr(k.rows, rowForm, '  ')}; ${ROW} += ${p.expr(sk.grid.rows, rowForm, '  ')}) {`);
      renderStmt(st, sk.stmts[i], ctx, rowForm, shared !== undefined && i >= shared ? '    ' : '  ');
    });
    if (shared !== undefined) rowForm.push('  }');
  }
  if (tiles && sk.tilesFrom) {
    const extent = p.expr(k.gemm?.rows ?? k.flash!.queries, body, '  ');
    body.push(`  if (${extent} >= ${sk.tilesFrom}) {`, ...tiles.body.map((l) => `  ${l}`), '  } else {', ...rowForm.map((l) => `  ${l}`), '  }');
  } else {
    body.push(...(tiles?.body ?? rowForm));
  }

  const before = sk.subgroups ? ['enable subgroups;', 'diagnostic(off, subgroup_uniformity);'] : [];
  // Subgroup-matrix tiles: f16 operands; each subgroup's block is placed by lid / 32, which the uniformity analysis
  // cannot prove the same across a subgroup (the device is opened with them only where subgroups are 32 lanes).
  if (sk.gemm?.units === 'subgroup-matrix-f16') before.push('enable f16;', 'enable chromium_experimental_subgroup_matrix;', 'diagnostic(off, chromium.subgroup_matrix_uniformity);');
  const random = body.some((l) => l.includes('tf_random(')) ? [randomFunction('wgsl')] : [];
  const out: string[] = [];
  const bindings: WgslBinding[] = [];
  const accessorLines = k.buffers.flatMap((b, i) => accessors(i, b, layouts[i]));
  const merge = tiles && 'merge' in tiles ? tiles.merge : undefined;
  out.push(...wgslHelpers([...body, ...(merge?.body ?? []), ...accessorLines].join('\n')));
  k.buffers.forEach((b, i) => {
    const access = b.written ? 'read_write' : 'read';
    for (let c = 0; c < layouts[i].chunks; c++) {
      // A written 16-bit buffer's words are atomics: two threads may store the two halves of one (accessors).
      const word = packedStores(b) ? 'atomic<u32>' : wordType(b.dtype);
      out.push(`@group(0) @binding(${bindings.length}) var<storage, ${access}> b${i}_${c}: array<${word}>;`);
      bindings.push({ kind: 'chunk', buffer: i, chunk: c });
    }
  });
  for (const buf of vec4) {
    const t = k.buffers[buf].dtype === DType.F32 ? 'vec4<f32>' : 'vec4<u32>';
    out.push(`@group(0) @binding(${bindings.length}) var<storage, read> b${buf}_v4: array<${t}>;`);
    bindings.push({ kind: 'vec4', buffer: buf });
  }
  if (merge) {
    out.push(`@group(0) @binding(${bindings.length}) var<storage, read_write> tf_ws: array<f32>;`);
    bindings.push({ kind: 'workspace' });
  }
  out.push(`struct Sizes { rows: i32, ${k.sizes.map((s) => `${sizeName(s)}: i32, `).join('')}}`);
  out.push(`@group(0) @binding(${bindings.length}) var<uniform> sizes: Sizes;`);
  bindings.push({ kind: 'sizes' });
  out.push(...accessorLines);

  for (const a of sk.arrays) {
    // Workgroup memory holds f32 and i32 (bools as f32, as before the schedule).
    const t = a.type === 'i32' ? 'i32' : 'f32';
    out.push(a.vec4 ? `var<workgroup> ${a.name}: array<vec4<f32>, ${a.elements / 4}>;` : `var<workgroup> ${a.name}: array<${t}, ${a.elements}>;`);
  }
  if (tiles) out.push(...tiles.decls);
  if (sk.tilesFrom !== 0) {
    out.push(`var<workgroup> red_f: array<f32, ${threads}>;`);
    out.push(`var<workgroup> red_i: array<i32, ${threads}>;`);
  }
  // i32 values of an argmax (red_f holds f32 ones)
  if (body.some((l) => l.includes('red_v['))) out.push(`var<workgroup> red_v: array<i32, ${threads}>;`);
  out.push('');
  out.push(`@compute @workgroup_size(${threads})`);
  const sg = sk.subgroups ? ', @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32' : '';
  out.push(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32${sg}) {`);
  // Rows beyond the largest x dimension continue along y (the schedule's grid overflow).
  const first = sk.grid.sharedStatements !== undefined ? 'tf_wg' : ROW;
  out.push(`  let ${first} = i32(wid.x + wid.y * ${sk.grid.maxWorkgroupsX}u);`);
  out.push(`  if (${first} >= sizes.rows) { return; }`);
  out.push('  let lid = i32(lidx);');
  if (sk.subgroups) {
    out.push('  let lane = i32(sg_lane);', '  let lanes = i32(sg_size);', '  let subgroup = lid / lanes;', `  let subgroups = ${threads} / lanes;`);
  }
  out.push(...body);
  out.push('}');
  if (merge) {
    out.push('', `@compute @workgroup_size(${threads})`);
    out.push('fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {');
    out.push(`  let ${ROW} = i32(wid.x);`);
    out.push(`  if (${ROW} >= ${merge.rows}) { return; }`);
    out.push('  let lid = i32(lidx);');
    for (const s of k.sizes) out.push(`  let ${sizeName(s)} = sizes.${sizeName(s)};`);
    out.push(...merge.body);
    out.push('}');
  }
  return { before, random, after: out.join('\n') + '\n', bindings, ...(merge ? { merge: { rows: merge.rows, workspaceFloats: merge.workspaceFloats } } : {}) };
}

/** Whether a buffer is stored into 16 bits at a time: packed two to a u32 word, written through atomics. */
const packedStores = (b: KBuffer) => b.written && (b.dtype === DType.F16 || b.dtype === DType.BF16);

/**
 * load_bN(i) (and store_bN(i, v) for written buffers) over the buffer's chunks and packing. A 16-bit store rounds
 * to nearest even (NaN stays NaN, overflow goes to ±∞, as on every backend) and replaces its half of the word by
 * an atomic AND then an atomic OR: the two halves may be stored by different threads of one dispatch, and the two
 * operations on disjoint bits give the same word in any interleaving.
 */
function accessors(i: number, b: KBuffer, layout: BufferLayout): string[] {
  // Kernels compute u32 values as i32 bits (ir/ops.ts allows u32 no arithmetic).
  const t = b.dtype === DType.I32 || b.dtype === DType.U32 ? 'i32' : b.dtype === DType.Bool ? 'bool' : 'f32';
  const chunked = (w: string, body: (arr: string) => string): string[] => {
    if (layout.chunks === 1) return [`  ${body(`b${i}_0[${w}]`)}`];
    const lines = [`  let c = ${w} / ${layout.chunkWords}; let o = ${w} % ${layout.chunkWords};`];
    for (let c = 0; c < layout.chunks; c++) lines.push(`  if (c == ${c}) { ${body(`b${i}_${c}[o]`)} }`);
    if (!body('x').includes('return ')) return lines;
    return [...lines, `  return ${t === 'i32' ? '0i' : t === 'bool' ? 'false' : '0.0'};`];
  };
  const packed = packedStores(b);
  // A word as a u32 value (an atomic one loaded).
  const word = (a: string) => (packed ? `atomicLoad(&${a})` : a);
  const lines: string[] = [`fn load_b${i}(i: i32) -> ${t} {`];
  switch (b.dtype) {
    case DType.BF16:
      lines.push('  let w = u32(i) >> 1u;', ...chunked('w', (a) => `let x = ${word(a)}; return bitcast<f32>(select(x << 16u, x & 0xffff0000u, (i & 1) == 1));`));
      break;
    case DType.F16:
      lines.push('  let w = u32(i) >> 1u;', ...chunked('w', (a) => `return unpack2x16float(${word(a)})[u32(i) & 1u];`));
      break;
    case DType.Bool: case DType.U32:
      lines.push('  let w = u32(i);', ...chunked('w', (a) => (b.dtype === DType.Bool ? `return ${a} != 0u;` : `return bitcast<i32>(${a});`)));
      break;
    default:
      lines.push('  let w = u32(i);', ...chunked('w', (a) => `return ${a};`));
  }
  lines.push('}');
  if (packed) {
    const bits = b.dtype === DType.BF16 ? 'tf_bf16_bits(v)' : 'tf_f16_bits(v)';
    lines.push(
      `fn store_b${i}(i: i32, v: f32) {`,
      '  let w = u32(i) >> 1u;',
      '  let shift = (u32(i) & 1u) * 16u;',
      `  let bits = ${bits} << shift;`,
      ...chunked('w', (a) => `atomicAnd(&${a}, ~(0xffffu << shift)); atomicOr(&${a}, bits);`),
      '}',
    );
  } else if (b.written) {
    const value = b.dtype === DType.Bool ? 'select(0u, 1u, v)' : b.dtype === DType.U32 ? 'bitcast<u32>(v)' : 'v';
    lines.push(`fn store_b${i}(i: i32, v: ${t}) {`, '  let w = u32(i);', ...chunked('w', (a) => `${a} = ${value};`), '}');
  }
  return lines;
}
