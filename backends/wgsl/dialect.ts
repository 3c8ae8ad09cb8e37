// The WGSL dialect: how kernel-IR expressions and types are spelled in WGSL, and the constants the WGSL renderer
// shares between its parts.

import { DType } from '../../ir/dtype.ts';
import { GPU_THREADS } from '../device-caps.ts';
import { cLike, Dialect } from '../render-base.ts';

/** Threads per workgroup (what webgpuCaps describes; the next-token kernel uses it too). */
export const WORKGROUP_SIZE = GPU_THREADS;
/**
 * −∞. WGSL has no literal for it and rejects infinities and NaN in constant expressions, so the helpers make them
 * from bits at run time (`tf_inf()` below); the shader compiler folds them to constants after its own checks.
 */
export const NEG_INF = '(-tf_inf())';
/** The smallest i32 (2147483648i does not exist to negate). */
const I32_MIN = '(-2147483647i - 1i)';

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
  if (Number.isNaN(v)) return 'tf_nan()';
  if (!Number.isFinite(v)) return v > 0 ? 'tf_inf()' : NEG_INF;
  if (Object.is(v, -0)) return '-0.0';
  const s = String(v);
  return /[.eE]/.test(s) ? s : `${s}.0`;
};

/** An i32 literal; u32 values are held by their bits. */
const intLiteral = (v: number) => {
  const i = v | 0;
  return i === -2147483648 ? I32_MIN : `${i}i`;
};

/**
 * Helpers for special values (the README's Numerics section), declared by a shader that calls them. Vulkan
 * compilers may assume no NaN where WGSL allows it (lavapipe folds `x != x` to false, and `max` drops NaN), so
 * NaN tests look at the bits and comparisons that must see NaN avoid `!=`.
 */
