// The JavaScript renderer: a scheduled kernel → the source of a JS function that runs it serially, row after row
// (every statement's mapping is 'serial' on the CPU).
// Buffers arrive as typed arrays (floats of every width held as f32, as the host keeps them).

import { cpuCaps } from '../device-caps.ts';
import { FlashIR, GemmIR, KernelIR, KExpr, KStmt, ROW, Scalar } from '../kernel-ir.ts';
import { cLike, Dialect, ExprPrinter, sizeName } from '../render-base.ts';
import { scheduleKernel, ScheduledKernel } from '../schedule.ts';

const math = (f: string) => (a: string) => `Math.${f}(${a})`;

/**
 * JavaScript computes in float64, the kernel IR in f32 and i32: every temporary is rounded to its type, so that a
 * value recomputed in one kernel has the bits it has when another kernel loads it from memory (where a compare
 * or cast would otherwise tell 0.99999999 from 1), and i32 arithmetic wraps as it does on a GPU. Accumulators
 * stay float64, as the reference accumulates.
 */
const roundTo: Record<Scalar, (value: string) => string> = {
  f32: (v) => `Math.fround(${v})`,
  i32: (v) => `(${v} | 0)`,
  bool: (v) => v,
};

/**
 * Helpers a kernel declares (at its end: functions are hoisted) when it uses them, for special values as the
 * README's Numerics section has them:
 * float → i32 (and u32) saturates and sends NaN to 0; i32 power wraps like i32 products.
 */
const jsHelpers: Record<string, string> = {
  tf_f2i: 'function tf_f2i(x) { return x !== x ? 0 : x >= 2147483647 ? 2147483647 : x <= -2147483648 ? -2147483648 : Math.trunc(x); }',
  tf_f2u: 'function tf_f2u(x) { return x !== x || x <= 0 ? 0 : x >= 4294967295 ? 4294967295 : Math.trunc(x); }',
  // a gather's row or a state write's start outside its range stops the kernel with a named error
  tf_index: 'function tf_index(i, n) { if (i >= 0 && i < n) return i; throw new RangeError(`index ${i} is out of range [0, ${n}) (a gather row or a state write position)`); }',
  tf_pow: 'function tf_pow(x, y) { return y === 0 || x === 1 || (x === -1 && (y === Infinity || y === -Infinity)) ? 1 : Math.pow(x, y); }',
  tf_ipow: [
    'function tf_ipow(x, y) {',
    '  if (y < 0) return x === 1 ? 1 : x === -1 ? (y & 1 ? -1 : 1) : 0;',
    '  let r = 1;',
    '  for (let e = y; e > 0; e >>>= 1) { if (e & 1) r = Math.imul(r, x); x = Math.imul(x, x); }',
    '  return r;',
    '}',
  ].join('\n'),
};

/** A positive literal other than 1: Math.pow has C's special cases for it (they differ only for bases ±1). */
const positiveBase = (a: string) => /^[\d.e+-]+$/.test(a) && Number(a) > 0 && Number(a) !== 1;
/** An integer literal below 2^21: its product with any i32 is exact in float64 (then wraps with | 0). */
const smallInt = (a: string) => /^\(?-?\d+\)?$/.test(a) && Math.abs(Number(a.replace(/[()]/g, ''))) < 2 ** 21;

