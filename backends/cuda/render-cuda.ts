// The CUDA renderer: kernel IR → CUDA C, one `extern "C" __global__` function per kernel. A row is a thread block
// (grid-striding when there are more rows than blocks); cooperative reductions stride their range over the
// threads and combine through warp shuffles and shared memory; row-local arrays live in shared memory; stores
// stride over the threads. 16-bit weights stay 16-bit (`unsigned short`, widened with bit operations, so NVRTC
// needs no headers), compute is f32, and the weight streams of cooperative sums are read 16 bytes at a time.

import { DType } from '../../ir/dtype.ts';
import { KernelIR, KExpr, KStmt, ReduceOp, replaceReductions, ROW, Scalar, topReductions } from '../kernel-ir.ts';
import { cLike, Dialect, ExprPrinter } from '../render-base.ts';
import { CUDA_BLOCK, cudaPrelude } from './prelude.ts';
import { blockScope, renderReduction, Scope, threadScope, warpScope } from './reductions.ts';

export { CUDA_BLOCK, cudaPrelude };

/** Static shared memory CUDA allows without opting in; larger row-local arrays use dynamic shared memory. */
const STATIC_SHARED_LIMIT = 48 * 1024;

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

export const cudaDialect: Dialect = {
  type: { f32: 'float', i32: 'int', bool: 'bool' },
  constDecl: (name, t, value) => `const ${cudaDialect.type[t]} ${name} = ${value};`,
  varDecl: (name, t, value) => `${cudaDialect.type[t]} ${name} = ${value};`,
  forLoop: (v, n) => `for (int ${v} = 0; ${v} < ${n}; ${v}++) {`,
  unary: {
    ...cLike.unary,
    abs: call('fabsf'), exp: call('expf'), log: call('logf'), sqrt: call('sqrtf'), rsqrt: call('rsqrtf'),
    sin: call('sinf'), cos: call('cosf'), tanh: call('tanhf'), floor: call('floorf'),
    recip: (a) => `(1.0f / ${a})`,
    sigmoid: (a) => `(1.0f / (1.0f + expf(-${a})))`,
    silu: (a) => `(${a} / (1.0f + expf(-${a})))`,
  },
  binary: {
    ...cLike.binary,
    pow: (a, b) => `powf(${a}, ${b})`,
    max: (a, b, t) => (t === 'f32' ? `fmaxf(${a}, ${b})` : `tf_imax(${a}, ${b})`),
    min: (a, b, t) => (t === 'f32' ? `fminf(${a}, ${b})` : `tf_imin(${a}, ${b})`),
  },
  literal: (value, t) => {
    if (t === 'bool') return value ? 'true' : 'false';
    if (t === 'f32') return floatLiteral(value);
    return value < 0 ? `(${Math.trunc(value)})` : String(Math.trunc(value));
  },
  cast: (a, from, to, round) => {
    const x = from === to ? a : to === 'bool' ? `(${a} != 0)` : `((${cudaDialect.type[to]})${a})`;
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
  negInfinity: '(-TF_INF)',
};

/** A value of compute type `t` converted for storing into a buffer of dtype `d`. */
function storeValue(d: DType, value: string, t: Scalar): string {
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
  /** Dynamic shared memory the launch must ask for (0 when the row-local arrays fit statically). */
  readonly dynamicSharedBytes: number;
}

/** A standalone .cu file for one kernel: the prelude and the kernel (what --dump-kernels writes). */
export function renderCuda(k: KernelIR): string {
  return `${cudaPrelude}\n${renderCudaFunction(k).code}`;
}

export interface CudaModule {
  /** The prelude and one function per distinct kernel body. */
  readonly source: string;
  /** Per kernel, in order: the function that runs it. */
  readonly functions: readonly CudaFunction[];
}

/**
 * Kernels as one compilation unit. Kernels that differ only in the buffers they are given (every transformer
 * layer's) share one function, named after the first of them with `prefix`.
 */
export function renderCudaModule(kernels: readonly KernelIR[], prefix = ''): CudaModule {
  const byBody = new Map<string, CudaFunction>();
  const functions = kernels.map((k) => {
    const body = renderCudaFunction(k, 'KERNEL', false).code;
    let f = byBody.get(body);
    if (!f) byBody.set(body, (f = renderCudaFunction(k, `${prefix}${k.name}`)));
    return f;
  });
  return { source: [cudaPrelude, ...[...byBody.values()].map((f) => f.code)].join('\n'), functions };
}

type ArrayStmt = Extract<KStmt, { k: 'array' }>;
type CoopStmt = Extract<KStmt, { k: 'coop' }>;

/**
 * Prints expressions; in a value computed one element per warp, its outermost reductions are shared by the
 * warp's lanes (nested ones stay serial in each lane).
 */
class CudaPrinter extends ExprPrinter {
  warp = false;
  private nested = 0;

  override reduceInto(acc: string, op: ReduceOp, v: string, n: string, body: KExpr, t: Scalar, out: string[], indent: string): void {
    const shared = this.warp && this.nested === 0;
    this.nested++;
    try {
      if (shared) renderReduction(acc, op, v, n, body, t, this, warpScope, out, indent);
      // One thread's own sum still reads contiguous data 16 bytes at a time (a score: q · one cached key).
      else if (op === 'sum' && t === 'f32' && this.nested === 1) renderReduction(acc, op, v, n, body, t, this, threadScope, out, indent);
      else super.reduceInto(acc, op, v, n, body, t, out, indent);
    } finally {
      this.nested--;
    }
  }
}

/** The kernel as one CUDA function named `name`; `comment` false drops the fused-nodes comment (for dedup keys). */
export function renderCudaFunction(k: KernelIR, name = k.name, comment = true): CudaFunction {
  const out: string[] = [];
  if (comment) {
    out.push(`// kernel ${k.name}: fuses`);
    // A trailing backslash would continue the comment onto the next line.
    for (const line of k.fused) out.push(`//   ${line.replace(/\\$/, '\\ ')}`);
  }
  const params = k.buffers.map((b, i) => `${b.written ? '' : 'const '}${cudaElemType[b.dtype]}* __restrict__ b${i}`);
  for (const s of k.sizes) params.push(`const int ${s}`);
  out.push(`extern "C" __global__ void __launch_bounds__(TF_BLOCK) ${name}(${params.join(', ')}) {`);

  const coops = k.body.filter((s): s is CoopStmt => s.k === 'coop');
  const coopType = (s: CoopStmt): Scalar => (s.op === 'argmax' ? 'i32' : s.body.t);
  if (coops.some((s) => s.op === 'argmax' || coopType(s) === 'f32')) out.push('  __shared__ float tf_rf[TF_WARPS + 1];');
  if (coops.some((s) => s.op === 'argmax' || coopType(s) !== 'f32')) out.push('  __shared__ int tf_ri[TF_WARPS + 1];');
  const arrays = k.body.filter((s): s is ArrayStmt => s.k === 'array');
  const dynamicSharedBytes = declareArrays(arrays, out);

  const p = new CudaPrinter(cudaDialect, k.buffers);
  const body: string[] = [];
  const rows = p.expr(k.rows, body, '  ');
  body.push(`  const int tf_rows = ${rows};`);
  body.push(`  for (int ${ROW} = blockIdx.x; ${ROW} < tf_rows; ${ROW} += gridDim.x) {`);
  for (const s of k.body) renderStmt(s, p, body, '    ');
  // The next row rewrites the shared arrays: wait until every thread has read this row's.
  if (arrays.length) body.push('    __syncthreads();');
  body.push('  }');
  const text = body.join('\n');
  if (/\btf_tid\b/.test(text)) out.push('  const int tf_tid = threadIdx.x;');
  if (/\btf_lane\b/.test(text)) out.push('  const int tf_lane = threadIdx.x & 31;');
  if (/\btf_warp\b/.test(text)) out.push('  const int tf_warp = threadIdx.x >> 5;');
  out.push(...body, '}');
  return { code: out.join('\n') + '\n', name, dynamicSharedBytes };
}

/** Declares the row-local arrays, statically when they fit; returns the dynamic shared bytes needed otherwise. */
function declareArrays(arrays: ArrayStmt[], out: string[]): number {
  const bytes = (s: ArrayStmt) => s.n * (s.value.t === 'bool' ? 1 : 4);
  const total = arrays.reduce((n, s) => n + bytes(s), 0);
  if (total + 512 <= STATIC_SHARED_LIMIT) {
    // Aligned so the compiler may read neighbouring elements with one wide load.
    for (const s of arrays) out.push(`  __shared__ __align__(16) ${cudaDialect.type[s.value.t]} ${s.name}[${s.n}];`);
    return 0;
  }
  out.push('  extern __shared__ __align__(16) unsigned char tf_smem[];');
  let offset = 0;
  for (const s of arrays) {
    const t = cudaDialect.type[s.value.t];
    out.push(`  ${t}* const ${s.name} = reinterpret_cast<${t}*>(tf_smem + ${offset});`);
    offset += Math.ceil(bytes(s) / 16) * 16;
  }
  return offset;
}

/** Lengths of a value's outermost reductions (nested ones run inside them); 4096 stands for a symbolic one. */
/**
 * Whether the elements of a parallel loop (a store or a row-local array) run one per warp, the warp sharing
 * their reductions, rather than one per thread, each reducing serially: by the steps the busiest thread takes
 * either way (a warp reduction costs five shuffle steps besides its share of the range). A contraction row's
 * few outputs over long rows go to warps; many short dot products (attention scores) stay with threads.
 */
function perWarp(n: KExpr | number, value: KExpr): boolean {
  const reductions = topReductions(value).map((r) => (r.n.k === 'const' ? r.n.value : 4096));
  if (reductions.length === 0) return false;
  const r = reductions.reduce((a, b) => a + b, 0);
  const count = typeof n === 'number' ? n : n.k === 'const' ? n.value : 4096;
  const warps = CUDA_BLOCK / 32;
  const byThread = Math.ceil(count / CUDA_BLOCK) * r;
  const byWarp = Math.ceil(count / warps) * (reductions.reduce((a, b) => a + Math.ceil(b / 32) + 5, 0));
  return byWarp < byThread;
}

/** `for (v over [0, n)) { body }` spread over threads, or over warps with lane 0 writing. */
function parallelLoop(v: string, n: string, warp: boolean, out: string[], indent: string, body: (inner: string) => string): void {
  const inner = indent + '  ';
  out.push(warp
    ? `${indent}for (int ${v} = tf_warp; ${v} < ${n}; ${v} += TF_WARPS) {`
    : `${indent}for (int ${v} = tf_tid; ${v} < ${n}; ${v} += TF_BLOCK) {`);
  const write = body(inner);
  out.push(warp ? `${inner}if (tf_lane == 0) ${write}` : `${inner}${write}`);
  out.push(`${indent}}`);
}

type ReduceExpr = Extract<KExpr, { k: 'reduce' }>;

/** Few elements, each a long sum (probs·v over the cache): threads split each sum, neighbours on neighbours. */
function sliced(s: ArrayStmt): boolean {
  const r = s.value;
  return r.k === 'reduce' && r.op === 'sum' && r.t === 'f32' && 2 * s.n <= CUDA_BLOCK && !(r.n.k === 'const' && r.n.value < 32);
}

function renderSlicedArray(s: ArrayStmt, r: ReduceExpr, p: CudaPrinter, out: string[], indent: string): void {
  const inner = indent + '  ';
  let slices = 1;
  while (2 * slices * s.n <= CUDA_BLOCK) slices *= 2;
  const part = `${s.name}_part`;
  out.push(`${indent}{`);
  out.push(`${inner}__shared__ float ${s.name}_slices[${slices * s.n}];`);
  out.push(`${inner}float ${part} = 0.0f;`);
  out.push(`${inner}if (tf_tid < ${slices * s.n}) {`);
  out.push(`${inner}  const int ${s.v} = tf_tid % ${s.n};`);
  const n = p.expr(r.n, out, inner + '  ');
  out.push(`${inner}  #pragma unroll 4`);
  out.push(`${inner}  for (int ${r.v} = tf_tid / ${s.n}; ${r.v} < ${n}; ${r.v} += ${slices}) {`);
  out.push(`${inner}    ${part} += ${p.expr(r.body, out, inner + '    ')};`);
  out.push(`${inner}  }`);
  out.push(`${inner}  ${s.name}_slices[tf_tid] = ${part};`);
  out.push(`${inner}}`);
  out.push(`${inner}__syncthreads();`);
  out.push(`${inner}if (tf_tid < ${s.n}) {`);
  out.push(`${inner}  float ${s.name}_sum = 0.0f;`);
  out.push(`${inner}  for (int q = 0; q < ${slices}; q++) ${s.name}_sum += ${s.name}_slices[q * ${s.n} + tf_tid];`);
  out.push(`${inner}  ${s.name}[tf_tid] = ${s.name}_sum;`);
  out.push(`${inner}}`);
  out.push(`${indent}}`);
  out.push(`${indent}__syncthreads();`);
}

const WARPS = CUDA_BLOCK / 32;

/**
 * Fewer outputs than warps (a narrow projection's 2 or 4 per row): the warps of one output split its sums too,
 * each reading its share of the weights 16 bytes at a time, and combine through shared memory.
 */
function renderSplitWarpStore(s: Extract<KStmt, { k: 'store' }>, n: number, p: CudaPrinter, out: string[], indent: string): void {
  const inner = indent + '  ';
  const slices = WARPS / n;
  const reductions = topReductions(s.value);
  const shared = `${s.v}_split`;
  const scope: Scope = {
    lane: `((tf_warp / ${n}) * 32 + tf_lane)`,
    size: `${slices * 32}`,
    combine: (_op, _t, part) => `tf_warp_sum(${part})`,
  };
  out.push(`${indent}{`);
  out.push(`${inner}__shared__ float ${shared}[${reductions.length * WARPS}];`);
  out.push(`${inner}const int ${s.v} = tf_warp % ${n};`);
  const names = new Map<ReduceExpr, string>();
  reductions.forEach((r, i) => {
    const acc = p.fresh();
    renderReduction(acc, 'sum', r.v, p.expr(r.n, out, inner), r.body, 'f32', p, scope, out, inner);
    out.push(`${inner}if (tf_lane == 0) ${shared}[${i * WARPS} + tf_warp] = ${acc};`);
    names.set(r, `${acc}_total`);
  });
  out.push(`${inner}__syncthreads();`);
  out.push(`${inner}if (tf_warp < ${n} && tf_lane == 0) {`);
  reductions.forEach((r, i) => {
    const total = names.get(r)!;
    out.push(`${inner}  float ${total} = 0.0f;`);
    out.push(`${inner}  for (int q = 0; q < ${slices}; q++) ${total} += ${shared}[${i * WARPS} + q * ${n} + ${s.v}];`);
  });
  const value = p.expr(replaceReductions(s.value, names), out, inner + '  ');
  const index = p.expr(s.index, out, inner + '  ');
  out.push(`${inner}  b${s.buf}[${index}] = ${storeValue(p.buffers[s.buf].dtype, value, s.value.t)};`);
  out.push(`${inner}}`);
  out.push(`${inner}__syncthreads();`);
  out.push(`${indent}}`);
}

function renderStmt(s: KStmt, p: CudaPrinter, out: string[], indent: string): void {
  switch (s.k) {
    case 'let':
      out.push(`${indent}const ${cudaDialect.type[s.value.t]} ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop':
      renderReduction(s.name, s.op, s.v, p.expr(s.n, out, indent), s.body, s.op === 'argmax' ? 'i32' : s.body.t, p, blockScope, out, indent);
      break;
    case 'array': {
      if (sliced(s)) {
        renderSlicedArray(s, s.value as ReduceExpr, p, out, indent);
        break;
      }
      p.warp = perWarp(s.n, s.value);
      parallelLoop(s.v, String(s.n), p.warp, out, indent, (inner) => `${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      p.warp = false;
      out.push(`${indent}__syncthreads();`);
      break;
    }
    case 'store': {
      const sums = topReductions(s.value).every((r) => r.op === 'sum' && r.t === 'f32');
      if (s.n.k === 'const' && s.n.value < WARPS && WARPS % s.n.value === 0 && sums && perWarp(s.n, s.value)) {
        renderSplitWarpStore(s, s.n.value, p, out, indent);
        break;
      }
      const n = p.expr(s.n, out, indent);
      p.warp = perWarp(s.n, s.value);
      parallelLoop(s.v, n, p.warp, out, indent, (inner) => {
        const value = p.expr(s.value, out, inner);
        const index = p.expr(s.index, out, inner);
        return `b${s.buf}[${index}] = ${storeValue(p.buffers[s.buf].dtype, value, s.value.t)};`;
      });
      p.warp = false;
      break;
    }
    default: s satisfies never;
  }
}
