// The CUDA printer: a scheduled kernel → CUDA C, one `extern "C" __global__` function per kernel. A row is a
// thread block (grid-striding when there are more rows than blocks), each statement mapped onto its threads as
// the schedule says: cooperative reductions combine through warp shuffles and shared memory (reductions.ts),
// row-local arrays live in shared memory, stores go one per thread, per warp or split across warps. 16-bit weights
// stay 16-bit (`unsigned short`, widened with bit operations, so NVRTC needs no headers) and compute is f32.

import { DType } from '../../ir/dtype.ts';
import { cudaCaps, DeviceCaps } from '../device-caps.ts';
import { KernelIR, KExpr, KStmt, ReduceOp, replaceLoads, replaceReductions, ROW, Scalar, topReductions, unconditionalLoads, varsOf } from '../kernel-ir.ts';
import { Stream } from '../schedule-vector.ts';
import { cLike, Dialect, ExprPrinter, sizeName } from '../render-base.ts';
import { RowStream } from '../weight-stream.ts';
import { ArrayPlacement, ReductionPlan, rowInvariantPrologue, scheduleKernel, scheduleKernels, ScheduledKernel, ScheduleOptions, scheduleOrigin, SplitScratchNeeds, StmtSchedule } from '../schedule.ts';
import { CUDA_BLOCK, cudaPrelude, ld8Function } from './prelude.ts';
import { blockScope, renderReduction, Scope, threadScope, warpScope } from './reductions.ts';
import { renderGemmCuda } from './gemm.ts';
import { renderFlashCuda } from './flash.ts';
import { SharedMemory, SharedType } from './shared-memory.ts';

export { CUDA_BLOCK, cudaPrelude };

/** Element type of a kernel buffer in device memory. */
export const cudaElemType: Record<DType, string> = {
  [DType.F32]: 'float',
  [DType.BF16]: 'unsigned short',
  [DType.F16]: 'unsigned short',
  [DType.I32]: 'int',
  [DType.U32]: 'unsigned',
  [DType.Bool]: 'unsigned char',
};

function floatLiteral(v: number): string {
  if (Number.isNaN(v)) return 'TF_NAN';
  if (!Number.isFinite(v)) return v > 0 ? 'TF_INF' : '(-TF_INF)';
  const s = String(Math.abs(v));
  const lit = `${/[.e]/.test(s) ? s : `${s}.0`}f`;
  return v < 0 || Object.is(v, -0) ? `(-${lit})` : lit;
}

const call = (f: string) => (a: string) => `${f}(${a})`;

/** Compute types as CUDA spells them (each may be a shared array's element). */
const cudaScalarType = { f32: 'float', i32: 'int', bool: 'bool' } as const satisfies Record<Scalar, SharedType>;

export const cudaDialect: Dialect = {
  type: cudaScalarType,
  constDecl: (name, t, value) => `const ${cudaDialect.type[t]} ${name} = ${value};`,
  varDecl: (name, t, value) => `${cudaDialect.type[t]} ${name} = ${value};`,
  forLoop: (v, n) => `for (int ${v} = 0; ${v} < ${n}; ${v}++) {`,
  unary: {
    ...cLike.unary,
    abs: (a, t) => (t === 'i32' ? `abs(${a})` : `fabsf(${a})`), exp: call('expf'), log: call('logf'), sqrt: call('sqrtf'), rsqrt: call('rsqrtf'),
    sin: call('sinf'), cos: call('cosf'), tanh: call('tanhf'), floor: call('floorf'),
    recip: (a) => `(1.0f / ${a})`,
    sigmoid: (a) => `(1.0f / (1.0f + expf(-${a})))`,
    silu: (a) => `(${a} / (1.0f + expf(-${a})))`,
  },
  sinCos: (a, s, c) => `float ${s}, ${c}; sincosf(${a}, &${s}, &${c});`,
  binary: {
    ...cLike.binary,
    // powf has C's special cases; i32 powers, division and maximum/minimum are the prelude's (README, Numerics).
    pow: (a, b, t) => (t === 'f32' ? `powf(${a}, ${b})` : `tf_ipow(${a}, ${b})`),
    div: (a, b, t) => (t === 'i32' ? `tf_idiv(${a}, ${b})` : `(${a} / ${b})`),
    max: (a, b, t) => (t === 'f32' ? `tf_fmax(${a}, ${b})` : `tf_imax(${a}, ${b})`),
    min: (a, b, t) => (t === 'f32' ? `tf_fmin(${a}, ${b})` : `tf_imin(${a}, ${b})`),
    index: (a, b) => `tf_imin(tf_imax(${a}, 0), ${b} - 1)`,
  },
  literal: (value, t) => {
    if (t === 'bool') return value ? 'true' : 'false';
    if (t === 'f32') return floatLiteral(value);
    // u32 values are held by their bits.
    const i = value | 0;
    return i === -2147483648 ? '(-2147483647 - 1)' : i < 0 ? `(${i})` : String(i);
  },
  cast: (a, from, to, round, u32) => {
    const x = from === to ? a : to === 'bool' ? `(${a} != 0)`
      : from === 'f32' && to === 'i32' ? (u32 ? `((int)tf_f2u(${a}))` : `tf_f2i(${a})`)
      : u32 && from === 'i32' ? `((float)(unsigned)${a})` : `((${cudaDialect.type[to]})${a})`;
    return round ? `tf_round_${round}(${x})` : x;
  },
  load: (buf, b, index) => {
    switch (b.dtype) {
      case DType.BF16: return `tf_bf16(b${buf}[${index}])`;
      case DType.F16: return `tf_f16(b${buf}[${index}])`;
      case DType.U32: return `((int)b${buf}[${index}])`;
      case DType.Bool: return `(b${buf}[${index}] != 0)`;
      case DType.F32: case DType.I32: return `b${buf}[${index}]`;
      default: return b.dtype satisfies never;
    }
  },
  elem: (array, index) => `${array}[${index}]`,
  lowest: (t) => (t === 'i32' ? '((int)0x80000000)' : '(-TF_INF)'),
  argmaxTakes: (x, best, t) => (t === 'f32' ? `(${x} > ${best} || (tf_isnan(${x}) && !tf_isnan(${best})))` : `${x} > ${best}`),
};

