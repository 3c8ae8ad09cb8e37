// The CUDA renderer: kernel IR → CUDA C, one `extern "C" __global__` function per kernel. A row is a thread block
// (grid-striding when there are more rows than blocks); cooperative reductions stride their range over the
// threads and combine through warp shuffles and shared memory; row-local arrays live in shared memory; stores
// stride over the threads. 16-bit weights stay 16-bit (`unsigned short`, widened with bit operations, so NVRTC
// needs no headers), compute is f32, and the weight streams of cooperative sums are read 16 bytes at a time.

import { DType } from '../../ir/dtype.ts';
import { ivar, KBuffer, KernelIR, KExpr, KStmt, ROW, Scalar } from '../kernel-ir.ts';
import { cLike, Dialect, ExprPrinter } from '../render-base.ts';
import { contiguousLoads, replaceLoads, VECTOR_WIDTH } from './vector-loads.ts';

/** Threads per block; the runtime launches every generated kernel with this many. */
export const CUDA_BLOCK = 256;
/** Static shared memory CUDA allows without opting in; larger row-local arrays use dynamic shared memory. */
const STATIC_SHARED_LIMIT = 48 * 1024;

/** Helpers every generated kernel uses; once per compiled source. */
export const cudaPrelude = `// tsfuse CUDA helpers: 16-bit widening, 16-byte loads, block-wide reductions
#ifndef TSFUSE_PRELUDE
#define TSFUSE_PRELUDE
#ifndef TF_BLOCK
#define TF_BLOCK ${CUDA_BLOCK}
#endif
#define TF_WARPS (TF_BLOCK / 32)
#define TF_INF __int_as_float(0x7f800000)
#define TF_NAN __int_as_float(0x7fffffff)

__device__ __forceinline__ float tf_bf16(unsigned short x) { return __uint_as_float(((unsigned)x) << 16); }
__device__ __forceinline__ float tf_f16(unsigned short x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
__device__ __forceinline__ unsigned short tf_to_bf16(float f) {
  const unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ unsigned short tf_to_f16(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float tf_round_bf16(float f) { return tf_bf16(tf_to_bf16(f)); }
__device__ __forceinline__ float tf_round_f16(float f) { return tf_f16(tf_to_f16(f)); }
__device__ __forceinline__ int tf_imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int tf_imin(int a, int b) { return a < b ? a : b; }

// Eight consecutive elements from a 16-byte-aligned address, widened to f32.
__device__ __forceinline__ void tf_ld8_bf16(const unsigned short* p, float* o) {
  const uint4 w = __ldg(reinterpret_cast<const uint4*>(p));
  o[0] = __uint_as_float(w.x << 16); o[1] = __uint_as_float(w.x & 0xffff0000u);
  o[2] = __uint_as_float(w.y << 16); o[3] = __uint_as_float(w.y & 0xffff0000u);
  o[4] = __uint_as_float(w.z << 16); o[5] = __uint_as_float(w.z & 0xffff0000u);
  o[6] = __uint_as_float(w.w << 16); o[7] = __uint_as_float(w.w & 0xffff0000u);
}
__device__ __forceinline__ void tf_ld8_f16(const unsigned short* p, float* o) {
  const uint4 w = __ldg(reinterpret_cast<const uint4*>(p));
  o[0] = tf_f16((unsigned short)(w.x & 0xffffu)); o[1] = tf_f16((unsigned short)(w.x >> 16));
  o[2] = tf_f16((unsigned short)(w.y & 0xffffu)); o[3] = tf_f16((unsigned short)(w.y >> 16));
  o[4] = tf_f16((unsigned short)(w.z & 0xffffu)); o[5] = tf_f16((unsigned short)(w.z >> 16));
  o[6] = tf_f16((unsigned short)(w.w & 0xffffu)); o[7] = tf_f16((unsigned short)(w.w >> 16));
}
__device__ __forceinline__ void tf_ld8_f32(const float* p, float* o) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w; o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}

__device__ __forceinline__ float tf_lowest(float) { return -TF_INF; }
__device__ __forceinline__ int tf_lowest(int) { return (int)0x80000000; }
__device__ __forceinline__ float tf_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ int tf_max(int a, int b) { return tf_imax(a, b); }

// Block-wide sum / max: every thread gets the result. s: TF_WARPS + 1 elements of shared memory. The result
// slot is apart from the partials, so the next reduction may start while slow threads still read this one.
template <typename T> __device__ __forceinline__ T tf_block_sum(T v, T* s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < TF_WARPS ? s[lane] : (T)0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) s[TF_WARPS] = v;
  }
  __syncthreads();
  return s[TF_WARPS];
}
template <typename T> __device__ __forceinline__ T tf_block_max(T v, T* s) {
  for (int o = 16; o > 0; o >>= 1) v = tf_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < TF_WARPS ? s[lane] : tf_lowest(v);
    for (int o = 16; o > 0; o >>= 1) v = tf_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) s[TF_WARPS] = v;
  }
  __syncthreads();
  return s[TF_WARPS];
}
// The index of the first maximum (0 when nothing beats -inf, as a serial loop would leave it): a larger value
// wins, equal values keep the lower index. i is 0x7fffffff in threads that saw nothing.
__device__ __forceinline__ void tf_argmax_step(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
}
__device__ __forceinline__ int tf_block_argmax(float v, int i, float* sv, int* si) {
  for (int o = 16; o > 0; o >>= 1) tf_argmax_step(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sv[warp] = v; si[warp] = i; }
  __syncthreads();
  if (warp == 0) {
    v = lane < TF_WARPS ? sv[lane] : -TF_INF;
    i = lane < TF_WARPS ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) tf_argmax_step(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    if (lane == 0) si[TF_WARPS] = i == 0x7fffffff ? 0 : i;
  }
  __syncthreads();
  return si[TF_WARPS];
}
#endif
`;

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

  const p = new ExprPrinter(cudaDialect, k.buffers);
  out.push('  const int tf_tid = threadIdx.x;');
  out.push(`  const int tf_rows = ${p.expr(k.rows, out, '  ')};`);
  out.push(`  for (int ${ROW} = blockIdx.x; ${ROW} < tf_rows; ${ROW} += gridDim.x) {`);
  for (const s of k.body) renderStmt(s, p, k.buffers, out, '    ');
  // The next row rewrites the shared arrays: wait until every thread has read this row's.
  if (arrays.length) out.push('    __syncthreads();');
  out.push('  }');
  out.push('}');
  return { code: out.join('\n') + '\n', name, dynamicSharedBytes };
}