export const jsDialect: Dialect = {
  type: { f32: 'number', i32: 'number', bool: 'boolean' },
  // Names, literals and loads (a typed array holds its type already) need no rounding.
  constDecl: (name, t, value) => `const ${name} = ${/^[\w.]+$|^\(-?[\d.e+-]+\)$|^b\d+\[\w+\]$/.test(value) ? value : roundTo[t](value)};`,
  varDecl: (name, _t, value) => `let ${name} = ${value};`,
  forLoop: (v, n) => `for (let ${v} = 0; ${v} < ${n}; ${v}++) {`,
  unary: {
    ...cLike.unary,
    abs: math('abs'), exp: math('exp'), log: math('log'), sqrt: math('sqrt'), sin: math('sin'), cos: math('cos'),
    tanh: math('tanh'), floor: math('floor'),
    rsqrt: (a) => `(1 / Math.sqrt(${a}))`,
    sigmoid: (a) => `(1 / (1 + Math.exp(-${a})))`,
    silu: (a) => `(${a} / (1 + Math.exp(-${a})))`,
    not: (a) => `(!${a})`,
  },
  binary: {
    ...cLike.binary,
    // Math.max and Math.min propagate NaN, as maximum/minimum do.
    pow: (a, b, t) => (t === 'i32' ? `tf_ipow(${a}, ${b})` : positiveBase(a) ? `Math.pow(${a}, ${b})` : `tf_pow(${a}, ${b})`),
    max: (a, b) => `Math.max(${a}, ${b})`,
    min: (a, b) => `Math.min(${a}, ${b})`,
    eq: (a, b) => `(${a} === ${b})`,
    ne: (a, b) => `(${a} !== ${b})`,
    // i32: products wrap exactly (a float64 product may round past 2^53); division floors, x / 0 = 0.
    mul: (a, b, t) => (t === 'i32' && !smallInt(a) && !smallInt(b) ? `Math.imul(${a}, ${b})` : `(${a} * ${b})`),
    div: (a, b, t) => (t === 'i32' ? `(${b} === 0 ? 0 : Math.floor(${a} / ${b}))` : `(${a} / ${b})`),
    idiv: (a, b) => `Math.trunc(${a} / ${b})`,
    random: (a, b) => `round.random(${a}, ${b})`,
    index: (a, b) => `tf_index(${a}, ${b})`,
  },
  literal: (value, t) => {
    if (t === 'bool') return value ? 'true' : 'false';
    if (Number.isNaN(value)) return 'NaN';
    if (!Number.isFinite(value)) return value > 0 ? 'Infinity' : '-Infinity';
    if (Object.is(value, -0) && t === 'f32') return '(-0)';
    // An i32 holds u32 values by their bits, as loads of u32 buffers give them.
    const s = String(t === 'i32' ? value | 0 : value);
    return s.startsWith('-') ? `(${s})` : s;
  },
  cast: (a, from, to, round16, u32) => {
    if (to === 'bool') return `(${a} != 0)`;
    const x = from === 'bool' ? `(+${a})` : to === 'i32' && from === 'f32' ? `${u32 ? 'tf_f2u' : 'tf_f2i'}(${a})`
      : u32 && from === 'i32' ? `(${a} >>> 0)` : a;
    return round16 ? `round.${round16}(${x})` : x;
  },
  load: (buf, b, index) => (b.dtype === 'bool' ? `(b${buf}[${index}] !== 0)` : b.dtype === 'u32' ? `(b${buf}[${index}] | 0)` : `b${buf}[${index}]`),
  elem: (array, index) => `${array}[${index}]`,
  lowest: (t) => (t === 'i32' ? '(-2147483648)' : '-Infinity'),
  argmaxTakes: (x, best, t) => (t === 'f32' ? `(${x} > ${best} || (${x} !== ${x} && ${best} === ${best}))` : `${x} > ${best}`),
};

/** What a rendered kernel calls to round a value stored into a 16-bit float buffer (held as f32 on the host). */
export interface JsKernelRuntime {
  readonly bf16: (x: number) => number;
  readonly f16: (x: number) => number;
  /** ir/random.ts's randomUniform. */
  readonly random: (key: number, counter: number) => number;
}

/**
 * The body of `function (b, sizes, round)`: `b` holds the kernel's buffers in order, `sizes` the symbolic sizes,
 * `round` a JsKernelRuntime. Schedules the kernel for the CPU (cpuCaps) and prints it: the one-step form.
 */
export function renderJs(k: KernelIR): string {
  return printJs(scheduleKernel(k, cpuCaps));
}