/** A value of compute type `t` converted for storing into a buffer of dtype `d`. */
export function storeValue(d: DType, value: string, t: Scalar): string {
  switch (d) {
    case DType.F32: return t === 'f32' ? value : `((float)${value})`;
    case DType.BF16: return `tf_to_bf16(${value})`;
    case DType.F16: return `tf_to_f16(${value})`;
    case DType.I32: return t === 'i32' ? value : `((int)${value})`;
    case DType.U32: return `((unsigned)${value})`;
    case DType.Bool: return `((unsigned char)(${value} ? 1 : 0))`;
    default: return d satisfies never;
  }
}

export interface CudaFunction {
  /** The function's source, without the prelude. */
  readonly code: string;
  readonly name: string;
  /** Blocks to launch (the schedule's grid: a GEMM's tiles, else the kernel's rows). */
  readonly rows: KExpr;
  /** Blocks a cluster (Grid.clusterBlocks), where the launch groups them; else undefined (1). */
  readonly clusterBlocks?: KExpr;
  /** Dynamic shared memory the launch must ask for (0 when the row-local arrays fit statically). */
  readonly dynamicSharedBytes: number;
  /** Launched to overlap its predecessor (programmatic dependent launch): the function waits for it inside. */
  readonly overlapsPredecessor: boolean;
  /** How it stores each of its buffers (a temporary may be narrower than its value: backends/narrow-activations.ts). */
  readonly bufferDTypes: readonly DType[];
  /**
   * A GEMM whose tiles may split their depth (GemmPlan.split), or attention's decode form over key chunks
   * (FlashPlan.keyChunks): its last two parameters are a workspace of this many floats and this many counters, zero
   * at the first launch (the kernel leaves them zero).
   */
  readonly splitScratch?: SplitScratchNeeds;
}

const schedule = (k: KernelIR) => scheduleKernel(k, cudaCaps());

/** A standalone .cu file for one kernel: the prelude and the kernel (what --dump-kernels writes). */
export function renderCuda(k: KernelIR): string {
  return `${cudaPrelude}\n${printCudaFunction(schedule(k)).code}`;
}

export interface CudaModule {
  /** The prelude and one function per distinct kernel body. */
  readonly source: string;
  /** Per kernel, in order: the function that runs it. */
  readonly functions: readonly CudaFunction[];
}

/** Some of a program's functions with the prelude: what NVRTC compiles on one thread. */
export interface CudaUnit {
  readonly source: string;
  readonly names: readonly string[];
}

export function renderCudaModule(kernels: readonly KernelIR[], prefix = '', device: DeviceCaps = cudaCaps()): CudaModule {
  return printCudaModule(scheduleKernels(kernels, device), prefix);
}

/** Schedules a kernel for CUDA and prints it as one function. */
export function renderCudaFunction(k: KernelIR, name = k.name, comment = true): CudaFunction {
  return printCudaFunction(schedule(k), name, comment);
}

/**
 * Scheduled kernels as one compilation unit. Kernels that differ only in the buffers they are given (every
 * transformer layer's) share one function, named after the first of them with `prefix`.
 */
export function printCudaModule(kernels: readonly ScheduledKernel[], prefix = ''): CudaModule {
  const { distinct, functions } = printFunctions([{ kernels, prefix }]);
  return { source: [cudaPrelude, ...distinct.map((f) => f.code)].join('\n'), functions: functions[0] };
}