const helpers: Record<string, string> = {
  tf_inf: 'fn tf_inf() -> f32 { let b = 0x7f800000u; return bitcast<f32>(b); }',
  tf_nan: 'fn tf_nan() -> f32 { let b = 0x7fc00000u; return bitcast<f32>(b); }',
  tf_isnan: 'fn tf_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }',
  // maximum/minimum propagate NaN (torch.maximum)
  tf_max: 'fn tf_max(a: f32, b: f32) -> f32 { return select(select(max(a, b), b, tf_isnan(b)), a, tf_isnan(a)); }',
  tf_min: 'fn tf_min(a: f32, b: f32) -> f32 { return select(select(min(a, b), b, tf_isnan(b)), a, tf_isnan(a)); }',
  // an argmax's partials: (b at ib) replaces (a at ia) when NaN (the first), larger, or equal at a lower index
  tf_argmax_takes: [
    'fn tf_argmax_takes(b: f32, ib: i32, a: f32, ia: i32) -> bool {',
    '  let nb = tf_isnan(b);',
    '  let na = tf_isnan(a);',
    '  if (nb || na) { return nb && (!na || ib < ia); }',
    '  return b > a || (b == a && ib < ia);',
    '}',
  ].join('\n'),
  // C's pow (WGSL's is undefined for negative bases and leaves zeros, NaN and pow(x, 0) to the implementation)
  tf_pow: [
    'fn tf_pow(x: f32, y: f32) -> f32 {',
    '  let ax = abs(x);',
    '  let x_inf = (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;',
    '  var r = pow(ax, y);',
    '  if (ax == 0.0) { r = select(0.0, tf_inf(), y < 0.0); }',
    '  if (x_inf) { r = select(0.0, tf_inf(), y > 0.0); }',
    '  if ((bitcast<u32>(y) & 0x7fffffffu) == 0x7f800000u) { r = select(0.0, tf_inf(), (ax > 1.0) == (y > 0.0)); }',
    '  if (tf_isnan(x) || tf_isnan(y)) { r = tf_nan(); }',
    '  if (ax == 1.0 || y == 0.0) { r = 1.0; }',
    '  if (x < 0.0 && !x_inf && !(floor(y) == y)) { return tf_nan(); }',
    '  if ((bitcast<u32>(x) >> 31u) == 1u && floor(y) == y && abs(y) < 16777216.0 && (i32(y) & 1i) == 1i) { r = -r; }',
    '  return r;',
    '}',
  ].join('\n'),
  // i32 power wraps like i32 products; a negative exponent gives trunc(1 / x^n)
  tf_ipow: [
    'fn tf_ipow(x: i32, y: i32) -> i32 {',
    '  if (y < 0i) { return select(select(0i, select(1i, -1i, (y & 1i) == 1i), x == -1i), 1i, x == 1i); }',
    '  var r = 1i;',
    '  var b = x;',
    '  var e = u32(y);',
    '  loop {',
    '    if (e == 0u) { break; }',
    '    if ((e & 1u) == 1u) { r = r * b; }',
    '    b = b * b;',
    '    e = e >> 1u;',
    '  }',
    '  return r;',
    '}',
  ].join('\n'),
  // i32 division floors (PyTorch's //); x / 0 = 0; -2^31 / -1 wraps
  tf_idiv: [
    'fn tf_idiv(a: i32, b: i32) -> i32 {',
    '  if (b == 0i) { return 0i; }',
    '  if (b == -1i) { return 0i - a; }',
    '  let q = a / b;',
    '  return select(q, q - 1i, !((a % b) == 0i) && ((a < 0i) != (b < 0i)));',
    '}',
  ].join('\n'),
  // float → i32 toward zero, saturating; NaN → 0
  tf_f2i: [
    'fn tf_f2i(x: f32) -> i32 {',
    '  if (tf_isnan(x)) { return 0i; }',
    '  if (x >= 2147483648.0) { return 2147483647i; }',
    `  if (x <= -2147483648.0) { return ${I32_MIN}; }`,
    '  return i32(x);',
    '}',
  ].join('\n'),
  // float → u32 toward zero, saturating; NaN → 0
  tf_f2u: [
    'fn tf_f2u(x: f32) -> u32 {',
    '  if (tf_isnan(x) || x <= 0.0) { return 0u; }',
    '  if (x >= 4294967296.0) { return 0xffffffffu; }',
    '  return u32(x);',
    '}',
  ].join('\n'),
  // Rounding to bf16 and f16, ties to even, overflow to ±inf, by integer arithmetic on the bits (a compiler may
  // fold unpack(pack(x)) to x).
  tf_round_bf16: [
    'fn tf_round_bf16(x: f32) -> f32 {',
    '  let b = bitcast<u32>(x);',
    '  if ((b & 0x7fffffffu) > 0x7f800000u) { return bitcast<f32>((b & 0xffff0000u) | 0x00400000u); }',
    '  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);',
    '}',
  ].join('\n'),
  tf_round_f16: [
    'fn tf_round_f16(x: f32) -> f32 {',
    '  let b = bitcast<u32>(x);',
    '  let sign = b & 0x80000000u;',
    '  let a = b & 0x7fffffffu;',
    '  if (a > 0x7f800000u) { return x; }',
    '  if (a >= 0x477ff000u) { return bitcast<f32>(sign | 0x7f800000u); }',
    '  if (a < 0x38800000u) {',
    '    let units = round(bitcast<f32>(a) * 16777216.0);',
    '    return bitcast<f32>(sign | bitcast<u32>(units * 5.9604644775390625e-8));',
    '  }',
    '  return bitcast<f32>(sign | ((a + 0xfffu + ((a >> 13u) & 1u)) & 0xffffe000u));',
    '}',
  ].join('\n'),
  // A vec4<u32> of 8 packed halves: its even elements (the words' low halves) and its odd ones, widened.
  tf_even_bf16: 'fn tf_even_bf16(w: vec4<u32>) -> vec4<f32> { return bitcast<vec4<f32>>(w << vec4<u32>(16u)); }',
  tf_odd_bf16: 'fn tf_odd_bf16(w: vec4<u32>) -> vec4<f32> { return bitcast<vec4<f32>>(w & vec4<u32>(0xffff0000u)); }',
  tf_even_f16: 'fn tf_even_f16(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x).x, unpack2x16float(w.y).x, unpack2x16float(w.z).x, unpack2x16float(w.w).x); }',
  tf_odd_f16: 'fn tf_odd_f16(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x).y, unpack2x16float(w.y).y, unpack2x16float(w.z).y, unpack2x16float(w.w).y); }',
  // The 16 bits a bf16 or f16 store writes (the f16 ones by hand: pack2x16float leaves values outside f16's finite
  // range indeterminate).
  tf_bf16_bits: 'fn tf_bf16_bits(x: f32) -> u32 { return bitcast<u32>(tf_round_bf16(x)) >> 16u; }',
  tf_f16_bits: [
    'fn tf_f16_bits(x: f32) -> u32 {',
    '  let b = bitcast<u32>(tf_round_f16(x));',
    '  let sign = (b >> 16u) & 0x8000u;',
    '  let a = b & 0x7fffffffu;',
    '  if (a > 0x7f800000u) { return sign | 0x7e00u; }',
    '  if (a == 0x7f800000u) { return sign | 0x7c00u; }',
    '  if (a < 0x38800000u) { return sign | u32(bitcast<f32>(a) * 16777216.0); }',
    '  return sign | (((a >> 23u) - 112u) << 10u) | ((a >> 13u) & 0x3ffu);',
    '}',
  ].join('\n'),
};