/** A kernel scheduled for the CPU as a JS function body: one thread runs its grid's rows one after another. */
export function printJs(sk: ScheduledKernel): string {
  const k = sk.kernel;
  if (sk.grid.overflow !== 'serial') throw new Error(`printJs: kernel ${k.name} is scheduled for ${sk.device.name}`);
  const p = new ExprPrinter(jsDialect, k.buffers);
  p.sizes = new Set(k.sizes);
  const out: string[] = [];
  out.push(`// kernel ${k.name}: fuses`);
  for (const line of k.fused) out.push(`//   ${line}`);
  for (const s of k.sizes) out.push(`const ${sizeName(s)} = sizes[${JSON.stringify(s)}];`);
  k.buffers.forEach((_, i) => out.push(`const b${i} = b[${i}];`));
  for (const a of sk.arrays) out.push(`const ${a.name} = new Float64Array(${a.elements});`);
  const rows = p.expr(sk.grid.rows, out, '');
  if (k.gemm && sk.gemm) {
    renderGemm(k.gemm, p.expr(k.gemm.rows, out, ''), p, out);
  } else if (k.flash && sk.flash) {
    renderFlash(k.flash, p, out);
  } else {
    out.push(`for (let ${ROW} = 0; ${ROW} < ${rows}; ${ROW}++) {`);
    for (const s of k.body) renderStmt(s, p, out, '  ');
    out.push('}');
  }
  const code = out.join('\n');
  const helpers = Object.entries(jsHelpers).filter(([name]) => code.includes(`${name}(`)).map(([, h]) => h);
  return helpers.length ? `${code}\n${helpers.join('\n')}` : code;
}

/** A GEMM row by row: the row's left operand computed once into an array, then every column's products. */
function renderGemm(g: GemmIR, rows: string, p: ExprPrinter, out: string[]): void {
  out.push(`const tf_a = new Float64Array(${g.depth});`);
  out.push(`for (let ${g.m} = 0; ${g.m} < ${rows}; ${g.m}++) {`);
  out.push(`  for (let ${g.k} = 0; ${g.k} < ${g.depth}; ${g.k}++) {`);
  out.push(`    tf_a[${g.k}] = ${p.expr(g.a, out, '    ')};`);
  out.push('  }');
  out.push(`  for (let ${g.n} = 0; ${g.n} < ${g.columns}; ${g.n}++) {`);
  for (const acc of g.accs) out.push(`    let ${acc} = 0;`);
  out.push(`    for (let ${g.k} = 0; ${g.k} < ${g.depth}; ${g.k}++) {`);
  const a: KExpr = { k: 'elem', array: 'tf_a', index: { k: 'var', name: g.k, t: 'i32' }, t: 'f32' };
  const memo = new Map<string, string>();
  g.b.forEach((b, i) => {
    const term = p.expr({ k: 'binary', op: 'mul', a, b, t: 'f32' }, out, '      ', memo);
    out.push(`      ${g.accs[i]} += ${term};`);
  });
  out.push('    }');
  for (const st of g.stores) storeLine(st.buf, st.index, st.value, p, out, '    ');
  out.push('  }');
  out.push('}');
}

/**
 * Attention row by row with an online softmax: the query row computed once, then each key up to the causal
 * bound: its score, the running maximum and sum rescaled when the maximum grows, the output row accumulated.
 */