/**
 * Several graphs' kernels as one program in `units` compilation units of about equal size (NVRTC compiles a unit on
 * one thread: units compile in parallel, a cold start's largest cost). Kernels alike in any graph (a prompt's and a
 * prefill's, every layer's) share one function, named after the first of them with its graph's prefix. Per graph,
 * the function of each kernel. A graph's `opts` schedule it (a megakernel's graph: cuda/megakernel.ts).
 */
export function renderCudaProgram(graphs: readonly { readonly kernels: readonly KernelIR[]; readonly prefix: string; readonly opts?: ScheduleOptions }[], device: DeviceCaps, units: number,
  opts: { readonly stamps?: boolean } = {}): { readonly functions: readonly (readonly CudaFunction[])[]; readonly units: readonly CudaUnit[] } {
  const stamps = !!opts.stamps;
  const { distinct, functions } = printFunctions(graphs.map((g) => ({ kernels: scheduleKernels(g.kernels, device, g.opts), prefix: g.prefix })), stamps);
  return { functions, units: splitUnits(distinct, units, stamps) };
}

/** Each graph's kernels as functions, kernels alike sharing one; and the distinct functions, in order. */
function printFunctions(graphs: readonly { readonly kernels: readonly ScheduledKernel[]; readonly prefix: string }[], stamps = false) {
  const byBody = new Map<string, CudaFunction>();
  const functions = graphs.map(({ kernels, prefix }) => kernels.map((sk) => {
    const body = printCudaFunction(sk, 'KERNEL', false).code;
    let f = byBody.get(body);
    if (!f) byBody.set(body, (f = printCudaFunction(sk, `${prefix}${sk.kernel.name}`, true, stamps)));
    return f;
  }));
  return { distinct: [...byBody.values()], functions };
}

/** Functions dealt into at most `n` units of about equal code size (largest first, each to the smallest so far). */
function splitUnits(functions: readonly CudaFunction[], n: number, stamps: boolean): CudaUnit[] {
  const groups = Array.from({ length: Math.max(1, Math.min(n, functions.length)) }, () => ({ size: 0, members: [] as number[] }));
  const bySize = functions.map((f, i) => i).sort((a, b) => functions[b].code.length - functions[a].code.length);
  for (const i of bySize) {
    const g = groups.reduce((a, b) => (b.size < a.size ? b : a));
    g.size += functions[i].code.length;
    g.members.push(i);
  }
  return groups.map((g) => {
    const members = g.members.sort((a, b) => a - b).map((i) => functions[i]);
    return { source: [...(stamps ? ['#define TF_STAMPS'] : []), cudaPrelude, ...members.map((f) => f.code)].join('\n'), names: members.map((f) => f.name) };
  });
}

type ArrayStmt = Extract<KStmt, { k: 'array' }>;
type StoreStmt = Extract<KStmt, { k: 'store' }>;
type ReduceExpr = Extract<KExpr, { k: 'reduce' }>;

/**
 * Prints expressions; a statement's first-level reductions run as its schedule plans them (shared by a warp's
 * lanes, or one thread's with wide loads), reductions nested inside them as plain loops.
 */
class CudaPrinter extends ExprPrinter {
  plans: ReadonlyMap<string, ReductionPlan> = new Map();
  private nested = 0;

  override reduceInto(acc: string, op: ReduceOp, v: string, n: string, body: KExpr, t: Scalar, out: string[], indent: string): void {
    const plan = this.nested === 0 ? this.plans.get(v) : undefined;
    this.nested++;
    try {
      if (plan?.lanes === 'subgroup') renderReduction(acc, op, v, n, body, t, this, warpScope, plan, out, indent);
      else if (plan?.lanes === 'thread') renderReduction(acc, op, v, n, body, t, this, threadScope, plan, out, indent);
      else super.reduceInto(acc, op, v, n, body, t, out, indent);
    } finally {
      this.nested--;
    }
  }
}

/**
 * A scheduled kernel as one CUDA function named `name`; `comment` false drops the fused-nodes comment (for dedup
 * keys). With `stamps` (a source with TF_STAMPS defined, for a step's timeline) the kernel calls the function as
 * `name_body` between its block's stamps, taking the stamps and its id as two more parameters (the last).
 */