/** Declares the row-local arrays, statically when they fit; returns the dynamic shared bytes needed otherwise. */
function declareArrays(arrays: ArrayStmt[], out: string[]): number {
  const bytes = (s: ArrayStmt) => s.n * (s.value.t === 'bool' ? 1 : 4);
  const total = arrays.reduce((n, s) => n + bytes(s), 0);
  if (total + 512 <= STATIC_SHARED_LIMIT) {
    for (const s of arrays) out.push(`  __shared__ ${cudaDialect.type[s.value.t]} ${s.name}[${s.n}];`);
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

function renderStmt(s: KStmt, p: ExprPrinter, buffers: readonly KBuffer[], out: string[], indent: string): void {
  const inner = indent + '  ';
  switch (s.k) {
    case 'let':
      out.push(`${indent}const ${cudaDialect.type[s.value.t]} ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop':
      renderCoop(s, p, buffers, out, indent);
      break;
    case 'array':
      out.push(`${indent}for (int ${s.v} = tf_tid; ${s.v} < ${s.n}; ${s.v} += TF_BLOCK) {`);
      out.push(`${inner}${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      out.push(`${indent}}`);
      out.push(`${indent}__syncthreads();`);
      break;
    case 'store': {
      const n = p.expr(s.n, out, indent);
      out.push(`${indent}for (int ${s.v} = tf_tid; ${s.v} < ${n}; ${s.v} += TF_BLOCK) {`);
      const value = p.expr(s.value, out, inner);
      const index = p.expr(s.index, out, inner);
      out.push(`${inner}b${s.buf}[${index}] = ${storeValue(buffers[s.buf].dtype, value, s.value.t)};`);
      out.push(`${indent}}`);
      break;
    }
    default: s satisfies never;
  }
}

/**
 * Each thread folds a strided share of the range into a partial, then the block combines the partials; every
 * thread ends with the result. A sum that streams contiguous float data first runs a vector loop, eight
 * elements per thread and step, with a scalar loop for the tail (or for the whole range when misaligned).
 */
function renderCoop(s: CoopStmt, p: ExprPrinter, buffers: readonly KBuffer[], out: string[], indent: string): void {
  const d = cudaDialect;
  const inner = indent + '  ';
  const t: Scalar = s.op === 'argmax' ? 'i32' : s.body.t;
  const part = `${s.name}_part`;
  const best = `${s.name}_best`;
  const n = p.expr(s.n, out, indent);
  if (s.op === 'argmax') {
    out.push(`${indent}float ${best} = ${d.negInfinity};`);
    out.push(`${indent}int ${part} = 0x7fffffff;`);
  } else {
    out.push(`${indent}${d.varDecl(part, t, s.op === 'sum' ? d.literal(0, t) : `tf_lowest((${d.type[t]})0)`)}`);
  }
  const fold = (x: string, v: string, at: string) => {
    if (s.op === 'sum') out.push(`${at}${part} += ${x};`);
    else if (s.op === 'max') out.push(`${at}${part} = tf_max(${part}, ${x});`);
    else out.push(`${at}if (${x} > ${best}) { ${best} = ${x}; ${part} = ${v}; }`);
  };

  const streams = s.op === 'sum' && t === 'f32' ? contiguousLoads(s.body, s.v, buffers) : [];
  let from = '0';
  if (streams.length) {
    from = `${s.name}_from`;
    const w = VECTOR_WIDTH;
    const [kv, j] = [`${s.name}_kv`, `${s.name}_j`];
    out.push(`${indent}int ${from} = 0;`);
    out.push(`${indent}{`);
    const bases = streams.map((c, i) => {
      const name = `${s.name}_vb${i}`;
      out.push(`${inner}const int ${name} = ${p.expr(c.base, out, inner)};`);
      return name;
    });
    out.push(`${inner}if (((${bases.join(' | ')}) & ${w - 1}) == 0) {`);
    const body = inner + '  ';
    out.push(`${body}const int ${s.name}_nv = ${n} / ${w};`);
    out.push(`${body}#pragma unroll 4`);
    out.push(`${body}for (int ${kv} = tf_tid; ${kv} < ${s.name}_nv; ${kv} += TF_BLOCK) {`);
    const loop = body + '  ';
    const replaced = new Map<string, KExpr>();
    streams.forEach((c, i) => {
      const arr = `${s.name}_w${i}`;
      const ld = c.dtype === DType.F32 ? 'tf_ld8_f32' : c.dtype === DType.BF16 ? 'tf_ld8_bf16' : 'tf_ld8_f16';
      out.push(`${loop}float ${arr}[${w}];`);
      out.push(`${loop}${ld}(b${c.load.buf} + ${bases[i]} + ${kv} * ${w}, ${arr});`);
      replaced.set(c.key, { k: 'elem', array: arr, index: ivar(j), t: 'f32' });
    });
    out.push(`${loop}#pragma unroll`);
    out.push(`${loop}for (int ${j} = 0; ${j} < ${w}; ${j}++) {`);
    const el = loop + '  ';
    out.push(`${el}const int ${s.v} = ${kv} * ${w} + ${j};`);
    out.push(`${el}(void)${s.v};`);
    fold(p.expr(replaceLoads(s.body, replaced), out, el), s.v, el);
    out.push(`${loop}}`);
    out.push(`${body}}`);
    out.push(`${body}${from} = ${s.name}_nv * ${w};`);
    out.push(`${inner}}`);
    out.push(`${indent}}`);
  }
  out.push(`${indent}for (int ${s.v} = ${from === '0' ? '' : `${from} + `}tf_tid; ${s.v} < ${n}; ${s.v} += TF_BLOCK) {`);
  fold(p.expr(s.body, out, inner), s.v, inner);
  out.push(`${indent}}`);
  const combine = s.op === 'argmax' ? `tf_block_argmax(${best}, ${part}, tf_rf, tf_ri)`
    : `tf_block_${s.op}(${part}, ${t === 'f32' ? 'tf_rf' : 'tf_ri'})`;
  out.push(`${indent}const ${d.type[t]} ${s.name} = ${combine};`);
}