function renderFlash(f: FlashIR, p: ExprPrinter, out: string[]): void {
  const v = (name: string): KExpr => ({ k: 'var', name, t: 'i32' });
  out.push(`const tf_q = new Float64Array(${f.depth});`);
  out.push(`const tf_o = new Float64Array(${f.width});`);
  out.push(`const tf_queries = ${p.expr(f.queries, out, '')};`);
  out.push(`for (let ${f.b} = 0; ${f.b} < ${f.batch}; ${f.b}++) {`);
  out.push(`  for (let ${f.i} = 0; ${f.i} < tf_queries; ${f.i}++) {`);
  out.push(`    for (let ${f.d} = 0; ${f.d} < ${f.depth}; ${f.d}++) {`);
  out.push(`      tf_q[${f.d}] = ${p.expr(f.q, out, '      ')};`);
  out.push('    }');
  out.push('    tf_o.fill(0);');
  out.push('    let tf_m = -Infinity;');
  out.push('    let tf_l = 0;');
  const limit = f.limit ? `Math.min(${f.keys}, ${p.expr(f.limit, out, '    ')})` : String(f.keys);
  out.push(`    for (let ${f.t} = 0; ${f.t} < ${limit}; ${f.t}++) {`);
  out.push(`      let ${f.qk} = 0;`);
  out.push(`      for (let ${f.d} = 0; ${f.d} < ${f.depth}; ${f.d}++) {`);
  const term = p.expr({ k: 'binary', op: 'mul', a: { k: 'elem', array: 'tf_q', index: v(f.d), t: 'f32' }, b: f.k, t: 'f32' }, out, '        ');
  out.push(`        ${f.qk} += ${term};`);
  out.push('      }');
  out.push(`      ${f.qk} = Math.fround(${f.qk});`);
  out.push(`      const tf_s = ${p.expr(f.score, out, '      ')};`);
  // NaN propagates through the maximum, as the reference's max does.
  out.push('      const tf_mnew = tf_s !== tf_s || tf_m !== tf_m ? NaN : Math.max(tf_m, tf_s);');
  out.push('      const tf_ref = tf_mnew === -Infinity ? 0 : tf_mnew;');
  out.push('      const tf_scale = Math.exp(tf_m - tf_ref);');
  out.push('      const tf_p = Math.exp(tf_s - tf_ref);');
  out.push('      tf_l = tf_l * tf_scale + tf_p;');
  out.push(`      for (let ${f.e} = 0; ${f.e} < ${f.width}; ${f.e}++) {`);
  out.push(`        tf_o[${f.e}] = tf_o[${f.e}] * tf_scale + tf_p * ${p.expr(f.v, out, '        ')};`);
  out.push('      }');
  out.push('      tf_m = tf_mnew;');
  out.push('    }');
  out.push(`    for (let ${f.e} = 0; ${f.e} < ${f.width}; ${f.e}++) {`);
  out.push(`      const ${f.out} = Math.fround(tf_o[${f.e}] / tf_l);`);
  for (const st of f.stores) storeLine(st.buf, st.index, st.value, p, out, '      ');
  out.push('    }');
  out.push('  }');
  out.push('}');
}

/** b[index] = value, rounded to the buffer's 16-bit float as the host keeps it. */
function storeLine(buf: number, indexExpr: KExpr, valueExpr: KExpr, p: ExprPrinter, out: string[], indent: string): void {
  const value = p.expr(valueExpr, out, indent);
  // A Float32Array rounds to f32 on store; a 16-bit float must be rounded to its own width, as the host keeps
  // it (kernels compute in f32 and round where a value reaches memory).
  const dtype = p.buffers[buf].dtype;
  const stored = dtype === 'bf16' || dtype === 'f16' ? `round.${dtype}(${value})` : value;
  out.push(`${indent}b${buf}[${p.expr(indexExpr, out, indent)}] = ${stored};`);
}

function renderStmt(s: KStmt, p: ExprPrinter, out: string[], indent: string): void {
  const inner = indent + '  ';
  switch (s.k) {
    case 'let':
      out.push(`${indent}const ${s.name} = ${p.expr(s.value, out, indent)};`);
      break;
    case 'coop': {
      const t: Scalar = s.op === 'argmax' ? 'i32' : s.body.t;
      p.reduceInto(s.name, s.op, s.v, p.expr(s.n, out, indent), s.body, t, out, indent);
      break;
    }
    case 'array':
      out.push(`${indent}for (let ${s.v} = 0; ${s.v} < ${s.n}; ${s.v}++) {`);
      out.push(`${inner}${s.name}[${s.v}] = ${p.expr(s.value, out, inner)};`);
      out.push(`${indent}}`);
      break;
    case 'store': {
      out.push(`${indent}for (let ${s.v} = 0; ${s.v} < ${p.expr(s.n, out, indent)}; ${s.v}++) {`);
      storeLine(s.buf, s.index, s.value, p, out, inner);
      out.push(`${indent}}`);
      break;
    }
    default: s satisfies never;
  }
}