export function printCudaFunction(sk: ScheduledKernel, name = sk.kernel.name, comment = true, stamps = false): CudaFunction {
  const k = sk.kernel;
  if (sk.device.target !== 'cuda') throw new Error(`printCudaFunction: kernel ${k.name} is scheduled for ${sk.device.name}`);
  if (sk.grid.threads !== CUDA_BLOCK || sk.device.subgroup?.width !== 32) throw new Error('printCudaFunction: the prelude assumes blocks of TF_BLOCK threads and warps of 32');
  const out: string[] = [];
  if (comment) {
    out.push(`// kernel ${k.name}: fuses`);
    // A trailing backslash would continue the comment onto the next line.
    for (const line of k.fused) out.push(`//   ${line.endsWith('\\') ? `${line} ` : line}`);
  }
  const params = k.buffers.map((b, i) => `${b.written ? '' : 'const '}${cudaElemType[b.dtype]}* __restrict__ b${i}`);
  for (const s of k.sizes) params.push(`const int ${sizeName(s)}`);
  const split = sk.tilesFrom !== undefined ? splitNeeds([sk.gemm?.split, sk.gemm?.shortTile?.split, sk.flash?.keyChunks]) : undefined;
  if (split) params.push('float* __restrict__ tf_ws', 'unsigned* __restrict__ tf_count');
  const bounds = sk.workgroupsPerProcessor ? `TF_BLOCK, ${sk.workgroupsPerProcessor}` : 'TF_BLOCK';
  const origin = scheduleOrigin(sk);
  let body = printedBodies.get(origin);
  if (!body) printedBodies.set(origin, (body = functionBody(sk, 'kernel').body));
  if (stamps) {
    const args = params.map((p) => p.slice(p.lastIndexOf(' ') + 1));
    out.push(`static __device__ __forceinline__ void ${name}_body(${params.join(', ')}) {`, `${body}extern "C" __global__ void __launch_bounds__(${bounds}) ${name}(${[...params, 'unsigned long long* __restrict__ tf_stamps', 'const int tf_stamp_id'].join(', ')}) {`,
      '  const unsigned long long tf_started = tf_stamp_start();', `  ${name}_body(${args.join(', ')});`, '  tf_stamp_end(tf_stamps, tf_stamp_id, tf_started);', '}');
    body = '';
  } else {
    out.push(`extern "C" __global__ void __launch_bounds__(${bounds}) ${name}(${params.join(', ')}) {`);
  }
  return {
    code: `${out.join('\n')}\n${body}`, name, rows: sk.grid.rows, dynamicSharedBytes: sk.dynamicWorkgroupBytes,
    ...(sk.grid.clusterBlocks ? { clusterBlocks: sk.grid.clusterBlocks } : {}),
    overlapsPredecessor: !!sk.overlap, bufferDTypes: k.buffers.map((b) => b.dtype),
    ...(split ? { splitScratch: { workspaceFloats: split.workspaceFloats, counters: split.counters } } : {}),
  };
}

/** Waits for the predecessor's writes (a kernel launched to overlap it), then lets the successor be launched. */
export const gridWait = (indent: string) => [`${indent}tf_grid_wait();`, `${indent}tf_grid_release();`];

/** The scratch that serves each of a kernel's forms that splits its work (the largest of each need), if any. */
function splitNeeds(forms: readonly (SplitScratchNeeds | undefined)[]): SplitScratchNeeds | undefined {
  const needs = forms.filter((f): f is SplitScratchNeeds => f !== undefined);
  if (!needs.length) return undefined;
  return { workspaceFloats: Math.max(...needs.map((n) => n.workspaceFloats)), counters: Math.max(...needs.map((n) => n.counters)) };
}

/**
 * A scheduled kernel's code after its signature as a megakernel's task runs it (./megakernel.ts): its rows
 * [tf_first, tf_end), the first statements that read no row once before them (rowInvariantPrologue: a decode
 * step's norm before its projection; on the H200 0.902 → 0.885 ms a token, BENCHMARKS.md twenty-sixth session), its
 * shared memory slices of the pool at tf_pool, of which it takes `poolBytes`. Refused for
 * a kernel that runs as tiles (they loop over the grid's blocks).
 */
export function cudaTaskBody(sk: ScheduledKernel, streams: readonly RowStream[] = []): PrintedBody {
  return functionBody(sk, 'task', streams);
}

/**
 * The code of each function after its signature, by the schedule it was printed from: kernels alike but for their
 * name, comment and buffers bound share a schedule (scheduleOrigin) and this code.
 */
const printedBodies = new WeakMap<ScheduledKernel, string>();

/** A function's code after its signature, and the bytes of the pool its shared memory takes (a task's). */
interface PrintedBody {
  readonly body: string;
  readonly poolBytes: number;
}

/**
 * A scheduled kernel's function after its signature: shared memory, the tile form and the row form. A kernel's
 * blocks stride over its rows; a task runs rows [tf_first, tf_end) and has no launch to wait for.
 */
