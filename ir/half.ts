// Half precision (IEEE f16 and bfloat16) in host code: decoding stored bits exactly, encoding with round to nearest
// even, and rounding a value to what a 16-bit store would keep.


let halfTable: Float32Array | undefined;

/** Every f16 value by bit pattern, built once: one table load per element beats bit twiddling in JS. */
function f16Values(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      const mag = exp === 0 ? mant * 2 ** -24 // subnormal (and zero)
        : exp === 0x1f ? (mant ? NaN : Infinity)
        : (mant + 1024) * 2 ** (exp - 25);
      halfTable[h] = h & 0x8000 ? -mag : mag;
    }
  }
  return halfTable;
}

export function decodeF16(bits: Uint16Array): Float32Array {
  const table = f16Values();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

/** bf16 is the top half of an f32, so widening is a shift. */
export function decodeBf16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) words[i] = bits[i] << 16;
  return out;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Rounds to nearest even; NaN stays a (quiet) NaN, overflow becomes infinity. */
function bf16Bits(x: number): number {
  scratchF32[0] = x;
  const b = scratchU32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return (b >>> 16) | 0x40;
  return (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
}

/** Rounds the f32 value of `x` to nearest even, with gradual underflow and overflow to infinity. */
function f16Bits(x: number): number {
  scratchF32[0] = x;
  const b = scratchU32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    // Subnormal: the f16 mantissa counts units of 2^-24; shifting the full significand may round up into the
    // smallest normal, which is the right answer.
    const full = mant | 0x800000;
    const shift = 14 - e;
    const rest = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    const m = full >>> shift;
    return sign | (rest > half || (rest === half && m & 1) ? m + 1 : m);
  }
  // A carry out of the mantissa bumps the exponent, and from the largest finite value reaches infinity.
  const h = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return rest > 0x1000 || (rest === 0x1000 && h & 1) ? h + 1 : h;
}

export function encodeF16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f16Bits(values[i]);
  return out;
}

export function encodeBf16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = bf16Bits(values[i]);
  return out;
}

/** The value a bf16 store of `x` keeps. */
export function roundBf16(x: number): number {
  scratchU32[0] = bf16Bits(x) << 16;
  return scratchF32[0];
}

/** The value an f16 store of `x` keeps. */
export function roundF16(x: number): number {
  return f16Values()[f16Bits(x)];
}