/** The helper functions `code` calls, with those they call, in an order that defines each before its use. */
export function wgslHelpers(code: string): string[] {
  const used = new Set<string>();
  const visit = (text: string) => {
    for (const [name, def] of Object.entries(helpers)) {
      if (!used.has(name) && text.includes(`${name}(`)) {
        used.add(name);
        visit(def.slice(def.indexOf('{')));
      }
    }
  };
  visit(code);
  return Object.keys(helpers).filter((n) => used.has(n)).map((n) => helpers[n]);
}

const positiveBase = (a: string) => /^[\d.e+-]+$/.test(a) && Number(a) > 0 && Number(a) !== 1 && Number.isFinite(Number(a));

/** f32 comparisons that must see NaN: `!=` may be ordered in the compiled shader, and `x op x` may be folded. */
const sameF32 = (a: string, b: string, t: string) => t === 'f32' && a === b;

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
    index: (a, b) => `clamp(${a}, 0i, ${b} - 1i)`,
    max: (a, b, t) => (t === 'f32' ? `tf_max(${a}, ${b})` : `max(${a}, ${b})`),
    min: (a, b, t) => (t === 'f32' ? `tf_min(${a}, ${b})` : `min(${a}, ${b})`),
    // A positive literal base other than 1 (rotary angles' theta^x) has no special case WGSL's pow misses.
    pow: (a, b, t) => (t !== 'f32' ? `tf_ipow(${a}, ${b})` : positiveBase(a) ? `pow(${a}, ${b})` : `tf_pow(${a}, ${b})`),
    div: (a, b, t) => (t === 'i32' ? `tf_idiv(${a}, ${b})` : `(${a} / ${b})`),
    eq: (a, b, t) => (sameF32(a, b, t) ? `(!tf_isnan(${a}))` : `(${a} == ${b})`),
    ne: (a, b, t) => (sameF32(a, b, t) ? `tf_isnan(${a})` : t === 'f32' ? `(!(${a} == ${b}))` : `(${a} != ${b})`),
    le: (a, b, t) => (sameF32(a, b, t) ? `(!tf_isnan(${a}))` : `(${a} <= ${b})`),
    ge: (a, b, t) => (sameF32(a, b, t) ? `(!tf_isnan(${a}))` : `(${a} >= ${b})`),
  },
  literal: (value, t) => (t === 'f32' ? floatLiteral(value) : t === 'bool' ? (value ? 'true' : 'false') : intLiteral(value)),
  cast: (a, from, to, round, u32) => {
    if (to === 'bool') return from === 'f32' ? `(!(${a} == 0.0))` : `(${a} != 0i)`;
    if (from === 'bool') return `select(${to === 'f32' ? '0.0, 1.0' : '0i, 1i'}, ${a})`;
    const x = from === 'f32' && to === 'i32' ? (u32 ? `bitcast<i32>(tf_f2u(${a}))` : `tf_f2i(${a})`)
      : u32 && from === 'i32' ? `f32(bitcast<u32>(${a}))` : `${to}(${a})`;
    if (round) return `tf_round_${round}(${x})`;
    return x;
  },
  load: (buf, _b, index) => `load_b${buf}(${index})`,
  elem: (array, index) => `${array}[${index}]`,
  lowest: (t) => (t === 'i32' ? I32_MIN : NEG_INF),
  argmaxTakes: (x, best, t) => (t === 'f32' ? `(${x} > ${best} || (tf_isnan(${x}) && !tf_isnan(${best})))` : `${x} > ${best}`),
};