function functionBody(sk: ScheduledKernel, form: 'kernel' | 'task', streams: readonly RowStream[] = []): PrintedBody {
  const k = sk.kernel;
  const task = form === 'task';
  const shared = task ? SharedMemory.task(sk.dynamicWorkgroupBytes) : SharedMemory.kernel();
  const out: string[] = [];
  const printed = () => ({ body: out.join('\n') + '\n', poolBytes: shared.poolBytes });
  // Scratch for block-wide reductions: floats for sums and maxima of floats and for argmax values of floats, ints
  // for the rest and for argmax indices; tf_rv for argmax values of ints.
  // (None when the kernel always runs as tiles: its row form is not printed.)
  const rowForm = sk.tilesFrom !== 0;
  const coops = rowForm ? k.body.flatMap((s) => (s.k === 'coop' ? [s.op === 'argmax' ? `argmax:${s.body.t}` : s.body.t] : [])) : [];
  const scratch = (type: SharedType, name: string) => out.push(`  ${shared.array(type, name, CUDA_BLOCK / 32 + 1, { printedCount: 'TF_WARPS + 1' })}`);
  if (coops.some((t) => t === 'argmax:f32' || t === 'f32')) scratch('float', 'tf_rf');
  if (coops.some((t) => t !== 'f32')) scratch('int', 'tf_ri');
  if (coops.includes('argmax:i32')) scratch('int', 'tf_rv');
  declareArrays(sk.arrays, shared, out);
  // A kernel that overlaps its predecessor waits for its writes, then lets its own successor start. A GEMM's short
  // tile first issues its first weight loads, which no kernel writes, and attention's decode form its first keys and
  // values (FlashPlan.earlyKeys): so every form waits on its own.
  const overlap = !!sk.overlap && !task;
  const waitsInForms = overlap && (!!sk.gemm?.shortTile || !!sk.flash?.earlyKeys);
  if (overlap && !waitsInForms) out.push(...gridWait('  '));

  const p = new CudaPrinter(cudaDialect, k.buffers);
  p.sizes = new Set(k.sizes);
  // The tile form, and the rows from which it runs rather than the row form.
  const tiles: string[] = [];
  // Of the tile forms only attention's decode form loops over rows, as a task does (backends/megakernel-schedule.ts).
  if (task && ((k.gemm && sk.gemm) || (k.flash && sk.flash && sk.flash.units !== 'decode'))) {
    throw new Error(`CUDA: kernel ${k.name} may run as tiles, which loop over the grid's blocks; a megakernel's task runs rows only`);
  }
  if (k.gemm && sk.gemm) renderGemmCuda(k.gemm, sk.gemm, k.gemm.rows, waitsInForms, p, shared, tiles);
  else if (k.flash && sk.flash) renderFlashCuda(k.flash, sk.flash, p, shared, tiles, task, waitsInForms);
  if (!rowForm) {
    out.push(...tiles, '}');
    return printed();
  }
  const body: string[] = waitsInForms ? gridWait('  ') : [];
  // A task of several rows computes the statements that do not read the row once (a norm before a projection).
  const once = task ? rowInvariantPrologue(k) ?? 0 : 0;
  if (once) body.push(`  // Statements 0 to ${once - 1} once a task: they do not read the row.`);
  k.body.slice(0, once).forEach((s, i) => renderStmt(s, sk.stmts[i], p, shared, body, '  '));
  if (task) {
    // Weights the megakernel streams (backends/weight-stream.ts) are read from the row's page where it has one
    // (tf_ring: none when bisecting), through pointers of their buffers' names offset so that the same indices land there.
    for (const r of streams) body.push(`  const ${cudaElemType[k.buffers[r.buffer].dtype]}* const tf_w${r.buffer} = b${r.buffer};`);
    if (streams.length) body.push('  int tf_taken = tf_ring_first(tf_ring);');
    body.push(`  for (int ${ROW} = tf_first; ${ROW} < tf_end; ${ROW}++) {`);
    if (streams.length) body.push('    const unsigned char* const tf_page = tf_ring_take(tf_ring, tf_taken);');
    for (const r of streams) {
      const t = cudaElemType[k.buffers[r.buffer].dtype];
      body.push(`    const ${t}* const b${r.buffer} = tf_page ? reinterpret_cast<const ${t}*>(tf_page + ${r.pageOffset} - (${r.first}ll + ${r.perRow}ll * ${ROW})) : tf_w${r.buffer};`);
    }
  } else {
    // The row form's row count: the kernel's rows (the grid is larger when it may run the tiles instead).
    const rows = p.expr(tiles.length ? k.rows : sk.grid.rows, body, '  ');
    body.push(`  const int tf_rows = ${rows};`);
    // Blocks stride over the rows (the grid may have fewer blocks than rows).
    body.push(`  for (int ${ROW} = blockIdx.x; ${ROW} < tf_rows; ${ROW} += gridDim.x) {`);
  }
  k.body.forEach((s, i) => {
    if (i >= once) renderStmt(s, sk.stmts[i], p, shared, body, '    ');
  });
  if (streams.length) body.push(`    tf_ring_give(tf_ring, tf_taken, ${ROW} + 1 == tf_end);`);
  // The next row rewrites the shared arrays: wait until every thread has read this row's (none do after a prologue).
  if (sk.arrays.length && !once) body.push('    __syncthreads();');
  body.push('  }');
  const text = body.join('\n');
  if (/\btf_tid\b/.test(text)) out.push('  const int tf_tid = threadIdx.x;');
  if (/\btf_lane\b/.test(text)) out.push('  const int tf_lane = threadIdx.x & 31;');
  if (/\btf_warp\b/.test(text)) out.push('  const int tf_warp = threadIdx.x >> 5;');
  if (tiles.length) {
    const extent = p.expr(k.gemm?.rows ?? k.flash!.queries, out, '  ');
    out.push(`  if (${extent} >= ${sk.tilesFrom}) {`, ...tiles.map((l) => `  ${l}`), '  } else {', ...body.map((l) => `  ${l}`), '  }', '}');
  } else {
    out.push(...body, '}');
  }
  return printed();
}

