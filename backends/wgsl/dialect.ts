// The WGSL dialect: how kernel-IR expressions and types are spelled in WGSL, and the constants the WGSL renderer
// shares between its parts.

import { DType } from '../../ir/dtype.ts';
import { GPU_THREADS } from '../device-caps.ts';
import { cLike, Dialect } from '../render-base.ts';

/** Threads per workgroup (what webgpuCaps describes; the next-token kernel uses it too). */
export const WORKGROUP_SIZE = GPU_THREADS;
/** WGSL rejects infinities in constant expressions; the largest finite f32 masks as well in softmax and max. */
export const NEG_INF = '-3.402823e+38';

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