/** Declares the row-local arrays where the schedule placed them: statically, or in the launch's dynamic shared memory. */
function declareArrays(arrays: readonly ArrayPlacement[], shared: SharedMemory, out: string[]): void {
  if (arrays.some((a) => a.dynamicOffset !== undefined)) out.push(`  ${shared.dynamic('tf_smem')}`);
  for (const a of arrays) {
    const t = cudaScalarType[a.type];
    if (a.dynamicOffset === undefined) out.push(`  ${shared.array(t, a.name, a.elements, { aligned: true })}`);
    else out.push(`  ${t}* const ${a.name} = reinterpret_cast<${t}*>(tf_smem + ${a.dynamicOffset});`);
  }
}

/**
 * `for (v over [0, n)) { body }` spread over threads, or over warps with lane 0 writing; over threads `each` at a
 * thread where the schedule gives every thread the same count (Mapping 'thread-per-element'), unrolled.
 */
function parallelLoop(v: string, n: string, each: number | undefined, warp: boolean, out: string[], indent: string, body: (inner: string) => string): void {
  const inner = indent + '  ';
  if (!warp && each) {
    out.push(`${indent}#pragma unroll`, `${indent}for (int tf_e = 0; tf_e < ${each}; tf_e++) {`, `${inner}const int ${v} = tf_tid + tf_e * TF_BLOCK;`);
  } else {
    out.push(warp
      ? `${indent}for (int ${v} = tf_warp; ${v} < ${n}; ${v} += TF_WARPS) {`
      : `${indent}for (int ${v} = tf_tid; ${v} < ${n}; ${v} += TF_BLOCK) {`);
  }
  const write = body(inner);
  out.push(warp ? `${inner}if (tf_lane == 0) ${write}` : `${inner}${write}`);
  out.push(`${indent}}`);
}

/**
 * An array's elements in runs of 8 neighbours a thread (Mapping 'thread-per-element' runs): each run's streams
 * read 16 bytes at a time, its elements computed from them and stored to workgroup memory 16 bytes at a time.
 */
function renderArrayRuns(s: ArrayStmt, each: number, runs: readonly Stream[], p: CudaPrinter, out: string[], indent: string): void {
  const i1 = indent + '  ';
  const i2 = i1 + '  ';
  const at = `${s.name}_at`;
  out.push(`${indent}#pragma unroll`);
  out.push(`${indent}for (int tf_r = 0; tf_r < ${each / 8}; tf_r++) {`);
  out.push(`${i1}const int ${at} = (tf_r * TF_BLOCK + tf_tid) * 8;`);
  const replaced = new Map<string, KExpr>();
  runs.forEach((r, i) => {
    if (r.load.k !== 'load') throw new Error(`CUDA: array ${s.name} reads a run of array ${r.load.array}`);
    const reg = `${s.name}_r${i}`;
    out.push(`${i1}float ${reg}[8];`);
    out.push(`${i1}${ld8Function(r.dtype)}(b${r.load.buf} + ${p.expr(r.base, out, i1)} + ${at}, ${reg});`);
    replaced.set(r.key, { k: 'elem', array: reg, index: { k: 'var', name: 'tf_e', t: 'i32' }, t: 'f32' });
  });
  out.push(`${i1}float ${s.name}_run[8];`);
  out.push(`${i1}#pragma unroll`);
  out.push(`${i1}for (int tf_e = 0; tf_e < 8; tf_e++) {`);
  out.push(`${i2}const int ${s.v} = ${at} + tf_e;`);
  out.push(`${i2}(void)${s.v};`);
  out.push(`${i2}${s.name}_run[tf_e] = ${p.expr(replaceLoads(s.value, replaced), out, i2)};`);
  out.push(`${i1}}`);
  out.push(`${i1}tf_st8_smem(${s.name} + ${at}, ${s.name}_run);`);
  out.push(`${indent}}`);
}

/**
 * `slices` threads per element, neighbours on neighbours: each folds every slices-th term of the element's
 * reduction, then one thread per element combines the slices through shared memory (an argmax keeps the first
 * index of the largest value).
 */
function renderSlicedArray(s: ArrayStmt, r: ReduceExpr, plan: ReductionPlan, slices: number, p: CudaPrinter, shared: SharedMemory, out: string[], indent: string): void {
  const inner = indent + '  ';
  const part = `${s.name}_part`;
  const best = `${s.name}_best`;
  const argmax = r.op === 'argmax';
  // The type of the partial values (an argmax's best value): sums are f32, max and argmax as their body.
  const vt: Scalar = r.op === 'sum' ? 'f32' : r.body.t;
  const T = cudaScalarType[vt];
  out.push(`${indent}{`);
  out.push(`${inner}${shared.array(T, `${s.name}_slices`, slices * s.n)}`);
  if (argmax) out.push(`${inner}${shared.array('int', `${s.name}_slice_at`, slices * s.n)}`);
  out.push(`${inner}${argmax ? 'int' : T} ${part} = ${r.op === 'sum' ? '0.0f' : argmax ? '0x7fffffff' : cudaDialect.lowest(vt)};`);
  if (argmax) out.push(`${inner}${T} ${best} = ${cudaDialect.lowest(vt)};`);
  out.push(`${inner}if (tf_tid < ${slices * s.n}) {`);
  out.push(`${inner}  const int ${s.v} = tf_tid % ${s.n};`);
  const n = p.expr(r.n, out, inner + '  ');
  if (plan.unroll > 1) out.push(`${inner}  #pragma unroll ${plan.unroll}`);
  out.push(`${inner}  for (int ${r.v} = tf_tid / ${s.n}; ${r.v} < ${n}; ${r.v} += ${slices}) {`);
  const x = p.expr(r.body, out, inner + '    ');
  if (r.op === 'sum') out.push(`${inner}    ${part} += ${x};`);
  else if (r.op === 'max') out.push(`${inner}    ${part} = ${cudaDialect.binary.max(part, x, vt)};`);
  else out.push(`${inner}    if (${cudaDialect.argmaxTakes(x, best, vt)}) { ${best} = ${x}; ${part} = ${r.v}; }`);
  out.push(`${inner}  }`);
  out.push(`${inner}  ${s.name}_slices[tf_tid] = ${argmax ? best : part};`);
  if (argmax) out.push(`${inner}  ${s.name}_slice_at[tf_tid] = ${part};`);
  out.push(`${inner}}`);
  out.push(`${inner}__syncthreads();`);
  out.push(`${inner}if (tf_tid < ${s.n}) {`);
  // The element's value after its reduction may read the element's index (a mask by position).
  const total = `${s.name}_sum`;
  const after = replaceReductions(s.value, new Map([[r, total]]));
  if (varsOf(after).has(s.v)) out.push(`${inner}  const int ${s.v} = tf_tid;`);
  const slot = `q * ${s.n} + tf_tid`;
  if (argmax) {
    out.push(`${inner}  ${T} ${total}_best = ${cudaDialect.lowest(vt)};`);
    out.push(`${inner}  int ${total} = 0x7fffffff;`);
    out.push(`${inner}  for (int q = 0; q < ${slices}; q++) tf_argmax_step(${total}_best, ${total}, ${s.name}_slices[${slot}], ${s.name}_slice_at[${slot}]);`);
    out.push(`${inner}  if (${total} == 0x7fffffff) ${total} = 0;`);
  } else {
    out.push(`${inner}  ${T} ${total} = ${r.op === 'sum' ? '0.0f' : cudaDialect.lowest(vt)};`);
    const combine = r.op === 'sum' ? `${total} += ${s.name}_slices[${slot}]` : `${total} = ${cudaDialect.binary.max(total, `${s.name}_slices[${slot}]`, vt)}`;
    out.push(`${inner}  for (int q = 0; q < ${slices}; q++) ${combine};`);
  }
  const value = p.expr(after, out, inner + '  ');
  out.push(`${inner}  ${s.name}[tf_tid] = ${value};`);
  out.push(`${inner}}`);
  out.push(`${indent}}`);
  out.push(`${indent}__syncthreads();`);
}

/**
 * Fewer outputs than warps (a narrow projection's 2 or 4 per row): the warps of one output split its sums too,
 * each reading its share of the weights 16 bytes at a time, and combine through shared memory.
 */
function renderSplitWarpStore(s: StoreStmt, n: number, p: CudaPrinter, shared: SharedMemory, out: string[], indent: string): void {
  const inner = indent + '  ';
  const warps = CUDA_BLOCK / 32;
  const slices = warps / n;
  const reductions = topReductions(s.value);
  const split = `${s.v}_split`;
  const scope: Scope = {
    lane: `((tf_warp / ${n}) * 32 + tf_lane)`,
    size: `${slices * 32}`,
    combine: (_op, _t, part) => `tf_warp_sum(${part})`,
  };
  out.push(`${indent}{`);
  out.push(`${inner}${shared.array('float', split, reductions.length * warps)}`);
  out.push(`${inner}const int ${s.v} = tf_warp % ${n};`);
  // What the result adds to the sums from memory (a residual) is loaded before them: its round trip then overlaps
  // the weights' rather than following the combine. Every thread loads its output's (the storing lane's index).
  const early = new Map<string, KExpr>();
  for (const [key, l] of unconditionalLoads(s.value)) {
    const value = p.expr(l, out, inner);
    const name = /^\w+$/.test(value) ? value : p.fresh();
    if (name !== value) out.push(`${inner}const ${cudaDialect.type[l.t]} ${name} = ${value};`);
    early.set(key, { k: 'var', name, t: l.t });
  }
  const names = new Map<ReduceExpr, string>();
  reductions.forEach((r, i) => {
    const acc = p.fresh();
    renderReduction(acc, 'sum', r.v, p.expr(r.n, out, inner), r.body, 'f32', p, scope, p.plans.get(r.v)!, out, inner);
    out.push(`${inner}if (tf_lane == 0) ${split}[${i * warps} + tf_warp] = ${acc};`);
    names.set(r, `${acc}_total`);
  });
  out.push(`${inner}__syncthreads();`);
  out.push(`${inner}if (tf_warp < ${n} && tf_lane == 0) {`);
  reductions.forEach((r, i) => {
    const total = names.get(r)!;
    out.push(`${inner}  float ${total} = 0.0f;`);
    out.push(`${inner}  for (int q = 0; q < ${slices}; q++) ${total} += ${split}[${i * warps} + q * ${n} + ${s.v}];`);
  });
  const value = p.expr(replaceReductions(replaceLoads(s.value, early), names), out, inner + '  ');
  const index = p.expr(s.index, out, inner + '  ');
  out.push(`${inner}  b${s.buf}[${index}] = ${storeValue(p.buffers[s.buf].dtype, value, s.value.t)};`);
  out.push(`${inner}}`);
  out.push(`${inner}__syncthreads();`);
  out.push(`${indent}}`);
}

function renderStmt(s: KStmt, sched: StmtSchedule, p: CudaPrinter, shared: SharedMemory, out: string[], indent: string): void {
  p.plans = sched.reductions;
  const m = sched.mapping;
  switch (s.k) {
    case 'let':
      out.push(`${indent}const ${cudaDialect.type[s.value.t]} ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop':
      renderReduction(s.name, s.op, s.v, p.expr(s.n, out, indent), s.body, s.op === 'argmax' ? 'i32' : s.body.t, p, blockScope, sched.reductions.get(s.v)!, out, indent);
      break;
    case 'array': {
      if (m.kind === 'sliced') {
        const [r] = topReductions(s.value);
        renderSlicedArray(s, r, sched.reductions.get(r.v)!, m.slices, p, shared, out, indent);
        break;
      }
      if (m.kind !== 'thread-per-element' && m.kind !== 'subgroup-per-element') throw new Error(`CUDA: an array cannot be mapped ${m.kind}`);
      if (m.kind === 'thread-per-element' && m.runs) {
        renderArrayRuns(s, m.each!, m.runs, p, out, indent);
        out.push(`${indent}__syncthreads();`);
        break;
      }
      parallelLoop(s.v, String(s.n), m.kind === 'thread-per-element' ? m.each : undefined, m.kind === 'subgroup-per-element', out, indent, (inner) => `${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      out.push(`${indent}__syncthreads();`);
      break;
    }
    case 'store': {
      if (m.kind === 'split-subgroups') {
        renderSplitWarpStore(s, m.elements, p, shared, out, indent);
        break;
      }
      if (m.kind !== 'thread-per-element' && m.kind !== 'subgroup-per-element') throw new Error(`CUDA: a store cannot be mapped ${m.kind}`);
      const n = p.expr(s.n, out, indent);
      parallelLoop(s.v, n, m.kind === 'thread-per-element' ? m.each : undefined, m.kind === 'subgroup-per-element', out, indent, (inner) => {
        const value = p.expr(s.value, out, inner);
        const index = p.expr(s.index, out, inner);
        return `b${s.buf}[${index}] = ${storeValue(p.buffers[s.buf].dtype, value, s.value.t)};`;
      });
      break;
    }
    default: s satisfies never;
  }
}
